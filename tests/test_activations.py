"""The activation table's lookup: names in any case, callables as they are, and an unknown name
refused in the package's one message format, naming whoever checked it."""

from __future__ import annotations

import pytest
import torch

from ortho_lightning.activations import ACTIVATIONS, activation_name, get_activation
from ortho_lightning.exceptions import ActivationError, ConfigurationError
from ortho_lightning.theory import fisher_moments, jacobian_moments, jacobian_spectrum_density


def test_names_in_any_case_and_callables_as_they_are():
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    torch.testing.assert_close(get_activation("TanH")(x), torch.tanh(x))
    fn = torch.sin
    assert get_activation(fn) is fn
    assert activation_name("ReLU") == "relu" and activation_name(torch.sin) == "sin"


def test_unknown_name_message_lists_the_table():
    with pytest.raises(ActivationError) as info:
        get_activation("swish")
    expected = (f"get_activation: activation must be one of {sorted(ACTIVATIONS)} or a callable "
                "mapping a tensor to a tensor elementwise, got 'swish'")
    assert str(info.value) == expected
    assert isinstance(info.value, ConfigurationError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("bad", ["swish", 3, None])
def test_owner_and_argument_are_the_callers(bad):
    with pytest.raises(ActivationError, match=rf"^MyModel: hidden_act must be one of .*, got {bad!r}$"):
        get_activation(bad, "MyModel", "hidden_act")


@pytest.mark.parametrize("call,owner", [
    (lambda: fisher_moments("swish", 1.0, 0.1, 3, 64, 10), "fisher_moments"),
    (lambda: jacobian_moments("swish", 1.0, 0.1, 3), "jacobian_moments"),
    (lambda: jacobian_spectrum_density("swish", 1.0, 0.1, 3), "jacobian_spectrum_density"),
], ids=["fisher_moments", "jacobian_moments", "jacobian_spectrum_density"])
def test_theory_functions_name_themselves(call, owner):
    with pytest.raises(ActivationError, match=rf"^{owner}: activation must be one of .*, got 'swish'$"):
        call()
