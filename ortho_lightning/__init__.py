"""ortho-lightning: PyTorch Lightning plugins for orthogonal networks.

Cores (no Lightning import): :mod:`ortho_lightning.init`, :mod:`ortho_lightning.constraints`,
:mod:`ortho_lightning.spectra`, :mod:`ortho_lightning.theory`. Lightning glue:
:mod:`ortho_lightning.callbacks`, :mod:`ortho_lightning.data`, :mod:`ortho_lightning.models`.
"""

__version__ = "0.1.0"
