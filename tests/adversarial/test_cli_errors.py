"""Configuration errors reach the CLI user as one line and exit status 2 (issue 15), not a
40-75-line traceback; ``--debug`` / ``ORTHO_LIGHTNING_DEBUG=1`` shows the traceback. A truncated
or corrupt checkpoint is one line naming the file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from ortho_lightning.cli import USAGE_ERROR, check_checkpoint, cli_main, main
from ortho_lightning.exceptions import DataError
from tests.data.conftest import make_tiny_mnist


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ortho-lightning"])
    monkeypatch.delenv("ORTHO_LIGHTNING_DEBUG", raising=False)


@pytest.fixture
def tiny_args(tmp_path):
    data = make_tiny_mnist(tmp_path / "mnist", n_train=40, n_test=20).folder
    return ["--data=ortho_lightning.data.MNISTDataModule", f"--data.data_dir={data}",
            "--data.download=false", "--data.allow_subset=true", "--data.val_size=10",
            "--data.batch_size=10", "--trainer.max_epochs=1", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={tmp_path}", "--model=ortho_lightning.models.MLPClassifier",
            "--model.depth=2", "--model.width=8"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith("error: ")
    return err[0]


def _grid(tmp_path: Path, **spec) -> str:
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_a_bad_grid_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["experiment", _grid(tmp_path, kind="shell")]) == USAGE_ERROR
    assert ("error: experiment g.yaml: kind must be one of ['function', 'recipe'], got 'shell'"
            in _one_line(capsys))


def test_an_unregistered_function_is_one_line(tmp_path, capsys):
    path = _grid(tmp_path, kind="function", function="logging:basicConfig",
                 base={"filename": str(tmp_path / "x"), "filemode": "w"})
    assert main(["experiment", path]) == USAGE_ERROR
    assert "got 'logging:basicConfig'" in _one_line(capsys)


def test_an_error_raised_inside_instantiation_is_one_line(tiny_args, capsys):
    # jsonargparse wraps the model's ActivationError in a ValueError with a 40+ line traceback
    assert main(["fit", *tiny_args, "--model.activation=tanhh"]) == USAGE_ERROR
    line = _one_line(capsys)
    assert "MLPClassifier: activation must be one of [" in line and line.endswith(", got 'tanhh'")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch, how):
    argv = ["experiment", _grid(tmp_path, kind="shell")]
    if how == "flag":
        argv.append("--debug")
    else:
        monkeypatch.setenv("ORTHO_LIGHTNING_DEBUG", "1")
    assert main(argv) == USAGE_ERROR
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "grid.py" in err
    assert err.strip().splitlines()[-1].startswith("error: experiment g.yaml: kind must be")


def test_other_exceptions_are_not_hidden(monkeypatch):
    import ortho_lightning.experiments.cli as experiments_cli

    def crash(argv):
        raise RuntimeError("a bug, not a config error")

    monkeypatch.setattr(experiments_cli, "main", crash)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["experiment", "x.yaml"])


def test_truncated_and_corrupt_checkpoints_are_one_line_naming_the_file(tiny_args, tmp_path, capsys):
    cli = cli_main(["fit", *tiny_args])
    good = Path(cli.trainer.checkpoint_callback.best_model_path)
    data = good.read_bytes()
    check_checkpoint(str(good))  # an intact one passes
    truncated, flipped, text = tmp_path / "truncated.ckpt", tmp_path / "flipped.ckpt", tmp_path / "t.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF  # torch.load reads this one without complaint
    flipped.write_bytes(bytes(corrupt))
    text.write_text("not a checkpoint")
    cases = [(truncated, "not a readable checkpoint"), (flipped, "fails its CRC check"),
             (text, "not a readable checkpoint"), (tmp_path / "missing.ckpt", "an existing checkpoint file")]
    for path, what in cases:
        with pytest.raises(DataError, match=rf"^check_checkpoint: --ckpt_path must be .*{what}.*, got "
                           + re.escape(repr(str(path))) + "$"):
            check_checkpoint(str(path))
    capsys.readouterr()
    assert main(["fit", *tiny_args, f"--ckpt_path={truncated}"]) == USAGE_ERROR
    line = _one_line(capsys)
    assert line.startswith("error: ortho-lightning fit: --ckpt_path must be a whole torch checkpoint (not a "
                           "readable checkpoint")
    assert line.endswith(f", got {str(truncated)!r}")
    assert main(["validate", *tiny_args, f"--ckpt_path={flipped}"]) == USAGE_ERROR
    assert "fails its CRC check" in _one_line(capsys)
