"""Two runners on one grid (issue 15): each cell is computed once, no folder is wiped under its
owner, temporary names never collide, and a killed runner's lock does not block the cell."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ortho_lightning.experiments.grid import expand
from ortho_lightning.experiments.locks import lock_owner, locked
from ortho_lightning.experiments.runner import DONE_MARKER, cell_dir, cell_lock, run_grid
from ortho_lightning.experiments.table import read_table

ROOT = Path(__file__).resolve().parents[2]


def _spec(log: Path, wait: float) -> dict:
    return {"name": "t", "kind": "function", "function": "tests.adversarial.slow_cells:slow",
            "base": {"log": str(log), "wait": wait}, "axes": {"a": [1, 2, 3, 4]}, "seed": [0, 1]}


def _runner(spec: dict, out: Path) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        from ortho_lightning.experiments.grid import expand
        from ortho_lightning.experiments.runner import run_grid
        run_grid(expand({spec!r}, allow_import=True), {str(out)!r}, progress=False)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_runners_compute_each_cell_once(tmp_path):
    log, out = tmp_path / "calls.log", tmp_path / "out"
    spec = _spec(log, wait=0.6)
    runners = [_runner(spec, out) for _ in range(2)]
    outputs = [r.communicate(timeout=120)[0] for r in runners]
    assert [r.returncode for r in runners] == [0, 0], outputs
    calls = [line.split() for line in log.read_text().splitlines()]
    cells = sorted((int(a), int(s)) for a, s, _ in calls)
    assert cells == [(a, s) for a in (1, 2, 3, 4) for s in (0, 1)]  # each exactly once
    _, rows = read_table(out / "results.csv")
    assert len({r["cell_id"] for r in rows}) == 8  # the last runner to finish tabulated all
    assert (out / "summary.md").is_file()
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith((".tmp", ".lock"))]
    assert leftovers == []  # unique temporary names, all renamed; locks released
    pids = {pid for _, _, pid in calls}
    print(f"cells per runner: {[sum(c[2] == p for c in calls) for p in sorted(pids)]}")


def test_a_cell_held_by_another_runner_is_skipped_and_its_folder_kept(tmp_path):
    log, out = tmp_path / "calls.log", tmp_path / "out"
    grid = expand(_spec(log, wait=0.0), allow_import=True)
    held = grid.cells[2]
    folder = cell_dir(out, held)
    folder.mkdir(parents=True)
    (folder / "partial.ckpt").write_text("being written by the owner")
    lines = []
    with locked(cell_lock(out, held)) as mine:
        assert mine
        run_grid(grid, out, progress=False, report=False, echo=lines.append)
        assert (folder / "partial.ckpt").read_text() == "being written by the owner"
        assert not (folder / DONE_MARKER).exists()
    assert len(log.read_text().splitlines()) == 7
    assert f"1 cell(s) left to the runner(s) holding them (pid {os.getpid()} on" in lines[-1]
    _, rows = read_table(out / "results.csv")
    assert len({r["cell_id"] for r in rows}) == 7
    run_grid(grid, out, progress=False, report=False)  # released: the next run does it
    assert len(log.read_text().splitlines()) == 8
    assert (folder / DONE_MARKER).exists() and not (folder / "partial.ckpt").exists()


def test_a_killed_runners_lock_does_not_block_the_cell(tmp_path):
    log, out = tmp_path / "calls.log", tmp_path / "out"
    grid = expand(_spec(log, wait=0.0), allow_import=True)
    lock = cell_lock(out, grid.cells[0])
    lock.parent.mkdir(parents=True)
    # a runner that took the lock the same way (flock) and is then killed with SIGKILL
    code = (f"import fcntl, json, os, sys, time; fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT);"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, json.dumps({'pid': os.getpid()}).encode());"
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        lines = []
        run_grid(grid, out, progress=False, report=False, echo=lines.append)
        assert not (cell_dir(out, grid.cells[0]) / DONE_MARKER).exists()  # alive: skipped
        assert f"pid {holder.pid}" in lines[-1]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.exists() and lock_owner(lock)["pid"] == holder.pid  # stale file left behind
    start = time.perf_counter()
    run_grid(grid, out, progress=False, report=False)
    assert time.perf_counter() - start < 10
    assert json.loads((cell_dir(out, grid.cells[0]) / DONE_MARKER).read_text())["rows"] == 1
    assert not lock.exists()
