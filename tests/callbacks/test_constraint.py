"""OrthogonalConstraint: orthogonality after fit, plain + parametrized checkpoints, exact resume,
cache correctness under accumulation, bf16-mixed and float16 + GradScaler, removal, misconfiguration, pickling.

``TinyRNN``/``loader``/``make_trainer`` are also used by the regularizer tests and the DDP script.
"""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader, TensorDataset

from ortho_lightning.callbacks import OrthogonalConstraint
from ortho_lightning.exceptions import ConfigurationError, SelectionError
from tests.callbacks._monitor_helpers import trainer as make_trainer

IN, HIDDEN, CLASSES, STEPS = 2, 8, 3, 5


class TinyRNN(LightningModule):
    """tanh RNN (2 -> 8) over 5 steps, a linear encoder and a linear head; Adam."""

    def __init__(self, lr: float = 0.03, extra_loss=None) -> None:
        super().__init__()
        self.lr = lr
        self.extra_loss = extra_loss  # f(module) -> scalar added to the loss (by-hand penalties)
        self.encoder = nn.Linear(IN, IN)
        self.rnn = nn.RNN(IN, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        return self.head(self.rnn(self.encoder(x))[0][:, -1])

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        if self.extra_loss is not None:
            loss = loss + self.extra_loss(self)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def loader(n: int = 32, batch_size: int = 8, dtype=torch.float32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, STEPS, IN, generator=g, dtype=dtype)
    return DataLoader(TensorDataset(x, torch.randint(0, CLASSES, (n,), generator=g)), batch_size=batch_size)


def gram_error(W, gain):
    return (W.T @ W / gain**2 - torch.eye(W.shape[1], dtype=W.dtype)).abs().max().item()


pytestmark = pytest.mark.usefixtures("one_thread")  # small matrices: threads only spin


def test_fit_keeps_recurrent_and_linear_weights_orthogonal(tmp_path):
    model = TinyRNN().double()
    start = model.rnn.weight_hh_l0.detach().clone()
    cb = OrthogonalConstraint(include=["rnn", "encoder"], gain=1.3, log_every_n_steps=10)
    trainer = make_trainer(tmp_path, [cb], max_steps=200, precision="64-true")
    trainer.fit(model, loader())
    W_hh = model.rnn.weight_hh_l0.detach()
    assert gram_error(W_hh, 1.3) < 1e-5 and gram_error(model.encoder.weight.detach(), 1.3) < 1e-5
    assert (W_hh - 1.3 * torch.linalg.svd(start)[0]).abs().max() > 1e-2  # it moved
    assert cb.constrained == ["encoder.weight", "rnn.weight_hh_l0"]
    assert not parametrize.is_parametrized(model.rnn, "weight_ih_l0")
    assert not parametrize.is_parametrized(model.head)
    logged = trainer.logged_metrics["ortho/defect/rnn.weight_hh_l0"]
    assert logged.item() < 1e-6


def test_checkpoint_is_plain_and_resume_is_exact(tmp_path):
    def callback():
        return OrthogonalConstraint(include="rnn", gain=0.9, update_base_every_n_steps=3, log_every_n_steps=None)

    kwargs = dict(precision="64-true", max_epochs=3, limit_val_batches=0)
    torch.manual_seed(0)
    straight = TinyRNN().double()
    make_trainer(tmp_path / "a", [callback()], **kwargs).fit(straight, loader())

    torch.manual_seed(0)
    first = TinyRNN().double()
    t1 = make_trainer(tmp_path / "b", [callback()], **{**kwargs, "max_epochs": 1})
    t1.fit(first, loader())
    ckpt_path = tmp_path / "k.ckpt"
    t1.save_checkpoint(ckpt_path)

    ckpt = torch.load(ckpt_path, weights_only=True)
    assert "rnn.weight_hh_l0" in ckpt["state_dict"]
    assert not any("parametrizations" in k for k in ckpt["state_dict"])
    bare = TinyRNN().double()
    bare.load_state_dict(ckpt["state_dict"])  # strict: a plain model loads the plain weights
    x = next(iter(loader(dtype=torch.float64)))[0]
    torch.testing.assert_close(bare(x), first(x), rtol=0, atol=1e-12)

    torch.manual_seed(123)  # a different start: everything must come from the checkpoint
    resumed = TinyRNN().double()
    make_trainer(tmp_path / "c", [callback()], **kwargs).fit(resumed, loader(), ckpt_path=ckpt_path)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    torch.testing.assert_close(resumed(x), straight(x), rtol=0, atol=0)


def _fit_and_save(tmp_path):
    """Three constrained steps of a TinyRNN, saved to ``tmp_path / "k.ckpt"``; returns the model."""
    model = TinyRNN()
    trainer = make_trainer(tmp_path, [OrthogonalConstraint(include="rnn")], max_steps=3)
    trainer.fit(model, loader())
    trainer.save_checkpoint(tmp_path / "k.ckpt")
    return model


def test_resumed_optimizer_state_matches_parameters(tmp_path):
    _fit_and_save(tmp_path)
    resumed = TinyRNN()
    t2 = make_trainer(tmp_path, [OrthogonalConstraint(include="rnn")], max_steps=4)
    t2.fit(resumed, loader(), ckpt_path=tmp_path / "k.ckpt")
    opt = t2.optimizers[0]
    original = resumed.rnn.parametrizations.weight_hh_l0.original
    assert any(p is original for p in opt.param_groups[0]["params"])
    for p in opt.param_groups[0]["params"]:
        assert opt.state[p]["exp_avg"].shape == p.shape


@pytest.mark.parametrize("accumulate", [1, 2])
def test_cache_gives_the_same_training_as_no_cache(tmp_path, accumulate):
    weights = []
    for cache in (False, True):
        torch.manual_seed(0)
        model = TinyRNN().double()
        cb = OrthogonalConstraint(include="rnn", cache=cache, log_every_n_steps=None)
        make_trainer(
            tmp_path, [cb], max_steps=4, precision="64-true", accumulate_grad_batches=accumulate
        ).fit(model, loader())
        weights.append(model.rnn.weight_hh_l0.detach())
    assert torch.equal(weights[0], weights[1])
    assert not parametrize._cache_enabled  # the global cache is closed after fit


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_keeps_float32_weights_orthogonal(tmp_path, precision):
    """Under autocast the parametrization is computed in float32 (16-mixed: float16 autocast
    and a GradScaler, see ``make_trainer``); hard and relaxed constraints both hold."""
    model = TinyRNN()
    start = [model.rnn.weight_hh_l0.detach().clone(), model.encoder.weight.detach().clone()]
    callbacks = [
        OrthogonalConstraint(include="rnn", relax=0.2, gain=2.0),
        OrthogonalConstraint(include="encoder", gain=1.5),
    ]
    make_trainer(tmp_path, callbacks, max_steps=30, precision=precision).fit(model, loader())
    W, V = model.rnn.weight_hh_l0.detach(), model.encoder.weight.detach()
    s = torch.linalg.svdvals(W)
    assert W.dtype == V.dtype == torch.float32
    assert s.min() >= 2.0 * 0.8 - 1e-5 and s.max() <= 2.0 * 1.2 + 1e-5
    assert gram_error(V, 1.5) < 1e-5
    assert not torch.allclose(V, start[1], atol=1e-3) and not torch.allclose(W, start[0], atol=1e-3)


@pytest.mark.parametrize("triv", ["expm", "cayley"])
def test_bf16_true_trains_half_precision_weights_on_the_manifold(tmp_path, triv):
    model = TinyRNN()
    start = model.rnn.weight_hh_l0.detach().clone()
    cb = OrthogonalConstraint(include="rnn", gain=1.5, triv=triv)
    make_trainer(tmp_path, [cb], max_steps=20, precision="bf16-true").fit(model, loader())
    W = model.rnn.weight_hh_l0.detach()
    assert W.dtype == torch.bfloat16
    assert gram_error(W.float(), 1.5) < 16 * torch.finfo(torch.bfloat16).eps
    assert (W.float() - start).abs().max() > 0.05


def test_remove_at_fit_end_leaves_a_plain_model_and_validate_works(tmp_path):
    model = TinyRNN()
    trainer = make_trainer(tmp_path, [OrthogonalConstraint(include="rnn", remove_at_fit_end=True)], max_steps=5)
    trainer.fit(model, loader(), loader())
    assert type(model.rnn) is nn.RNN and not parametrize.is_parametrized(model)
    assert gram_error(model.rnn.weight_hh_l0.detach(), 1.0) < 1e-5
    assert "rnn.weight_hh_l0" in model.state_dict()
    trainer.validate(model, loader())  # plain model, callback inactive outside fit
    assert "val_loss" in trainer.callback_metrics


def test_validate_from_checkpoint_loads_plain_weights_into_plain_model(tmp_path):
    model = _fit_and_save(tmp_path)
    fresh = TinyRNN()
    t2 = make_trainer(tmp_path, [OrthogonalConstraint(include="rnn")])
    t2.validate(fresh, loader(), ckpt_path=tmp_path / "k.ckpt")
    assert not parametrize.is_parametrized(fresh.rnn)
    torch.testing.assert_close(fresh.rnn.weight_hh_l0, model.rnn.weight_hh_l0.detach())


def test_pickle_round_trip():
    cb = OrthogonalConstraint(include=["rnn"], gain=1.5, relax=0.1)
    clone = pickle.loads(pickle.dumps(cb))
    assert clone.gain == 1.5 and clone.relax == 0.1 and clone.state_key == cb.state_key


def test_selection_of_nothing_is_an_error(tmp_path):
    cb = OrthogonalConstraint(include="rnn", types=[nn.Conv2d])
    with pytest.raises(SelectionError, match="include pattern"):
        make_trainer(tmp_path, [cb], max_steps=1).fit(TinyRNN(), loader())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gain": 0}, "^OrthogonalConstraint: gain must be a finite number > 0, got 0$"),
        ({"triv": "svd"}, r"^OrthogonalConstraint: triv must be one of \['expm', 'cayley'\] or a callable, got 'svd'$"),
        ({"relax": 1.0}, r"^OrthogonalConstraint: relax must be None or a number in \(0, 1\), got 1.0$"),
        ({"manifold": "grassmann"}, r"^OrthogonalConstraint: manifold must be one of \['stiefel', 'almost_orthogonal'\], got 'grassmann'$"),
        ({"manifold": "almost_orthogonal"}, r"^OrthogonalConstraint: relax must be a number in \(0, 1\) with manifold='almost_orthogonal', got None$"),
        ({"manifold": "stiefel", "relax": 0.1}, r"^OrthogonalConstraint: relax must be None with manifold='stiefel', got 0.1$"),
        ({"init": "random"}, r"^OrthogonalConstraint: init must be one of \['current', 'haar'\], got 'random'$"),
        ({"recurrent": "ih"}, r"^OrthogonalConstraint: recurrent must be one of \['hh', 'all'\], got 'ih'$"),
        ({"update_base_every_n_steps": 0}, "^OrthogonalConstraint: update_base_every_n_steps must be an integer >= 1 or None, got 0$"),
        ({"log_every_n_steps": 2.5}, "^OrthogonalConstraint: log_every_n_steps must be an integer >= 1 or None, got 2.5$"),
        ({"remove_at_fit_end": "yes"}, "^OrthogonalConstraint: remove_at_fit_end must be True or False, got 'yes'$"),
        ({"types": ["Linear"]}, "^OrthogonalConstraint: types must be nn.Module subclasses, got 'Linear'$"),
    ],
    ids=lambda v: str(v)[:20] if isinstance(v, dict) else "",
)
def test_misconfiguration(kwargs, match):
    with pytest.raises((ConfigurationError, SelectionError), match=match):
        OrthogonalConstraint(**kwargs)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes_identical_orthogonal_and_regularizer_equals_by_hand(tmp_path):
    """One DDP launch for both callbacks (see tests/ddp_scripts/constraint_ddp.py)."""
    from tests._ddp import run_ddp_script

    run_ddp_script("constraint_ddp.py", str(tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in r0["final"]:
        assert torch.equal(r0["final"][name], r1["final"][name]), name  # ranks identical
    for name in ("con.rnn.weight_hh_l0", "con.encoder.weight"):
        assert gram_error(r0["final"][name], 1.2) < 1e-5
    assert not torch.allclose(r0["final"]["con.head.weight"], r0["start"]["con.head.weight"])
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)  # plain weights under DDP too
    assert torch.equal(ckpt["state_dict"]["con.rnn.weight_hh_l0"], r0["final"]["con.rnn.weight_hh_l0"])
    # OrthogonalRegularizer under DDP + accumulation == the penalty added to the loss by hand
    for name in [k for k in r0["final"] if k.startswith("reg.")]:
        hand = r0["final"]["hand." + name[4:]]
        torch.testing.assert_close(r0["final"][name], hand, rtol=1e-10, atol=1e-12, msg=name)
    assert not torch.allclose(r0["final"]["reg.rnn.weight_hh_l0"], r0["start"]["reg.rnn.weight_hh_l0"])


def test_resume_with_a_different_selection_is_an_error(tmp_path):
    t1 = make_trainer(tmp_path, [OrthogonalConstraint(types=[nn.RNN])], max_steps=2)
    t1.fit(TinyRNN(), loader())
    t1.save_checkpoint(tmp_path / "k.ckpt")
    t2 = make_trainer(tmp_path, [OrthogonalConstraint()], max_steps=3)  # same state key, more layers
    with pytest.raises(ConfigurationError, match=r"the checkpoint constrained \['rnn.weight_hh_l0'\]"):
        t2.fit(TinyRNN(), loader(), ckpt_path=tmp_path / "k.ckpt")


class _WeightsAtFitStart(Callback):
    def on_fit_start(self, trainer, pl_module):
        self.weight_hh = pl_module.rnn.weight_hh_l0.detach().clone()


def test_orthogonal_init_then_constraint_keeps_the_init_and_its_gain(tmp_path):
    from ortho_lightning.callbacks import OrthogonalInit

    gain = 1.25
    plain = TinyRNN()
    seen_plain = _WeightsAtFitStart()
    make_trainer(tmp_path, [OrthogonalInit(gain=gain, seed=3, include="rnn"), seen_plain],
                 max_steps=1).fit(plain, loader())
    both = TinyRNN()
    seen = _WeightsAtFitStart()
    callbacks = [OrthogonalInit(gain=gain, seed=3, include="rnn"), OrthogonalConstraint(include="rnn", gain=gain), seen]
    make_trainer(tmp_path, callbacks, max_steps=1).fit(both, loader())
    assert gram_error(seen_plain.weight_hh, gain) < 1e-5  # the init is gain * orthogonal ...
    torch.testing.assert_close(seen.weight_hh, seen_plain.weight_hh, rtol=0, atol=1e-5)  # ... and kept


def _setup(cb, model):
    """``setup("fit")`` with a bare trainer (no logger): registers the parametrizations."""
    from types import SimpleNamespace

    cb.setup(SimpleNamespace(loggers=[], global_rank=0), model, "fit")
    return model


def test_targets_is_a_deprecated_alias_of_include():
    torch.manual_seed(0)
    new_model, old_model = TinyRNN(), TinyRNN()
    old_model.load_state_dict(new_model.state_dict())
    new = OrthogonalConstraint(include="rnn", gain=1.5)
    with pytest.warns(DeprecationWarning, match="^OrthogonalConstraint: 'targets' is deprecated, use 'include'"):
        old = OrthogonalConstraint(targets="rnn", gain=1.5)
    assert old.state_key == new.state_key and old.selector == new.selector
    _setup(new, new_model), _setup(old, old_model)
    assert old.constrained == new.constrained == ["rnn.weight_hh_l0"]
    assert torch.equal(old_model.rnn.weight_hh_l0, new_model.rnn.weight_hh_l0)
    with pytest.raises(ConfigurationError, match="^OrthogonalConstraint: got both 'targets' and its new name 'include'"):
        OrthogonalConstraint(include="rnn", targets="rnn")
