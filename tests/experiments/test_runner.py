import json

import pytest

from ortho_lightning.experiments.grid import expand
from ortho_lightning.experiments.runner import DONE_MARKER, cell_dir, recipe_argv, run_grid
from ortho_lightning.experiments.table import read_table
from tests.experiments import fake_cells

FN = "tests.experiments.fake_cells:quadratic"


@pytest.fixture(autouse=True)
def _reset_calls():
    fake_cells.CALLS.clear()
    fake_cells.FAIL_ON.clear()


def grid(**over):
    spec = {"name": "t", "kind": "function", "function": FN, "base": {"steps": 3},
            "axes": {"a": [1.0, 2.0], "b": [1, 5]}, "seed": [0, 1]}
    spec.update(over)
    return expand(spec)


def test_runs_every_cell_once_and_tabulates(tmp_path):
    g = grid()
    run_grid(g, tmp_path, progress=False, report=False)
    assert len(fake_cells.CALLS) == 8
    _, rows = read_table(tmp_path / "results.csv")
    assert len(rows) == 8 * 3
    for r in rows:
        assert r["loss"] == r["a"] * r["b"] * r["step"] ** 2


def test_resume_after_crash_reruns_only_unfinished_cells(tmp_path):
    g = grid()
    fake_cells.FAIL_ON.add((2.0, 1, 0))  # the 5th cell in product order
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_grid(g, tmp_path, progress=False, report=False)
    assert len(fake_cells.CALLS) == 5
    crashed = cell_dir(tmp_path, g.cells[4])
    assert crashed.is_dir() and not (crashed / DONE_MARKER).exists()
    fake_cells.CALLS.clear()
    run_grid(g, tmp_path, progress=False, report=False)
    assert [(c["a"], c["b"], c["seed"]) for c in fake_cells.CALLS] == [
        (c.axes["a"], c.axes["b"], c.seed) for c in g.cells[4:]]
    _, rows = read_table(tmp_path / "results.csv")
    assert len({r["cell_id"] for r in rows}) == 8
    fake_cells.CALLS.clear()
    run_grid(g, tmp_path, progress=False, report=False)
    assert fake_cells.CALLS == []


def test_removed_marker_reruns_that_cell_with_same_result(tmp_path):
    g = grid()
    run_grid(g, tmp_path, progress=False, report=False)
    before = (cell_dir(tmp_path, g.cells[3]) / "rows.csv").read_text()
    (cell_dir(tmp_path, g.cells[3]) / DONE_MARKER).unlink()
    fake_cells.CALLS.clear()
    run_grid(g, tmp_path, progress=False, report=False)
    assert len(fake_cells.CALLS) == 1
    # seeded: the rerun reproduces the same rows, random column included
    assert (cell_dir(tmp_path, g.cells[3]) / "rows.csv").read_text() == before


def test_dry_run_lists_cells_without_running(tmp_path):
    lines = []
    assert run_grid(grid(), tmp_path, dry_run=True, echo=lines.append) is None
    assert fake_cells.CALLS == [] and not (tmp_path / "results.csv").exists()
    assert "8 cells, 8 to run" in lines[0] and len(lines) == 9


def test_recipe_argv_overrides_logger_and_seed(tmp_path):
    g = expand({"kind": "recipe", "recipe": "recipes/x.yaml",
                "base": {"trainer.max_steps": 5, "model.init_args.hidden": [4, 8]},
                "axes": {"model.init_args.scheme": ["orthogonal"]}, "seed": 3})
    argv = recipe_argv(g.cells[0], tmp_path)
    assert argv[:3] == ["fit", "--config", "recipes/x.yaml"]
    assert "--trainer.max_steps=5" in argv and "--model.init_args.hidden=[4, 8]" in argv
    assert "--model.init_args.scheme=orthogonal" in argv and "--seed_everything=3" in argv
    logger = json.loads(next(a for a in argv if a.startswith("--trainer.logger=")).split("=", 1)[1])
    assert logger["class_path"].endswith("CSVLogger")
    assert logger["init_args"]["save_dir"] == str(tmp_path)
