"""The phase-diagram figure: its critical line has chi_1 = 1 (mean-field record), and its
colour map is log chi_1 with the sign of the phase."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.theory import mean_field
from ortho_lightning.theory.phase_diagram import phase_diagram

matplotlib.use("Agg")


def test_critical_line_and_colours():
    fig = phase_diagram("tanh", sigma_w2=(0.5, 3.0), sigma_b2=(0.0, 0.3), resolution=4,
                        line_points=3)
    w2, b2 = fig.axes[0].lines[0].get_xydata().T
    assert w2[0] == pytest.approx(1.0, abs=1e-6)  # tanh, sigma_b = 0: sigma_w = 1
    for x, y in zip(w2, b2):
        mf = mean_field("tanh", math.sqrt(x), math.sqrt(y))
        assert mf.chi_1 == pytest.approx(1.0, abs=1e-6) and mf.phase == "critical"
    values = fig.axes[0].collections[0].get_array().reshape(4, 4)
    grid_w2 = np.linspace(0.5, 3.0, 4)
    # row sigma_b^2 = 0.3, left (sigma_w^2 = 0.5) ordered, right (3.0) chaotic
    assert values[-1, 0] < 0 < values[-1, -1]
    assert values[-1, 0] == pytest.approx(math.log(mean_field("tanh", math.sqrt(grid_w2[0]),
                                                              math.sqrt(0.3)).chi_1))


def test_bad_ranges():
    with pytest.raises(ConfigurationError, match=r"phase_diagram: sigma_w2 must be a range \(lo, hi\) with 0 < lo < hi, got \(2.0, 1.0\)"):
        phase_diagram("tanh", sigma_w2=(2.0, 1.0))
