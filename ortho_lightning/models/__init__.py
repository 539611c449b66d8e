"""Recipe models: LightningModules sharing one classification base (loss, accuracy, optimizer
and scheduler from config). Each exposes ``features`` / ``spectrum_output_fn`` (what the
Jacobian monitor measures) and names its layers so init, constraint and monitor targets are
plain patterns (``layers.*``, ``body.*``, ``rnn``)."""

from ortho_lightning.models.base import ClassificationModule
from ortho_lightning.models.cnn import CNNClassifier
from ortho_lightning.models.mlp import MLPClassifier
from ortho_lightning.models.rnn import RNNClassifier

__all__ = ["ClassificationModule", "CNNClassifier", "MLPClassifier", "RNNClassifier"]
