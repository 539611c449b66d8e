"""Grouped convolutions are orthogonal group by group, in every core (issue 15).

Before, init worked per group while the constraint, the penalties and the defect used the whole
flattened weight: a delta-orthogonal grouped conv preserved norms after init, drifted to
||y||/||x|| = 0.93-1.07 once the constraint was registered, and the logged defect read 2.7e-7.
The references here are dense float64 computations written out in the test.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ortho_lightning.callbacks import OrthogonalConstraint
from ortho_lightning.constraints import (
    block_defects,
    orthogonalize,
    selected_tensors,
    total_penalty,
)
from ortho_lightning.init import initialize
from ortho_lightning.matrices import matrix_blocks, matrix_views
from ortho_lightning.selection import ModuleSelector
from ortho_lightning.spectra import weight_singular_values
from ortho_lightning.spectra.weights import weight_spectra
from tests.callbacks._monitor_helpers import trainer as make_trainer

CHANNELS, GROUPS, SIZE = 16, 4, 6

pytestmark = pytest.mark.usefixtures("one_thread")


def grouped_conv() -> nn.Conv2d:
    torch.manual_seed(0)
    conv = nn.Conv2d(CHANNELS, CHANNELS, 3, groups=GROUPS, padding=1, padding_mode="circular")
    return conv.double()


def norm_ratios(conv: nn.Module, n: int = 8) -> torch.Tensor:
    """||conv(x)|| / ||x|| on ``n`` random float64 inputs (the bias is zero here)."""
    x = torch.randn(n, CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).double()
    with torch.no_grad():
        y = conv(x)
    return y.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)


def group_defect(weight: torch.Tensor, g: int, gain: float = 1.0) -> float:
    """Dense reference: ||M M^T / gain^2 - I|| / sqrt(rows) of group g's (out/g, in/g * 9) matrix
    (rows <= cols here)."""
    size = weight.shape[0] // GROUPS
    M = weight[g * size : (g + 1) * size].reshape(size, -1).double()
    eye = torch.eye(size, dtype=torch.float64)
    return (torch.linalg.matrix_norm(M @ M.T / gain**2 - eye) / size**0.5).item()


def test_matrix_blocks_of_a_grouped_conv_are_its_groups():
    conv = grouped_conv()
    blocks = matrix_blocks(conv)
    assert [b.label for b in blocks] == [f"weight[group {g}]" for g in range(GROUPS)]
    views = matrix_views(conv)
    for g, (_, view) in enumerate(views):
        assert view.shape == (CHANNELS // GROUPS, CHANNELS // GROUPS, 3, 3)
        assert view.data_ptr() == conv.weight[g * 4].data_ptr()  # a view, not a copy


def test_delta_orthogonal_grouped_conv_keeps_norms_after_the_constraint_is_registered():
    conv = grouped_conv()
    initialize(conv, "delta_orthogonal")
    before = norm_ratios(conv)
    torch.testing.assert_close(before, torch.ones_like(before), atol=1e-12, rtol=0)
    weight_before = conv.weight.detach().clone()

    orthogonalize(conv, "weight")

    after = norm_ratios(conv)
    torch.testing.assert_close(after, torch.ones_like(after), atol=1e-10, rtol=0)
    torch.testing.assert_close(conv.weight.detach(), weight_before, atol=1e-10, rtol=0)
    for g in range(GROUPS):  # and the constrained weight is orthogonal group by group
        assert group_defect(conv.weight.detach(), g) < 1e-10


def test_defect_and_penalty_are_per_group_against_a_dense_reference():
    conv = grouped_conv()  # PyTorch's default init: far from orthogonal
    entries = selected_tensors(conv, ModuleSelector.build(None, None))
    defects = block_defects(entries)
    assert list(defects) == [f"weight[group {g}]" for g in range(GROUPS)]
    for g in range(GROUPS):
        assert defects[f"weight[group {g}]"].item() == pytest.approx(group_defect(conv.weight, g), rel=1e-6)  # float32

    initialize(conv, "delta_orthogonal")
    defects = block_defects(entries)
    assert max(d.item() for d in defects.values()) < 1e-6  # float32 round-off
    assert total_penalty(entries).item() < 1e-20  # float64 weights
    # the whole flattened (16, 36) matrix is far from orthogonal: rows of different groups
    # overlap, so a whole-matrix defect would call this isometric layer non-orthogonal
    W = conv.weight.detach().flatten(1)
    assert torch.linalg.matrix_norm(W @ W.T - torch.eye(CHANNELS, dtype=W.dtype)).item() > 1


def test_weight_spectra_are_per_group():
    conv = grouped_conv()
    spectra = weight_spectra(conv)
    size = CHANNELS // GROUPS
    for g in range(GROUPS):
        M = conv.weight.detach()[g * size : (g + 1) * size].flatten(1)
        torch.testing.assert_close(spectra[f"weight[group {g}]"], torch.linalg.svdvals(M))
    op = weight_spectra(conv, conv_input_shape=(SIZE, SIZE))["weight[group 1]"]
    assert op.numel() == SIZE * SIZE * size  # the group's own (4 -> 4 channel) operator
    with pytest.raises(ValueError, match="pass block="):
        weight_singular_values(conv)


class GroupedConvNet(LightningModule):
    """A grouped conv then a linear readout; SGD."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = grouped_conv().float()
        self.head = nn.Linear(CHANNELS * SIZE * SIZE, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.conv(x)).flatten(1))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def test_constraint_trains_grouped_conv_per_group_and_logs_the_true_defect(tmp_path):
    model = GroupedConvNet().double()
    initialize(model.conv, "delta_orthogonal")
    g = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(16, CHANNELS, SIZE, SIZE, generator=g).double(),
                         torch.randint(0, 3, (16,), generator=g))
    cb = OrthogonalConstraint(include="conv", log_every_n_steps=1)
    trainer = make_trainer(tmp_path, [cb], max_steps=4, precision="64-true")

    trainer.fit(model, DataLoader(data, batch_size=4))

    W = model.conv.weight.detach()
    assert (W - W.new_zeros(W.shape)).abs()[..., 0, 0].max() > 1e-4  # off-centre taps moved
    for k in range(GROUPS):
        logged = trainer.logged_metrics[f"ortho/defect/conv.weight[group {k}]"].item()
        assert logged == pytest.approx(group_defect(W, k), abs=1e-6)  # logged in float32
        assert group_defect(W, k) < 1e-8
