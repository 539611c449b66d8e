"""OrthogonalRegularizer: gradients equal adding weight * penalty to the loss by hand (with and
without accumulation, float64, bf16-mixed and float16 with a GradScaler), logged penalty, projection mode, exact crash-and-resume, misconfiguration."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback

from ortho_lightning.callbacks import OrthogonalConstraint, OrthogonalRegularizer
from ortho_lightning.constraints import orthogonality_penalty, selected_tensors, total_penalty
from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.selection import ModuleSelector
from tests.callbacks._monitor_helpers import FP16_INIT_SCALE
from tests.callbacks.test_constraint import TinyRNN, gram_error, loader, make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class GradRecorder(Callback):
    """Records every parameter's gradient as the optimizer is about to use it."""

    def __init__(self):
        self.grads = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads.append({n: p.grad.detach().clone() for n, p in pl_module.named_parameters()})


def by_hand(lam, gain, kind, reduction, targets):
    def extra_loss(module):
        entries = selected_tensors(module, ModuleSelector.build(targets), "all")
        with torch.autocast("cpu", enabled=False):
            return lam * total_penalty(entries, gain, kind, reduction)

    return extra_loss


def _run(tmp_path, precision, accumulate, callbacks, extra_loss=None, steps=3, clip=None):
    torch.manual_seed(0)
    model = TinyRNN(extra_loss=extra_loss)
    if precision == "64-true":
        model = model.double()
    recorder = GradRecorder()
    trainer = make_trainer(
        tmp_path, [*callbacks, recorder], max_steps=steps, precision=precision,
        accumulate_grad_batches=accumulate, gradient_clip_val=clip,
    )
    trainer.fit(model, loader(dtype=torch.float64 if precision == "64-true" else torch.float32))
    if precision == "16-mixed":  # really float16 with a scale far from 1
        assert trainer.precision_plugin.scaler.get_scale() == FP16_INIT_SCALE
    return recorder.grads, model


@pytest.mark.parametrize(
    "precision, accumulate, kind, clip, tol",
    [
        ("64-true", 1, "frobenius", None, 1e-13),
        ("64-true", 3, "frobenius", None, 1e-13),
        ("64-true", 2, "srip", None, 1e-13),
        ("64-true", 2, "frobenius", 0.05, 1e-13),  # clipping sees the penalty gradient too
        ("bf16-mixed", 2, "frobenius", None, 1e-6),
        ("16-mixed", 2, "frobenius", None, 1e-6),  # GradScaler: the penalty joins unscaled grads
        ("16-mixed", 1, "frobenius", 0.05, 1e-6),
    ],
    ids=["f64", "f64-accumulate3", "f64-srip-accumulate2", "f64-clip-accumulate2", "bf16-accumulate2",
         "fp16-accumulate2", "fp16-clip"],
)
def test_gradients_equal_penalty_added_to_the_loss_by_hand(tmp_path, precision, accumulate, kind, clip, tol):
    lam, gain, targets = 0.7, 1.3, ["rnn", "encoder"]
    reg = OrthogonalRegularizer(lam, gain, kind, "sum", include=targets, recurrent="all")
    grads, model = _run(tmp_path, precision, accumulate, [reg], clip=clip)
    ref, ref_model = _run(tmp_path, precision, accumulate, [], by_hand(lam, gain, kind, "sum", targets), clip=clip)
    assert len(grads) == len(ref) == 3
    for step, (g, r) in enumerate(zip(grads, ref)):
        for name in r:
            torch.testing.assert_close(g[name], r[name], rtol=tol, atol=tol, msg=f"step {step} {name}")
    # and the penalty's gradient is not negligible: it changes the gradient of the weights it acts on
    plain, _ = _run(tmp_path, precision, accumulate, [], clip=clip)
    assert (plain[0]["rnn.weight_hh_l0"] - grads[0]["rnn.weight_hh_l0"]).abs().max() > 1e-3
    for a, b in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol)


def test_logs_the_penalty_of_the_weights_it_stepped_from(tmp_path):
    torch.manual_seed(0)
    model = TinyRNN()
    expected = sum(
        orthogonality_penalty(W, 1.0, "frobenius", "mean")
        for W in (model.rnn.weight_hh_l0, model.encoder.weight)
    ).item()
    reg = OrthogonalRegularizer(0.1, include=["rnn", "encoder"], log_every_n_steps=1)
    trainer = make_trainer(tmp_path, [reg], max_steps=1)
    trainer.fit(model, loader())
    assert reg.last_penalty.item() == pytest.approx(expected, rel=1e-6)
    assert trainer.logged_metrics["ortho/penalty"].item() == pytest.approx(expected, rel=1e-6)
    assert "ortho/defect/rnn.weight_hh_l0" in trainer.logged_metrics


def test_strong_penalty_pulls_weights_to_the_gain(tmp_path):
    model = TinyRNN(lr=0.01)
    start = torch.linalg.svdvals(model.rnn.weight_hh_l0.detach())
    reg = OrthogonalRegularizer(50.0, gain=1.5, include="rnn", log_every_n_steps=None)
    make_trainer(tmp_path, [reg], max_steps=200).fit(model, loader())
    s = torch.linalg.svdvals(model.rnn.weight_hh_l0.detach())
    assert (start - 1.5).abs().max() > 0.3  # default init is far from the gain
    assert (s - 1.5).abs().max() < 0.1  # soft: balanced against the data loss, not exact


def test_projection_mode_makes_every_gate_block_orthogonal(tmp_path):
    model = TinyRNN()
    reg = OrthogonalRegularizer(0.0, gain=0.8, include="rnn", recurrent="all", project_every_n_steps=2,
                                project_method="bjorck")
    make_trainer(tmp_path, [reg], max_steps=4).fit(model, loader())
    assert gram_error(model.rnn.weight_hh_l0.detach(), 0.8) < 1e-5
    assert gram_error(model.rnn.weight_ih_l0.detach(), 0.8) < 1e-5  # (8, 2): orthonormal columns


def test_projecting_hard_constrained_weights_is_an_error(tmp_path):
    reg = OrthogonalRegularizer(0.0, include="rnn", project_every_n_steps=1)
    trainer = make_trainer(tmp_path, [OrthogonalConstraint(include="rnn"), reg], max_steps=1)
    with pytest.raises(ConfigurationError, match=r"\['rnn.weight_hh_l0'\] are hard-constrained"):
        trainer.fit(TinyRNN(), loader())


def test_pickle_round_trip():
    reg = OrthogonalRegularizer(0.3, gain=2.0, kind="srip", include="rnn")
    clone = pickle.loads(pickle.dumps(reg))
    assert (clone.weight, clone.gain, clone.kind, clone.state_key) == (0.3, 2.0, "srip", reg.state_key)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coefficient": -1.0}, "^OrthogonalRegularizer: coefficient must be a finite number >= 0, got -1.0$"),
        ({"coefficient": 0.0}, "^OrthogonalRegularizer: coefficient=0 without project_every_n_steps does nothing"),
        ({}, "^OrthogonalRegularizer: coefficient must be a finite number >= 0, got None$"),
        ({"coefficient": 1.0, "gain": -2}, "^OrthogonalRegularizer: gain must be a finite number > 0, got -2$"),
        ({"coefficient": 1.0, "kind": "l1"}, r"^OrthogonalRegularizer: kind must be one of \['all_ones', 'frobenius', 'srip'\] or a callable"),
        ({"coefficient": 1.0, "reduction": "max"}, r"^OrthogonalRegularizer: reduction must be one of \['mean', 'sum'\], got 'max'$"),
        ({"coefficient": 1.0, "recurrent": "x"}, r"^OrthogonalRegularizer: recurrent must be one of \['hh', 'all'\], got 'x'$"),
        ({"coefficient": 1.0, "project_every_n_steps": 0}, "^OrthogonalRegularizer: project_every_n_steps must be an integer >= 1 or None, got 0$"),
        ({"coefficient": 1.0, "project_method": "qr"}, r"^OrthogonalRegularizer: project_method must be one of \['bjorck', 'polar'\], got 'qr'$"),
    ],
    ids=["coefficient", "noop", "missing", "gain", "kind", "reduction", "recurrent", "cadence", "method"],
)
def test_misconfiguration(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        OrthogonalRegularizer(**kwargs)


# DDP: tests/callbacks/test_constraint.py::test_ddp_two_processes_identical_orthogonal_and_regularizer_equals_by_hand
# runs both callbacks in one DDP launch, and checks this one against the penalty added by hand.


def test_crash_and_resume_is_exact(tmp_path):
    # penalty + a projection every 3 steps, 4 steps an epoch: the cadence straddles the resume
    def callback():
        return OrthogonalRegularizer(coefficient=0.5, gain=0.9, include=["rnn", "encoder"],
                                     project_every_n_steps=3, log_every_n_steps=None)

    kwargs = dict(precision="64-true", max_epochs=3, limit_val_batches=0)
    torch.manual_seed(0)
    straight = TinyRNN().double()
    make_trainer(tmp_path / "a", [callback()], **kwargs).fit(straight, loader(dtype=torch.float64))

    torch.manual_seed(0)
    first = TinyRNN().double()
    t1 = make_trainer(tmp_path / "b", [callback()], **{**kwargs, "max_epochs": 1})
    t1.fit(first, loader(dtype=torch.float64))  # "crash" after epoch 1 (4 steps)
    ckpt_path = tmp_path / "k.ckpt"
    t1.save_checkpoint(ckpt_path)
    states = torch.load(ckpt_path, weights_only=True)["callbacks"]
    assert [s for k, s in states.items() if k.startswith("OrthogonalRegularizer")] == [{"last_step": 4}]

    torch.manual_seed(123)  # a different start: everything must come from the checkpoint
    resumed = TinyRNN().double()
    cb = callback()
    make_trainer(tmp_path / "c", [cb], **kwargs).fit(resumed, loader(dtype=torch.float64),
                                                     ckpt_path=ckpt_path)
    assert cb._last_step == 12
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    # the last step (12) projected: the selected weights sit on 0.9 x the Stiefel manifold
    assert gram_error(resumed.encoder.weight.detach(), 0.9) < 1e-12



def test_weight_is_a_deprecated_alias_of_coefficient():
    with pytest.warns(DeprecationWarning, match="^OrthogonalRegularizer: 'weight' is deprecated, use 'coefficient'"):
        old = OrthogonalRegularizer(weight=0.25, include="rnn")
    assert (old.coefficient, old.weight) == (0.25, 0.25)
    assert old.state_key == OrthogonalRegularizer(0.25, include="rnn").state_key
    with pytest.raises(ConfigurationError, match="^OrthogonalRegularizer: got both 'weight' and its new name 'coefficient'"):
        OrthogonalRegularizer(coefficient=0.25, weight=0.25)


def test_targets_is_a_deprecated_alias_of_include():
    with pytest.warns(DeprecationWarning, match="^OrthogonalRegularizer: 'targets' is deprecated, use 'include'"):
        old = OrthogonalRegularizer(0.5, targets=["rnn", "encoder"])
    new = OrthogonalRegularizer(0.5, include=["rnn", "encoder"])
    assert old.selector == new.selector and old.selector.include == ("rnn", "encoder")
    model = TinyRNN()
    old.setup(SimpleNamespace(loggers=[], global_rank=0), model, "fit")
    new.setup(SimpleNamespace(loggers=[], global_rank=0), model, "fit")
    assert torch.equal(old.penalty(), new.penalty()) and old.penalty() > 0
    with pytest.raises(ConfigurationError, match="^OrthogonalRegularizer: got both 'targets' and its new name 'include'"):
        OrthogonalRegularizer(0.5, include="rnn", targets="rnn")
