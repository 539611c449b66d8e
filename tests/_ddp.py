"""Run a script under Lightning's ``strategy="ddp"`` with 2 CPU processes (gloo).

Lightning's DDP launcher re-executes ``sys.argv`` for the other rank, which inside pytest would
re-run the test session; so DDP tests run a small script in ``tests/ddp_scripts/`` in a
subprocess and read back what it wrote.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parent / "ddp_scripts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp_script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``tests/ddp_scripts/<name>`` with ``args``; fail with its output if it exits non-zero."""
    env = dict(os.environ)
    env.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        WANDB_MODE="offline",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc
