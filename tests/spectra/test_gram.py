import pytest
import torch

from ortho_lightning.spectra import fisher_gram
from ortho_lightning.spectra.gram import structured_factors
from tests.spectra._models import build, dense_fisher


def _dense_dual(model, x, likelihood):
    """(1/N) G G^T built from explicit per-sample Jacobians and H^{1/2} = S (reference)."""
    params = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    rows = []
    for xi in x:
        f = model(xi[None])[0]
        jac = torch.stack(
            [
                torch.cat(
                    [g.reshape(-1) for g in torch.autograd.grad(fc, params, retain_graph=True)]
                )
                for fc in f
            ]
        )
        if likelihood == "categorical":
            p = torch.softmax(f.detach(), -1)
            h = torch.diag(p) - torch.outer(p, p)
        else:
            h = torch.eye(f.numel())
        ev, vec = torch.linalg.eigh(h)
        s = vec @ torch.diag(ev.clamp_min(0).sqrt()) @ vec.T  # symmetric square root
        rows.append(s @ jac)
    g = torch.cat(rows)
    return g, g @ g.T / x.shape[0]


GRAM_KINDS = [
    "mlp",
    "cnn",
    "cnn1d",
    "seqlinear",
    "timemajor",
    "inplace",
    "shared",
    "RNN",
    "LSTM",
    "GRU",
    "LSTM2",
    "GRU2",
    "RNN2",
    "GRU-bidirectional",
    "parametrized",
]


@pytest.mark.parametrize("kind", GRAM_KINDS)
@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_structured_and_generic_routes_give_the_same_spectrum(kind, likelihood):
    torch.manual_seed(7)
    model, x = build(kind)
    fast = torch.linalg.eigvalsh(fisher_gram(model, x, likelihood))
    slow = torch.linalg.eigvalsh(fisher_gram(model, x, likelihood, structured=False, chunk_size=2))
    _, ref = _dense_dual(model, x, likelihood)
    torch.testing.assert_close(fast, torch.linalg.eigvalsh(ref), rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(slow, torch.linalg.eigvalsh(ref), rtol=1e-8, atol=1e-12)


def test_gaussian_gram_is_the_ntk():
    # for H = I the dual Gram is exactly (1/N) J J^T (the empirical NTK), entry by entry
    torch.manual_seed(1)
    model, x = build("cnn")
    jac, ref = _dense_dual(model, x, "gaussian")
    torch.testing.assert_close(fisher_gram(model, x, "gaussian"), ref)


@pytest.mark.parametrize("budget", [1, 2**30], ids=["materialised-rows", "pairwise-positions"])
@pytest.mark.parametrize("kind", ["cnn", "cnn1d", "seqlinear"])
def test_both_position_strategies(kind, budget):
    torch.manual_seed(2)
    model, x = build(kind)
    _, ref = _dense_dual(model, x, "gaussian")
    got = fisher_gram(model, x, "gaussian", budget=budget)
    torch.testing.assert_close(got, ref)
    diag = fisher_gram(model, x, "gaussian", budget=budget, diagonal=True)
    torch.testing.assert_close(diag, torch.diagonal(ref))


def test_diagonal_sums_to_the_trace():
    torch.manual_seed(3)
    model, x = build("mlp")
    diag = fisher_gram(model, x, "categorical", diagonal=True)
    torch.testing.assert_close(diag.sum(), torch.trace(dense_fisher(model, x, "categorical")))


@pytest.mark.parametrize(
    "kind,structured_layers,rest",
    [
        ("mlp", 3, []),
        ("shared", 2, ["mid.weight", "mid.bias"]),
        ("parametrized", 2, ["2.bias", "2.parametrizations.weight.original"]),
        ("LSTM", 3, []),  # unrolled: W_ih and W_hh as Linear maps over time steps, plus fc
        ("timemajor", 1, ["proj.weight", "proj.bias"]),  # not batch-first: generic route
        ("GRU2", 5, []),
        (
            "GRU-bidirectional",
            1,
            [n for n, _ in build("GRU-bidirectional")[0].rnn.named_parameters(prefix="rnn")],
        ),
    ],
)
def test_which_parameters_take_the_structured_route(kind, structured_layers, rest):
    torch.manual_seed(0)
    model, x = build(kind)
    fac = structured_factors(model, x)
    assert len(fac.layers) == structured_layers
    assert fac.rest == rest


@pytest.mark.parametrize("rows", [300, 257, 40])
def test_row_gram_blocks_equal_the_full_product(rows):
    """The blocked upper-triangle Gram (used for >= 256 rows) equals g g^T, added to ``out``."""
    from ortho_lightning.spectra.gram import row_gram

    g = torch.randn(rows, 7, generator=torch.Generator().manual_seed(rows))
    start = torch.randn(rows, rows, generator=torch.Generator().manual_seed(1))
    got = row_gram(g, start.clone())
    torch.testing.assert_close(got, start + g @ g.T, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(row_gram(g), g @ g.T, rtol=1e-12, atol=1e-12)
