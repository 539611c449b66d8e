"""The runner tests' grids name ``tests.experiments.fake_cells:quadratic``: importing the module
registers it (configs may call only registered experiment functions)."""

from tests.experiments import fake_cells  # noqa: F401
