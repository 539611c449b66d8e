import pytest

from ortho_lightning.experiments.isometry import isometry_at_init, steps_to_loss


def test_orthogonal_net_at_zero_input_is_exactly_isometric():
    # sigma_b = 0: q* = 0, inputs are 0, tanh'(0) = 1, sigma_w = 1, so J = W_L ... W_1 is
    # orthogonal and every squared singular value is 1.
    row = isometry_at_init(depth=3, weights="orthogonal", width=12, sigma_b=0.0, n_inputs=2)
    assert row["sv2_mean"] == pytest.approx(1.0, abs=1e-10)
    assert row["sv2_var"] == pytest.approx(0.0, abs=1e-10)
    assert row["theory_sv2_var"] == pytest.approx(0.0, abs=1e-10)


def test_gaussian_net_spreads_the_spectrum():
    row = isometry_at_init(depth=3, weights="gaussian", width=12, sigma_b=0.0, n_inputs=2)
    assert row["sv2_var"] > 0.5  # theory: 3 (one per Gaussian layer) at infinite width
    assert row["theory_sv2_var"] == pytest.approx(3.0, rel=1e-6)


def test_steps_to_loss_takes_first_crossing_and_median_over_seeds():
    rows = []
    for seed, curve in enumerate([[2.0, 0.9, 0.4], [2.0, 1.5, 0.9], [2.0, 0.8, 0.45]]):
        for step, loss in zip((0, 10, 20), curve):
            rows.append({"cell_id": f"c{seed}", "depth": 4, "seed": seed, "step": step,
                         "train/loss_step": loss})
    text = steps_to_loss(["cell_id", "depth", "seed", "step", "train/loss_step"], rows, None,
                         targets=(1.0, 0.5))
    assert "| 4 | 10 (3/3) | 20 (2/3) |" in text
