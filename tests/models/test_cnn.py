import pytest
import torch

from ortho_lightning.exceptions import ActivationError, ConfigurationError
from ortho_lightning.models import CNNClassifier


def test_2d_stem_halves_twice_and_pools():
    model = CNNClassifier(kind="2d", depth=3, channels=4, downsample=2)
    x = torch.randn(2, 1, 28, 28)
    maps = model.body(model.stem(x))
    assert maps.shape == (2, 4, 7, 7)  # 28 -> 14 -> 7, same size through the body
    torch.testing.assert_close(model.features(x), maps.mean(dim=(-2, -1)))
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == ["stem.0", "stem.2", "body.0", "body.2", "body.4"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize(("depth", "kernel"), [(3, 3), (2, 5)])
def test_1d_is_causal_with_the_dilated_receptive_field(depth, kernel):
    """d last-step output / d input step j is non-zero exactly on the receptive field
    1 + (k - 1)(2**depth - 1) steps back, and zero before it."""
    steps = 40
    model = CNNClassifier(kind="1d", depth=depth, channels=3, kernel_size=kernel,
                          input_shape=(steps, 1)).double()
    x = torch.randn(1, steps, 1, dtype=torch.double, requires_grad=True)
    model.features(x).sum().backward()
    seen = (x.grad[0, :, 0] != 0).nonzero().flatten()
    field = 1 + (kernel - 1) * (2**depth - 1)
    assert seen.min().item() == steps - field
    assert seen.max().item() == steps - 1


def test_1d_future_steps_do_not_change_the_past():
    model = CNNClassifier(kind="1d", depth=3, channels=3, input_shape=(20, 2))
    x = torch.randn(2, 20, 2)
    y = x.clone()
    y[:, 12:] += 1.0
    a, b = model.body(x.transpose(1, 2)), model.body(y.transpose(1, 2))
    torch.testing.assert_close(a[..., :12], b[..., :12])
    assert not torch.allclose(a[..., 12:], b[..., 12:])


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"kind": "3d"}, ConfigurationError, ["kind", "['2d', '1d']", "3d"]),
        ({"depth": 0}, ConfigurationError, ["depth", "0"]),
        ({"activation": "nope"}, ActivationError, ["activation", "nope"]),
        ({"padding_mode": "edge"}, ConfigurationError, ["padding_mode", "circular", "edge"]),
        ({"kind": "1d", "input_shape": (1, 28, 28)}, ConfigurationError, ["input_shape", "2 positive"]),
    ],
    ids=["kind", "depth", "activation", "padding", "shape1d"],
)
def test_bad_config(kwargs, error, words):
    with pytest.raises(error) as info:
        CNNClassifier(**kwargs)
    for word in words:
        assert word in str(info.value)
