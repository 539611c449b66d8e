"""Names in a config never write outside their output folder, and a grid's recipe path does not
depend on the working directory (issue 15)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.experiments.grid import expand, load_grid
from ortho_lightning.experiments.report import make_report
from ortho_lightning.experiments.runner import recipe_argv, run_grid
from tests.experiments import fake_cells  # noqa: F401  (registers FN)

FN = "tests.experiments.fake_cells:quadratic"
ESCAPES = ["../../x", "/tmp/x", "a/b", "..", ".hidden", "", "a\\b", "~"]


def _spec(**over):
    spec = {"name": "t", "kind": "function", "function": FN, "axes": {"a": [1.0]}}
    spec.update(over)
    return spec


@pytest.mark.parametrize("name", [n for n in ESCAPES if n])  # an empty name means the default
def test_escaping_experiment_names_are_refused(name):
    with pytest.raises(ConfigurationError, match=r"^experiment: name must be a plain file name"):
        expand(_spec(name=name))


@pytest.mark.parametrize("name", ESCAPES)
def test_escaping_figure_names_are_refused_when_the_grid_is_read(name):
    report = {"figures": [{"name": name, "x": "a", "y": "loss"}]}
    with pytest.raises(ConfigurationError, match=r"^experiment: report figure name must be a plain "
                       r"file name .*, got " + repr(name).replace("\\", "\\\\")):
        expand(_spec(report=report))


def test_a_results_folder_with_an_escaping_figure_writes_nothing_outside(tmp_path):
    out = tmp_path / "a" / "out"
    run_grid(expand(_spec()), out, progress=False, report=False)
    target = tmp_path / "escaped"
    spec = _spec(report={"figures": [{"name": "../../../escaped", "x": "a", "y": "loss"}]})
    (out / "experiment.yaml").write_text(yaml.safe_dump(spec))  # edited by someone else
    with pytest.raises(ConfigurationError, match=r"^report figure '\.\./\.\./\.\./escaped': name must be a "
                       r"plain file name .*, got '\.\./\.\./\.\./escaped'$"):
        make_report(out)
    assert not target.with_suffix(".png").exists() and not target.with_suffix(".svg").exists()


def test_plain_names_are_kept():
    grid = expand(_spec(name="isometry_depth-v2.1",
                        report={"figures": [{"name": "sv_var=depth", "x": "a", "y": "loss"}]}))
    assert grid.name == "isometry_depth-v2.1"


def test_recipe_path_resolves_against_the_grid_file_not_the_cwd(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "recipes" / "experiments").mkdir(parents=True)
    recipe = project / "recipes" / "r.yaml"
    recipe.write_text("trainer: {max_steps: 1}\n")
    (project / "recipes" / "experiments" / "local.yaml").write_text("trainer: {}\n")
    grid_file = project / "recipes" / "experiments" / "g.yaml"
    grid_file.write_text(yaml.safe_dump({"kind": "recipe", "recipe": "recipes/r.yaml",
                                         "axes": {"trainer.max_epochs": [1]}}))
    decoy = tmp_path / "elsewhere"
    (decoy / "recipes").mkdir(parents=True)
    (decoy / "recipes" / "r.yaml").write_text("decoy: true\n")
    ids = []
    for cwd in (decoy, project, Path("/")):
        monkeypatch.chdir(cwd)
        grid = load_grid(os.path.relpath(grid_file, cwd))
        assert grid.target == str(recipe)
        assert recipe_argv(grid.cells[0], tmp_path)[:3] == ["fit", "--config", str(recipe)]
        ids.append(grid.cells[0].id)
    assert len(set(ids)) == 1  # the id hashes the path as written: same wherever it is run from
    # a file beside the grid wins over one higher up
    grid_file.write_text(yaml.safe_dump({"kind": "recipe", "recipe": "local.yaml"}))
    assert load_grid(grid_file).target == str(grid_file.parent / "local.yaml")
    grid_file.write_text(yaml.safe_dump({"kind": "recipe", "recipe": "recipes/missing.yaml"}))
    with pytest.raises(ConfigurationError, match=r"^experiment g.yaml: recipe must be a recipe file "
                       r"relative to the grid file .*, got 'recipes/missing.yaml'"):
        load_grid(grid_file)


def test_shipped_recipe_grids_find_their_recipes_from_any_cwd(tmp_path, monkeypatch):
    root = Path.cwd()
    grid_file = root / "recipes/experiments/isometry_training_mnist.yaml"
    monkeypatch.chdir(tmp_path)
    grid = load_grid(grid_file)
    assert grid.target == str(root / "recipes/mnist_mlp_critical.yaml")
