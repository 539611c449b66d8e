"""Figures and distances for docs/theory.md: the tanh phase diagram, and for orthogonal and
Gaussian weights at depths 8 and 32 the measured squared Jacobian singular values of two wide
(width 1000) tanh MLPs at a critical point (sigma_b^2 = 0.05) beside the free-probability
prediction, with the Wasserstein-1 distances and the noise floor (W1 between the two draws).

    python scripts/theory_figures.py [--out docs/figures] [--width 1000] [--seed 1234]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ortho_lightning.init import critical_point  # noqa: E402
from ortho_lightning.theory import jacobian_moments, jacobian_spectrum_density, wasserstein1  # noqa: E402
from ortho_lightning.theory.phase_diagram import phase_diagram  # noqa: E402
from ortho_lightning.theory.simulate import random_mlp_jacobian_eigenvalues  # noqa: E402

SIGMA_B = math.sqrt(0.05)
DEPTHS = (8, 32)


def overlay(ax, eig: torch.Tensor, spec, title: str) -> None:
    """Histogram of log10(lambda) of the measured eigenvalues and the predicted density of
    log10(lambda), i.e. lambda * ln(10) * p(lambda); atoms as vertical lines."""
    e = eig.clamp_min(1e-30).log10().numpy()
    ax.hist(e, bins=60, density=True, alpha=0.5, label="measured (2 nets, width 1000)")
    g, d = spec.grid.numpy(), spec.density.numpy()
    keep = g > 10 ** (e.min() - 1)
    ax.plot(np.log10(g[keep]), (g * d * math.log(10))[keep], "k-", lw=1.5, label="free probability")
    for a, p in zip(spec.atoms.tolist(), spec.atom_masses.tolist()):
        if a > 0:
            ax.axvline(math.log10(a), color="r", label=f"atom, mass {p:.2f}")
    ax.set_xlabel(r"$\log_{10} \lambda$ ($\lambda$: eigenvalue of $JJ^T$)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/figures")
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    fig = phase_diagram("tanh", resolution=16, line_points=8)
    fig.savefig(out / "theory_phase_diagram.png", dpi=120, bbox_inches="tight")
    plt.close(fig)

    cp = critical_point("tanh", sigma_b=SIGMA_B)
    rows = []
    for weights in ("orthogonal", "gaussian"):
        gen = torch.Generator().manual_seed(args.seed)  # the seed of the test
        draws = [
            random_mlp_jacobian_eigenvalues(
                "tanh", cp.sigma_w, SIGMA_B, cp.q_star, DEPTHS, args.width, weights, gen
            )
            for _ in range(2)
        ]
        for depth in DEPTHS:
            spec = jacobian_spectrum_density("tanh", cp.sigma_w, SIGMA_B, depth, weights,
                                             q_star=cp.q_star)
            mo = jacobian_moments("tanh", cp.sigma_w, SIGMA_B, depth, weights, q_star=cp.q_star)
            e1, e2 = draws[0][depth], draws[1][depth]
            both = torch.cat([e1, e2])
            row = {
                "weights": weights,
                "depth": depth,
                "w1_draw1": wasserstein1(e1, spec),
                "w1_draw2": wasserstein1(e2, spec),
                "w1_pooled": wasserstein1(both, spec),
                "noise_floor": wasserstein1(e1, e2),
                "mean_theory": mo.mean,
                "mean_measured": float(both.mean()),
                "var_theory": mo.variance,
                "var_measured": float(both.var()),
            }
            rows.append(row)
            print(json.dumps(row))
            fig, ax = plt.subplots(figsize=(5, 3.5))
            overlay(ax, both, spec, f"tanh, {weights}, L={depth}, sigma_w={cp.sigma_w:.4f}, "
                    f"sigma_b^2=0.05: W1 {row['w1_pooled']:.3f} (floor {row['noise_floor']:.3f})")
            fig.savefig(out / f"theory_jacobian_{weights}_L{depth}.png", dpi=120,
                        bbox_inches="tight")
            plt.close(fig)
    (out / "theory_distances.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
