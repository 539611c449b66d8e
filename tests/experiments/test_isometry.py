import math

import pytest

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.experiments import isometry
from ortho_lightning.experiments.isometry import (
    first_crossing,
    isometry_at_init,
    median_steps,
    steps_to_target_report,
    steps_to_targets,
)


def test_orthogonal_net_at_zero_input_is_exactly_isometric():
    # sigma_b = 0: q* = 0, inputs are 0, tanh'(0) = 1, sigma_w = 1, so J = W_L ... W_1 is
    # orthogonal and every squared singular value is 1.
    row = isometry_at_init(depth=3, weights="orthogonal", width=12, sigma_b=0.0, n_inputs=2)
    assert row["sv2_mean"] == pytest.approx(1.0, abs=1e-10)
    assert row["sv2_var"] == pytest.approx(0.0, abs=1e-10)
    assert row["theory_sv2_var"] == pytest.approx(0.0, abs=1e-10)


def _product_of_gaussians_sv2_var(depth: int, n: int) -> float:
    """E[m2 - m1^2], m_k = tr((J J^T)^k) / n, for J = W_L ... W_1 with iid N(0, 1/n) entries of
    n x n W's (exact at finite n, by Wick's theorem on J_l = W_l J_{l-1}, A = J_{l-1} J_{l-1}^T):
    E[m1'^2] = E[m1^2] + 2 E[m2] / n^2 and E[m2'] = E[m1^2] + (1 + 1/n) E[m2], from J_0 = I.
    Infinite width: depth (the Fuss-Catalan variance); n = 2, depth 3: 5.25 (Monte Carlo over
    4e5 draws: 5.19, heavy-tailed)."""
    m1_sq = m2 = 1.0
    for _ in range(depth):
        m1_sq, m2 = m1_sq + 2 * m2 / n**2, m1_sq + (1 + 1 / n) * m2
    return m2 - m1_sq


def test_gaussian_net_spreads_the_spectrum_as_a_product_of_gaussians():
    # sigma_b = 0: the inputs sit at q* = 0 where tanh' = 1, so J = W_3 W_2 W_1 with sigma_w = 1
    rows = [isometry_at_init(depth=3, weights="gaussian", width=256, sigma_b=0.0, n_inputs=1,
                             seed=seed) for seed in range(16)]
    expected = _product_of_gaussians_sv2_var(3, 256)  # 3.023 (3 at infinite width)
    mean = sum(r["sv2_var"] for r in rows) / len(rows)
    # measured: 3.052 over these 16 networks, standard error 0.030
    assert mean == pytest.approx(expected, rel=0.04)
    assert rows[0]["sv2_mean"] == pytest.approx(1.0, abs=0.1)  # E[m1] = 1
    assert rows[0]["theory_sv2_var"] == pytest.approx(3.0, rel=1e-6)
    assert _product_of_gaussians_sv2_var(3, 10**9) == pytest.approx(3.0, rel=1e-6)


def test_first_crossing_uses_the_trailing_mean_and_never_counts_nan():
    steps, loss = [0, 10, 20, 30], [2.0, 0.8, 0.6, 0.2]
    # trailing means over 2 points: 2.0, 1.4, 0.7, 0.4
    assert first_crossing(steps, loss, 1.0, window=2) == 20
    assert first_crossing(steps, loss, 0.5, window=2) == 30
    assert first_crossing(steps, loss, 1.0) == 10
    assert first_crossing(steps, loss, 0.1) is None
    assert first_crossing(steps, [0.1, 0.5, 0.95, 0.99], 0.9, above=True, window=2) == 30
    assert first_crossing([0, 1, 2], [2.0, math.nan, 0.1], 1.0, window=2) is None
    assert first_crossing([0, 1, 2], [2.0, math.nan, 0.1], 1.0) == 2
    with pytest.raises(ConfigurationError, match="trailing_means: window must be an integer >= 1, got 0"):
        first_crossing(steps, loss, 1.0, window=0)


def test_median_steps_counts_a_seed_that_never_got_there_as_slowest():
    assert median_steps([10, 20, 10]) == 10
    assert median_steps([20, None, 20]) == 20
    assert median_steps([20, None, None]) is None
    assert median_steps([30, None]) is None  # two seeds: the later one


def _report_rows():
    loss = [[2.0, 0.9, 0.4], [2.0, 0.6, 0.9], [2.0, 0.8, 0.25]]
    acc = [[0.1, 0.85, 0.95], [0.1, 0.5, 0.7], [0.1, 0.9, 0.92]]
    rows = []
    for seed in range(3):
        for i, step in enumerate((0, 10, 20)):
            rows.append({"cell_id": f"c{seed}", "depth": 4, "scheme": "orthogonal", "seed": seed,
                         "step": step, "train/loss_step": loss[seed][i],
                         "train/acc_step": acc[seed][i]})
        rows.append({"cell_id": f"c{seed}", "depth": 4, "scheme": "orthogonal", "seed": seed,
                     "step": 20, "val/acc": 0.5})  # a validation-only row is skipped
    return ["cell_id", "depth", "scheme", "seed", "step", "train/acc_step", "train/loss_step",
            "val/acc"], rows


def test_steps_to_target_report_against_a_hand_computed_table(tmp_path, monkeypatch):
    monkeypatch.setattr(isometry, "REPORT_WINDOW", 1)
    columns, rows = _report_rows()
    # loss: seed 0 hits 1.0/0.5 at 10/20, seed 1 hits 1.0 at 10 only, seed 2 hits all at 10/20/20
    table = steps_to_targets(columns, rows, "train/loss_step", (1.0, 0.5, 0.3))
    assert table == {(4, "orthogonal"): {1.0: [10, 10, 10], 0.5: [20, None, 20], 0.3: [None, None, 20]}}
    text = steps_to_target_report(columns, rows, tmp_path)
    assert "| 4 | orthogonal | 10 (3/3) | 20 (2/3) | — (1/3) |" in text
    # accuracy >= 0.8: seeds 0 and 2 at step 10; >= 0.9: seed 0 at 20, seed 2 at 10
    assert "| 4 | orthogonal | 10 (2/3) | 20 (2/3) |" in text
    # lowest and final loss per seed (seed 1 went down to 0.6 and back up to 0.9)
    assert "| 4 | orthogonal | 0.40, 0.60, 0.25 | 0.40, 0.90, 0.25 |" in text
    assert (tmp_path / "steps_to_target_vs_depth.png").is_file()
