import pytest
import torch

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.spectra.lanczos import gaussian_density, lanczos_topk, slq_nodes
from ortho_lightning.spectra.linear_operator import LinearOperator, MatvecOperator


def _op(a: torch.Tensor) -> MatvecOperator:
    return MatvecOperator(lambda v: a @ v, a.shape[0], dtype=a.dtype)


def _psd(eigs: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(eigs.numel(), eigs.numel(), generator=g))
    return q @ torch.diag(eigs) @ q.T


SPECTRA = {
    "decaying": torch.logspace(0, -6, 60, dtype=torch.float64),
    "clustered-top": torch.tensor(
        [5.0, 4.999, 4.998] + [1 - i / 56 for i in range(57)], dtype=torch.float64
    ),
    "low-rank": torch.tensor([3 - 0.4 * i for i in range(6)] + [0.0] * 54, dtype=torch.float64),
}


@pytest.mark.parametrize("name", list(SPECTRA))
@pytest.mark.parametrize("k", [1, 5])
def test_top_k_of_known_spectrum(name, k):
    eigs = SPECTRA[name]
    a = _psd(eigs, 0)
    top = lanczos_topk(_op(a), k, tol=1e-10)
    torch.testing.assert_close(top, eigs.sort(descending=True).values[:k], rtol=1e-8, atol=1e-12)


def test_k_beyond_rank_restarts_and_returns_zeros():
    eigs = SPECTRA["low-rank"]
    a = _psd(eigs, 1)
    top = lanczos_topk(_op(a), 9, tol=1e-10)
    torch.testing.assert_close(top, eigs[:9], rtol=1e-8, atol=1e-10)


def test_generator_changes_the_start_but_not_the_answer():
    a = _psd(SPECTRA["decaying"], 2)
    one = lanczos_topk(_op(a), 3, tol=1e-10, generator=torch.Generator().manual_seed(1))
    two = lanczos_topk(_op(a), 3, tol=1e-10, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(one, two)


@pytest.mark.filterwarnings("ignore:Lanczos did not reach")
def test_deprecated_seed_is_the_generator_with_that_seed_bit_for_bit():
    # a clustered top converges slowly: the last Ritz digits depend on the start vector
    a = _psd(SPECTRA["clustered-top"], 5)
    kw = {"tol": 1e-3, "max_iter": 8}
    with pytest.warns(DeprecationWarning, match="'seed' is deprecated, use 'generator'"):
        old = lanczos_topk(_op(a), 3, seed=7, **kw)
    new = lanczos_topk(_op(a), 3, generator=torch.Generator().manual_seed(7), **kw)
    other = lanczos_topk(_op(a), 3, generator=torch.Generator().manual_seed(8), **kw)
    assert torch.equal(old, new)
    assert not torch.equal(old, other)  # the seed matters at this tolerance
    # the default is the old default seed 0
    with pytest.warns(DeprecationWarning):
        zero = lanczos_topk(_op(a), 3, seed=0, **kw)
    assert torch.equal(lanczos_topk(_op(a), 3, **kw), zero)
    with pytest.raises(ConfigurationError, match="got both 'seed' and its new name 'generator'"):
        lanczos_topk(_op(a), 3, seed=1, generator=torch.Generator())
    with pytest.raises(ConfigurationError, match="lanczos_topk: generator must be a torch.Gen"):
        lanczos_topk(_op(a), 3, generator=3.5)


def test_operator_checks_its_operand():
    a = _psd(SPECTRA["decaying"], 6)
    op = _op(a)
    assert isinstance(op, LinearOperator) and op.shape == (60, 60)
    v = torch.randn(60, 2, dtype=torch.float64)
    torch.testing.assert_close(op @ v, a @ v)
    torch.testing.assert_close(op.matvec(v[:, 0]), a @ v[:, 0])
    with pytest.raises(ShapeError, match=r"MatvecOperator: the operand must be a tensor of "
                       r"shape \(60,\) or \(60, m\), got torch.Size\(\[59\]\)"):
        op @ torch.zeros(59, dtype=torch.float64)
    with pytest.raises(ShapeError, match=r"must be a tensor of shape \(60,\), got"):
        op.matvec(v)
    with pytest.raises(ShapeError, match="must be torch.float64 on cpu, got 'torch.float32 on"):
        op @ torch.zeros(60, dtype=torch.float32)
    with pytest.raises(ShapeError, match="got <class 'list'>"):
        op @ [0.0] * 60
    with pytest.raises(ConfigurationError, match="lanczos_topk: op must be a LinearOperator"):
        lanczos_topk(lambda v: a @ v, 3)
    with pytest.raises(ConfigurationError, match="lanczos_topk: k must be at most the "):
        lanczos_topk(op, 61)


def test_unconverged_warns():
    a = _psd(SPECTRA["clustered-top"], 3)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        lanczos_topk(_op(a), 3, tol=1e-12, max_iter=4)


def test_slq_with_full_krylov_space_is_exact_per_probe():
    # with as many steps as the dimension, each probe's quadrature reproduces v^T f(A) v
    eigs = torch.linspace(0.1, 2.0, 12)
    a = _psd(eigs, 4)
    nodes = slq_nodes(_op(a), num_probes=50, steps=12, generator=torch.Generator().manual_seed(0))
    for _, w in nodes:
        assert abs(float(w.sum()) - 1) < 1e-10
    # averaged moments: E[v^T A^2 v] = tr(A^2)/n for unit Rademacher v
    second = sum(float((w * theta**2).sum()) for theta, w in nodes) / len(nodes)
    assert abs(second - float((eigs**2).mean())) < 0.05 * float((eigs**2).mean())
    grid = torch.linspace(-1, 3, 2001)
    dens = gaussian_density(nodes, grid, 0.05)
    assert abs(float(torch.trapezoid(dens, grid)) - 1) < 1e-8
