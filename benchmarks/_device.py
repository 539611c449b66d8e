"""The ``--device`` option every benchmark shares, and a clock that waits for the device.

``--device cpu`` (default), ``cuda`` or ``auto`` (CUDA when present). On CUDA the timed
function's kernels are asynchronous, so :func:`timed_call` synchronizes before starting and
before stopping the clock; ratios are then wall-time ratios on the GPU, printed beside the CPU
ones in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (default), cuda, cuda:N or auto (cuda when torch sees a CUDA device)",
    )


def resolve_device(name: str) -> torch.device:
    """The torch device ``--device`` names; an error naming the option if CUDA is asked for
    and absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch {torch.__version__} sees no CUDA device")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe(device: torch.device) -> str:
    """'cpu' or the GPU's name, for the header line of a benchmark's output."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return "cpu"


def timed_call(fn: Callable[[], Any], device: torch.device,
               clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    """(seconds, result) of one call of ``fn``, the device's queue drained on both sides."""
    synchronize(device)
    start = clock()
    out = fn()
    synchronize(device)
    return clock() - start, out
