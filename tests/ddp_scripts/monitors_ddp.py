"""Fit a tiny MLP with the three spectrum monitors under DDP (2 CPU processes, gloo).

Usage: ``monitors_ddp.py OUT_DIR``. Each rank writes ``OUT_DIR/rank<r>.json`` with what its
monitors measured; rank zero's CSVLogger writes ``OUT_DIR/csv/version_0/metrics.csv``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger

from ortho_lightning.callbacks import (
    FisherSpectrumMonitor,
    JacobianSpectrumMonitor,
    WeightSpectrumMonitor,
)
from tests.callbacks._monitor_helpers import TinyNet, loader, trainer


def main(out: Path) -> None:
    torch.manual_seed(0)
    monitors = [
        JacobianSpectrumMonitor(every_n_steps=1, probe_size=4),
        FisherSpectrumMonitor(every_n_steps=2, every_n_epochs=None, probe_size=4),
        WeightSpectrumMonitor(every_n_steps=1),
    ]
    fit = trainer(
        out,
        monitors,
        logger=CSVLogger(out, name="csv"),
        devices=2,
        strategy="ddp",
        max_steps=3,
    )
    fit.fit(TinyNet(), loader())
    report = {
        "rank": fit.global_rank,
        "measured_steps": [m.measured_steps for m in monitors],
        "keys": sorted(k for m in monitors for k in m.last_summary),
        "has_probe": [m.probe is not None for m in monitors],
    }
    (out / f"rank{fit.global_rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
