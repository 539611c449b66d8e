"""Deprecated spellings of the constraint functions' first argument (``W=`` -> ``tensor=``, issue
18): the old keyword warns and gives the same result; both at once is an error."""

from __future__ import annotations

import pytest
import torch

from ortho_lightning.constraints import (
    orthogonality_defect,
    orthogonality_penalty,
    project_orthogonal_,
)
from ortho_lightning.constraints.penalties import gram
from ortho_lightning.exceptions import ConfigurationError

FUNCTIONS = {
    "project_orthogonal_": lambda **kw: project_orthogonal_(**kw, gain=1.5),
    "orthogonality_penalty": lambda **kw: orthogonality_penalty(**kw, gain=1.5, kind="srip"),
    "orthogonality_defect": lambda **kw: orthogonality_defect(**kw, gain=1.5),
    "gram": lambda **kw: gram(**kw, gain=1.5),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_old_keyword_warns_and_gives_the_same_result(name):
    torch.manual_seed(0)
    W = torch.randn(5, 3, dtype=torch.float64)
    new = FUNCTIONS[name](tensor=W.clone())
    with pytest.warns(DeprecationWarning, match=rf"^{name}: 'W' is deprecated, use 'tensor'"):
        old = FUNCTIONS[name](W=W.clone())
    assert torch.equal(new, old)
    if name == "project_orthogonal_":  # and it did project: W^T W = 1.5^2 I
        torch.testing.assert_close(new.T @ new, 2.25 * torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_old_and_new_keyword_together_is_an_error(name):
    with pytest.raises(ConfigurationError, match=rf"^{name}: got both 'W' and its new name 'tensor'"):
        FUNCTIONS[name](W=torch.eye(3), tensor=torch.eye(3))
