import pytest
import torch

from ortho_lightning.exceptions import ActivationError, ConfigurationError
from ortho_lightning.models import MLPClassifier


def test_features_equal_hand_written_layers():
    model = MLPClassifier(depth=2, width=5, activation="tanh", input_shape=(6,), num_classes=3)
    x = torch.randn(4, 6)
    (w1, b1), (w2, b2) = [(m.weight, m.bias) for m in model.layers if isinstance(m, torch.nn.Linear)]
    h = torch.tanh(torch.tanh(x @ w1.T + b1) @ w2.T + b2)
    torch.testing.assert_close(model.features(x), h)
    torch.testing.assert_close(model(x), h @ model.head.weight.T + model.head.bias)


@pytest.mark.parametrize("depth", [1, 3, 7])
def test_depth_counts_hidden_linear_layers(depth):
    model = MLPClassifier(depth=depth, width=8)
    linears = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [f"layers.{2 * i}" for i in range(depth)] + ["head"]


def test_runs_on_images_and_sequences_alike():
    """The input is flattened: an image and the same pixels as a (784, 1) sequence agree."""
    model = MLPClassifier(depth=2, width=8)
    images = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model(images), model(images.reshape(3, 784, 1)))


def test_hparams_recorded():
    model = MLPClassifier(depth=4, width=9, activation="erf")
    assert (model.hparams.depth, model.hparams.width, model.hparams.activation) == (4, 9, "erf")


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"depth": 0}, ConfigurationError, ["depth", ">= 1", "0"]),
        ({"width": -2}, ConfigurationError, ["width", "-2"]),
        ({"activation": "tanhh"}, ActivationError, ["activation", "tanhh", "'tanh'"]),
        ({"input_shape": (0, 28)}, ConfigurationError, ["input_shape", "(0, 28)"]),
        ({"num_classes": 1}, ConfigurationError, ["num_classes", ">= 2"]),
        ({"optimizer": "adam"}, ConfigurationError, ["optimizer", "'adam'"]),
    ],
    ids=["depth0", "width", "activation", "input_shape", "num_classes", "optimizer"],
)
def test_bad_config_names_key_and_values(kwargs, error, words):
    with pytest.raises(error) as info:
        MLPClassifier(**kwargs)
    for word in words:
        assert word in str(info.value)
    assert "MLPClassifier" in str(info.value)
