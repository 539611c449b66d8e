import math

import torch

from ortho_lightning.experiments.grid import load_grid
from ortho_lightning.experiments.sokol_park import (
    fisher_at_q_star,
    pearson,
    q_star_correlation,
)


def test_pearson_matches_torch_corrcoef():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(20, generator=gen, dtype=torch.float64), torch.randn(20, generator=gen, dtype=torch.float64)
    b = b + 0.7 * a
    ref = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert math.isclose(pearson(a.tolist(), b.tolist()), ref, rel_tol=1e-12)
    assert math.isnan(pearson([1.0, 2.0], [3.0, 4.0]))
    assert math.isnan(pearson([1.0, 1.0, 1.0], [3.0, 4.0, 5.0]))


def test_a_cell_at_q_star_measures_and_bounds(mnist_dir):
    row = fisher_at_q_star(0.5, "orthogonal", depth=3, width=16, n_batch=8,
                           data_dir=str(mnist_dir), seed=1)
    # the input layer is matched to the batch's second moment (exact for isotropic inputs; MNIST
    # is not, so q_1 lands near q*, not on it); unmatched it would be sigma_w^2 m2 = 1.69
    assert math.isclose(row["q_first"], 0.5, rel_tol=0.3), row["q_first"]
    assert row["bound"] >= row["fisher_max"] * (1 - 1e-10)
    assert row["bound_emp"] >= row["fisher_emp_max"] * (1 - 1e-10)
    assert row["jac_sv_max_sq"] > 0 and row["jac_hidden_sv_max_sq"] > 0
    text = q_star_correlation([], [{**row, "weights": "orthogonal", "q_star": 0.5}] * 3, None)
    assert "| orthogonal | 0.5 |" in text


def test_the_grid_is_the_papers_sweep():
    grid = load_grid("recipes/experiments/sokol_park_qstar.yaml")
    assert grid.axes["q_star"] == [0.0001, 0.015625, 0.5, 8.0]
    assert len(grid.cells) == 4 * 2 * 5
