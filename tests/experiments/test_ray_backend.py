"""``--backend ray``: the grid's cells as Ray tasks on a local 2-CPU cluster give the local
backend's table; a killed worker's cell is retried by Ray, a failing cell is recorded in
``failures.csv`` and retried (alone) by the next run, a cell another runner holds is left to
it, and no other cell runs twice."""

import importlib.util
import math
import sys

import pytest

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.experiments.grid import expand
from ortho_lightning.experiments.locks import locked
from ortho_lightning.experiments.ray_backend import (
    ERROR_NAME,
    FAILURES_NAME,
    cell_resources,
    import_ray,
    run_grid_ray,
)
from ortho_lightning.experiments.runner import DONE_MARKER, cell_dir, cell_lock, run_grid
from ortho_lightning.experiments.table import read_table, read_table_loose

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is an optional extra: pip install 'ortho-lightning[ray]'")


def _grid(tmp_path):
    spec = {"name": "r", "kind": "function", "function": "tests.experiments.ray_cells:logged",
            "base": {"log": str(tmp_path / "calls.log"), "fail": str(tmp_path / "fail"),
                     "die": str(tmp_path / "die")},
            "axes": {"a": [1.0, 2.0], "b": [1, 5]}, "seed": [0], "resources": {"cpus": 1}}
    return expand(spec, allow_import=True)


def _calls(tmp_path) -> list[str]:
    log = tmp_path / "calls.log"
    calls = [" ".join(line.split()[:3]) for line in log.read_text().splitlines()]
    log.unlink()
    return sorted(calls)


@needs_ray
@pytest.mark.slow
def test_ray_grid_matches_local_and_retries_killed_and_failed_cells(tmp_path):
    import ray

    grid = _grid(tmp_path)
    (tmp_path / "die").write_text("1.0 5 0")  # the 2nd cell's worker exits mid-task, once
    (tmp_path / "fail").write_text("2.0 1 0")  # the 3rd cell raises, once
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        out = tmp_path / "ray"
        _, failures = run_grid_ray(grid, out, progress=False, report=False)
        assert [f["cell_id"] for f in failures] == [grid.cells[2].id]
        assert failures[0]["error"] == "RuntimeError: simulated failure at 2.0 1 0"
        # the killed cell ran again (Ray's retry), every other cell once
        assert _calls(tmp_path) == sorted(["1.0 1 0", "1.0 5 0", "1.0 5 0", "2.0 1 0", "2.0 5 0"])
        failed = cell_dir(out, grid.cells[2])
        assert (failed / ERROR_NAME).is_file() and not (failed / DONE_MARKER).exists()
        _, recorded = read_table_loose(out / FAILURES_NAME)
        assert [(r["cell_id"], r["a"], r["b"], r["seed"]) for r in recorded] == [
            (grid.cells[2].id, 2.0, 1, 0)]
        _, rows = read_table(out / "results.csv")
        assert len({r["cell_id"] for r in rows}) == 3
        # a cell whose lock another runner holds is left to it: not run, not a failure
        with locked(cell_lock(out, grid.cells[2])) as mine:
            assert mine and run_grid_ray(grid, out, progress=False, report=False)[1] == []
        assert not (tmp_path / "calls.log").exists()
        # the next run retries the failed cell and nothing else; then there is nothing to do
        assert run_grid_ray(grid, out, progress=False, report=False)[1] == []
        assert _calls(tmp_path) == ["2.0 1 0"]
        assert not (out / FAILURES_NAME).exists()
        run_grid_ray(grid, out, progress=False, report=False)
        assert not (tmp_path / "calls.log").exists()
    finally:
        ray.shutdown()
    local = tmp_path / "local"
    run_grid(grid, local, progress=False, report=False)
    assert len(_calls(tmp_path)) == 4
    columns, ray_rows = read_table(out / "results.csv")
    assert (columns, len(ray_rows)) == (read_table(local / "results.csv")[0], 12)
    for mine, theirs in zip(ray_rows, read_table(local / "results.csv")[1]):
        assert mine.keys() == theirs.keys()
        for key, value in mine.items():
            if isinstance(value, float):
                assert math.isclose(value, theirs[key], rel_tol=1e-6, abs_tol=1e-9), key
            else:
                assert value == theirs[key], key


def test_without_ray_the_backend_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigurationError, match=r"pip install 'ortho-lightning\[ray\]'"):
        import_ray()


def test_resources_per_cell_from_the_grid_file():
    assert cell_resources({}) == {"num_cpus": 1, "num_gpus": 0}
    assert cell_resources({"resources": {"cpus": 2, "gpus": 0.5}}) == {"num_cpus": 2, "num_gpus": 0.5}
    for bad in ({"cpus": 0}, {"gpus": -1}, {"cpus": "2"}, {"tpus": 1}, [1]):
        with pytest.raises(ConfigurationError, match="resources"):
            cell_resources({"resources": bad})
