import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.spectra import fisher_eigenvalues, fisher_trace, spectral_density
from tests.spectra._models import build, dense_fisher

KINDS = [
    "mlp",
    "cnn",
    "cnn1d",
    "RNN",
    "LSTM",
    "GRU",
    "LSTM2",
    "seqlinear",
    "inplace",
    "shared",
    "norm_dropout",
    "parametrized",
]
CASES = [(k, lik, "tanh") for k in KINDS for lik in ("categorical", "gaussian")] + [
    (k, lik, "relu") for k in ("mlp", "cnn", "RNN") for lik in ("categorical", "gaussian")
]


def _dense_eigs(model, x, likelihood):
    return torch.linalg.eigvalsh(dense_fisher(model, x, likelihood)).flip(0)


@pytest.mark.parametrize("kind,likelihood,act", CASES, ids=["-".join(c) for c in CASES])
def test_exact_matches_dense_fisher(kind, likelihood, act):
    torch.manual_seed(hash((kind, act)) % 1000)
    model, x = build(kind, act)
    ref = _dense_eigs(model, x, likelihood)
    got = fisher_eigenvalues(model, x, likelihood)
    p = sum(q.numel() for q in model.parameters())
    assert got.shape == (min(x.shape[0] * 3, p),)
    torch.testing.assert_close(got, ref[: got.numel()].clamp_min(0), rtol=1e-8, atol=1e-12)
    # every case has more parameters than N*C outputs, so the Fisher has P - N*C eigenvalues that
    # are not returned, and each of them is zero (rank <= N*C)
    rest = ref[got.numel() :]
    assert rest.numel() == p - got.numel() > 0
    assert rest.abs().max() < 1e-10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_top_k(seed):
    torch.manual_seed(seed)
    model, x = build("mlp")
    ref = _dense_eigs(model, x, "categorical")
    torch.testing.assert_close(fisher_eigenvalues(model, x, k=3), ref[:3])


LANCZOS = [
    ("mlp", "categorical"),
    ("cnn", "gaussian"),
    ("LSTM", "categorical"),
    ("parametrized", "gaussian"),
]


@pytest.mark.parametrize("kind,likelihood", LANCZOS, ids=[f"{k}-{lik}" for k, lik in LANCZOS])
def test_lanczos_top_k_matches_exact(kind, likelihood):
    torch.manual_seed(3)
    model, x = build(kind)
    exact = fisher_eigenvalues(model, x, likelihood)
    top = fisher_eigenvalues(model, x, likelihood, method="lanczos", k=4, tol=1e-10,
                             generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(top, exact[:4], rtol=1e-8, atol=1e-12)


def test_lanczos_where_outputs_outnumber_parameters():
    # N*C = 120 > P = 15: Lanczos runs in parameter space, Gram is not needed
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1, bias=False))
    x = torch.randn(120, 3)
    ref = _dense_eigs(model, x, "gaussian")
    top = fisher_eigenvalues(model, x, "gaussian", method="lanczos", k=5, tol=1e-10)
    torch.testing.assert_close(top, ref[:5], rtol=1e-8, atol=1e-12)
    exact = fisher_eigenvalues(model, x, "gaussian")
    torch.testing.assert_close(exact, ref, rtol=1e-8, atol=1e-12)


def test_lanczos_k_beyond_rank_pads_zeros():
    torch.manual_seed(0)
    model, x = build("mlp")  # rank <= N*C = 12 < P
    top = fisher_eigenvalues(model, x, "gaussian", method="lanczos", k=14, tol=1e-10)
    ref = _dense_eigs(model, x, "gaussian")
    torch.testing.assert_close(top, ref[:14].clamp_min(0), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "GRU", "parametrized"])
@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_trace_exact_and_hutchinson(kind, likelihood):
    torch.manual_seed(4)
    model, x = build(kind)
    ref = torch.trace(dense_fisher(model, x, likelihood))
    torch.testing.assert_close(fisher_trace(model, x, likelihood), ref)
    est = fisher_trace(model, x, likelihood, "hutchinson", num_probes=3000,
                       generator=torch.Generator().manual_seed(1))
    assert abs(float(est / ref) - 1) < 0.08


def test_spectral_density_integrates_to_one_and_matches_exact():
    torch.manual_seed(0)
    model, x = build("mlp")
    eigs = torch.linalg.eigvalsh(dense_fisher(model, x, "gaussian"))
    grid = torch.linspace(-0.5, float(eigs.max()) + 0.5, 800)
    sigma = float(eigs.max()) / 20
    g, dens = spectral_density(
        model, x, "gaussian", num_probes=40, lanczos_steps=30, grid=grid, sigma=sigma
    )
    exact = torch.exp(-0.5 * ((grid[:, None] - eigs[None]) / sigma) ** 2).sum(1)
    exact = exact / (eigs.numel() * sigma * (2 * torch.pi) ** 0.5)
    assert abs(float(torch.trapezoid(dens, g)) - 1) < 1e-4  # grid cut at 5 sigma
    l1 = float(torch.trapezoid((dens - exact).abs(), g))
    assert l1 < 0.1, l1
    # away from the null-space mass at 0, the shape still matches
    away = grid > 4 * sigma
    l1_away = float(torch.trapezoid((dens - exact).abs()[away], g[away]))
    mass_away = float(torch.trapezoid(exact[away], g[away]))
    assert l1_away < 0.5 * mass_away


def test_spectral_density_default_grid_integrates_to_one():
    torch.manual_seed(1)
    model, x = build("cnn")
    g, dens = spectral_density(model, x, num_probes=3, lanczos_steps=10, grid=300)
    assert g.shape == dens.shape == (300,)
    assert (dens >= 0).all()
    assert abs(float(torch.trapezoid(dens, g)) - 1) < 1e-4


def test_measured_in_eval_mode_without_grads():
    torch.manual_seed(0)
    model, x = build("norm_dropout")
    model.train()
    ref = _dense_eigs(model, x, "categorical")  # built in eval mode
    got = fisher_eigenvalues(model, x)
    torch.testing.assert_close(got, ref[: got.numel()].clamp_min(0))
    fisher_eigenvalues(model, x, method="lanczos", k=2)
    fisher_trace(model, x, method="hutchinson", num_probes=3)
    assert model.training and model[3].training
    assert all(p.grad is None for p in model.parameters())


def test_frozen_parameters_are_not_variables():
    torch.manual_seed(0)
    model, x = build("mlp")
    model[0].weight.requires_grad_(False)
    ref = _dense_eigs(model, x, "categorical")
    got = fisher_eigenvalues(model, x)
    torch.testing.assert_close(got, ref[: got.numel()].clamp_min(0))


def _mlp():
    return build("mlp")


ERRORS = [
    (
        lambda m, x: fisher_eigenvalues(m, x, "poisson"),
        ConfigurationError,
        r"^fisher_eigenvalues: likelihood must be one of \['categorical', 'gaussian'\], "
        "got 'poisson'$",
    ),
    (
        lambda m, x: fisher_eigenvalues(m, x, method="svd"),
        ConfigurationError,
        r"^fisher_eigenvalues: method must be one of \['exact', 'lanczos'\], got 'svd'$",
    ),
    (
        lambda m, x: fisher_eigenvalues(m, x, method="lanczos"),
        ConfigurationError,
        r"^fisher_eigenvalues: k must be the number of top eigenvalues .* got None$",
    ),
    (
        lambda m, x: fisher_eigenvalues(m, x, k=0),
        ConfigurationError,
        "^fisher_eigenvalues: k must be an integer >= 1 or None, got 0$",
    ),
    (
        lambda m, x: fisher_eigenvalues(m, x, method="lanczos", k=10**6),
        ConfigurationError,
        "^fisher_eigenvalues: k must be at most the number of parameters P=",
    ),
    (
        lambda m, x: fisher_eigenvalues(m, x, method="lanczos", k=2, tol=0),
        ConfigurationError,
        "^fisher_eigenvalues: tol must be a finite number > 0, got 0$",
    ),
    (
        lambda m, x: fisher_eigenvalues(m, x.numpy()),
        ShapeError,
        r"^fisher_eigenvalues: x must be a torch.Tensor batch \(N, ...\) with N >= 1, "
        "got <class 'numpy.ndarray'>$",
    ),
    (
        lambda m, x: fisher_eigenvalues(m, x[:0]),
        ShapeError,
        r"^fisher_eigenvalues: x must be .* got torch.Size\(\[0, 5\]\)$",
    ),
    (
        lambda m, x: fisher_eigenvalues(m, x, output_fn=lambda o: o[:1]),
        ShapeError,
        "expected batch size 4",
    ),
    (
        lambda m, x: fisher_eigenvalues(m, x, output_fn=lambda o: o[:, :, None]),
        ShapeError,
        r"needs \(N, C\) logits",
    ),
    (
        lambda m, x: fisher_eigenvalues("model", x),
        ConfigurationError,
        "^fisher_eigenvalues: model must be a torch.nn.Module, got <class 'str'>$",
    ),
    (
        lambda m, x: fisher_trace(m, x, method="lanczos"),
        ConfigurationError,
        r"^fisher_trace: method must be one of \['exact', 'hutchinson'\], got 'lanczos'$",
    ),
    (
        lambda m, x: fisher_trace(m, x, method="hutchinson", num_probes=0),
        ConfigurationError,
        "^fisher_trace: num_probes must be an integer >= 1, got 0$",
    ),
    (
        lambda m, x: spectral_density(m, x, grid=torch.zeros(2, 2)),
        ShapeError,
        r"^spectral_density: grid must be a 1-d tensor of >= 2 points, got torch.Size",
    ),
    (
        lambda m, x: spectral_density(m, x, grid=1),
        ConfigurationError,
        "^spectral_density: grid must be a 1-d tensor or an int >= 2, got 1$",
    ),
    (
        lambda m, x: spectral_density(m, x, sigma=0.0),
        ConfigurationError,
        "^spectral_density: sigma must be a finite number > 0 or None, got 0.0$",
    ),
    (
        lambda m, x: spectral_density(m, x, lanczos_steps=0),
        ConfigurationError,
        "^spectral_density: lanczos_steps must be an integer >= 1, got 0$",
    ),
    (
        lambda m, x: fisher_eigenvalues(m.requires_grad_(False), x),
        ConfigurationError,
        "no trainable parameters",
    ),
]


@pytest.mark.parametrize("call,error,match", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_bad_input_errors(call, error, match):
    model, x = build("mlp")
    with pytest.raises(error, match=match):
        call(model, x)


def test_global_rng_untouched():
    torch.manual_seed(0)
    model, x = build("mlp")
    state = torch.get_rng_state()
    fisher_eigenvalues(model, x, method="lanczos", k=2)
    fisher_trace(model, x, method="hutchinson", num_probes=4)
    spectral_density(model, x, num_probes=2, lanczos_steps=5)
    assert torch.equal(torch.get_rng_state(), state)


SEEDED = {
    # loose Lanczos (2 steps) so the answer depends on the start vector
    "fisher_eigenvalues": lambda m, x, **kw: fisher_eigenvalues(
        m, x, method="lanczos", k=2, max_iter=2, **kw),
    "fisher_trace": lambda m, x, **kw: fisher_trace(m, x, method="hutchinson", num_probes=3, **kw),
    "spectral_density": lambda m, x, **kw: spectral_density(
        m, x, num_probes=2, lanczos_steps=3, **kw)[1],
}


@pytest.mark.filterwarnings("ignore:Lanczos did not reach")
@pytest.mark.parametrize("name", list(SEEDED))
def test_deprecated_seed_gives_bit_identical_results(name):
    # issue 18: seed= is the deprecated spelling of generator=; seed s is exactly
    # torch.Generator().manual_seed(s), and no argument is the old default seed 0
    call = SEEDED[name]
    model, x = build("mlp")
    with pytest.warns(DeprecationWarning, match=f"{name}: 'seed' is deprecated") as rec:
        old = call(model, x, seed=5)
    assert rec[0].filename == __file__  # the warning points at the caller's line
    assert torch.equal(old, call(model, x, generator=torch.Generator().manual_seed(5)))
    assert not torch.equal(old, call(model, x, generator=torch.Generator().manual_seed(6)))
    with pytest.warns(DeprecationWarning):
        zero = call(model, x, seed=0)
    assert torch.equal(call(model, x), zero)


def test_spectral_density_in_parameter_space_matches_exact():
    # N*C = 120 > P = 15: SLQ runs on the P x P operator; with P steps it is exact per probe
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 1, bias=False))
    x = torch.randn(120, 3)
    eigs = torch.linalg.eigvalsh(dense_fisher(model, x, "gaussian"))
    sigma = float(eigs.max()) / 10
    grid = torch.linspace(-6 * sigma, float(eigs.max()) + 6 * sigma, 600)
    g, dens = spectral_density(
        model, x, "gaussian", num_probes=30, lanczos_steps=15, grid=grid, sigma=sigma
    )
    exact = torch.exp(-0.5 * ((grid[:, None] - eigs[None]) / sigma) ** 2).sum(1)
    exact = exact / (eigs.numel() * sigma * (2 * torch.pi) ** 0.5)
    assert abs(float(torch.trapezoid(dens, g)) - 1) < 1e-4
    assert float(torch.trapezoid((dens - exact).abs(), g)) < 0.15


def test_measured_in_full_precision_inside_autocast():
    torch.manual_seed(0)
    model, x = build("mlp")
    model, x = model.float(), x.float()
    ref = fisher_eigenvalues(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fisher_eigenvalues(model, x)
    torch.testing.assert_close(got, ref)


def test_exact_k_beyond_n_times_c_is_zero_padded():
    torch.manual_seed(0)
    model, x = build("mlp")  # N*C = 12 < P = 99
    got = fisher_eigenvalues(model, x, k=20)
    ref = _dense_eigs(model, x, "categorical")
    assert got.shape == (20,)
    torch.testing.assert_close(got, ref[:20].clamp_min(0), rtol=1e-8, atol=1e-12)
