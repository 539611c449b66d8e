"""The spectrum monitors inside real ``Trainer.fit`` runs on a tiny MLP.

Facts checked against independent references: the logged numbers equal a dense
``torch.autograd.functional.jacobian`` + SVD of the final model on the stored probe and the
2-norm of the final weights; the keys read back from each logger's own files (CSV, TensorBoard
event files, the offline W&B run file); training with monitors ends at the same weights as
without; a resumed run continues the uninterrupted run's series exactly.
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from torch.utils.data import DataLoader, TensorDataset

import ortho_lightning.spectra as spectra
from ortho_lightning.callbacks import (
    FisherSpectrumMonitor,
    JacobianSpectrumMonitor,
    OrthogonalInit,
    WeightSpectrumMonitor,
)
from ortho_lightning.callbacks._monitor_base import default_input
from ortho_lightning.exceptions import ConfigurationError, SelectionError
from tests._ddp import run_ddp_script
from tests._wandb import config as wandb_config
from tests._wandb import history, offline_runs
from tests.callbacks._monitor_helpers import (
    CLASSES,
    WIDTH,
    DeepLinear,
    TinyNet,
    TinyNetWithFeatures,
    csv_metrics,
    dense_jacobian_svals,
    loader,
    tensorboard_events,
    trainer,
)

# ------------------------------------------------------------------------ misconfiguration
BAD_ARGUMENTS = [
    (FisherSpectrumMonitor, {"method": "slq", "fisher_kwargs": {"num_probe": 4}},
     "(fisher_kwargs): ['num_probe'] are not arguments of fisher_eigenvalues or spectral_density"),
    (FisherSpectrumMonitor, {"fisher_kwargs": {"num_probes": 4}},
     "(fisher_kwargs): ['num_probes'] are not arguments of fisher_eigenvalues (method='exact')"),
    (JacobianSpectrumMonitor, {"every_n_steps": 0}, "JacobianSpectrumMonitor: every_n_steps must be an integer >= 1 or None, got 0"),
    (JacobianSpectrumMonitor, {"every_n_steps": 2.5}, "JacobianSpectrumMonitor: every_n_steps must be an integer >= 1 or None, got 2.5"),
    (JacobianSpectrumMonitor, {"every_n_epochs": -1}, "JacobianSpectrumMonitor: every_n_epochs must be an integer >= 1 or None, got -1"),
    (
        JacobianSpectrumMonitor,
        {"every_n_steps": None, "on_fit_start": False},
        "would never measure",
    ),
    (JacobianSpectrumMonitor, {"probe_size": 0}, "JacobianSpectrumMonitor: probe_size must be an integer >= 1, got 0"),
    (JacobianSpectrumMonitor, {"probe_source": "test"}, "JacobianSpectrumMonitor: probe_source must be one of ['train', 'val'], got 'test'"),
    (JacobianSpectrumMonitor, {"output_fn": 3}, "JacobianSpectrumMonitor: output_fn must be callable or None, got 3"),
    (JacobianSpectrumMonitor, {"input_fn": "x"}, "JacobianSpectrumMonitor: input_fn must be callable or None, got 'x'"),
    (JacobianSpectrumMonitor, {"chunk_size": 0}, "JacobianSpectrumMonitor: chunk_size must be an integer >= 1 or None, got 0"),
    (JacobianSpectrumMonitor, {"histogram": "yes"}, "JacobianSpectrumMonitor: histogram must be True or False, got 'yes'"),
    (JacobianSpectrumMonitor, {"theory": "tanh"}, "JacobianSpectrumMonitor: theory must be True, False or a dict"),
    (
        JacobianSpectrumMonitor,
        {"theory": {"activation": "tanh", "depth": 3, "gain": 1}},
        "missing keys ['sigma_w', 'sigma_b'], unknown keys ['gain']",
    ),
    (FisherSpectrumMonitor, {"likelihood": "poisson"}, "FisherSpectrumMonitor: likelihood must be one of ['categorical', 'gaussian'], got 'poisson'"),
    (FisherSpectrumMonitor, {"method": "dense"}, "FisherSpectrumMonitor: method must be one of ['exact', 'lanczos', 'slq'], got 'dense'"),
    (FisherSpectrumMonitor, {"k": 0}, "FisherSpectrumMonitor: k must be an integer >= 1 or None, got 0"),
    (FisherSpectrumMonitor, {"fisher_kwargs": [1]}, "FisherSpectrumMonitor: fisher_kwargs must be a dict or None, got [1]"),
    (
        FisherSpectrumMonitor,
        {"fisher_kwargs": {"k": 3, "tol": 1e-8}},
        "fisher_kwargs): ['k'] are arguments of the monitor itself",
    ),
    (WeightSpectrumMonitor, {"figure": 1}, "WeightSpectrumMonitor: figure must be True or False, got 1"),
    (WeightSpectrumMonitor, {"log_spaced": 1}, "WeightSpectrumMonitor: log_spaced must be True or False, got 1"),
    (WeightSpectrumMonitor, {"on_fit_start": "no"}, "WeightSpectrumMonitor: on_fit_start must be True or False, got 'no'"),
    (FisherSpectrumMonitor, {"jacobian_ratio": 1}, "FisherSpectrumMonitor: jacobian_ratio must be True or False, got 1"),
    (
        FisherSpectrumMonitor,
        {"log_spaced": True},
        "log_spaced=True spaces the every_n_steps cadence, but every_n_steps is None",
    ),
    (WeightSpectrumMonitor, {"types": [int]}, "WeightSpectrumMonitor: types must be nn.Module subclasses, got <class 'int'>"),
    (JacobianSpectrumMonitor, {"start": "layers.1"}, "(start, end): expected two module names or neither"),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    BAD_ARGUMENTS,
    ids=[f"{c.__name__}-{next(iter(k))}" for c, k, _ in BAD_ARGUMENTS],
)
def test_bad_arguments_name_accepted_and_received(cls, kwargs, message):
    with pytest.raises((ConfigurationError, SelectionError)) as info:
        cls(**kwargs)
    assert message in str(info.value)


def test_include_that_matches_nothing_fails_at_setup(tmp_path):
    monitor = WeightSpectrumMonitor(include="encoder.*")
    with pytest.raises(SelectionError, match=r"\['encoder\.\*'\] match no module"):
        trainer(tmp_path, [monitor], max_steps=1).fit(TinyNet(), loader())


def test_probe_from_missing_val_loader_is_an_error(tmp_path):
    monitor = JacobianSpectrumMonitor(probe_source="val")
    with pytest.raises(ConfigurationError, match="no val dataloader"):
        trainer(tmp_path, [monitor], max_steps=1, limit_val_batches=0).fit(TinyNet(), loader())


def test_log_spaced_cadence_measures_at_power_of_two_multiples(tmp_path):
    # 8 batches an epoch, 3 epochs: steps 1..24; log-spaced from 3: 3, 6, 12, 24 (and 0)
    monitor = WeightSpectrumMonitor(every_n_steps=3, log_spaced=True)
    uniform = JacobianSpectrumMonitor(every_n_steps=3, probe_size=4)
    trainer(tmp_path, [monitor, uniform], max_epochs=3).fit(TinyNet(), loader())
    assert monitor.measured_steps == [0, 3, 6, 12, 24]
    assert uniform.measured_steps == [0, 3, 6, 9, 12, 15, 18, 21, 24]


def test_start_end_measures_the_hidden_to_hidden_jacobian(tmp_path):
    # TinyNet: layers.0 Linear, .1 Tanh, .2 Dropout, .3 Linear, .4 Tanh; from layers.1 to
    # layers.4 the Jacobian is diag(tanh'(h_2)) W_3, checked against a dense float64 product
    monitor = JacobianSpectrumMonitor(every_n_steps=None, probe_size=4, start="layers.1", end="layers.4")
    model = TinyNet(lr=0.0)
    trainer(tmp_path, [monitor], max_steps=1).fit(model, loader())
    m = model.double().eval()
    with torch.no_grad():
        h2 = m.layers[3](m.layers[1](m.layers[0](monitor.probe.double())))
        jac = (1 - torch.tanh(h2) ** 2)[:, :, None] * m.layers[3].weight[None]
    expected = torch.linalg.svdvals(jac)
    assert monitor.last_summary["spectra/jacobian/max"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert monitor.last_summary["spectra/jacobian/min"] == pytest.approx(float(expected.min()), rel=1e-4)


# ------------------------------------------------------------------------ logged keys
JACOBIAN_MAX = "spectra/jacobian/max"
WEIGHT_MAX = "spectra/weights/layers.3.weight/max"


def test_keys_reach_csv_tensorboard_and_wandb_with_reference_values(tmp_path):
    csv_logger = CSVLogger(tmp_path, name="csv")
    tb_logger = TensorBoardLogger(tmp_path, name="tb")
    wb_logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="monitors")
    monitors = [
        JacobianSpectrumMonitor(every_n_steps=2, probe_size=10, figure=True),
        FisherSpectrumMonitor(every_n_steps=2, every_n_epochs=None, probe_size=4),
        WeightSpectrumMonitor(every_n_steps=2, include="layers.*"),
    ]
    model = TinyNetWithFeatures()
    fit = trainer(tmp_path, monitors, logger=[csv_logger, tb_logger, wb_logger], max_steps=4)
    fit.fit(model, loader())
    wb_logger.experiment.finish()
    jac, fisher, weights = monitors
    assert [m.measured_steps for m in monitors] == [[0, 2, 4]] * 3

    # Independent references on the final model: dense Jacobian of the features (the model's
    # spectrum_output_fn) on the stored probe, and the 2-norm of the final weight.
    model.eval()
    ref_sv = dense_jacobian_svals(model.layers, jac.probe)
    assert ref_sv.shape == (10, 6)
    ref_jac_max = ref_sv.max().item()
    ref_weight_max = torch.linalg.matrix_norm(model.layers[3].weight.detach(), ord=2).item()
    assert jac.last_summary[JACOBIAN_MAX] == pytest.approx(ref_jac_max, rel=1e-5)
    assert weights.last_summary[WEIGHT_MAX] == pytest.approx(ref_weight_max, rel=1e-5)
    assert float(fit.callback_metrics[JACOBIAN_MAX]) == pytest.approx(ref_jac_max, rel=1e-5)
    assert any(k.startswith("spectra/fisher/") for k in fisher.last_summary)

    # CSV: rows at steps 0, 2, 4; the last equals the reference.
    rows = csv_metrics(f"{csv_logger.log_dir}/metrics.csv")
    assert sorted(rows[JACOBIAN_MAX]) == [0, 2, 4]
    assert rows[JACOBIAN_MAX][4] == pytest.approx(ref_jac_max, rel=1e-5)
    assert rows[WEIGHT_MAX][4] == pytest.approx(ref_weight_max, rel=1e-5)
    for key in fisher.last_summary:
        assert sorted(rows[key]) == [0, 2, 4]

    # TensorBoard: scalars, histograms and the figure.
    events = tensorboard_events(tb_logger.log_dir)
    scalars = {e.step: e.value for e in events.Scalars(JACOBIAN_MAX)}
    assert sorted(scalars) == [0, 2, 4]
    assert scalars[4] == pytest.approx(ref_jac_max, rel=1e-5)
    tags = events.Tags()
    assert {"spectra/jacobian/singular_values", "spectra/fisher/eigenvalues"} <= set(tags["histograms"])
    assert "spectra/weights/layers.0.weight/singular_values" in tags["histograms"]
    hist = events.Histograms("spectra/jacobian/singular_values")[-1]
    assert hist.step == 4 and hist.histogram_value.num == 60  # 10 samples x 6 singular values
    assert hist.histogram_value.max == pytest.approx(ref_jac_max, rel=1e-5)
    assert "spectra/jacobian/figure" in tags["images"]
    # the image is the saved PNG's pixels (no second render), one per measurement
    from matplotlib.image import imread

    (png,) = tmp_path.glob("**/figures/spectra_jacobian_figure.png")
    images = events.Images("spectra/jacobian/figure")
    assert [i.step for i in images] == [0, 2, 4]
    assert (images[-1].height, images[-1].width) == imread(png).shape[:2]

    # W&B offline run file: scalars at their trainer step, histograms as W&B histograms.
    (run,) = offline_runs(tmp_path)
    wandb_rows = history(run)
    logged = {row["trainer/global_step"]: row[JACOBIAN_MAX] for row in wandb_rows if JACOBIAN_MAX in row}
    assert sorted(logged) == [0, 2, 4]
    assert logged[4] == pytest.approx(ref_jac_max, rel=1e-5)
    histograms = [row["spectra/jacobian/singular_values"] for row in wandb_rows if "spectra/jacobian/singular_values" in row]
    assert len(histograms) == 3 and histograms[-1]["_type"] == "histogram"
    assert sum(histograms[-1]["values"]) == 60  # 10 samples x 6 singular values
    assert not _undocumented({k for row in wandb_rows for k in row})  # docs/logged_keys.md
    # One W&B step (one history row) per measurement: its scalars, histograms and figure.
    measured = [row for row in wandb_rows if any(k.startswith("spectra/") for k in row)]
    assert len(measured) == 9  # 3 monitors x steps 0, 2, 4
    for row in measured:
        if JACOBIAN_MAX in row:
            assert {"spectra/jacobian/singular_values", "spectra/jacobian/figure"} <= set(row)
        if WEIGHT_MAX in row:
            assert {f"spectra/weights/layers.{i}.weight/singular_values" for i in (0, 3)} <= set(row)

    # The figure is also a PNG in the run folder.
    assert list(tmp_path.glob("**/figures/spectra_jacobian_figure.png"))


def _undocumented(keys) -> set[str]:
    """The keys that match no key in docs/logged_keys.md's tables (``<name>`` placeholders match
    one path segment, ``{a,b}`` either; W&B's own ``_step``-style keys and ``epoch`` ignored)."""
    import re

    from tests.conftest import REPO_ROOT

    patterns = []
    for line in (REPO_ROOT / "docs" / "logged_keys.md").read_text().splitlines():
        if line.startswith("| `"):
            for key in re.findall(r"`([^`]+)`", line.split(" | ")[0]):
                pattern = re.escape(key).replace(r"\{", "{").replace(r"\}", "}").replace(r"\<", "<").replace(r"\>", ">")
                pattern = re.sub(r"<[^>]+>", r"[^/]+", pattern)
                pattern = re.sub(r"\{([^}]+)\}", lambda m: "(" + m.group(1).replace(",", "|") + ")", pattern)
                patterns.append(re.compile(pattern + "$"))
    ignored = {"epoch", "trainer/global_step"}
    return {k for k in keys if not k.startswith("_") and k not in ignored
            and not any(p.match(k) for p in patterns)}


def test_plain_trainer_run_records_the_callbacks_settings_in_the_wandb_config(tmp_path):
    from ortho_lightning.callbacks import OrthogonalRegularizer

    wb_logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="settings")
    csv_logger = CSVLogger(tmp_path, name="csv")
    callbacks = [
        JacobianSpectrumMonitor(every_n_steps=3, probe_size=5, chunk_size=2),
        FisherSpectrumMonitor(every_n_steps=None, every_n_epochs=1, probe_size=2, method="lanczos", k=3),
        WeightSpectrumMonitor(every_n_steps=3, include="layers.*"),
        OrthogonalRegularizer(coefficient=0.25, gain=1.5, kind="srip", include="layers.0", log_every_n_steps=1),
    ]
    fit = trainer(tmp_path, callbacks, logger=[wb_logger, csv_logger], max_steps=1, log_every_n_steps=1)
    fit.fit(TinyNet(), loader())
    wb_logger.experiment.finish()
    (run,) = offline_runs(tmp_path)
    config = wandb_config(run)
    jac = config["callbacks/JacobianSpectrumMonitor"]
    assert (jac["every_n_steps"], jac["probe_size"], jac["chunk_size"], jac["figure"]) == (3, 5, 2, False)
    fisher = config["callbacks/FisherSpectrumMonitor"]
    assert (fisher["method"], fisher["k"], fisher["every_n_epochs"], fisher["every_n_steps"]) == ("lanczos", 3, 1, None)
    assert config["callbacks/WeightSpectrumMonitor"]["include"] == ["layers.*"]
    reg = config["callbacks/OrthogonalRegularizer"]
    assert (reg["coefficient"], reg["gain"], reg["kind"], reg["include"]) == (0.25, 1.5, "srip", ["layers.0"])
    # every key the run logged (monitors, regulariser) is in docs/logged_keys.md
    keys = {k for row in history(run) for k in row}
    assert {"ortho/penalty", "ortho/defect/layers.0.weight", "spectra/fisher/max",
            "spectra/weights/layers.0.weight/max"} <= keys
    assert not _undocumented(keys)
    # the CSV logger's hparams.yaml has them too
    hparams = (Path(csv_logger.log_dir) / "hparams.yaml").read_text()
    assert "callbacks/OrthogonalRegularizer" in hparams and "srip" in hparams


# ------------------------------------------------------------------------ training unchanged
class _Snapshot(Callback):
    """Placed around the monitors: records modes and gradients before, checks them after."""

    def __init__(self, role: str, shared: dict) -> None:
        self.role, self.shared = role, shared

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        state = (
            [m.training for m in pl_module.modules()],
            [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()],
            torch.get_rng_state(),
        )
        if self.role == "before":
            self.shared["before"] = state
            return
        modes, grads, rng = self.shared["before"]
        assert state[0] == modes
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(state[1], grads))
        assert torch.equal(state[2], rng)
        self.shared["checked"] = self.shared.get("checked", 0) + 1


def _fit_weights(tmp_path, callbacks):
    torch.manual_seed(1)
    model = TinyNet(dropout=0.3)
    model.layers[2].eval()  # a submodule frozen in eval mode must stay so
    fit = trainer(tmp_path, callbacks, max_steps=4, accumulate_grad_batches=2)
    fit.fit(model, loader(shuffle=True))
    return [p.detach().clone() for p in model.parameters()]


def test_training_with_monitors_ends_at_identical_weights(tmp_path):
    shared: dict = {}
    monitors = [
        JacobianSpectrumMonitor(every_n_steps=1, probe_size=8),
        FisherSpectrumMonitor(every_n_steps=2, every_n_epochs=None, probe_size=4),
        WeightSpectrumMonitor(every_n_steps=3, on_fit_start=False),
    ]
    callbacks = [_Snapshot("before", shared), *monitors, _Snapshot("after", shared)]
    with_monitors = _fit_weights(tmp_path / "a", callbacks)
    without = _fit_weights(tmp_path / "b", [])
    assert all(torch.equal(a, b) for a, b in zip(with_monitors, without))
    assert shared["checked"] == 8  # 4 optimizer steps x 2 accumulated batches
    # The cadence counts optimizer steps, not batches: with accumulate_grad_batches=2 the
    # 8 batches are 4 steps.
    assert [m.measured_steps for m in monitors] == [[0, 1, 2, 3, 4], [0, 2, 4], [3]]


# ------------------------------------------------------------------------ resume
def test_resume_continues_the_same_probe_and_series(tmp_path):
    def run(root, max_epochs, val_seed, ckpt_path=None):
        torch.manual_seed(2)
        monitor = JacobianSpectrumMonitor(every_n_steps=2, probe_size=6, probe_source="val")
        logger = CSVLogger(root, name="csv")
        fit = trainer(root, [monitor], logger=logger, max_epochs=max_epochs, limit_train_batches=3)
        model = TinyNet()
        fit.fit(model, loader(), loader(seed=val_seed), ckpt_path=ckpt_path)
        return fit, monitor, csv_metrics(f"{logger.log_dir}/metrics.csv")

    fit_a, first, _ = run(tmp_path / "a", 1, val_seed=10)
    ckpt = tmp_path / "a.ckpt"
    fit_a.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["callbacks"][first.state_key]
    assert torch.equal(state["probe"], first.probe)

    # The resumed run is given a *different* val loader: a fresh probe would change the series.
    _, resumed, resumed_rows = run(tmp_path / "b", 2, val_seed=99, ckpt_path=ckpt)
    _, straight, straight_rows = run(tmp_path / "c", 2, val_seed=10)
    assert torch.equal(resumed.probe, first.probe)
    assert resumed.measured_steps == [0, 2, 4, 6] and straight.measured_steps == [0, 2, 4, 6]
    assert sorted(resumed_rows[JACOBIAN_MAX]) == [4, 6]
    for step in (4, 6):
        assert resumed_rows[JACOBIAN_MAX][step] == pytest.approx(straight_rows[JACOBIAN_MAX][step], rel=1e-6)
    assert pickle.loads(pickle.dumps(resumed)).probe.shape == first.probe.shape


# ------------------------------------------------------------------------ failures
def _failing_once(real):
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated out of memory")
        return real(*args, **kwargs)

    return fake


class _NaNAtStep(Callback):
    """Puts a NaN into ``layers.0.weight`` right before the monitor sees step ``step`` and takes
    it out right after (with lr = 0 training is otherwise unaffected)."""

    def __init__(self, step: int, role: str, shared: dict) -> None:
        self.step, self.role, self.shared = step, role, shared

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        with torch.no_grad():
            w = pl_module.layers[0].weight
            if self.role == "inject":
                self.shared["saved"] = w[0, 0].item()
                w[0, 0] = float("nan")
            else:
                w[0, 0] = self.shared["saved"]


@pytest.mark.parametrize("failure", ["exception", "nan_weights"])
def test_a_failing_measurement_warns_and_the_next_cadence_tries_again(tmp_path, monkeypatch, failure):
    if failure == "exception":
        monkeypatch.setattr(spectra, "jacobian_singular_values", _failing_once(spectra.jacobian_singular_values))
        monitor = JacobianSpectrumMonitor(every_n_steps=1, probe_size=4)
        callbacks = [monitor]
        expected = "RuntimeError: simulated out of memory"
    else:
        monitor = WeightSpectrumMonitor(every_n_steps=1)
        shared: dict = {}
        callbacks = [_NaNAtStep(1, "inject", shared), monitor, _NaNAtStep(1, "restore", shared)]
        expected = "(non-finite|NaN|converge)"
    with pytest.warns(RuntimeWarning, match=f"measurement at step 1 failed .*{expected}"):
        trainer(tmp_path, callbacks, max_steps=3).fit(TinyNet(lr=0.0), loader())
    assert monitor.measured_steps == [0, 2, 3]
    assert monitor.failures == 1


# ------------------------------------------------------------------------ other entry points
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_epoch_cadence_and_validate_test_predict_with_monitors_attached_in_mixed_precision(tmp_path, precision):
    monitors = [
        JacobianSpectrumMonitor(every_n_steps=1, probe_size=4),
        FisherSpectrumMonitor(probe_size=4),  # default: every epoch
        WeightSpectrumMonitor(every_n_steps=3, every_n_epochs=2),
    ]
    model = TinyNet()
    fit = trainer(tmp_path, monitors, max_epochs=2, limit_train_batches=2, precision=precision)
    fit.fit(model, loader())
    measured = [[0, 1, 2, 3, 4], [0, 2, 4], [0, 3, 4]]
    assert [m.measured_steps for m in monitors] == measured
    assert all(torch.isfinite(torch.tensor(list(m.last_summary.values()))).all() for m in monitors)
    (val,) = fit.validate(model, loader(), verbose=False)
    (test,) = fit.test(model, loader(), verbose=False)
    preds = fit.predict(model, loader())
    assert "val_loss" in val and "test_loss" in test
    assert torch.cat(preds).shape == (64, 3)
    assert [m.measured_steps for m in monitors] == measured  # nothing measured outside fit


def test_probe_follows_the_model_dtype_under_64_true_precision(tmp_path):
    # The probe comes straight from the float32 loader; the model is float64 here.
    monitor = JacobianSpectrumMonitor(every_n_steps=1, probe_size=4)
    trainer(tmp_path, [monitor], max_steps=1, precision="64-true").fit(TinyNet(), loader())
    assert monitor.probe.dtype == torch.float32
    assert monitor.measured_steps == [0, 1] and monitor.failures == 0


BATCHES = {
    "tensor": (torch.ones(2, 3), torch.ones(2, 3)),
    "tuple": ((torch.ones(2, 3), torch.zeros(2)), torch.ones(2, 3)),
    "dict": ({"x": torch.ones(2, 3), "y": torch.zeros(2)}, torch.ones(2, 3)),
}


@pytest.mark.parametrize(("batch", "expected"), BATCHES.values(), ids=BATCHES.keys())
def test_default_input_finds_the_model_input(batch, expected):
    assert torch.equal(default_input(batch), expected)


def test_default_input_names_the_batch_type_it_cannot_read():
    with pytest.raises(ConfigurationError, match="batch of type str.*pass input_fn="):
        default_input("not a batch")


# ------------------------------------------------------------------------ DDP
@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_measures_and_logs_on_rank_zero_only(tmp_path):
    run_ddp_script("monitors_ddp.py", str(tmp_path), timeout=240)
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0["measured_steps"] == [[0, 1, 2, 3], [0, 2], [0, 1, 2, 3]]
    assert rank1["measured_steps"] == [[], [], []] and rank1["keys"] == []
    assert rank0["has_probe"] == [True, True, False] and rank1["has_probe"] == [False, False, False]
    rows = csv_metrics(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert sorted(rows[JACOBIAN_MAX]) == [0, 1, 2, 3]
    assert {k for k in rows if k.startswith("spectra/")} == set(rank0["keys"])


# ------------------------------------------------------------------------ theory overlay
GAIN, DEPTH = 1.2, 2
THEORY_CASES = {
    # inferred from the run's OrthogonalInit (gain 1.2): prediction = measurement, a point mass
    # at gain^(2 depth), so the distance is 0
    "from-init": (True, GAIN ** (2 * DEPTH), 0.0),
    # a prediction for gain 1 (point mass at 1) against the gain-1.2 net: W1 = 1.2^4 - 1
    "explicit-gain-1": (
        {"activation": "linear", "sigma_w": 1.0, "sigma_b": 0.0, "depth": DEPTH},
        1.0,
        GAIN ** (2 * DEPTH) - 1,
    ),
}


@pytest.mark.parametrize(("theory", "atom", "expected"), THEORY_CASES.values(), ids=THEORY_CASES.keys())
def test_theory_overlay_logs_the_distance_to_the_prediction(tmp_path, monkeypatch, theory, atom, expected):
    import ortho_lightning.callbacks._monitor_base as base

    drawn = []  # (title, x range) of every figure the monitor logs

    def spy(trainer, step, scalars, histograms=None, figures=None):
        drawn.extend((fig.axes[0].get_title(), fig.axes[0].get_xlabel(), fig.axes[0].get_xlim())
                     for fig in (figures or {}).values())
        return log_measurement(trainer, step, scalars, histograms, figures)

    log_measurement = base.log_measurement
    monkeypatch.setattr(base, "log_measurement", spy)
    init = OrthogonalInit(scheme="orthogonal", gain=GAIN, activation="linear", seed=0)
    monitor = JacobianSpectrumMonitor(every_n_steps=None, probe_size=4, theory=theory, figure=True)
    logger = CSVLogger(tmp_path, name="csv")
    trainer(tmp_path, [init, monitor], logger=logger, max_steps=1).fit(
        DeepLinear(DEPTH), loader(features=WIDTH)
    )
    assert monitor.prediction.atoms.tolist() == pytest.approx([atom])
    w1 = csv_metrics(f"{logger.log_dir}/metrics.csv")["spectra/jacobian/theory_w1"]
    assert list(w1) == [0]
    assert w1[0] == pytest.approx(expected, abs=1e-5)
    assert list(tmp_path.glob("**/figures/spectra_jacobian_figure.png"))
    # the figure says what and when, and its axis shows the predicted point mass (at 1 for the
    # gain-1 prediction, away from the measured point mass at 1.2^4)
    ((title, label, (left, right)),) = drawn
    assert title == "spectra/jacobian at step 0, probe of 4 inputs"
    assert label == "squared singular value of the Jacobian d features / d input"  # spectrum_output_fn
    assert left < atom < right and left < GAIN ** (2 * DEPTH) < right


def test_theory_true_without_an_init_callback_names_what_it_needs(tmp_path):
    monitor = JacobianSpectrumMonitor(probe_size=4, theory=True)
    with pytest.raises(ConfigurationError, match="exactly one OrthogonalInit callback"):
        trainer(tmp_path, [monitor], max_steps=1).fit(DeepLinear(DEPTH), loader(features=WIDTH))


def test_fisher_theory_logs_the_measured_mean_over_the_prediction(tmp_path):
    # A deep linear net with orthogonal layers (gain 1, zero biases), a readout with
    # ||W||_F^2 = C, one input with ||x||^2 = N q: the single-input Fisher's mean eigenvalue is
    # tr(Theta) / C = (||x||^2 + 1)(L + 1) exactly, which is the prediction c (L + 1) with
    # c = N q + 1 (Gaussian likelihood, unit variance).
    q = 0.5
    model = DeepLinear(DEPTH, bias=True)
    with torch.no_grad():
        for layer in model.layers:
            torch.nn.init.orthogonal_(layer.weight)
            layer.bias.zero_()
        model.head.weight.mul_((CLASSES / model.head.weight.square().sum()).sqrt())
        model.head.bias.zero_()
    x = torch.randn(1, WIDTH)
    x = x * (WIDTH * q / x.square().sum()).sqrt()
    data = DataLoader(TensorDataset(x, torch.zeros(1, dtype=torch.long)), batch_size=1)
    args = {"activation": "linear", "sigma_w": 1.0, "sigma_b": 0.0, "depth": DEPTH,
            "width": WIDTH, "n_outputs": CLASSES, "q_star": q}
    monitor = FisherSpectrumMonitor(probe_size=1, likelihood="gaussian", theory=args)
    trainer(tmp_path, [monitor], max_steps=1).fit(model, data)
    expected_mean = (WIDTH * q + 1) * (DEPTH + 1)
    assert monitor.last_summary["spectra/fisher/theory_mean"] == pytest.approx(expected_mean)
    assert monitor.last_summary["spectra/fisher/mean"] == pytest.approx(expected_mean, rel=1e-5)
    assert monitor.last_summary["spectra/fisher/mean_over_theory"] == pytest.approx(1.0, rel=1e-5)


def test_fisher_theory_needs_one_input_and_a_gaussian_likelihood():
    args = {"activation": "tanh", "sigma_w": 1.0, "sigma_b": 0.0, "depth": 2, "width": 8, "n_outputs": 3}
    with pytest.raises(ConfigurationError, match="needs likelihood='gaussian' and probe_size=1, got likelihood='categorical', probe_size=32"):
        FisherSpectrumMonitor(theory=args)
    with pytest.raises(ConfigurationError, match=r"missing keys \['width', 'n_outputs'\]"):
        FisherSpectrumMonitor(probe_size=1, likelihood="gaussian", theory={k: args[k] for k in list(args)[:4]})


def test_fisher_slq_density_against_the_exact_spectrum(tmp_path):
    # the logged max is the exact top eigenvalue; trace = P * the density's mean, a Hutchinson
    # estimate over 400 Rademacher probes (exact quadrature per probe: 20 steps > the 12 x 12
    # dual Gram), within 10% of the exact trace; the histogram holds 512 quantiles of the density
    # above the null space's atom, inside the exact non-zero spectrum's range (+ 5 kernel widths)
    monitor = FisherSpectrumMonitor(every_n_epochs=None, probe_size=4, method="slq", figure=True,
                                    fisher_kwargs={"num_probes": 400, "lanczos_steps": 20})
    wb_logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="slq")
    model = TinyNet(lr=0.0)
    trainer(tmp_path, [monitor], logger=wb_logger, max_steps=1).fit(model, loader())
    wb_logger.experiment.finish()
    exact = spectra.fisher_eigenvalues(model, monitor.probe).double()
    summary = monitor.last_summary
    assert summary["spectra/fisher/max"] == pytest.approx(float(exact[0]), rel=1e-4)
    assert summary["spectra/fisher/trace"] == pytest.approx(float(exact.sum()), rel=0.1)
    logits_sv = dense_jacobian_svals(model, monitor.probe)
    assert summary["spectra/fisher/logits_jacobian_max"] == pytest.approx(float(logits_sv.max()), rel=1e-5)
    assert summary["spectra/fisher/max_over_logits_jacobian_sq"] == pytest.approx(
        float(exact[0]) / float(logits_sv.max()) ** 2, rel=1e-4)
    (run,) = offline_runs(tmp_path)
    (row,) = [r for r in history(run) if "spectra/fisher/eigenvalues" in r]
    hist = row["spectra/fisher/eigenvalues"]
    assert sum(hist["values"]) == 512
    sigma = float(exact[0]) / 100
    assert 5 * sigma <= min(hist["bins"]) and max(hist["bins"]) <= float(exact[0]) + 6 * sigma
    assert "spectra/fisher/figure" in row


def test_fisher_kwargs_seed_is_a_fresh_generator_at_each_measurement(tmp_path):
    # a YAML-friendly int seed reaches Lanczos as torch.Generator().manual_seed(seed) (what the
    # spectra functions' deprecated seed= meant), without their DeprecationWarning; max_iter=3
    # stops Lanczos early, so the result depends on the random start and shows which seed was used

    monitor = FisherSpectrumMonitor(every_n_epochs=None, probe_size=4, method="lanczos", k=2,
                                    jacobian_ratio=False, fisher_kwargs={"seed": 3, "max_iter": 3})
    model = TinyNet(lr=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, [monitor], max_steps=1).fit(model, loader())
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning) and "seed" in str(w.message)]
    assert monitor.failures == 0 and monitor.measured_steps == [0]

    def top(seed: int) -> float:
        gen = torch.Generator().manual_seed(seed)
        return float(spectra.fisher_eigenvalues(model, monitor.probe, method="lanczos", k=2,
                                                max_iter=3, generator=gen)[0])

    assert monitor.last_summary["spectra/fisher/max"] == pytest.approx(top(3), rel=1e-6)
    assert top(3) != pytest.approx(top(0), rel=1e-6)


@pytest.mark.parametrize("log_axis", [False, True], ids=["linear", "log"])
def test_spectrum_figure_bars_are_a_density_or_fractions_per_bin(log_axis):
    # the drawn bars, read back from the figure: on a linear axis a density (area 1), on a log
    # axis the fraction of the values in each bin (sum 1); the current step filled, older ones
    # outlines; a log axis labels its ticks without mathtext (parsed anew every figure)
    from ortho_lightning.callbacks._monitor_base import spectrum_figure

    values = torch.linspace(1.0, 1e3 if log_axis else 2.0, 1000)
    fig = spectrum_figure([(0, values), (10, values * 1.5)], "value", title="t")
    bars = fig.axes[0].patches
    assert [b.get_fill() for b in bars] == [False, True]
    for bar in bars:
        heights, edges = bar.get_data().values, bar.get_data().edges
        total = heights.sum() if log_axis else (heights * torch.tensor(edges).diff().numpy()).sum()
        assert total == pytest.approx(1.0, rel=1e-6)
        assert len(edges) == 41 and edges[0] == pytest.approx(1.0)
    assert fig.axes[0].get_xscale() == ("log" if log_axis else "linear")
    fig.savefig(io.BytesIO(), format="png")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert labels and not any("$" in text for text in labels)
