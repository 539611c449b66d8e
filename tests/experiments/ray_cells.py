"""A measurement function for the Ray backend tests: it logs every call to a file (Ray workers
are other processes) and fails or kills its worker once on request."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def _once(path: str, key: str) -> bool:
    """True (and the request file removed) when ``path`` asks for ``key``."""
    request = Path(path)
    if request.is_file() and request.read_text() == key:
        request.unlink()
        return True
    return False


def logged(a: float, b: int, log: str, fail: str, die: str, steps: int = 3,
           seed: int = 0) -> list[dict]:
    """Rows ``loss = a * b * step**2`` plus a seeded random number; appends ``a b seed pid`` to
    ``log``. If the file ``fail`` holds ``"a b seed"`` it is removed and the call raises; if
    ``die`` does, it is removed and the process exits at once (a killed worker)."""
    with open(log, "a") as fh:
        fh.write(f"{a} {b} {seed} {os.getpid()}\n")
    key = f"{a} {b} {seed}"
    if _once(die, key):
        os._exit(1)
    if _once(fail, key):
        raise RuntimeError(f"simulated failure at {key}")
    noise = torch.rand(()).item()
    return [{"step": s, "loss": a * b * s**2, "noise": noise} for s in range(steps)]
