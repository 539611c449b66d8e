"""The ``ortho-lightning`` CLI: LightningCLI over the recipe models, callback slots, W&B
offline by default, other loggers on request, and bad configs failing before training."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from ortho_lightning import cli as cli_module
from ortho_lightning.cli import CONFIG_FILENAME, cli_main, main
from ortho_lightning.exceptions import DataError
from tests._wandb import config as wandb_config
from tests._wandb import history_keys, offline_runs
from tests.conftest import REPO_ROOT
from tests.data.conftest import make_tiny_mnist

MLP = ["--model=ortho_lightning.models.MLPClassifier", "--model.depth=2", "--model.width=8"]


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """LightningCLI warns when both sys.argv (pytest's) and args are given."""
    monkeypatch.setattr(sys, "argv", ["ortho-lightning"])


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_mnist(tmp_path / "mnist", n_train=40, n_test=20).folder


def _args(tiny, tmp_path, *extra, data="ortho_lightning.data.MNISTDataModule"):
    return [
        f"--data={data}", f"--data.data_dir={tiny}", "--data.download=false", "--data.allow_subset=true",
        "--data.val_size=10", "--data.batch_size=10",
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
        *MLP, *extra,
    ]


def test_fit_defaults_to_offline_wandb_with_the_resolved_config(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cli = cli_main(["fit", *_args(tiny, tmp_path, "--trainer.logger.init_args.name=cli-test")])
    assert cli.trainer.global_step == 3  # 30 training images / batch 10
    (run,) = offline_runs(tmp_path / "runs")
    keys = history_keys(run)
    assert {"train/loss_epoch", "train/acc_epoch", "val/loss", "val/acc"} <= keys
    config = wandb_config(run)
    assert config["model"]["class_path"] == "ortho_lightning.models.MLPClassifier"
    assert config["model"]["init_args"]["depth"] == 2
    assert config["data"]["init_args"]["val_size"] == 10
    saved = yaml.safe_load((run / "files" / CONFIG_FILENAME).read_text())
    assert saved["trainer"]["logger"]["init_args"]["name"] == "cli-test"
    assert list((tmp_path / "runs").rglob("*.ckpt")), "the default ModelCheckpoint saved nothing"


def test_data_shape_and_classes_are_linked_into_the_model(tiny, tmp_path):
    cli = cli_main([*_args(tiny, tmp_path, data="ortho_lightning.data.SeqMNISTDataModule"),
                    "--data.mode=pixel", "--model=ortho_lightning.models.RNNClassifier",
                    "--model.hidden_size=4"], run=False)
    assert cli.model.input_shape == (784, 1)
    assert cli.model.rnn.input_size == 1 and cli.model.head.out_features == 10


@pytest.mark.parametrize(
    ("logger", "pattern"),
    [("lightning.pytorch.loggers.CSVLogger", "metrics.csv"),
     ("lightning.pytorch.loggers.TensorBoardLogger", "events.out.tfevents.*")],
    ids=["csv", "tensorboard"],
)
def test_trainer_logger_switches_away_from_wandb(tiny, tmp_path, logger, pattern):
    spec = json.dumps({"class_path": logger, "init_args": {"save_dir": str(tmp_path / "logs")}})
    args = [a for a in _args(tiny, tmp_path) if not a.startswith("--trainer.logger")]
    cli_main(["fit", *args, f"--trainer.logger={spec}"])
    assert list((tmp_path / "logs").rglob(pattern))
    assert list((tmp_path / "logs").rglob(CONFIG_FILENAME))
    assert not offline_runs(tmp_path)


def test_callback_slots_add_callbacks_addressable_by_key(tiny, tmp_path):
    cli = cli_main([*_args(tiny, tmp_path), "--init=lightning.pytorch.callbacks.LearningRateMonitor",
                    "--init.logging_interval=epoch"], run=False)
    (monitor,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "LearningRateMonitor"]
    assert monitor.logging_interval == "epoch"
    assert cli.slot_callbacks() == [monitor]


def test_print_config_shows_slots_and_model(tiny, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["fit", *_args(tiny, tmp_path), "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["width"] == 8
    assert set(cli_module.CALLBACK_SLOTS) <= set(printed)


def test_bad_activation_fails_before_training(tiny, tmp_path):
    # jsonargparse re-raises the model's ActivationError as a ValueError carrying its message
    with pytest.raises(ValueError, match=r"MLPClassifier: activation must be one of \[.*'tanh'.*\] or a "
                       r"callable .*, got 'tanhh'"):
        cli_main(["fit", *_args(tiny, tmp_path), "--model.activation=tanhh"])
    assert not list(tmp_path.rglob("*.ckpt"))


def test_data_folder_without_mnist_fails_before_training(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        cli_main(["fit", *_args(empty, tmp_path)])
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize("command", ["experiment", "report"])
def test_main_hands_experiment_commands_to_the_experiments_cli(monkeypatch, command):
    import ortho_lightning.experiments.cli as experiments_cli

    seen = []
    monkeypatch.setattr(experiments_cli, "main", lambda argv: seen.append(argv) or 0)
    assert main([command, "some/path"]) == 0
    assert seen == [[command, "some/path"]]


def test_console_script_prints_config(tmp_path):
    script = [sys.executable, "-c", "from ortho_lightning.cli import main; raise SystemExit(main())"]
    out = subprocess.run([*script, "fit", *MLP, "--data=ortho_lightning.data.MNISTDataModule",
                          "--print_config"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert yaml.safe_load(out.stdout)["model"]["class_path"] == "ortho_lightning.models.MLPClassifier"


# (model, data, model/data flags) for every recipe model class, tiny
CLI_MODELS = {
    "mlp": ["--model=ortho_lightning.models.MLPClassifier", "--model.depth=1", "--model.width=6"],
    "cnn": ["--model=ortho_lightning.models.CNNClassifier", "--model.depth=1", "--model.channels=3",
            "--model.downsample=1"],
    "rnn": ["--data=ortho_lightning.data.SeqMNISTDataModule", "--data.mode=row",
            "--model=ortho_lightning.models.RNNClassifier", "--model.cell=gru", "--model.hidden_size=4"],
}


@pytest.mark.parametrize("name", list(CLI_MODELS))
def test_cli_checkpoint_reloads_with_load_from_checkpoint(tiny, tmp_path, name):
    args = [a for a in _args(tiny, tmp_path) if a not in MLP]
    cli = cli_main(["fit", *args, *CLI_MODELS[name], "--model.optimizer=torch.optim.SGD",
                    "--model.optimizer.lr=0.05", "--model.lr_scheduler=torch.optim.lr_scheduler.StepLR",
                    "--model.lr_scheduler.step_size=3"])
    (path,) = (tmp_path / "runs").rglob("*.ckpt")
    restored = type(cli.model).load_from_checkpoint(path)
    x = next(iter(cli.datamodule.val_dataloader()))[0]
    torch.testing.assert_close(restored(x), cli.model(x))
    config = restored.configure_optimizers()
    assert type(config["optimizer"]) is torch.optim.SGD and config["optimizer"].defaults["lr"] == 0.05
    assert config["lr_scheduler"]["scheduler"].step_size == 3


class CountBatches(Callback):
    """Counts the batches each loop actually ran (the CLI builds it from its class path)."""

    def __init__(self) -> None:
        self.counts = {"train": 0, "val": 0, "test": 0}

    def on_train_batch_end(self, *args, **kwargs):
        self.counts["train"] += 1

    def on_validation_batch_end(self, *args, **kwargs):
        self.counts["val"] += 1

    def on_test_batch_end(self, *args, **kwargs):
        self.counts["test"] += 1


def _smoke_args(tiny, tmp_path, *extra, recipe="seqmnist_rnn_row.yaml"):
    """A recipe with recipes/smoke.yaml layered on it, on the tiny data, a small model."""
    recipes = REPO_ROOT / "recipes"
    return ["--config", str(recipes / recipe), "--config", str(recipes / "smoke.yaml"),
            f"--data.data_dir={tiny}", "--data.download=false", "--data.allow_subset=true", "--data.val_size=10",
            "--model.hidden_size=8", "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            *extra]


@pytest.mark.parametrize("command", ["fit", "test"])
def test_smoke_config_runs_the_batches_it_says_and_draws_the_figures(tiny, tmp_path, command):
    # 30 train images and 10 val images in batches of 2: 15 and 5 batches, 10 test batches
    cli = cli_main([command, *_smoke_args(tiny, tmp_path, "--data.batch_size=2",
                                          "--trainer.callbacks+=tests.test_cli.CountBatches")])
    (counter,) = [c for c in cli.trainer.callbacks if isinstance(c, CountBatches)]
    smoke = yaml.safe_load((REPO_ROOT / "recipes" / "smoke.yaml").read_text())["trainer"]
    assert smoke["limit_val_batches"] == 1 and smoke["limit_test_batches"] == 1
    if command == "fit":
        # max_steps 4, validation every 2 steps on 1 batch, plus the 1-batch sanity check
        assert smoke["max_steps"] == 4 and smoke["val_check_interval"] == 2
        assert counter.counts == {"train": 4, "val": 1 + 2, "test": 0}
        # the recipes turn the monitors' figures on: each lands as a PNG in the W&B run's folder
        (run,) = offline_runs(tmp_path / "runs")
        pngs = {p.name for p in (run / "files" / "figures").glob("*.png")}
        assert pngs == {f"spectra_{kind}_figure.png" for kind in ("jacobian", "fisher", "weights")}
        assert {"spectra/jacobian/figure", "spectra/fisher/figure", "spectra/weights/figure"} <= history_keys(run)
    else:
        assert counter.counts == {"train": 0, "val": 0, "test": 1}


def _help(capsys, args):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_command_and_slot(capsys):
    out = _help(capsys, ["--help"])
    listed = out.split("Available subcommands:")[1]  # LightningCLI's own list
    for word in ("fit", "validate", "test", "predict"):
        assert f"\n    {word} " in listed, word
    for word in cli_module.EXPERIMENT_COMMANDS:
        assert f"ortho-lightning {word} " in out, word
    for slot, name in cli_module.SLOT_CALLBACKS.items():
        assert f"--{slot}" in out and name in out


def test_each_slot_help_names_our_callback(capsys):
    out = " ".join(_help(capsys, ["fit", "--help"]).split())  # unwrap the help's line breaks
    for slot, name in cli_module.SLOT_CALLBACKS.items():
        start = out.index(f"--{slot} {slot.upper()} optional")
        assert f"usually {name}" in out[start : start + 300], slot
        # the parser knows ours as subclasses of Callback, by dotted path
        assert f"ortho_lightning.callbacks.{name}" in out or f"ortho_lightning.callbacks.{name.lower()}" in out


def test_slot_help_and_value_take_the_short_class_name(tiny, tmp_path, capsys):
    out = _help(capsys, ["fit", "--jacobian_monitor.help", "JacobianSpectrumMonitor"])
    assert "--jacobian_monitor.probe_size" in out and "--jacobian_monitor.theory" in out
    cli = cli_main([*_args(tiny, tmp_path), "--jacobian_monitor=JacobianSpectrumMonitor",
                    "--jacobian_monitor.probe_size=3", "--fisher_monitor=FisherSpectrumMonitor"],
                   run=False)
    jacobian, fisher = cli.slot_callbacks()
    assert type(jacobian).__name__ == "JacobianSpectrumMonitor" and jacobian.probe_size == 3
    assert type(fisher).__name__ == "FisherSpectrumMonitor"


def _run_records(run):
    """The run records (name, tags) of an offline run, in order."""
    from tests._wandb import records

    return [r.run for r in records(run) if r.WhichOneof("record_type") == "run"]


def test_run_name_and_tags_come_from_the_resolved_config(tiny, tmp_path):
    init = ["--init=OrthogonalInit", "--init.scheme=gaussian", "--init.gain=critical",
            "--init.activation=tanh"]
    cli_main(["fit", *_args(tiny, tmp_path, *init)])
    (run,) = offline_runs(tmp_path / "runs")
    last = _run_records(run)[-1]
    assert last.display_name == "mlp-d2-w8-tanh-mnist-gaussian-critical"
    assert {"MLPClassifier", "OrthogonalInit", "init.scheme=gaussian", "model.depth=2"} <= set(last.tags)


def test_a_given_run_name_is_kept(tiny, tmp_path):
    cli_main(["fit", *_args(tiny, tmp_path, "--trainer.logger.init_args.name=my-run")])
    (run,) = offline_runs(tmp_path / "runs")
    assert {r.display_name for r in _run_records(run)} == {"my-run"}
    assert "MLPClassifier" in _run_records(run)[-1].tags


def test_ntk_monitor_slot_logs_the_kernel(tiny, tmp_path):
    csv = json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                      "init_args": {"save_dir": str(tmp_path / "logs"), "name": "csv", "version": ""}})
    args = [a for a in _args(tiny, tmp_path) if not a.startswith("--trainer.logger")]
    cli = cli_main(["fit", *args, f"--trainer.logger={csv}", "--ntk_monitor=NTKSpectrumMonitor",
                    "--ntk_monitor.probe_size=4"])
    (monitor,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "NTKSpectrumMonitor"]
    assert monitor.last_summary["spectra/ntk/drift"] > 0  # measured at fit start and after


def test_a_list_of_loggers_keeps_the_wandb_name_it_gives(tiny, tmp_path):
    # the demo's setting: W&B and CSV side by side, given as a list
    loggers = json.dumps([
        {"class_path": "lightning.pytorch.loggers.WandbLogger",
         "init_args": {"save_dir": str(tmp_path / "runs"), "name": "listed"}},
        {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path / "csv")}},
    ])
    args = [a for a in _args(tiny, tmp_path) if not a.startswith("--trainer.logger")]
    cli_main(["fit", *args, f"--trainer.logger={loggers}"])
    (run,) = offline_runs(tmp_path / "runs")
    assert {r.display_name for r in _run_records(run)} == {"listed"}


@pytest.mark.parametrize(("sweep", "mode"), [(None, "offline"), ("abc123", None)], ids=["plain", "wandb-agent"])
def test_wandb_offline_default_except_under_a_wandb_agent(tiny, tmp_path, monkeypatch, sweep, mode):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    if sweep is None:
        monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    else:
        monkeypatch.setenv("WANDB_SWEEP_ID", sweep)  # what `wandb agent` sets for its runs
    csv = json.dumps({"class_path": "lightning.pytorch.loggers.CSVLogger",
                      "init_args": {"save_dir": str(tmp_path / "logs")}})
    args = [a for a in _args(tiny, tmp_path) if not a.startswith("--trainer.logger")]
    cli_main([*args, f"--trainer.logger={csv}"], run=False)
    assert cli_module.os.environ.get("WANDB_MODE") == mode

