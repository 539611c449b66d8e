from functools import partial

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.models import CNNClassifier, MLPClassifier, RNNClassifier


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


# (model class, its kwargs for 6-feature inputs) for every recipe model
MODELS = [
    (MLPClassifier, {"depth": 2, "width": 8, "input_shape": (6,)}),
    (CNNClassifier, {"kind": "1d", "depth": 2, "channels": 4, "input_shape": (6, 1)}),
    (RNNClassifier, {"cell": "lstm", "hidden_size": 5, "input_shape": (3, 2)}),
]
OPTIMIZERS = [
    (torch.optim.Adam, None, torch.optim.Adam, {"lr": 1e-3}),
    (partial(torch.optim.SGD, lr=0.1, momentum=0.5),
     partial(torch.optim.lr_scheduler.StepLR, step_size=7, gamma=0.5),
     torch.optim.SGD, {"lr": 0.1, "momentum": 0.5}),
]


@pytest.mark.parametrize(("model_class", "kwargs"), MODELS, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize(("optimizer", "scheduler", "optimizer_class", "defaults"), OPTIMIZERS,
                         ids=["adam-default", "sgd-partial-steplr"])
def test_plain_trainer_checkpoint_is_weights_only_safe_and_reloads(
    tmp_path, model_class, kwargs, optimizer, scheduler, optimizer_class, defaults
):
    model = model_class(num_classes=4, optimizer=optimizer, lr_scheduler=scheduler, **kwargs)
    trainer = _trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, _loader())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    torch.load(path, weights_only=True)  # no pickled callables inside

    restored = model_class.load_from_checkpoint(path)  # no argument given again
    x = torch.randn(3, 6)
    torch.testing.assert_close(restored(x), model(x))
    config = restored.configure_optimizers()
    built = config if scheduler is None else config["optimizer"]
    assert type(built) is optimizer_class
    assert {k: built.defaults[k] for k in defaults} == defaults
    if scheduler is not None:
        step = config["lr_scheduler"]["scheduler"]
        assert (step.step_size, step.gamma) == (7, 0.5)
    # and training resumes from it with the same optimizer (state included)
    resumed = _trainer(tmp_path / "resumed", max_steps=4, limit_val_batches=0)
    resumed.fit(model_class.load_from_checkpoint(path), _loader(), ckpt_path=path)
    assert resumed.global_step == 4


class _MakeSGD:
    """A callable object: picklable, but not a class or function a checkpoint can name."""

    def __call__(self, params):
        return torch.optim.SGD(params, lr=0.1)


def test_unnameable_optimizer_is_described_and_reload_asks_for_it(tmp_path):
    model = MLPClassifier(depth=1, width=4, input_shape=(6,), num_classes=4, optimizer=_MakeSGD())
    trainer = _trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(model, _loader())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    assert "_MakeSGD" in torch.load(path, weights_only=True)["hyper_parameters"]["optimizer"]
    with pytest.raises(ConfigurationError, match=r"optimizer.*pass it again.*optimizer="):
        MLPClassifier.load_from_checkpoint(path)
    restored = MLPClassifier.load_from_checkpoint(path, optimizer=torch.optim.SGD)
    assert isinstance(restored.configure_optimizers(), torch.optim.SGD)


def test_class_config_with_a_bad_class_path_names_it():
    with pytest.raises(ConfigurationError, match=r"^MLPClassifier: optimizer.class_path must be an importable "
                       r"'module.Class' path \(module 'torch.optim' has no attribute 'Nope'\), "
                       r"got 'torch.optim.Nope'$"):
        MLPClassifier(depth=1, width=4, optimizer={"class_path": "torch.optim.Nope", "init_args": {}})
