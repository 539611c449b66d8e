"""Configs are data, not code (issue 15): a grid's or a results folder's ``function:`` may name
only the package's registered experiment functions, unless the user passes ``--allow-import``."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
import yaml

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.experiments import registry
from ortho_lightning.experiments.grid import expand, load_grid
from ortho_lightning.experiments.report import make_report
from ortho_lightning.experiments.runner import run_grid
from tests.adversarial import untrusted
from tests.experiments import fake_cells  # noqa: F401  (registers quadratic)

GRIDS = sorted(Path("recipes/experiments").glob("*.yaml"))
UNTRUSTED_CELL = "tests.adversarial.untrusted:cell"
UNTRUSTED_HOOK = "tests.adversarial.untrusted:report_hook"


def test_a_grid_cannot_call_logging_basicconfig_to_truncate_a_file(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    spec = {"kind": "function", "function": "logging:basicConfig",
            "base": {"filename": str(victim), "filemode": "w"}, "axes": {"force": [True]}}
    with pytest.raises(ConfigurationError, match=r"^experiment: function must be a function of the "
                       r"package's experiment modules .*--allow-import.*, got 'logging:basicConfig'$"):
        expand(spec)
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("target", [
    "ortho_lightning.experiments.table:write_table",   # machinery, writes any path
    "ortho_lightning.experiments.runner:run_grid",
    "os:remove",
    "tests.adversarial.untrusted:cell",                # importable, but nobody registered it
])
def test_unregistered_functions_are_refused(target):
    with pytest.raises(ConfigurationError, match="^experiment: function must be a function of the "
                       "package's experiment"):
        registry.resolve_function(target)


@pytest.mark.parametrize("target", [
    "ortho_lightning.experiments.fisher:initialize",  # imported into fisher.py, not defined there
    "ortho_lightning.experiments.fisher:ConfigurationError",
    "ortho_lightning.experiments.ntk:_fit",           # private helper
])
def test_only_public_functions_defined_in_an_experiment_module(target):
    with pytest.raises(ConfigurationError, match=r"^experiment: function must be a public function "
                       r"defined in 'ortho_lightning\.experiments\.(fisher|ntk)' \(a config may not "
                       rf"call this one\), got '{target}'$"):
        registry.resolve_function(target)


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_every_shipped_grid_and_report_hook_resolves(path):
    grid = load_grid(path)  # kind: function grids resolve and check their function here
    hook = (grid.spec.get("report") or {}).get("function")
    if hook:
        fn = registry.resolve_function(hook)
        assert registry.function_name(fn) == hook


def test_allow_import_runs_an_unregistered_function(tmp_path):
    spec = {"name": "t", "kind": "function", "function": UNTRUSTED_CELL, "axes": {"a": [2.0]},
            "seed": [3]}
    with pytest.raises(ConfigurationError):
        expand(spec)
    grid = expand(spec, allow_import=True)
    run_grid(grid, tmp_path, progress=False, report=False)
    assert "6.0" in (tmp_path / "results.csv").read_text()


def _results_folder(tmp_path: Path, hook: str) -> Path:
    """A finished results folder (as someone else might hand over) whose report names ``hook``."""
    spec = {"name": "t", "kind": "function", "function": "tests.experiments.fake_cells:quadratic",
            "axes": {"a": [1.0]}, "report": {"function": hook}}
    run_grid(expand(spec), tmp_path, progress=False, report=False)
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path


def test_report_of_someone_elses_folder_does_not_run_its_function(tmp_path):
    folder = _results_folder(tmp_path, UNTRUSTED_HOOK)
    with pytest.raises(ConfigurationError, match=r"^report: function must be a function of the "
                       r"package's experiment modules .*, got 'tests.adversarial.untrusted:report_hook'$"):
        make_report(folder)
    assert not (folder / "figures" / untrusted.MARK).exists()
    summary = make_report(folder, allow_import=True)
    assert (folder / "figures" / untrusted.MARK).exists()
    assert "unregistered hook ran" in summary.read_text()


def test_report_cli_has_allow_import(tmp_path):
    from ortho_lightning.experiments.cli import main

    folder = _results_folder(tmp_path, UNTRUSTED_HOOK)
    with pytest.raises(ConfigurationError):
        main(["report", str(folder)])
    assert main(["report", str(folder), "--allow-import"]) == 0
    assert (folder / "figures" / untrusted.MARK).exists()


def test_register_experiment_and_entry_points_allow_a_function(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTERED", {})
    with pytest.raises(ConfigurationError):
        registry.resolve_function(UNTRUSTED_CELL)
    ep = metadata.EntryPoint(name="cell", value=UNTRUSTED_CELL, group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group=None: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    assert registry.resolve_function(UNTRUSTED_CELL) is untrusted.cell
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group=None: [])
    registry.register_experiment(untrusted.report_hook)
    assert registry.resolve_function(UNTRUSTED_HOOK) is untrusted.report_hook
