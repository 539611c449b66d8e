"""``--emit-sweep``: the W&B sweep of a recipe grid is valid under W&B's own sweep schema, W&B's
own grid engine enumerates exactly the grid's cells from it, and the command line an agent
would run for a combination parses with our CLI to the same config as the local runner's cell.

W&B's schema and grid engine ship in ``wandb[sweeps]`` (the ``sweeps`` package, a dev
dependency); the agent's command line is built with wandb's own ``create_sweep_command_args``
(how ``wandb agent`` expands ``${args}``).
"""

import json
import sys

import pytest
import yaml

from ortho_lightning.cli import cli_main
from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.experiments.cli import main as experiments_main
from ortho_lightning.experiments.grid import expand, load_grid
from ortho_lightning.experiments.runner import recipe_argv
from ortho_lightning.experiments.sweep import sweep_config
from tests.conftest import REPO_ROOT
from tests.data.conftest import make_tiny_mnist

GRIDS = sorted(p for p in (REPO_ROOT / "recipes" / "experiments").glob("*.yaml")
               if yaml.safe_load(p.read_text()).get("kind") == "recipe")


def _sweeps():
    return pytest.importorskip("sweeps", reason="W&B's sweep schema ships in wandb[sweeps]: "
                               "pip install 'sweeps==0.2.0' (in the [dev] extra)")


def agent_argv(config: dict, run_config: dict) -> list[str]:
    """What ``wandb agent`` runs for one combination (``{param: {"value": v}}``): the sweep's
    ``command`` with its macros expanded as wandb_agent.py does (list items, no shell)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    words = sweep_utils.create_sweep_command(list(config["command"]))
    macros = sweep_utils.create_sweep_command_args({"args": run_config})
    macros.update(env=["/usr/bin/env"], program=[config["program"]])
    out: list[str] = []
    for word in map(str, words):
        macro = word.startswith("${") and word.endswith("}")
        out += (macros.get(word[2:-1]) or []) if macro else [word]
    return out


def _merge(tree: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    if isinstance(value, dict) and isinstance(tree.get(leaf), dict):
        for k, v in value.items():
            _merge(tree[leaf], k, v)
    else:
        tree[leaf] = value


def overrides(words: list[str]) -> str:
    """The nested settings that ``--key=value`` and ``--config=<yaml text>`` flags layer on the
    recipe, applied in order (canonical JSON, to compare runs)."""
    tree: dict = {}
    for word in words:
        key, _, text = word.removeprefix("--").partition("=")
        value = yaml.safe_load(text)
        if key == "config":
            for k, v in value.items():
                _merge(tree, k, v)
        else:
            _merge(tree, key, value)
    return json.dumps(tree, sort_keys=True)


def _cell_words(cell) -> list[str]:
    """The local runner's flags for a cell, without its recipe, logger and output folder."""
    argv = recipe_argv(cell, REPO_ROOT)
    return [w for w in argv[3:] if not w.startswith(("--trainer.logger=", "--trainer.default_root_dir="))]


@pytest.mark.parametrize("path", GRIDS, ids=[p.stem for p in GRIDS])
def test_sweep_is_valid_and_w_and_b_grid_runs_exactly_the_cells(path, monkeypatch):
    sweeps = _sweeps()
    from sweeps.grid_search import grid_search_next_runs

    monkeypatch.chdir(REPO_ROOT)
    grid = load_grid(path)
    config, notes = sweep_config(grid)
    assert sweeps.schema_violations_from_proposed_config(config) == []
    sweeps.SweepConfig(config)  # raises on what W&B's controller would refuse
    runs = grid_search_next_runs([], config, validate=True, n=len(grid.cells) + 1)
    assert runs[-1] is None and len(runs) == len(grid.cells) + 1  # the whole grid, then done
    recipe = config["command"][4]  # relative to the checkout, where agents start
    assert not recipe.startswith("/") and (REPO_ROOT / recipe).samefile(grid.target)
    prefix = ["/usr/bin/env", "ortho-lightning", "fit", "--config", recipe]
    agent = []
    for run in runs[:-1]:
        words = agent_argv(config, run.config)
        assert words[:5] == prefix
        agent.append(overrides(words[5:]))
    cells = [overrides(_cell_words(c)) for c in grid.cells]
    assert sorted(agent) == sorted(cells) and len(set(cells)) == len(cells)


def test_function_grid_and_indistinct_variants_are_refused():
    fn = {"kind": "function", "function": "tests.experiments.fake_cells:quadratic", "axes": {"a": [1.0]}}
    with pytest.raises(ConfigurationError, match=r"^experiment \(--emit-sweep\): kind must be 'recipe' "
                       r"\(a W&B sweep runs training recipes; .*\), got 'function'$"):
        sweep_config(expand(fn))
    twins = expand({"kind": "recipe", "recipe": "recipes/x.yaml", "axes": {"arm": [
        {"name": "a", "init.init_args.gain": 1.0}, {"name": "b", "init.init_args.gain": 1.0}]}})
    with pytest.raises(ConfigurationError, match=r"^experiment \(--emit-sweep\): parameter 'config' "
                       r"must be distinct values \(.*\), got \['\{init: \{init_args: \{gain: 1.0\}\}\}', "):
        sweep_config(twins)
    nested = expand({"kind": "recipe", "recipe": "recipes/x.yaml", "axes": {"arm": [
        {"name": "a", "model": "m", "model.init_args.depth": 2}, {"name": "b", "model": "n"}]}})
    with pytest.raises(ConfigurationError, match=r"^experiment \(--emit-sweep\): the keys of variant 'a' "
                       r"must be either a key or keys below it, not both \('model' is 'm'\), got "
                       r"\['model', 'model.init_args.depth'\]$"):
        sweep_config(nested)


@pytest.mark.slow
def test_agent_command_line_parses_to_the_local_cells_config(tmp_path, monkeypatch):
    """For three cells (a Gaussian MLP with ``null`` settings; the RNN arm with no overrides; the
    geotorch arm that swaps the regularizer for a constraint class), the agent's command line
    (plus the tiny data set) and the local runner's give the same resolved config."""
    monkeypatch.setattr(sys, "argv", ["ortho-lightning"])
    monkeypatch.chdir(REPO_ROOT)
    tiny = make_tiny_mnist(tmp_path / "mnist", n_train=42, n_test=16).folder
    data = [f"--data.data_dir={tiny}", "--data.download=false", "--data.allow_subset=true"]
    out = tmp_path / "sweep.yaml"
    picks = [("isometry_training_mnist", "depth16-scheme_gaussian-seed2"),
             ("soft_vs_hard_seqmnist", "arm_soft_g1.025_l1_allones-seed0"),
             ("soft_vs_hard_seqmnist", "arm_hard_geotorch-seed1")]
    for name, head in picks:
        path = REPO_ROOT / "recipes" / "experiments" / f"{name}.yaml"
        assert experiments_main(["experiment", str(path), "--emit-sweep", str(out)]) == 0
        config = yaml.safe_load(out.read_text())
        (cell,) = [c for c in load_grid(path).cells if c.id.startswith(head + "-")]
        values = {k: v for k, v in cell.axes.items() if k in config["parameters"]}
        if "config" in config["parameters"]:  # the variant's YAML text, by position
            arms = next(vs for vs in load_grid(path).axes.values() if isinstance(vs[0], dict))
            index = [a["name"] for a in arms].index(cell.axes["arm"])
            values["config"] = config["parameters"]["config"]["values"][index]
        values["seed_everything"] = cell.seed
        agent = agent_argv(config, {k: {"value": v} for k, v in values.items()})
        assert agent[:3] == ["/usr/bin/env", "ortho-lightning", "fit"]
        ours = cli_main([*agent[3:], *data], run=False).config.as_dict()
        local = cli_main([*recipe_argv(cell, tmp_path)[1:], *data], run=False).config.as_dict()
        for conf in (ours, local):
            conf.pop("config")
            conf["trainer"].pop("logger")
            conf["trainer"].pop("default_root_dir")
        assert ours == local, name
        assert ours["seed_everything"] == cell.seed
