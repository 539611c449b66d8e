import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError, DataError
from ortho_lightning.experiments.fisher import (
    critical_mlp,
    fisher_at_init,
    fixed_point_tensors,
    largest_stable_lr,
    mnist_tensors,
)


def test_largest_stable_lr_matches_the_quadratic_threshold():
    # A linear model on one sample with squared loss is a quadratic with curvature
    # h = 2 ||x||^2 = 8: GD lowers the loss iff lr < 2 / h = 0.25.
    model = nn.Linear(2, 1, bias=False)
    nn.init.zeros_(model.weight)
    x, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0]])
    best = largest_stable_lr(model, x, y, [0.1, 0.2, 0.24, 0.26, 0.3], steps=5,
                             loss_fn=lambda out, target: ((out - target) ** 2).sum())
    assert best == 0.24
    assert torch.count_nonzero(model.weight) == 0  # restored


def _dense_categorical_fisher_eigenvalues(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The non-zero spectrum of the categorical Fisher (1/N) sum_i J_i^T (diag p_i - p_i p_i^T) J_i,
    descending, from its N*C x N*C dual H^{1/2} J J^T H^{1/2} / N: J row by row with autograd,
    float64."""
    model = model.double()
    params = list(model.parameters())
    f = model(x.double())
    n, c = f.shape
    jac = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
        f[i, k], params, retain_graph=True)]) for i in range(n) for k in range(c)])
    p = torch.softmax(f.detach(), -1)
    h = torch.block_diag(*[torch.diag(pi) - torch.outer(pi, pi) for pi in p])
    ev, vec = torch.linalg.eigh(h)
    root = vec @ torch.diag(ev.clamp_min(0).sqrt()) @ vec.T
    return torch.linalg.eigvalsh(root @ jac @ jac.T @ root / n).flip(0)


@pytest.mark.parametrize("depth", [2, 8])
def test_fixed_point_row_equals_the_dense_fisher(depth):
    row = fisher_at_init(depth=depth, weights="orthogonal", width=32, n_single=2, n_batch=4,
                         inputs="fixed_point")
    assert "stable_lr" not in row
    # the same network and inputs, the Fisher built densely in float64
    x, _, probe = fixed_point_tensors(32, 0.01, 4, 2, seed=0)
    model = critical_mlp(depth, 32, "orthogonal", 0.01, seed=0, n_in=32)
    full = [_dense_categorical_fisher_eigenvalues(model, probe[i:i + 1]) for i in range(2)]
    assert all(ev[9].abs() < 1e-12 for ev in full)  # C = 10 outputs, rank C - 1 = 9
    singles = torch.stack([ev[:9] for ev in full])
    mean = singles.mean(0)
    lam = float(_dense_categorical_fisher_eigenvalues(model, x)[0])
    expected = {"single_max_over_L": mean[0] / depth, "single_mean_over_L": mean.mean() / depth,
                "single_min_over_L": mean[-1] / depth,
                "single_max_over_mean": (singles[:, 0] / singles.mean(1)).mean(),
                "fisher_max": lam, "two_over_fisher_max": 2 / lam}
    assert row == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-4)


def test_unknown_inputs_is_named():
    with pytest.raises(ConfigurationError,
                       match=r"fisher_at_init: inputs must be one of \['mnist', 'fixed_point'\], got 'cifar'"):
        fisher_at_init(depth=2, weights="orthogonal", width=8, inputs="cifar")


def test_mnist_tensors_refuses_files_that_are_not_mnists_split_sizes(tmp_path):
    # the same check as MNISTDataModule's: a 40-image "training" file is not MNIST's 60,000
    from tests.data.conftest import make_tiny_mnist

    tiny = make_tiny_mnist(tmp_path / "mnist", n_train=40, n_test=20)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz holds 40 images, MNIST's "
                       r"training split has 60,000; pass allow_subset=True"):
        mnist_tensors(4, 2, data_dir=str(tiny.folder))


def test_conditional_fisher_row_puts_theory_beside_one_network():
    from ortho_lightning.experiments.fisher import conditional_fisher_vs_depth

    row = conditional_fisher_vs_depth(depth=3, width=96, q_star=0.0259, grid_size=64)
    assert row["theory_mean_over_L"] == pytest.approx(0.0259, rel=1e-9)
    assert row["measured_mean_over_L"] == pytest.approx(0.0259, rel=0.05)
    assert row["measured_max_over_L"] == pytest.approx(row["theory_max_over_L"], rel=0.05)
    assert 0 < row["theory_mass_near_max"] <= 1 and 0 < row["measured_mass_near_max"] <= 1


@pytest.mark.mnist
def test_online_sgd_picks_the_rate_that_does_not_diverge(mnist_dir):
    from ortho_lightning.experiments.fisher import online_sgd_lr_vs_depth

    row = online_sgd_lr_vs_depth(depth=2, lrs=(1e3, 0.01), steps=20, width=16, n_eval=50,
                                 data_dir=str(mnist_dir))
    assert row["loss_lr1000"] > row["init_loss"]  # a step of 1000 blows the loss up
    assert row["loss_lr0.01"] < row["init_loss"]
    assert row["best_lr"] == 0.01 and row["max_ok_lr"] == 0.01
