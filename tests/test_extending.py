"""docs/extending.md's Python blocks run as written: each adds a table entry (or a monitor, or
an experiment function) and checks it through the public API against an independent fact
(W^T W = gain^2 I, a zero penalty at gain x orthogonal, chi_1 = 1, Lanczos = exact). The tables
are restored afterwards so no other test sees the additions."""

import re
from pathlib import Path

import pytest

from ortho_lightning.activations import ACTIVATIONS
from ortho_lightning.constraints.parametrization import TRIVIALIZATIONS
from ortho_lightning.constraints.penalties import PENALTIES
from ortho_lightning.experiments import registry
from ortho_lightning.init.initialize import SCHEMES
from ortho_lightning.spectra.likelihoods import LIKELIHOODS

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
BLOCKS = re.findall(r"^## (.+?)\n.*?```python\n(.*?)```", DOC.read_text(), flags=re.S | re.M)
TABLES = [TRIVIALIZATIONS, PENALTIES, SCHEMES, ACTIVATIONS, LIKELIHOODS, registry._REGISTERED]


def test_the_page_has_a_block_per_extension():
    assert [title for title, _ in BLOCKS] == [
        "A constraint map", "A soft penalty", "An init scheme", "An activation, with its critical point",
        "A likelihood for the Fisher spectra", "A spectrum monitor", "An experiment function",
    ]


@pytest.fixture
def restored_tables():
    saved = [dict(t) for t in TABLES]
    yield
    for table, old in zip(TABLES, saved):
        table.clear()
        table.update(old)


@pytest.mark.parametrize("code", [c for _, c in BLOCKS], ids=[t for t, _ in BLOCKS])
def test_block_runs(code, restored_tables):
    exec(compile(code, str(DOC), "exec"), {"__name__": "extending_example"})
