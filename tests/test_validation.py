"""The package's one validation module: message format, bounds and deprecated spellings."""

import math
import warnings

import pytest

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.validation import (
    check_bool,
    check_callable,
    check_choice,
    check_int,
    check_number,
    renamed_argument,
    renamed_kwargs,
)


def test_message_names_owner_argument_expectation_and_value():
    with pytest.raises(ConfigurationError) as info:
        check_choice("Owner", "mode", "x", ("a", "b"))
    assert str(info.value) == "Owner: mode must be one of ['a', 'b'], got 'x'"
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [True, 1.0, "3", 0])
def test_check_int_rejects_bools_floats_strings_and_values_below_minimum(value):
    with pytest.raises(ConfigurationError, match=r"O: n must be an integer >= 1, got"):
        check_int("O", "n", value, minimum=1)


def test_check_int_and_number_accept_in_range_and_none_when_optional():
    assert check_int("O", "n", 3, minimum=1) == 3
    assert check_int("O", "n", None, optional=True) is None
    assert check_number("O", "x", 2, positive=True) == 2.0
    assert check_number("O", "x", 0.5, minimum=0, maximum=1) == 0.5
    assert check_number("O", "x", None, optional=True) is None


@pytest.mark.parametrize("value,kw", [(0.0, {"positive": True}), (math.inf, {}), (math.nan, {}),
                                      (True, {}), (-1, {"minimum": 0}), (2, {"maximum": 1})])
def test_check_number_rejects_out_of_bounds_and_non_finite(value, kw):
    with pytest.raises(ConfigurationError, match="O: x must be a finite number"):
        check_number("O", "x", value, **kw)


def test_check_bool_and_callable():
    assert check_bool("O", "flag", False) is False
    with pytest.raises(ConfigurationError, match="True or False"):
        check_bool("O", "flag", 1)
    with pytest.raises(ConfigurationError, match="O: fn must be callable, got 3"):
        check_callable("O", "fn", 3)
    assert check_callable("O", "fn", None, optional=True) is None


def test_renamed_argument_warns_for_old_spelling_and_rejects_both():
    assert renamed_argument("O", "old", "new", None, 5) == 5
    with pytest.warns(DeprecationWarning, match=r"O: 'old' is deprecated, use 'new'"):
        assert renamed_argument("O", "old", "new", 7, None) == 7
    with pytest.raises(ConfigurationError, match="both 'old' and its new name 'new'"):
        renamed_argument("O", "old", "new", 7, 5)


def test_renamed_kwargs_forwards_old_keyword_with_a_warning():
    @renamed_kwargs(W="tensor")
    def scale_(tensor, gain=1.0):
        return tensor * gain

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scale_(tensor=2, gain=3) == 6
    with pytest.warns(DeprecationWarning, match="scale_: 'W' is deprecated, use 'tensor'"):
        assert scale_(W=2, gain=3) == 6
    with pytest.raises(ConfigurationError, match="both 'W' and its new name 'tensor'"):
        scale_(W=2, tensor=2)
