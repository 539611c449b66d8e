"""Lightning's hook discipline on every callback of the package: no instance attribute shadows
a hook (Lightning calls ``getattr(callback, hook)`` and silently skips a non-callable), and the
settings logged for a run still carry each argument's value."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from lightning.pytorch import Callback

from ortho_lightning import callbacks
from ortho_lightning.callbacks._logging import log_settings

HOOKS = sorted(n for n, f in vars(Callback).items() if n.startswith("on_") and inspect.isfunction(f))

INSTANCES = {
    "OrthogonalInit": {},
    "OrthogonalConstraint": {},
    "OrthogonalRegularizer": {"coefficient": 0.1},
    "JacobianSpectrumMonitor": {"on_fit_start": True},
    "FisherSpectrumMonitor": {"on_fit_start": False, "every_n_steps": 5},
    "WeightSpectrumMonitor": {"on_fit_start": True},
    "NTKSpectrumMonitor": {"on_fit_start": True},
}


def test_every_exported_callback_is_checked():
    assert sorted(INSTANCES) == callbacks.__all__


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_no_attribute_shadows_a_hook(name):
    cb = getattr(callbacks, name)(**INSTANCES[name])
    assert "on_fit_start" in HOOKS and "on_train_batch_end" in HOOKS
    shadowed = [h for h in HOOKS if h in vars(cb)]
    assert shadowed == []
    assert all(inspect.ismethod(getattr(cb, h)) for h in HOOKS)


@pytest.mark.parametrize("value", [True, False])
def test_monitor_settings_keep_the_on_fit_start_argument(value):
    monitor = callbacks.JacobianSpectrumMonitor(on_fit_start=value, every_n_steps=3)
    assert monitor.measure_at_fit_start is value
    settings = log_settings(SimpleNamespace(global_rank=0, loggers=[]), monitor)
    assert settings["on_fit_start"] is value and settings["every_n_steps"] == 3


def test_settings_log_new_argument_names_not_their_deprecated_aliases():
    quiet = SimpleNamespace(global_rank=0, loggers=[])
    reg = log_settings(quiet, callbacks.OrthogonalRegularizer(coefficient=0.5, include="rnn"))
    assert reg["coefficient"] == 0.5 and reg["include"] == ["rnn"]
    assert "weight" not in reg and "targets" not in reg
    con = log_settings(quiet, callbacks.OrthogonalConstraint(include="rnn"))
    assert con["include"] == ["rnn"] and "targets" not in con


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_every_hook_the_callback_defines_is_marked_override_and_typed(name):
    base, checked = set(vars(Callback)), 0
    for cls in getattr(callbacks, name).__mro__:
        if not cls.__module__.startswith("ortho_lightning"):
            continue
        for attr, value in vars(cls).items():
            if attr not in base or not (callable(value) or isinstance(value, property)):
                continue
            fn = value.fget if isinstance(value, property) else value
            assert getattr(fn, "__override__", False), f"{cls.__name__}.{attr} lacks @override"
            params = [p for p in inspect.signature(fn).parameters if p != "self"]
            missing = [p for p in params if p not in fn.__annotations__]
            assert not missing and "return" in fn.__annotations__, f"{cls.__name__}.{attr}: {missing}"
            checked += 1
    assert checked >= 4  # setup, state_key, state_dict, load_state_dict at least
