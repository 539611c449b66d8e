"""The package's errors. Each subclasses ``ValueError`` or ``TypeError`` so a user's
``except ValueError`` catches it; Lightning's ``MisconfigurationException`` is not used."""


class OrthoLightningError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigurationError(OrthoLightningError, ValueError):
    """An argument or config key has a value outside the accepted ones."""


class ShapeError(OrthoLightningError, ValueError):
    """A tensor or module has a shape the operation cannot handle."""


class SelectionError(OrthoLightningError, ValueError):
    """A module selection (types, name patterns) matched nothing or named a missing module."""


class NoCriticalPointError(OrthoLightningError, ValueError):
    """The mean-field maps have no critical point for the requested activation and bias."""


class DataError(OrthoLightningError, ValueError):
    """A data file is missing, corrupt or truncated."""


class ActivationError(ConfigurationError):
    """An activation name is unknown."""


class NonFiniteError(OrthoLightningError, ValueError):
    """A weight or gradient holds inf or NaN where the operation needs finite values."""
