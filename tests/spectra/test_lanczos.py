import pytest
import torch

from ortho_lightning.spectra.lanczos import gaussian_density, lanczos_topk, slq_nodes


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
    top = lanczos_topk(lambda v: a @ v, 60, k, tol=1e-10, dtype=torch.float64)
    torch.testing.assert_close(top, eigs.sort(descending=True).values[:k], rtol=1e-8, atol=1e-12)


def test_k_beyond_rank_restarts_and_returns_zeros():
    eigs = SPECTRA["low-rank"]
    a = _psd(eigs, 1)
    top = lanczos_topk(lambda v: a @ v, 60, 9, tol=1e-10, dtype=torch.float64)
    torch.testing.assert_close(top, eigs[:9], rtol=1e-8, atol=1e-10)


def test_seed_changes_the_start_but_not_the_answer():
    a = _psd(SPECTRA["decaying"], 2)
    one = lanczos_topk(lambda v: a @ v, 60, 3, tol=1e-10, seed=1, dtype=torch.float64)
    two = lanczos_topk(lambda v: a @ v, 60, 3, tol=1e-10, seed=2, dtype=torch.float64)
    torch.testing.assert_close(one, two)


def test_unconverged_warns():
    a = _psd(SPECTRA["clustered-top"], 3)
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        lanczos_topk(lambda v: a @ v, 60, 3, tol=1e-12, max_iter=4, dtype=torch.float64)


def test_slq_with_full_krylov_space_is_exact_per_probe():
    # with as many steps as the dimension, each probe's quadrature reproduces v^T f(A) v
    eigs = torch.linspace(0.1, 2.0, 12)
    a = _psd(eigs, 4)
    nodes = slq_nodes(lambda v: a @ v, 12, num_probes=50, steps=12, seed=0, dtype=torch.float64)
    for _, w in nodes:
        assert abs(float(w.sum()) - 1) < 1e-10
    # averaged moments: E[v^T A^2 v] = tr(A^2)/n for unit Rademacher v
    second = sum(float((w * theta**2).sum()) for theta, w in nodes) / len(nodes)
    assert abs(second - float((eigs**2).mean())) < 0.05 * float((eigs**2).mean())
    grid = torch.linspace(-1, 3, 2001)
    dens = gaussian_density(nodes, grid, 0.05)
    assert abs(float(torch.trapezoid(dens, grid)) - 1) < 1e-8
