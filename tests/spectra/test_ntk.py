"""The empirical NTK against a dense float64 reference (``tests.spectra._models.dense_ntk``):
per-sample parameter Jacobians by ``vmap(jacrev)``, J J^T formed explicitly."""

import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.spectra import (
    LinearOperator,
    NTKOperator,
    kernel_distance,
    kernel_eigenvalues,
    ntk_drift,
    ntk_eigenvalues,
    ntk_matrix,
    ntk_trace,
    summarize,
)
from tests.spectra._models import build, dense_ntk

KINDS = ["mlp", "cnn", "cnn1d", "LSTM", "seqlinear", "inplace", "shared", "norm_dropout",
         "parametrized"]


@pytest.mark.parametrize("kind", KINDS)
def test_matrix_eigenvalues_trace_match_dense(kind):
    torch.manual_seed(len(kind))
    model, x = build(kind)
    ref = dense_ntk(model, x)
    theta = ntk_matrix(model, x)
    torch.testing.assert_close(theta, ref, rtol=1e-9, atol=1e-12)
    ref_eig = torch.linalg.eigvalsh(ref).flip(0).clamp_min(0)
    eig = ntk_eigenvalues(model, x)
    assert eig.shape == (ref.shape[0],)
    torch.testing.assert_close(eig, ref_eig, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(ntk_trace(model, x), ref.trace(), rtol=1e-10, atol=0)


def test_modes_restored_and_eval_by_default():
    torch.manual_seed(0)
    model, x = build("norm_dropout")
    model.train()
    theta = ntk_matrix(model, x)
    assert model.training and all(m.training for m in model.modules())
    torch.testing.assert_close(theta, dense_ntk(model, x))  # dense_ntk measures in eval mode


def test_multi_dim_outputs_flattened_and_output_fn():
    torch.manual_seed(1)
    lin = nn.Linear(4, 6)
    model = nn.Sequential(lin, nn.Tanh(), nn.Unflatten(1, (2, 3)))
    x = torch.randn(3, 4)
    theta = ntk_matrix(model, x)
    assert theta.shape == (18, 18)
    torch.testing.assert_close(theta, dense_ntk(model, x))
    # output_fn picks one of two outputs: the kernel of the first three outputs only
    two = ntk_matrix(model, x, output_fn=lambda out: out[:, 0])
    idx = torch.tensor([i * 6 + c for i in range(3) for c in range(3)])
    torch.testing.assert_close(two, theta[idx][:, idx])


@pytest.mark.parametrize("kind", ["mlp", "cnn", "parametrized"])
def test_lanczos_top_k_matches_dense(kind):
    torch.manual_seed(7)
    model, x = build(kind)
    ref = torch.linalg.eigvalsh(dense_ntk(model, x)).flip(0)
    top = ntk_eigenvalues(model, x, "lanczos", k=4, tol=1e-10,
                          generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(top, ref[:4], rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(ntk_eigenvalues(model, x, k=4), ref[:4], rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Lanczos did not reach")
def test_deprecated_seed_gives_bit_identical_results():
    model, x = build("mlp")
    for name, call in [
        ("ntk_eigenvalues", lambda **kw: ntk_eigenvalues(model, x, "lanczos", k=2, max_iter=2, **kw)),
        ("ntk_trace", lambda **kw: ntk_trace(model, x, "hutchinson", num_probes=3, **kw)),
    ]:
        with pytest.warns(DeprecationWarning, match=f"{name}: 'seed' is deprecated"):
            old = call(seed=4)
        assert torch.equal(old, call(generator=torch.Generator().manual_seed(4)))
        assert not torch.equal(old, call(generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("kind", ["mlp", "cnn", "parametrized"])
def test_operator_products_match_the_dense_kernel(kind):
    torch.manual_seed(8)
    model, x = build(kind)
    ref = dense_ntk(model, x)
    op = NTKOperator(model, x)
    assert isinstance(op, LinearOperator) and op.shape == ref.shape
    u = torch.randn(op.shape[0], 3)
    torch.testing.assert_close(op @ u, ref @ u)
    torch.testing.assert_close(op.matvec(u[:, 0]), ref @ u[:, 0])
    with pytest.raises(ShapeError, match=rf"NTKOperator: the operand must be a tensor of shape "
                       rf"\({ref.shape[0]},\)"):
        op.matvec(u[:-1, 0])


def test_rank_deficient_kernel_when_outputs_outnumber_parameters():
    # N*C = 40 > P = 10: Theta has rank <= 10; both methods give zeros past the rank
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 1, bias=False))
    x = torch.randn(40, 3)
    ref = torch.linalg.eigvalsh(dense_ntk(model, x)).flip(0).clamp_min(0)
    exact = ntk_eigenvalues(model, x)
    assert exact.shape == (40,)
    torch.testing.assert_close(exact[:10], ref[:10], rtol=1e-9, atol=1e-11)
    assert exact[10:].abs().max() < 1e-9
    top = ntk_eigenvalues(model, x, "lanczos", k=12, tol=1e-10)
    torch.testing.assert_close(top[:10], ref[:10], rtol=1e-8, atol=1e-11)
    assert torch.equal(top[10:], torch.zeros(2))


def test_hutchinson_trace_is_close():
    torch.manual_seed(4)
    model, x = build("mlp")
    exact = float(ntk_trace(model, x))
    est = float(ntk_trace(model, x, "hutchinson", num_probes=4000,
                          generator=torch.Generator().manual_seed(1)))
    assert abs(est - exact) < 0.05 * exact


def test_drift_against_dense():
    torch.manual_seed(5)
    model, x = build("mlp")
    theta0 = ntk_matrix(model, x)
    assert float(ntk_drift(model, x, theta0)) < 1e-14  # nothing moved
    ref0 = dense_ntk(model, x)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ref1 = dense_ntk(model, x)
    expected = torch.linalg.matrix_norm(ref1 - ref0) / torch.linalg.matrix_norm(ref0)
    drift = ntk_drift(model, x, theta0)
    assert drift.dtype == torch.float64 and drift.dim() == 0
    torch.testing.assert_close(drift, expected, rtol=1e-9, atol=0)
    assert float(drift) > 0.05
    # a float32 reference is accepted (compared in float64)
    torch.testing.assert_close(
        ntk_drift(model, x, theta0.float()), expected, rtol=1e-5, atol=0
    )


def test_kernel_helpers():
    a = torch.diag(torch.tensor([3.0, 1.0, 2.0]))
    torch.testing.assert_close(kernel_eigenvalues(a), torch.tensor([3.0, 2.0, 1.0]))
    torch.testing.assert_close(kernel_eigenvalues(a, 2), torch.tensor([3.0, 2.0]))
    b = a.clone()
    b[0, 0] = 4.0
    torch.testing.assert_close(kernel_distance(b, a), torch.tensor(1 / 14**0.5))
    summary = summarize(torch.tensor([4.0, 1.0, 0.5]), kind="kernel")
    assert summary == {"max": 4.0, "min": 0.5, "condition": 8.0, "trace": 5.5, "mean": 5.5 / 3}
    assert summarize(torch.tensor([1.0, 0.0]), kind="kernel")["condition"] == float("inf")


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda m, x: ntk_eigenvalues(m, x, "lanczos"), ConfigurationError,
         "^ntk_eigenvalues: k must be the number of top eigenvalues .* got None$"),
        (lambda m, x: ntk_eigenvalues(m, x, "power"), ConfigurationError,
         r"^ntk_eigenvalues: method must be one of \['exact', 'lanczos'\], got 'power'$"),
        (lambda m, x: ntk_eigenvalues(m, x, k=0), ConfigurationError,
         "^ntk_eigenvalues: k must be an integer >= 1 or None, got 0$"),
        (lambda m, x: ntk_eigenvalues(m, x, k=13), ConfigurationError,
         r"^kernel_eigenvalues: k must be at most the kernel size N\*C=12, got 13$"),
        (lambda m, x: ntk_eigenvalues(m, x, "lanczos", k=13), ConfigurationError,
         r"^ntk_eigenvalues: k must be at most the kernel size N\*C=12, got 13$"),
        (lambda m, x: ntk_trace(m, x, "diag"), ConfigurationError,
         "^ntk_trace: method must be one of"),
        (lambda m, x: ntk_matrix("model", x), ConfigurationError,
         "^ntk_matrix: model must be a torch.nn.Module, got <class 'str'>$"),
        (lambda m, x: ntk_matrix(m, x.numpy()), ShapeError,
         "^ntk_matrix: x must be a torch.Tensor batch"),
        (lambda m, x: ntk_drift(m, x, torch.eye(5)), ShapeError, "same probe"),
        (lambda m, x: ntk_drift(m, x, torch.ones(12)), ShapeError, "2-d"),
        (lambda m, x: ntk_drift(m, x, torch.zeros(12, 12)), ShapeError, "zero matrix"),
        (lambda m, x: kernel_eigenvalues(torch.ones(2, 3)), ShapeError, "square"),
    ],
    ids=["lanczos-no-k", "method", "k-zero", "k-too-big", "lanczos-k-too-big", "trace-method",
         "model", "x", "reference-shape", "reference-1d", "reference-zero", "not-square"],
)
def test_bad_input(call, error, match):
    torch.manual_seed(0)
    model, x = build("mlp")
    with pytest.raises(error, match=match):
        call(model, x)
