"""Axis values that read the same in the results table are refused (issue 15): ``'1'`` and ``1``
used to make two cells whose rows were indistinguishable."""

from __future__ import annotations

import re

import pytest

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.experiments.grid import expand
from ortho_lightning.experiments.runner import run_grid
from ortho_lightning.experiments.table import read_table
from tests.experiments import fake_cells  # noqa: F401  (registers FN)

FN = "tests.experiments.fake_cells:quadratic"

CLASHES = [
    ("str_and_int", [1, "1"], "(1, '1')"),
    ("str_and_float", [2.5, "2.5"], "(2.5, '2.5')"),
    ("str_and_bool", [True, "True"], "(True, 'True')"),
    ("repeated", [3, 3], "(3, 3)"),
]


@pytest.mark.parametrize("values,shown", [c[1:] for c in CLASHES], ids=[c[0] for c in CLASHES])
def test_values_that_read_the_same_are_refused(values, shown):
    with pytest.raises(ConfigurationError,
                       match=r"^experiment: axis 'b' must be values that read differently in the "
                       r"results table \(quote all or none; .*\), got " + re.escape(shown) + "$"):
        expand({"kind": "recipe", "recipe": "r.yaml", "axes": {"b": values}})


def test_variant_names_must_differ_too():
    with pytest.raises(ConfigurationError, match=r"axis 'arm' must be values that read differently .*, "
                       r"got \('x', 'x'\)"):
        expand({"kind": "recipe", "recipe": "r.yaml",
                "axes": {"arm": [{"name": "x", "a.b": 1}, {"name": "x", "a.b": 2}]}})


def test_distinct_values_give_distinguishable_rows(tmp_path):
    grid = expand({"name": "t", "kind": "function", "function": FN, "base": {"steps": 1},
                   "axes": {"a": [1.0], "b": [1, 2]}})
    run_grid(grid, tmp_path, progress=False, report=False)
    _, rows = read_table(tmp_path / "results.csv")
    assert sorted(r["b"] for r in rows) == [1, 2]
