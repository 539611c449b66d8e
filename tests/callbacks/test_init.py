"""OrthogonalInit in real Trainer.fit runs: applied once, skipped on resume, same on DDP ranks."""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, LightningDataModule

from ortho_lightning.callbacks import OrthogonalInit
from ortho_lightning.exceptions import ConfigurationError, NoCriticalPointError
from ortho_lightning.init import critical_point, initialize
from ortho_lightning.init.initialize import apply_config
from tests._ddp import run_ddp_script
from tests.callbacks._monitor_helpers import TinyNet, loader, trainer


class WeightProbe(Callback):
    """Copies of the model's weights at setup (after the callbacks before it) and train start."""

    def __init__(self) -> None:
        self.at_setup: list[dict[str, torch.Tensor]] = []
        self.at_train_start: list[dict[str, torch.Tensor]] = []

    def setup(self, trainer, pl_module, stage):
        self.at_setup.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_train_start(self, trainer, pl_module):
        self.at_train_start.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def _is_scaled_isometry(w: torch.Tensor, gain: float) -> bool:
    w = w.double()
    g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.allclose(g, gain**2 * torch.eye(g.shape[0], dtype=torch.float64), atol=1e-5)


def _weights(module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_fit_applies_the_init_once_before_training(tmp_path, caplog):
    model, probe = TinyNet(), WeightProbe()
    callback = OrthogonalInit(gain=1.2, sigma_b=0.05, seed=3)
    fit = trainer(tmp_path, [callback, probe], max_steps=2)
    with caplog.at_level(logging.INFO, logger="ortho_lightning.callbacks._logging"):
        fit.fit(model, loader())
    start = probe.at_train_start[0]
    assert all(_is_scaled_isometry(start[k], 1.2) for k in ("layers.0.weight", "layers.3.weight", "head.weight"))
    # exactly what initialize() with the same seed draws (an independent fresh model)
    reference = TinyNet()
    initialize(reference, gain=1.2, sigma_b=0.05, generator=torch.Generator().manual_seed(3))
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(start[k], v)
    assert callback.applied and callback.state_dict() == {"applied": True, "seed": 3}
    assert "init/report" in caplog.text and "layers.3.weight" in caplog.text
    # validate, and a second fit with the same callback, do not re-initialise
    after_fit = {k: v.clone() for k, v in model.state_dict().items()}
    fit.validate(model, loader())
    trainer(tmp_path, [callback, probe], max_steps=1).fit(model, loader())
    assert len(probe.at_train_start) == 2
    for k, v in probe.at_train_start[1].items():
        torch.testing.assert_close(v, after_fit[k])


def test_resume_keeps_the_restored_weights(tmp_path):
    first = OrthogonalInit(seed=1)
    fit = trainer(tmp_path, [first], max_steps=2)
    model = TinyNet()
    fit.fit(model, loader())
    ckpt = tmp_path / "step2.ckpt"
    fit.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)  # the callback state is weights_only-safe
    assert saved["callbacks"][first.state_key] == {"applied": True, "seed": 1}

    resumed, probe = OrthogonalInit(seed=99), WeightProbe()
    fit2 = trainer(tmp_path, [resumed, probe], max_steps=3)
    fit2.fit(TinyNet(), loader(), ckpt_path=ckpt)
    for k, v in saved["state_dict"].items():
        torch.testing.assert_close(probe.at_train_start[0][k], v)
    assert resumed.applied and resumed.seed_used == 1 and resumed.report is None


def test_user_set_ckpt_path_skips_the_draw(tmp_path):
    fit = trainer(tmp_path, [OrthogonalInit(seed=1)], max_steps=1)
    fit.fit(TinyNet(), loader())
    ckpt = tmp_path / "a.ckpt"
    fit.save_checkpoint(ckpt)
    callback, probe = OrthogonalInit(seed=2), WeightProbe()
    model = TinyNet()
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    fit2 = trainer(tmp_path, [callback, probe], max_steps=2)
    fit2.ckpt_path = str(ckpt)
    fit2.fit(model, loader())
    for k, v in probe.at_setup[0].items():  # setup saw the model as it was made
        torch.testing.assert_close(v, untouched[k])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"scheme": "xavier"}, ConfigurationError, "OrthogonalInit: scheme must be one of .* got 'xavier'"),
        ({"gain": "crit"}, ConfigurationError, "OrthogonalInit: gain must be a finite number or 'critical', got 'crit'"),
        ({"seed": -1}, ConfigurationError, "OrthogonalInit: seed must be an integer >= 0 or None, got -1"),
        ({"seed": 1.5}, ConfigurationError, "OrthogonalInit: seed must be an integer >= 0 or None, got 1.5"),
        ({"input_batch_size": 0}, ConfigurationError, "OrthogonalInit: input_batch_size must be an integer >= 1, got 0"),
        ({"log_key": ""}, ConfigurationError, "OrthogonalInit: log_key must be a non-empty string, got ''"),
        ({"gain": "critical", "activation": "relu", "sigma_b": 0.1}, NoCriticalPointError, r"q\* diverges"),
    ],
    ids=["scheme", "gain", "seed-negative", "seed-float", "input_batch_size", "log_key",
         "no-critical-point"],
)
def test_misconfiguration_fails_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        OrthogonalInit(**kwargs)


@pytest.mark.parametrize(
    "recurrent,warns", [(None, True), ("all", False), ("hh", False)], ids=["default", "all", "hh"]
)
def test_recurrent_default_warns_naming_the_callback(recurrent, warns):
    # setup() applies callback.config through apply_config, as here; the default still means "all"
    kwargs = {} if recurrent is None else {"recurrent": recurrent}
    callback = OrthogonalInit(seed=0, **kwargs)
    assert callback.recurrent == (recurrent or "all")
    model = torch.nn.ModuleDict({"rnn": torch.nn.RNN(3, 4), "head": torch.nn.Linear(4, 2)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = apply_config(model, callback.config, torch.Generator().manual_seed(0))
    messages = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    expected = ("OrthogonalInit: the default recurrent='all' becomes 'hh' in 0.3.0; "
                "pass recurrent= explicitly")
    assert messages == ([expected] if warns else [])
    assert any(r.name == "rnn.weight_ih_l0" for r in report) == (recurrent != "hh")


RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _init_args_of(node) -> list[dict]:
    """The init_args of every OrthogonalInit in a parsed recipe."""
    if isinstance(node, list):
        return [args for item in node for args in _init_args_of(item)]
    if not isinstance(node, dict):
        return []
    found = [node.get("init_args") or {}] if str(node.get("class_path", "")).endswith("OrthogonalInit") else []
    return found + [args for value in node.values() for args in _init_args_of(value)]


def test_recurrent_recipes_pass_recurrent_explicitly():
    # so no recipe hits the FutureWarning of the changing default
    checked = []
    for path in sorted(RECIPES.rglob("*.yaml")):
        recipe = yaml.safe_load(path.read_text()) or {}
        model = (recipe.get("model") or {}).get("class_path", "") if isinstance(recipe, dict) else ""
        if model.endswith("RNNClassifier"):
            for args in _init_args_of(recipe):
                assert "recurrent" in args, f"{path.name}: OrthogonalInit without recurrent="
                checked.append(path.name)
    assert "seqmnist_rnn_row.yaml" in checked and "seqmnist_softortho.yaml" in checked


def test_pickle_round_trip():
    callback = OrthogonalInit(scheme="gaussian", gain="critical", sigma_b=0.1, include="layers.*", seed=4)
    clone = pickle.loads(pickle.dumps(callback))
    assert clone.state_key == callback.state_key and clone.config == callback.config


def test_report_is_a_wandb_table(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    from tests._wandb import history, offline_runs

    wb_logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="init")
    trainer(tmp_path, [OrthogonalInit(seed=0)], logger=wb_logger, max_steps=1).fit(TinyNet(), loader())
    wb_logger.experiment.finish()
    run = offline_runs(tmp_path)[-1]
    prefix = "init/report/"
    # the reader gives the table either nested under its key or flattened into "key/field"
    logged = [
        row.get("init/report") or {k[len(prefix) :]: v for k, v in row.items() if k.startswith(prefix)}
        for row in history(run)
    ]
    rows = [t for t in logged if t.get("_type") == "table-file"]
    assert len(rows) == 1 and rows[0]["nrows"] == 6
    table = json.loads((run / "files" / rows[0]["path"]).read_text())
    assert table["columns"] == ["name", "shape", "scheme", "gain", "q"]
    assert table["data"][2] == ["layers.3.weight", "8x8", "orthogonal", 1.0, None]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "bf16-true"])
def test_half_precision_runs_start_orthogonal(tmp_path, precision):
    model, probe = TinyNet(), WeightProbe()
    trainer(tmp_path, [OrthogonalInit(gain=0.8, seed=0), probe], max_steps=1, precision=precision).fit(model, loader())
    w = probe.at_train_start[0]["layers.3.weight"]
    assert w.dtype == (torch.bfloat16 if precision == "bf16-true" else torch.float32)
    w = w.double()
    torch.testing.assert_close(w @ w.T, 0.64 * torch.eye(8, dtype=torch.float64), atol=2e-2 if precision == "bf16-true" else 1e-5, rtol=0)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_ranks_start_from_identical_weights(tmp_path):
    run_ddp_script("init_ddp.py", str(tmp_path), timeout=240)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    # the script seeds each rank's global RNG differently, so the plain torch init differs ...
    assert not torch.equal(r0["before"]["layers.0.weight"], r1["before"]["layers.0.weight"])
    # ... and OrthogonalInit (seed=None: rank zero's initial seed, broadcast) makes them equal,
    # before DDP wraps the model (DDP's own broadcast comes later)
    for k in r0["after_init"]:
        assert torch.equal(r0["after_init"][k], r1["after_init"][k]), k
    assert _is_scaled_isometry(r0["after_init"]["layers.3.weight"], 1.1)


class _DataModule(LightningDataModule):
    """The loader() data at 3x scale (second moment 9), as a datamodule."""

    def train_dataloader(self):
        base = loader(n=512, batch_size=16, shuffle=True)
        x, y = base.dataset.tensors
        return torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(3 * x, y), batch_size=16, shuffle=True
        )


def test_input_match_reads_the_training_data_and_reports_q(tmp_path):
    from ortho_lightning.init.input_matching import preactivation_q

    model, probe = TinyNet(), WeightProbe()
    callback = OrthogonalInit(gain="critical", q_star=0.1, input_q="match", input_batch_size=128, seed=0)
    dm = _DataModule()
    trainer(tmp_path, [callback, probe], max_steps=1).fit(model, datamodule=dm)
    x = dm.train_dataloader().dataset.tensors[0][:128]
    # the first layer was scaled to the data: q_1 = q* = 0.1 on the batch it was matched to
    start = TinyNet()
    start.load_state_dict(probe.at_train_start[0])
    measured = preactivation_q(start, x)
    assert measured["layers.0"] == pytest.approx(0.1, rel=0.15)
    report = {r.name: r for r in callback.report}
    assert report["layers.0.weight"].q == pytest.approx(measured["layers.0"], rel=1e-9)
    assert report["layers.0.weight"].scheme == "orthogonal (input matched)"
    assert callback.report.input_second_moment == pytest.approx(float(x.square().mean()))


def test_input_match_without_a_datamodule_says_what_to_do(tmp_path):
    callback = OrthogonalInit(gain="critical", q_star=0.1, input_q="match")
    with pytest.raises(ConfigurationError, match="reads a batch of the training data from the datamodule"):
        trainer(tmp_path, [callback], max_steps=1).fit(TinyNet(), loader())


def test_settings_reach_the_logger_config(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    callback = OrthogonalInit(gain="critical", q_star=0.1, include="layers.*", seed=0)
    csv = CSVLogger(tmp_path, name="csv")
    trainer(tmp_path, [callback], logger=csv, max_steps=1).fit(TinyNet(), loader())
    hparams = yaml.safe_load((Path(csv.log_dir) / "hparams.yaml").read_text())
    settings = hparams["callbacks/OrthogonalInit"]
    point = critical_point("tanh", q_star=0.1)
    assert settings["scheme"] == "orthogonal" and settings["q_star"] == 0.1
    assert settings["gain"] == pytest.approx(point.sigma_w) and settings["sigma_b"] == pytest.approx(point.sigma_b)
    assert settings["include"] == ["layers.*"] and settings["seed"] == 0
