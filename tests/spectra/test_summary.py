import math

import pytest
import torch

from ortho_lightning.exceptions import ConfigurationError, ShapeError
from ortho_lightning.spectra import summarize


def test_singular_summary_closed_form():
    s = torch.tensor([[0.5, 1.0], [1.05, 2.0]])
    out = summarize(s)
    assert out["mean_sq"] == pytest.approx((0.25 + 1 + 1.1025 + 4) / 4)
    assert out["max"] == 2.0 and out["min"] == 0.5
    assert out["condition"] == pytest.approx(4.0)
    mean = (0.5 + 1 + 1.05 + 2) / 4
    assert out["std"] == pytest.approx(
        math.sqrt(sum((v - mean) ** 2 for v in (0.5, 1, 1.05, 2)) / 4)
    )
    assert out["frac_within_10pct"] == pytest.approx(0.5)
    assert set(out) == {"mean_sq", "max", "min", "condition", "std", "frac_within_10pct"}


def test_condition_of_singular_spectrum_with_zero_is_inf():
    assert summarize(torch.tensor([0.0, 1.0]))["condition"] == math.inf


def test_fisher_summary_and_sokol_park_ratio():
    eig = torch.tensor([4.0, 1.0, 0.0, 1.0])
    jac = torch.tensor([[0.5, 1.0], [2.0, 0.1]])
    out = summarize(eig, kind="fisher", jacobian_sv=jac)
    assert out == pytest.approx(
        {"max": 4.0, "trace": 6.0, "mean": 1.5, "max_over_jacobian_sq": 1.0}
    )
    assert set(summarize(eig, kind="fisher")) == {"max", "trace", "mean"}


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"values": torch.ones(2), "kind": "hessian"}, ConfigurationError, "kind must be one of"),
        ({"values": torch.ones(0)}, ShapeError, "non-empty"),
        ({"values": [1.0]}, ShapeError, "non-empty tensor"),
        (
            {"values": torch.ones(2), "kind": "fisher", "jacobian_sv": torch.ones(0)},
            ShapeError,
            "jacobian_sv must be non-empty",
        ),
    ],
    ids=["kind", "empty", "not-tensor", "empty-jacobian"],
)
def test_bad_input_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        summarize(**kwargs)
