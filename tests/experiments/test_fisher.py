import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.experiments.fisher import fisher_at_init, largest_stable_lr


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


def test_fixed_point_inputs_measure_without_mnist():
    rows = [fisher_at_init(depth=d, weights="orthogonal", width=32, n_single=2, n_batch=4,
                           inputs="fixed_point") for d in (2, 8)]
    assert all(r["single_max_over_L"] > 0 for r in rows)
    assert "stable_lr" not in rows[0]


def test_unknown_inputs_is_named():
    with pytest.raises(ConfigurationError, match="inputs must be 'mnist' or 'fixed_point', received 'cifar'"):
        fisher_at_init(depth=2, weights="orthogonal", width=8, inputs="cifar")


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
