"""The spectra tests compare against dense references in float64, on tiny models that gain
nothing from intra-op threads (one thread also keeps them fast on a loaded 2-core CI box)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _float64_one_thread(one_thread):
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)
