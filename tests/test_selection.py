"""ortho_lightning.selection: which modules a selection picks, against hand-written lists."""

from __future__ import annotations

import pytest
from torch import nn

from ortho_lightning.exceptions import SelectionError
from ortho_lightning.selection import DEFAULT_TYPES, ModuleSelector, select_modules


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3)
        self.layers = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4), nn.LayerNorm(4))
        self.rnn = nn.GRU(4, 4)
        self.cell = nn.LSTMCell(4, 4)
        self.head = nn.Linear(4, 2)


def names(pairs):
    return [n for n, _ in pairs]


def test_default_selects_every_matrix_module_in_named_modules_order():
    net = Net()
    got = select_modules(net)
    assert names(got) == ["stem", "layers.0", "layers.2", "rnn", "cell", "head"]
    assert all(m is dict(net.named_modules())[n] for n, m in got)


@pytest.mark.parametrize("include, exclude, expected", [
    ("layers.*", None, ["layers.0", "layers.2"]),
    (["head", "stem"], None, ["stem", "head"]),  # model order, not pattern order
    ("*", "layers.*", ["stem", "rnn", "cell", "head"]),
    (None, ["rnn", "ce*"], ["stem", "layers.0", "layers.2", "head"]),
    ("layers.?", "layers.2", ["layers.0"]),
    ("Head", None, None),  # case-sensitive: matches nothing, an error
])
def test_include_and_exclude_are_case_sensitive_shell_patterns(include, exclude, expected):
    if expected is None:
        with pytest.raises(SelectionError):
            select_modules(Net(), include, exclude)
    else:
        assert names(select_modules(Net(), include, exclude)) == expected


def test_types_restrict_the_candidates():
    assert names(select_modules(Net(), types=[nn.Linear])) == ["layers.0", "layers.2", "head"]
    assert names(select_modules(Net(), types=[nn.RNNBase, nn.RNNCellBase])) == ["rnn", "cell"]
    assert names(select_modules(Net(), types=[nn.LayerNorm])) == ["layers.3"]
    with pytest.raises(SelectionError, match="^ModuleSelector: types must be nn.Module subclasses, got 'Linear'$"):
        ModuleSelector.build(types=["Linear"])
    with pytest.raises(SelectionError, match=r"^MyCallback: types must be nn.Module subclasses, got <class 'int'>$"):
        ModuleSelector.build(types=[nn.Linear, int], owner="MyCallback")


def test_an_include_pattern_that_matches_nothing_names_it_and_the_candidates():
    with pytest.raises(SelectionError) as err:
        select_modules(Net(), ["layers.*", "encoder"])
    msg = str(err.value)
    assert "['encoder']" in msg and "layers.*" not in msg.split("match")[0]
    assert "in Net; candidate names: ['stem', 'layers.0', 'layers.2', 'rnn', 'cell', 'head']" in msg
    # a name that exists but is not of a selected type is not a candidate either
    with pytest.raises(SelectionError, match=r"\['layers.1'\]"):
        select_modules(Net(), "layers.1")
    with pytest.raises(SelectionError, match=r"candidate names: \['<none>'\]"):
        select_modules(nn.Tanh(), "x")


def test_build_normalises_a_string_or_a_list():
    one, many = ModuleSelector.build("head", "x"), ModuleSelector.build(["head"], ("x",))
    assert one == many == ModuleSelector(("head",), ("x",), DEFAULT_TYPES)
    assert ModuleSelector.build() == ModuleSelector()
    assert names(ModuleSelector.build("head").select(Net())) == ["head"]
