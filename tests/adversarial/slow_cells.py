"""A slow measurement function for the concurrent-runner tests: it logs who computed each cell."""

from __future__ import annotations

import os
import time


def slow(a: int, log: str, wait: float = 0.4, seed: int = 0) -> dict[str, float]:
    """Append ``<a> <seed> <pid>`` to ``log`` and sleep ``wait`` seconds; one row."""
    with open(log, "a") as fh:
        fh.write(f"{a} {seed} {os.getpid()}\n")
    time.sleep(wait)
    return {"step": 0, "value": float(a)}
