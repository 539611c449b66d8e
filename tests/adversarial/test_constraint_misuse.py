"""A constraint used wrongly says so (issue 15): a second constraint on an already constrained
weight, and a loss that stops being finite under a constraint (before: a bare ``linalg.eigh``
convergence failure naming neither the cause nor the weight)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ortho_lightning.callbacks import OrthogonalConstraint
from ortho_lightning.constraints import orthogonalize
from ortho_lightning.exceptions import ConfigurationError, NonFiniteError
from tests.callbacks._monitor_helpers import TinyNet, loader
from tests.callbacks._monitor_helpers import trainer as make_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_two_constraints_on_one_weight_is_an_error_naming_it(tmp_path):
    first = OrthogonalConstraint(include="layers.*", gain=1.0)
    second = OrthogonalConstraint(include="layers.3", gain=2.0)  # overlaps on layers.3.weight
    trainer = make_trainer(tmp_path, [first, second], max_steps=1)
    with pytest.raises(ConfigurationError, match=r"'layers\.3\.weight' is already constrained"):
        trainer.fit(TinyNet(), loader())


def test_constraint_on_a_weight_orthogonalized_by_hand_is_an_error(tmp_path):
    model = TinyNet()
    orthogonalize(model.head, "weight", gain=3.0)
    trainer = make_trainer(tmp_path, [OrthogonalConstraint(include="head")], max_steps=1)
    with pytest.raises(ConfigurationError, match=r"'head\.weight' is already constrained"):
        trainer.fit(model, loader())


def test_a_second_fit_with_the_same_callback_keeps_its_constraint(tmp_path):
    model, cb = TinyNet(), OrthogonalConstraint(include="head")
    make_trainer(tmp_path, [cb], max_steps=2).fit(model, loader())
    make_trainer(tmp_path, [cb], max_steps=2).fit(model, loader())
    assert cb.constrained == ["head.weight"]


class InfiniteLoss(TinyNet):
    """The loss becomes +inf at the third step."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        return loss * float("inf") if self.global_step == 2 else loss


@pytest.mark.parametrize("triv", ["expm", "cayley"])
def test_infinite_loss_under_a_constraint_names_the_weight_and_the_cause(tmp_path, triv):
    trainer = make_trainer(tmp_path, [OrthogonalConstraint(include="layers.0", triv=triv)], max_steps=5)
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(InfiniteLoss(), loader())
    message = str(info.value)
    assert "layers.0.weight (its gradient was not finite)" in message
    assert "non-finite values (inf/NaN)" in message and "optimizer step" in message
    assert trainer.global_step == 3  # caught right after the step that applied it


def test_non_finite_weight_of_a_bare_module_is_named_in_the_forward():
    layer = orthogonalize(nn.Linear(4, 4), "weight")
    with torch.no_grad():
        layer.parametrizations.weight.original.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"^Linear\.weight: .* 16 non-finite values"):
        layer(torch.ones(1, 4))
    named = orthogonalize(nn.Linear(4, 4), "weight", name="encoder.weight")
    with torch.no_grad():
        named.parametrizations.weight.original[1, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"^encoder\.weight: .* 1 non-finite values \(inf/NaN\) of 16"):
        named(torch.ones(1, 4))
