"""One tiny grid of real training cells through ``ortho_lightning.lightning_cli.cli_main``."""

import pytest
import torch
import yaml

import ortho_lightning.lightning_cli
from ortho_lightning.experiments.grid import expand
from ortho_lightning.experiments.runner import run_grid
from ortho_lightning.experiments.table import read_table


@pytest.mark.mnist
def test_recipe_grid_trains_and_tabulates_lightning_metrics(tmp_path, mnist_dir, monkeypatch):
    recipe = {
        "model": {"class_path": "ortho_lightning.models.MLPClassifier",
                  "init_args": {"depth": 2, "width": 8}},
        "data": {"class_path": "ortho_lightning.data.MNISTDataModule",
                 "init_args": {"data_dir": str(mnist_dir), "batch_size": 16, "val_size": 32,
                               "download": False}},
        "trainer": {"max_steps": 3, "limit_train_batches": 3, "limit_val_batches": 1,
                    "limit_test_batches": 1, "log_every_n_steps": 1, "accelerator": "cpu",
                    "enable_checkpointing": False, "enable_progress_bar": False,
                    "enable_model_summary": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    grid = expand({"kind": "recipe", "recipe": str(path), "test": True,
                   "axes": {"model.init_args.width": [4, 8]}, "seed": [0]})
    clis = []  # each cell's CLI (its trained model and data), kept to check the table against
    real_cli_main = ortho_lightning.lightning_cli.cli_main
    monkeypatch.setattr(ortho_lightning.lightning_cli, "cli_main",
                        lambda *a, **k: clis.append(real_cli_main(*a, **k)) or clis[-1])
    run_grid(grid, tmp_path / "out", progress=False, report=False)
    assert len(clis) == 2
    columns, rows = read_table(tmp_path / "out" / "results.csv")
    assert columns[:4] == ["cell_id", "model.init_args.width", "seed", "step"]
    assert {"train/loss_step", "val/acc", "test/acc"} <= set(columns)
    assert {r["model.init_args.width"] for r in rows} == {4, 8}
    for width in (4, 8):
        steps = sorted(r["step"] for r in rows if r["model.init_args.width"] == width
                       and r.get("train/loss_step") is not None)
        assert steps == [0, 1, 2]  # Lightning logs step s before the optimizer step s + 1
        test_acc = [r["test/acc"] for r in rows
                    if r["model.init_args.width"] == width and r.get("test/acc") is not None]
        assert len(test_acc) == 1
        # the tabulated test/acc is the trained model's accuracy on the one test batch
        # (limit_test_batches=1, 16 images), counted here by hand
        (cli,) = [c for c in clis if c.model.hparams.width == width]
        x, y = next(iter(cli.datamodule.test_dataloader()))
        cli.model.eval()
        with torch.no_grad():
            hits = int((cli.model(x).argmax(-1) == y).sum())
        assert y.numel() == 16
        assert test_acc[0] == pytest.approx(hits / 16, abs=1e-6)
    # the grid never used W&B: each cell's only logs are its CSV files
    assert not list((tmp_path / "out").rglob("wandb"))


def test_grid_cells_log_to_wandb_grouped_by_experiment_when_asked(tmp_path, monkeypatch):
    from tests._wandb import offline_runs, records

    monkeypatch.setenv("WANDB_MODE", "offline")
    path = _tiny_recipe(tmp_path, enable_checkpointing=False)
    grid = expand({"name": "wgrid", "kind": "recipe", "recipe": str(path), "wandb": {"project": "p"},
                   "axes": {"model.init_args.width": [4, 6]}, "seed": [0, 1]})
    run_grid(grid, tmp_path / "out", progress=False, report=False)
    runs = offline_runs(tmp_path / "out")
    assert len(runs) == 4  # one W&B run per cell, in the cell's folder
    found = set()
    for run in runs:
        (info,) = [r.run for r in records(run) if r.WhichOneof("record_type") == "run"][-1:]
        assert (info.run_group, info.project) == ("wgrid", "p")
        found.add((info.job_type, info.display_name))
    assert {job for job, _ in found} == {"width=4", "width=6"}  # seeds share their arm's type
    assert {name for _, name in found} == {c.id for c in grid.cells}
    # the CSV table is still written as without W&B
    columns, _ = read_table(tmp_path / "out" / "results.csv")
    assert "train/loss_step" in columns


def _tiny_recipe(folder, **trainer):
    from tests.data.conftest import make_tiny_mnist

    tiny = make_tiny_mnist(folder / "mnist", n_train=42, n_test=16).folder
    recipe = {
        "model": {"class_path": "ortho_lightning.models.MLPClassifier",
                  "init_args": {"depth": 1, "width": 4}},
        "data": {"class_path": "ortho_lightning.data.MNISTDataModule",
                 "init_args": {"data_dir": str(tiny), "batch_size": 16, "val_size": 10,
                               "download": False, "allow_subset": True}},
        "trainer": {"max_steps": 1, "limit_val_batches": 1, "accelerator": "cpu",
                    "log_every_n_steps": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, **trainer},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_training_cells_write_checkpoints_only_when_the_grid_or_recipe_asks(tmp_path):
    # Lightning's default ModelCheckpoint is off in grid cells (a depth-200 cell wrote ~100 MB);
    # the grid's own key turns it back on, and a recipe's explicit checkpoint callback is kept
    plain = _tiny_recipe(tmp_path / "plain")
    own = _tiny_recipe(tmp_path / "own", callbacks=[
        {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
         "init_args": {"filename": "mine"}}])
    cases = {"default": ({"recipe": str(plain)}, 0),
             "grid_on": ({"recipe": str(plain), "base": {"trainer.enable_checkpointing": True}}, 1),
             "recipe_callback": ({"recipe": str(own)}, 1)}
    for name, (spec, expected) in cases.items():
        grid = expand({"name": name, "kind": "recipe", **spec})
        run_grid(grid, tmp_path / name, progress=False, report=False)
        found = list((tmp_path / name).rglob("*.ckpt"))
        assert len(found) == expected, (name, found)
    assert found[0].name == "mine.ckpt"  # the recipe's own callback, not a default one
