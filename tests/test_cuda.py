"""The cores and the callbacks on a CUDA device (``make test-gpu``; ``pytest -m cuda``).

Each test computes on the device and checks against an independent reference: the same
computation on the CPU in float64, a closed form (``W^T W = gain^2 I``, every singular value of
an orthogonal deep linear net equal to 1), or the CPU run of the same training (identical
spectra at fit start, since the init draws from a seeded CPU generator whatever the device).
Skipped without a CUDA device. ``ORTHO_LIGHTNING_TEST_DEVICE=cpu`` runs them on the CPU, to check
the tests themselves on a machine without a GPU.
"""

import math
import os

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from ortho_lightning.constraints import (
    PENALTIES,
    orthogonality_penalty,
    orthogonalize,
    project_orthogonal_,
)
from ortho_lightning.experiments.table import read_lightning_metrics
from ortho_lightning.init import delta_orthogonal_, gaussian_, orthogonal_
from ortho_lightning.spectra.fisher import fisher_eigenvalues
from ortho_lightning.spectra.jacobian import jacobian_singular_values
from ortho_lightning.theory.distance import wasserstein1
from ortho_lightning.theory.free_probability import jacobian_moments
from tests.callbacks._monitor_helpers import TinyNetWithFeatures, loader

DEVICE = torch.device(os.environ.get("ORTHO_LIGHTNING_TEST_DEVICE", "cuda"))
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                       reason="no CUDA device (these run the cores and a training on a GPU: "
                       "make test-gpu; ORTHO_LIGHTNING_TEST_DEVICE=cpu checks them on the CPU)"),
]


def _gram_defect(W: torch.Tensor, gain: float) -> float:
    """max |W^T W - gain^2 I| on the smaller side, in float64."""
    M = W.detach().flatten(1).double()
    G = M @ M.T if M.shape[0] <= M.shape[1] else M.T @ M
    return (G - gain**2 * torch.eye(len(G), dtype=G.dtype, device=G.device)).abs().max().item()


def _mlp(depth: int, width: int, act: type[nn.Module] | None = nn.Tanh) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width, bias=False)] + ([act()] if act else [])
    return nn.Sequential(*layers)


@pytest.mark.parametrize("scheme", [orthogonal_, delta_orthogonal_, gaussian_],
                         ids=["orthogonal", "delta_orthogonal", "gaussian"])
def test_init_on_device_matches_cpu_and_is_orthogonal(scheme):
    shape = (24, 16, 3) if scheme is delta_orthogonal_ else (16, 24)
    on_device = torch.empty(shape, device=DEVICE)
    on_cpu = torch.empty(shape)
    scheme(on_device, 1.5, torch.Generator().manual_seed(3))
    scheme(on_cpu, 1.5, torch.Generator().manual_seed(3))
    assert on_device.device.type == DEVICE.type
    torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=1e-5, atol=1e-6)
    if scheme is not gaussian_:
        centre = on_device[..., 1] if scheme is delta_orthogonal_ else on_device
        assert _gram_defect(centre, 1.5) < 1e-4
        drawn_there = torch.empty(shape, device=DEVICE)  # a generator on the device itself
        scheme(drawn_there, 1.5, torch.Generator(device=DEVICE).manual_seed(3))
        centre = drawn_there[..., 1] if scheme is delta_orthogonal_ else drawn_there
        assert drawn_there.device.type == DEVICE.type and _gram_defect(centre, 1.5) < 1e-4


def test_constraints_on_device():
    torch.manual_seed(0)
    layer = orthogonalize(nn.Linear(12, 12).to(DEVICE), gain=2.0)
    assert layer.weight.device.type == DEVICE.type and _gram_defect(layer.weight, 2.0) < 1e-4
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(torch.randn(5, 12, device=DEVICE)).square().sum().backward()
    opt.step()
    assert _gram_defect(layer.weight, 2.0) < 1e-4  # still on the manifold after a step
    W = torch.randn(8, 20, dtype=torch.float64)
    for kind in PENALTIES:
        here = orthogonality_penalty(W.to(DEVICE), gain=1.1, kind=kind)
        assert here.device.type == DEVICE.type
        assert math.isclose(here.item(), orthogonality_penalty(W, gain=1.1, kind=kind).item(),
                            rel_tol=1e-6, abs_tol=1e-9), kind
    V = W.to(DEVICE).clone()
    project_orthogonal_(V, gain=0.5)
    assert _gram_defect(V, 0.5) < 1e-10


def _mlp_case():
    return nn.Sequential(_mlp(3, 10), nn.Linear(10, 4)).double(), (6, 10)


def _rnn_case():
    from ortho_lightning.models import RNNClassifier

    return RNNClassifier(cell="rnn", hidden_size=12, input_shape=(5, 3)).double(), (4, 5, 3)


@pytest.mark.parametrize("case", [_mlp_case, _rnn_case], ids=["mlp", "rnn"])
def test_spectra_on_device_match_cpu_float64(case):
    """Jacobian singular values, the exact Fisher spectrum and its Lanczos top-3 on the device
    equal the CPU's in float64; for the fused nn.RNN too (cuDNN's RNN kernel cannot be entered
    by torch.func's transforms, so measuring() switches it off)."""
    torch.manual_seed(0)
    model, shape = case()
    x = torch.randn(*shape, dtype=torch.float64)
    sv_cpu = jacobian_singular_values(model, x)
    fisher_cpu = fisher_eigenvalues(model, x, method="exact")
    model.to(DEVICE)
    sv = jacobian_singular_values(model, x.to(DEVICE))
    assert sv.device.type == DEVICE.type
    torch.testing.assert_close(sv.cpu(), sv_cpu, rtol=1e-9, atol=1e-12)
    exact = fisher_eigenvalues(model, x.to(DEVICE), method="exact")
    torch.testing.assert_close(exact.cpu(), fisher_cpu, rtol=1e-8, atol=1e-12)
    top = fisher_eigenvalues(model, x.to(DEVICE), method="lanczos", k=3, tol=1e-10)
    torch.testing.assert_close(top.cpu(), fisher_cpu.sort(descending=True).values[:3],
                               rtol=1e-6, atol=1e-10)


def test_theory_deep_linear_orthogonal_net_is_an_isometry_on_device():
    """Free probability: an orthogonal deep linear net has chi = 1 and zero spectral variance
    (jacobian_moments); measured on the device every singular value is 1."""
    moments = jacobian_moments("linear", 1.0, 0.0, 8, "orthogonal")
    assert moments.mean == pytest.approx(1.0) and moments.variance == pytest.approx(0.0, abs=1e-12)
    net = _mlp(8, 16, act=None).double().to(DEVICE)
    gen = torch.Generator().manual_seed(0)
    for layer in net:
        orthogonal_(layer.weight.data, 1.0, gen)
    sv = jacobian_singular_values(net, torch.randn(4, 16, dtype=torch.float64, device=DEVICE))
    assert (sv - 1).abs().max().item() < 1e-10
    gaussian = _mlp(8, 16, act=None).double().to(DEVICE)
    for layer in gaussian:
        gaussian_(layer.weight.data, 1.0, gen)
    spread = jacobian_singular_values(gaussian, torch.randn(4, 16, dtype=torch.float64, device=DEVICE))
    # W1 takes device tensors; between the Gaussian net's s^2 and the isometry's all-ones it is
    # E|s^2 - 1| > 0, and 0 between a spectrum and itself
    assert wasserstein1(spread**2, sv**2) == pytest.approx((spread**2 - 1).abs().mean().item())
    assert wasserstein1(sv, sv) == 0.0


def _train(accelerator: str, folder, precision: str = "32-true") -> list[dict]:
    from ortho_lightning.callbacks import (
        FisherSpectrumMonitor,
        JacobianSpectrumMonitor,
        NTKSpectrumMonitor,
        OrthogonalConstraint,
        OrthogonalInit,
        OrthogonalRegularizer,
        WeightSpectrumMonitor,
    )

    seed_everything(0)
    every = {"every_n_steps": 2, "every_n_epochs": None}
    callbacks = [
        OrthogonalInit(scheme="orthogonal", gain=1.0, seed=0),
        OrthogonalConstraint(include="layers.3"),
        OrthogonalRegularizer(coefficient=0.1, include="layers.0", log_every_n_steps=1),
        JacobianSpectrumMonitor(probe_size=4, **every),
        FisherSpectrumMonitor(probe_size=4, **every),
        WeightSpectrumMonitor(**every),
        NTKSpectrumMonitor(probe_size=4, **every),
    ]
    trainer = Trainer(accelerator=accelerator, devices=1, max_steps=4, callbacks=callbacks,
                      precision=precision,
                      logger=CSVLogger(folder, name="csv", version="run"), log_every_n_steps=1,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0)
    model = TinyNetWithFeatures(lr=0.1)
    trainer.fit(model, loader(n=32, batch_size=8))
    # where training ran (Lightning moves the module back to the CPU at the end of fit)
    assert trainer.strategy.root_device.type == accelerator.replace("gpu", "cuda")
    assert _gram_defect(model.layers[3].weight, 1.0) < 1e-4  # the constraint held on the device
    return read_lightning_metrics(folder / "csv" / "run" / "metrics.csv")


STABLE = ("/max", "/mean", "/mean_sq", "/trace")


@pytest.mark.slow
def test_short_training_with_every_callback_on_device(tmp_path):
    """4 steps with the init, constraint, regularizer and the four monitors: every monitor logs
    on the device, and the spectra at fit start (same seeded init) equal the CPU run's."""
    rows = _train("gpu" if DEVICE.type == "cuda" else "cpu", tmp_path / "device")
    reference = _train("cpu", tmp_path / "cpu")
    keys = {k for r in rows for k, v in r.items() if v is not None}
    for prefix in ("spectra/jacobian/", "spectra/fisher/", "spectra/weights/", "spectra/ntk/",
                   "ortho/penalty"):
        assert any(k.startswith(prefix) for k in keys), (prefix, sorted(keys))
    first, first_cpu = rows[0], reference[0]
    # well-conditioned summaries only (a min near 0, a condition number or a count within a
    # threshold may legitimately differ between devices in float32)
    compared = [k for k in first if k.startswith("spectra/") and k.endswith(STABLE)
                and isinstance(first[k], float) and math.isfinite(first[k])]
    assert {k.split("/")[1] for k in compared} >= {"jacobian", "fisher", "weights"}, sorted(first)
    for key in compared:
        assert math.isclose(first[key], first_cpu[key], rel_tol=1e-3, abs_tol=1e-5), key


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_with_every_callback_on_device(tmp_path, precision):
    """The same 4 steps under autocast: the monitors measure outside it, in the parameters'
    float32, so their fit-start spectra equal the float32 CPU run's; every logged spectrum is
    finite and the constraint still holds after the mixed-precision steps."""
    if DEVICE.type != "cuda" and precision == "16-mixed":
        pytest.skip("float16 autocast needs CUDA (run with a GPU: make test-gpu)")
    rows = _train("gpu" if DEVICE.type == "cuda" else "cpu", tmp_path / "mixed", precision)
    reference = _train("cpu", tmp_path / "cpu")
    logged = {k: v for r in rows for k, v in r.items()
              if k.startswith("spectra/") and k.endswith(STABLE) and isinstance(v, float)}
    assert {k.split("/")[1] for k in logged} >= {"jacobian", "fisher", "weights", "ntk"}
    assert all(math.isfinite(v) for v in logged.values()), logged
    first, first_cpu = rows[0], reference[0]
    compared = [k for k in first if k.startswith("spectra/") and k.endswith(STABLE)
                and isinstance(first[k], float) and math.isfinite(first[k])]
    assert compared
    for key in compared:
        assert math.isclose(first[key], first_cpu[key], rel_tol=1e-3, abs_tol=1e-5), key
