"""One intra-op thread for these small-matrix tests: on a shared 2-core machine torch's thread pool
spins against other processes and makes 5x5 matmuls ~30x slower."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield
