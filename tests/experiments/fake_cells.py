"""Measurement functions for the runner tests: cheap, deterministic, and counting their calls."""

from __future__ import annotations

import torch

from ortho_lightning.experiments.registry import register_experiment

CALLS: list[dict] = []
FAIL_ON: set[tuple] = set()


@register_experiment  # configs may name only registered functions
def quadratic(a: float, b: int = 1, steps: int = 3, seed: int = 0) -> list[dict]:
    """Rows ``loss = a * b * step**2`` plus a seeded random number; raises for (a, b, seed) in
    FAIL_ON (once), to simulate a crash half-way through a grid."""
    CALLS.append({"a": a, "b": b, "seed": seed})
    if (a, b, seed) in FAIL_ON:
        FAIL_ON.discard((a, b, seed))
        raise RuntimeError(f"simulated crash at a={a} b={b} seed={seed}")
    noise = torch.rand(()).item()
    return [{"step": s, "loss": a * b * s**2, "noise": noise} for s in range(steps)]
