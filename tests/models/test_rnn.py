import pytest
import torch

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.models import RNNClassifier


def _recurrence(rnn, x, phi):
    h = torch.zeros(x.shape[0], rnn.hidden_size)
    for t in range(x.shape[1]):
        h = phi(x[:, t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
    return h


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_features_are_the_last_state_of_the_recurrence(nonlinearity):
    model = RNNClassifier(hidden_size=6, nonlinearity=nonlinearity, input_shape=(5, 3))
    x = torch.randn(4, 5, 3)
    phi = torch.tanh if nonlinearity == "tanh" else torch.relu
    torch.testing.assert_close(model.features(x), _recurrence(model.rnn, x, phi))
    torch.testing.assert_close(model.spectrum_output_fn(x), model.features(x))


@pytest.mark.parametrize(("cell", "gates"), [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_cells_and_recurrent_target(cell, gates):
    model = RNNClassifier(cell=cell, hidden_size=8, num_layers=2)
    assert model.rnn.weight_hh_l1.shape == (gates * 8, 8)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # images reshape to rows
    assert [n for n, _ in model.named_modules() if n in model.recurrent_targets] == ["rnn"]


def test_pixel_sequences():
    model = RNNClassifier(hidden_size=4, input_shape=(784, 1))
    assert model.rnn.input_size == 1
    assert model(torch.randn(2, 784, 1)).shape == (2, 10)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"cell": "transformer"}, ["cell", "'rnn', 'lstm', 'gru'", "transformer"]),
        ({"nonlinearity": "sigmoid"}, ["nonlinearity", "'tanh', 'relu'", "sigmoid"]),
        ({"cell": "lstm", "nonlinearity": "relu"}, ["nonlinearity", "['tanh']", "relu"]),
        ({"hidden_size": 0}, ["hidden_size", "0"]),
        ({"input_shape": (784,)}, ["input_shape", "2 positive integers"]),
    ],
    ids=["cell", "nonlinearity", "lstm-relu", "hidden0", "shape"],
)
def test_bad_config(kwargs, words):
    with pytest.raises(ConfigurationError) as info:
        RNNClassifier(**kwargs)
    for word in words:
        assert word in str(info.value)
