"""NTKSpectrumMonitor: logged values against a dense vmap(jacrev) NTK of the same model, drift 0
at fit start and > 0 after training, checkpoint resume against the stored reference kernel, a
failing measurement warns, misconfiguration names the argument."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

import ortho_lightning.spectra as spectra
from ortho_lightning.callbacks import NTKSpectrumMonitor
from ortho_lightning.exceptions import ConfigurationError
from tests.callbacks._monitor_helpers import TinyNet, csv_metrics, loader, trainer
from tests.spectra._models import dense_ntk

KEYS = [f"spectra/ntk/{k}" for k in ("max", "min", "trace", "mean", "condition", "drift")]


def _dense_reference(model, probe):
    with torch.no_grad():
        theta = dense_ntk(copy.deepcopy(model).double(), probe.double())
    return theta, torch.linalg.eigvalsh(theta).flip(0)


def test_logs_spectrum_and_drift_against_a_dense_ntk(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(lr=0.5)
    start = copy.deepcopy(model)
    logger = CSVLogger(tmp_path, name="csv")
    monitor = NTKSpectrumMonitor(every_n_steps=3, every_n_epochs=None, probe_size=5)
    trainer(tmp_path, [monitor], logger=logger, max_steps=6).fit(model, loader())
    assert monitor.measured_steps == [0, 3, 6]
    rows = csv_metrics(f"{logger.log_dir}/metrics.csv")
    for key in KEYS:
        assert sorted(rows[key]) == [0, 3, 6], key

    theta0, eig0 = _dense_reference(start, monitor.probe)
    theta6, eig6 = _dense_reference(model, monitor.probe)
    assert monitor.reference.shape == (15, 15)  # 5 probe samples x 3 outputs
    torch.testing.assert_close(monitor.reference.double(), theta0, rtol=1e-4, atol=1e-6)
    assert rows["spectra/ntk/drift"][0] == 0.0
    expected = float(torch.linalg.matrix_norm(theta6 - theta0) / torch.linalg.matrix_norm(theta0))
    assert expected > 0.01  # training moved the kernel
    assert rows["spectra/ntk/drift"][6] == pytest.approx(expected, rel=1e-3)
    for step, eig in ((0, eig0), (6, eig6)):
        assert rows["spectra/ntk/max"][step] == pytest.approx(float(eig[0]), rel=1e-5)
        assert rows["spectra/ntk/min"][step] == pytest.approx(float(eig[-1]), rel=1e-3)
        assert rows["spectra/ntk/trace"][step] == pytest.approx(float(eig.sum()), rel=1e-5)
        assert rows["spectra/ntk/condition"][step] == pytest.approx(float(eig[0] / eig[-1]), rel=1e-3)
    assert monitor.last_summary["spectra/ntk/drift"] == rows["spectra/ntk/drift"][6]


def test_resume_measures_drift_against_the_stored_reference(tmp_path):
    def run(root, max_epochs, val_seed, ckpt_path=None):
        torch.manual_seed(3)
        monitor = NTKSpectrumMonitor(every_n_steps=2, every_n_epochs=None, probe_size=4,
                                     probe_source="val")
        logger = CSVLogger(root, name="csv")
        fit = trainer(root, [monitor], logger=logger, max_epochs=max_epochs, limit_train_batches=3)
        fit.fit(TinyNet(lr=0.3), loader(), loader(seed=val_seed), ckpt_path=ckpt_path)
        return fit, monitor, csv_metrics(f"{logger.log_dir}/metrics.csv")

    fit_a, first, _ = run(tmp_path / "a", 1, val_seed=10)
    ckpt = tmp_path / "a.ckpt"
    fit_a.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["callbacks"][first.state_key]
    assert torch.equal(state["reference"], first.reference)

    # resumed with another val loader: a fresh probe or reference would change the drift
    _, resumed, resumed_rows = run(tmp_path / "b", 2, val_seed=99, ckpt_path=ckpt)
    _, straight, straight_rows = run(tmp_path / "c", 2, val_seed=10)
    assert torch.equal(resumed.reference, first.reference)
    assert resumed.measured_steps == straight.measured_steps == [0, 2, 4, 6]
    drift = "spectra/ntk/drift"
    assert sorted(resumed_rows[drift]) == [4, 6]
    for step in (4, 6):
        assert straight_rows[drift][step] > 0
        assert resumed_rows[drift][step] == pytest.approx(straight_rows[drift][step], rel=1e-6)
    assert torch.equal(pickle.loads(pickle.dumps(resumed)).reference, first.reference)


def test_a_failing_measurement_warns_and_training_goes_on(tmp_path, monkeypatch):
    real, calls = spectra.ntk_matrix, {"n": 0}

    def fails_second_time(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(spectra, "ntk_matrix", fails_second_time)
    monitor = NTKSpectrumMonitor(every_n_steps=1, every_n_epochs=None, probe_size=4)
    with pytest.warns(RuntimeWarning, match="measurement at step 1 failed .*simulated out of memory"):
        trainer(tmp_path, [monitor], max_steps=3).fit(TinyNet(lr=0.3), loader())
    assert monitor.measured_steps == [0, 2, 3] and monitor.failures == 1
    assert monitor.last_summary["spectra/ntk/drift"] > 0  # the reference from step 0 survived


def test_without_the_fit_start_measurement_no_drift_is_logged(tmp_path):
    monitor = NTKSpectrumMonitor(every_n_steps=2, every_n_epochs=None, on_fit_start=False,
                                 probe_size=4)
    trainer(tmp_path, [monitor], max_steps=2).fit(TinyNet(), loader())
    assert monitor.measured_steps == [2] and monitor.reference is None
    assert "spectra/ntk/drift" not in monitor.last_summary
    assert "spectra/ntk/condition" in monitor.last_summary


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"output_fn": 3}, "NTKSpectrumMonitor: output_fn must be callable or None, got 3"),
        ({"chunk_size": 0}, "NTKSpectrumMonitor: chunk_size must be an integer >= 1 or None, got 0"),
        ({"probe_size": 0}, "NTKSpectrumMonitor: probe_size must be an integer >= 1, got 0"),
        ({"every_n_epochs": None, "on_fit_start": False}, "would never measure"),
    ],
    ids=["output_fn", "chunk_size", "probe_size", "never"],
)
def test_bad_arguments_name_accepted_and_received(kwargs, message):
    with pytest.raises(ConfigurationError) as info:
        NTKSpectrumMonitor(**kwargs)
    assert message in str(info.value) and "NTKSpectrumMonitor" in str(info.value)
