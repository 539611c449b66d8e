"""Order-to-chaos phase diagram over (sigma_w^2, sigma_b^2) (Poole et al. 2016, Fig. 2;
Schoenholz et al. 2017): ``log chi_1`` as a colour map (negative: ordered, positive: chaotic)
and the critical line chi_1 = 1 from :func:`ortho_lightning.theory.criticality.critical_point`."""

from __future__ import annotations

import numpy as np

from ortho_lightning.activations import Activation, activation_name
from ortho_lightning.exceptions import NoCriticalPointError
from ortho_lightning.theory.criticality import critical_point
from ortho_lightning.theory.quadrature import chi1, variance_fixed_point
from ortho_lightning.validation import check_int, fail


def chi1_grid(
    activation: str | Activation, sigma_w2: np.ndarray, sigma_b2: np.ndarray
) -> np.ndarray:
    """``chi_1`` at the variance fixed point for every pair: array of shape
    ``(len(sigma_b2), len(sigma_w2))``; ``nan`` where q* diverges."""
    out = np.full((len(sigma_b2), len(sigma_w2)), np.nan)
    for i, b2 in enumerate(sigma_b2):
        for j, w2 in enumerate(sigma_w2):
            sw, sb = float(np.sqrt(w2)), float(np.sqrt(b2))
            try:
                q = variance_fixed_point(activation, sw, sb)
            except NoCriticalPointError:
                continue
            out[i, j] = float(chi1(q, activation, sw))
    return out


def critical_line(activation: str | Activation, sigma_b2: np.ndarray) -> np.ndarray:
    """``sigma_w^2`` on the critical line for each ``sigma_b^2`` (``nan`` where none)."""
    out = np.full(len(sigma_b2), np.nan)
    for i, b2 in enumerate(sigma_b2):
        try:
            out[i] = critical_point(activation, sigma_b=float(np.sqrt(b2))).sigma_w ** 2
        except NoCriticalPointError:
            pass
    return out


def phase_diagram(
    activation: str | Activation = "tanh",
    sigma_w2: tuple[float, float] = (0.5, 4.0),
    sigma_b2: tuple[float, float] = (0.0, 0.5),
    resolution: int = 16,
    line_points: int = 8,
    ax=None,
):
    """A matplotlib figure of ``log chi_1`` over ``sigma_w2`` x ``sigma_b2`` (ranges of the
    squared scales), with the critical line; ``resolution`` cells per axis, ``line_points``
    points on the line. Draws into ``ax`` when given. Returns the ``Figure``; its first line
    (``fig.axes[0].lines[0]``) holds the critical line's (sigma_w^2, sigma_b^2) points."""
    import matplotlib

    if ax is None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    check_int("phase_diagram", "resolution", resolution, minimum=2)
    check_int("phase_diagram", "line_points", line_points, minimum=2)
    if not 0 < sigma_w2[0] < sigma_w2[1]:
        fail("phase_diagram", "sigma_w2", "a range (lo, hi) with 0 < lo < hi", sigma_w2)
    if not 0 <= sigma_b2[0] < sigma_b2[1]:
        fail("phase_diagram", "sigma_b2", "a range (lo, hi) with 0 <= lo < hi", sigma_b2)
    w2 = np.linspace(*sigma_w2, resolution)
    b2 = np.linspace(*sigma_b2, resolution)
    chi = chi1_grid(activation, w2, b2)
    b2_line = np.linspace(*sigma_b2, line_points)
    w2_line = critical_line(activation, b2_line)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4))
    else:
        fig = ax.figure
    ax.plot(w2_line, b2_line, "k-", lw=2, label=r"critical: $\chi_1 = 1$")
    log_chi = np.log(chi)
    lim = float(np.nanmax(np.abs(log_chi))) if np.isfinite(log_chi).any() else 1.0
    mesh = ax.pcolormesh(w2, b2, log_chi, cmap="RdBu_r", vmin=-lim, vmax=lim, shading="nearest")
    fig.colorbar(mesh, ax=ax, label=r"$\log \chi_1$ (<0 ordered, >0 chaotic)")
    ax.set_xlim(*sigma_w2)
    ax.set_ylim(*sigma_b2)
    ax.set_xlabel(r"$\sigma_w^2$")
    ax.set_ylabel(r"$\sigma_b^2$")
    ax.set_title(f"mean-field phase diagram: {activation_name(activation)}")
    ax.legend(loc="upper left")
    return fig
