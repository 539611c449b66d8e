"""Callables a hostile config could name: each leaves a mark, so a test can tell whether it ran."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARK = "ran.txt"


def report_hook(columns: list[str], rows: list[dict[str, Any]], figures_dir: Path) -> str:
    """A report function from outside the package: writes ``MARK`` beside the figures."""
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    (Path(figures_dir) / MARK).write_text("ran")
    return "unregistered hook ran"


def cell(a: float, seed: int = 0) -> dict[str, float]:
    """A measurement function from outside the package (not registered)."""
    return {"step": 0, "value": a * seed}
