from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from ortho_lightning.models import MLPClassifier


def _loader(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # 4 classes from two signs
    return DataLoader(TensorDataset(x, y), batch_size=16)


def _trainer(tmp_path, **kwargs):
    return Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, accelerator="cpu", **kwargs)


def test_fit_logs_loss_and_accuracy_equal_to_a_manual_count(tmp_path):
    model = MLPClassifier(depth=2, width=16, input_shape=(6,), num_classes=4,
                          optimizer=partial(torch.optim.Adam, lr=1e-2))
    trainer = _trainer(tmp_path, max_epochs=3)
    trainer.fit(model, _loader(), _loader(seed=1))
    metrics = trainer.callback_metrics
    assert {"train/loss", "train/acc", "val/loss", "val/acc"} <= set(metrics)
    trainer.test(model, _loader(seed=2), verbose=False)
    x, y = _loader(seed=2).dataset.tensors
    with torch.no_grad():
        logits = model(x)
    assert trainer.callback_metrics["test/acc"].item() == pytest.approx(
        (logits.argmax(-1) == y).float().mean().item(), abs=1e-6)
    assert trainer.callback_metrics["test/loss"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)


def test_optimizer_and_scheduler_callables_are_used():
    model = MLPClassifier(depth=1, width=4, optimizer=partial(torch.optim.SGD, lr=0.3, momentum=0.5),
                          lr_scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=7))
    config = model.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["lr"] == 0.3 and optimizer.defaults["momentum"] == 0.5
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.step_size == 7
    plateau = MLPClassifier(depth=1, width=4, lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert plateau.configure_optimizers()["lr_scheduler"]["monitor"] == "val/loss"


def test_checkpoint_is_weights_only_safe_and_reloads(tmp_path):
    model = MLPClassifier(depth=2, width=8, input_shape=(6,), num_classes=4,
                          optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, _loader())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["optimizer"] == "torch.optim.sgd.SGD(lr=0.1)"
    restored = MLPClassifier.load_from_checkpoint(path, optimizer=torch.optim.SGD)
    x = torch.randn(3, 6)
    torch.testing.assert_close(restored(x), model(x))
