"""Wasserstein-1 against scipy.stats.wasserstein_distance and exact values with atoms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from ortho_lightning.exceptions import ShapeError
from ortho_lightning.theory import SpectralDensity, wasserstein1
from ortho_lightning.theory.distance import _from_grid


def _spectrum(edges, density, atoms=(), masses=()):
    e = torch.as_tensor(edges, dtype=torch.float64)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return SpectralDensity(0.5 * (e[1:] + e[:-1]), t(density), e.diff(), e, t(atoms), t(masses))


@pytest.mark.parametrize("sizes", [(50, 50), (37, 80)], ids=["equal", "unequal"])
def test_two_samples_match_scipy(sizes):
    rng = np.random.default_rng(0)
    a, b = rng.gamma(2.0, size=sizes[0]), rng.gamma(2.5, size=sizes[1])
    assert wasserstein1(torch.as_tensor(a), torch.as_tensor(b)) == pytest.approx(
        wasserstein_distance(a, b), rel=1e-12
    )


def test_samples_against_uniform_density():
    # uniform on [0, 2]: W1 = integral |F_n(x) - x / 2| dx, against scipy on a fine discretization
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 2, size=200)
    edges = np.linspace(0, 2, 4001)
    spec = _spectrum(edges, np.full(4000, 0.5))
    fine = 0.5 * (edges[1:] + edges[:-1])
    ref = wasserstein_distance(x, fine)
    assert wasserstein1(torch.as_tensor(x), spec) == pytest.approx(ref, abs=1e-6)


def test_atoms_are_point_masses():
    empty = _spectrum([0.0, 1.0], [0.0])
    s = torch.full((10,), 0.25, dtype=torch.float64)
    # all samples at 0.25, the law a point mass at 1.5: W1 = 1.25
    spec = SpectralDensity(empty.grid, empty.density, empty.weights, empty.edges,
                           torch.tensor([1.5], dtype=torch.float64),
                           torch.tensor([1.0], dtype=torch.float64))
    assert wasserstein1(s, spec) == pytest.approx(1.25, abs=1e-12)
    # half mass at 0, half uniform on [1, 3]; samples all at 0: W1 = 0.5 * E[U(1, 3)] = 1
    mixed = _spectrum(np.linspace(1, 3, 101), np.full(100, 0.25), [0.0], [0.5])
    assert wasserstein1(torch.zeros(7), mixed) == pytest.approx(1.0, abs=1e-12)


def test_grid_density_pair_is_accepted_and_renormalized():
    grid = torch.linspace(0, 1, 1001, dtype=torch.float64)
    density = 3.0 * torch.ones_like(grid)  # unnormalized uniform
    x = torch.rand(300, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = wasserstein1(x, _from_grid(grid, torch.ones_like(grid)))
    assert wasserstein1(x, (grid, density)) == pytest.approx(ref, rel=1e-12)
    assert ref == pytest.approx(wasserstein_distance(x.numpy(), grid.numpy()), abs=2e-3)


@pytest.mark.parametrize(
    ("samples", "reference", "match"),
    [
        (torch.zeros(0), torch.ones(3), r"^wasserstein1: samples must be at least 1 value, got \(0,\)$"),
        (torch.tensor([1.0, float("nan"), float("inf")]), torch.ones(3),
         r"^wasserstein1: samples must be finite values \(count of non-finite ones shown\), got 2$"),
        (torch.ones(3), (torch.ones(4), torch.ones(3)), r"^wasserstein1: reference \(grid, density\) must be "
         r"two 1-d tensors of the same size >= 2 \(their shapes shown\), got \(\(4,\), \(3,\)\)$"),
    ],
    ids=["empty", "nan", "shapes"],
)
def test_bad_input_messages(samples, reference, match):
    with pytest.raises(ShapeError, match=match):
        wasserstein1(samples, reference)
