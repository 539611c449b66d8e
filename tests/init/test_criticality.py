"""init's gains: ``resolve_gain`` and the re-export of theory's critical point."""

from __future__ import annotations

import pytest

import ortho_lightning.init as init
from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.init import criticality
from ortho_lightning.init.criticality import resolve_gain
from ortho_lightning.theory import criticality as theory_criticality


@pytest.mark.parametrize("module", [init, criticality], ids=["init", "init.criticality"])
def test_critical_point_is_re_exported_from_theory(module):
    # the same objects, not copies: isinstance checks and lru caches are shared
    assert module.critical_point is theory_criticality.critical_point
    assert module.CriticalPoint is theory_criticality.CriticalPoint
    with pytest.raises(AttributeError, match="has no attribute 'critical_pont'"):
        module.critical_pont  # noqa: B018


def test_critical_gain_is_the_critical_sigma_w():
    # tanh at sigma_b = 0.3: sigma_w = 1.39558... (theory's solver, tested against an independent one)
    expected = theory_criticality.critical_point("tanh", 0.3).sigma_w
    assert resolve_gain("critical", "tanh", 0.3) == expected
    assert resolve_gain("CRITICAL", "tanh", 0.3) == expected
    assert resolve_gain(2, "tanh", 0.3) == 2.0 and isinstance(resolve_gain(2), float)


@pytest.mark.parametrize(
    "gain,match",
    [
        ("critic", "resolve_gain: gain must be a finite number or 'critical', got 'critic'"),
        (None, "resolve_gain: gain must be a finite number or 'critical', got None"),
    ],
    ids=["bad-gain-string", "gain-none"],
)
def test_bad_gain(gain, match):
    with pytest.raises(ConfigurationError, match=match):
        resolve_gain(gain)
