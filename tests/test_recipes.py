"""Every recipe's smoke run (``--config recipes/smoke.yaml`` layered on it), in-process through
``cli_main`` with W&B offline, on a tiny MNIST-shaped data set; the logged keys (the three
monitors' spectra, init report, penalty) are read back from the offline run's file."""

import sys
from pathlib import Path

import pytest
import torch
import yaml

from ortho_lightning.cli import CALLBACK_SLOTS, cli_main
from tests._wandb import config as wandb_config
from tests._wandb import history_keys, offline_runs
from tests.conftest import REPO_ROOT
from tests.data.conftest import make_tiny_mnist

RECIPES = REPO_ROOT / "recipes"
SMOKE = RECIPES / "smoke.yaml"
SOFT = ["seqmnist_softortho.yaml"]
SOFT_NOTEBOOK = ["seqmnist_softortho_notebook.yaml"]

# (id, configs layered in order, extra command-line overrides)
CASES = [
    ("mlp-critical-orthogonal", ["mnist_mlp_critical.yaml"], []),
    ("mlp-critical-gaussian", ["mnist_mlp_critical.yaml"], ["--init.init_args.scheme=gaussian"]),
    ("cnn-delta-orthogonal", ["mnist_cnn_delta_orthogonal.yaml"], []),
    ("rnn-row", ["seqmnist_rnn_row.yaml"], []),
    ("rnn-pixel", ["seqmnist_rnn_pixel.yaml"], []),
    ("rnn-permuted", ["seqmnist_rnn_permuted.yaml"], []),
    ("rnn-exprnn", ["seqmnist_rnn_exprnn.yaml"], []),
    ("lstm-row", ["seqmnist_lstm_row.yaml"], []),
    ("mlp-permuted-pixel", ["seqmnist_mlp_permuted.yaml"], []),
    ("cnn1d-pixel", ["seqmnist_cnn1d_pixel.yaml"], []),
    ("softortho", SOFT, []),
    ("softortho-frobenius", SOFT, ["--regularizer.init_args.kind=frobenius"]),
    ("softortho-notebook", SOFT_NOTEBOOK, []),
    *[(f"softortho-{p.stem}", [*SOFT, f"softortho/{p.name}"], [])
      for p in sorted((RECIPES / "softortho").glob("*.yaml"))],
]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared, oversubscribed CI machine OpenMP's multi-threaded
    kernels (SVDs above all) slow down by 10-100x; these models are too small to gain."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run_configs(configs):
    return [RECIPES / c for c in configs]


def test_every_recipe_has_a_smoke_case():
    covered = {RECIPES / c for _, configs, _ in CASES for c in configs}
    recipes = {p for p in RECIPES.rglob("*.yaml") if p.parent.name not in ("sweeps", "experiments")}
    assert recipes - {SMOKE} == covered


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_mnist(tmp_path_factory.mktemp("mnist"), n_train=42, n_test=16).folder


@pytest.mark.parametrize(("configs", "extra"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_recipe_smoke_run_logs_spectra_to_offline_wandb(configs, extra, tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["ortho-lightning"])
    args = ["fit"]
    for path in [*_run_configs(configs), SMOKE]:
        args += ["--config", str(path)]
    args += [f"--data.data_dir={tiny}", "--data.download=false", "--data.allow_subset=true", "--data.val_size=10",
             "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
             f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}", *extra]
    cli = cli_main(args)

    recipe = {}
    for path in _run_configs(configs):  # later files override earlier ones, slot by slot
        recipe.update(yaml.safe_load(Path(path).read_text()))
    slots = {s for s in CALLBACK_SLOTS if recipe.get(s)}
    assert {"jacobian_monitor", "fisher_monitor", "weight_monitor"} <= slots
    assert cli.trainer.global_step == 2  # 32 training images, batch 16, one epoch

    (run,) = offline_runs(tmp_path / "runs")
    keys = history_keys(run)
    expected = {"train/loss_step", "val/acc", "spectra/jacobian/max", "spectra/jacobian/mean_sq",
                "spectra/jacobian/singular_values", "spectra/fisher/max",
                "spectra/fisher/eigenvalues"}
    if "init" in slots:
        expected.add("init/report")
    if "regularizer" in slots:
        expected.add("ortho/penalty")
    assert expected <= keys, sorted(expected - keys)
    assert any(k.startswith("spectra/weights/rnn.") or k.startswith("spectra/weights/")
               and k.endswith("/singular_values") for k in keys)
    model_class = recipe["model"]["class_path"]
    assert wandb_config(run)["model"]["class_path"] == model_class
    assert list((tmp_path / "runs").rglob("last.ckpt")), "no checkpoint written"


SWEEPS = sorted((RECIPES / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("sweep", SWEEPS, ids=[p.stem for p in SWEEPS])
@pytest.mark.parametrize("pick", [0, -1], ids=["first", "last"])
def test_sweep_parameters_are_keys_of_its_recipe(sweep, pick, tiny, monkeypatch):
    """``wandb agent`` runs the sweep's command with ``--key=value`` per parameter: every key
    must reach the recipe's config (a typo would be an error here, not a silent no-op)."""
    monkeypatch.setattr(sys, "argv", ["ortho-lightning"])
    spec = yaml.safe_load(sweep.read_text())
    command = spec["command"]
    assert command[:3] == ["${env}", "ortho-lightning", "fit"] and command[-1] == "${args}"
    recipe = REPO_ROOT / command[command.index("--config") + 1]
    chosen = {key: p["values"][pick] for key, p in spec["parameters"].items()}
    args = ["--config", str(recipe), f"--data.data_dir={tiny}", "--data.download=false", "--data.allow_subset=true",
            *[f"--{k}={v}" for k, v in chosen.items()]]
    cli = cli_main(args, run=False)
    for key, value in chosen.items():
        assert cli.config[key] == value


@pytest.mark.parametrize(("configs", "hidden", "recurrent"), [
    (SOFT, 64, "orthogonal"),
    (SOFT_NOTEBOOK, 128, "orthogonal"),
    ([*SOFT_NOTEBOOK, "softortho/glorot_init.yaml"], 128, "glorot_normal"),
], ids=["paper-64", "notebook-128", "notebook-glorot"])
def test_softortho_recipes_build_the_keras_model(configs, hidden, recurrent, tiny, monkeypatch):
    """The soft-orthogonality recipes resolve, through the CLI, to the study's Keras model:
    Glorot-uniform input matrix and head (U(-a, a), a = sqrt(6 / (fan_in + fan_out))), zero
    biases, W_hh orthogonal at gain 1.025 (or Keras' truncated Glorot normal), Adam eps 1e-7,
    validation = the last images, pixels in [0, 1]. PyTorch's defaults (U(+-1/sqrt(H)) for every
    tensor, biases included) fail each check."""
    monkeypatch.setattr(sys, "argv", ["ortho-lightning"])
    args = [a for c in _run_configs(configs) for a in ("--config", str(c))]
    cli = cli_main([*args, f"--data.data_dir={tiny}", "--data.download=false", "--data.allow_subset=true",
                    "--data.val_size=10", "--trainer.logger=false"], run=False)
    (init,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "OrthogonalInit"]
    init.setup(cli.trainer, cli.model, "fit")
    rnn, head = cli.model.rnn, cli.model.head

    for weight in (rnn.weight_ih_l0, head.weight):
        out, fan_in = weight.shape
        bound = (6.0 / (fan_in + out)) ** 0.5  # Keras GlorotUniform limit
        top = weight.detach().abs().max().item()
        assert 0.97 * bound <= top <= bound, (tuple(weight.shape), top, bound)
    for bias in (rnn.bias_ih_l0, rnn.bias_hh_l0, head.bias):
        assert torch.count_nonzero(bias) == 0
    w_hh = rnn.weight_hh_l0.detach().double()
    assert w_hh.shape == (hidden, hidden)
    if recurrent == "orthogonal":
        torch.testing.assert_close(w_hh.T @ w_hh, 1.025**2 * torch.eye(hidden, dtype=torch.float64),
                                   atol=1e-5, rtol=0)
    else:  # Keras GlorotNormal: std sqrt(2 / (H + H)), truncated at 2 / 0.8796 of it
        std = (1.0 / hidden) ** 0.5
        assert w_hh.abs().max().item() <= 2 * std / 0.87962566103423978
        assert abs(w_hh.std().item() / std - 1) < 0.1
    optimizer = cli.model.configure_optimizers()  # no scheduler in these recipes
    assert optimizer.defaults["eps"] == 1e-7 and optimizer.defaults["lr"] == 1e-4
    data = cli.config["data"]["init_args"]
    assert (data["val_split"], data["val_size"], data["normalize"]) == ("last", 10, False)
