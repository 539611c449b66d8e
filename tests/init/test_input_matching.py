"""Critical on the data: input_q="match" against the per-layer q measured on a batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.init import critical_point, initialize
from ortho_lightning.init.input_matching import preactivation_q

Q_STAR = 1 / 64


def _mlp(depth: int, width: int, fan_in: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(fan_in if i == 0 else width, width), nn.Tanh()]
    return nn.Sequential(*layers)


def _mnist_batch(mnist_dir, n: int = 256) -> torch.Tensor:
    from ortho_lightning.data import MNISTDataModule

    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=n)
    dm.setup("fit")
    return torch.stack([dm.train_dataset[i][0] for i in range(n)]).flatten(1)


@pytest.mark.mnist
@pytest.mark.parametrize("scheme", ["orthogonal", "gaussian"])
def test_matched_deep_tanh_mlp_sits_at_q_star_on_real_mnist(mnist_dir, scheme, one_thread):
    x = _mnist_batch(mnist_dir)
    model = _mlp(depth=12, width=256, fan_in=784)
    gen = torch.Generator().manual_seed(0)
    report = initialize(
        model, scheme, gain="critical", activation="tanh", q_star=Q_STAR,
        input_q="match", inputs=x, generator=gen,
    )
    q = preactivation_q(model, x)
    assert len(q) == 12
    # orthogonal layers preserve norms exactly, so every layer stays at q*; a Gaussian (256 x
    # 256) layer rescales every input by its own factor (relative std sqrt(2 / 256) ~ 9%), and at
    # q* = 1/64 the length map barely damps it (depth scale ~ 1/q*), so only its first layer is
    # pinned and the rest wander like a random walk
    checked = q if scheme == "orthogonal" else {"0": q["0"]}
    for name, value in checked.items():
        assert value == pytest.approx(Q_STAR, rel=0.10), name
    # the report carries the same measured q beside each weight
    reported = {r.name.removesuffix(".weight"): r.q for r in report if r.name.endswith("weight")}
    assert reported == pytest.approx(q, rel=1e-12)
    assert report.input_second_moment == pytest.approx(float(x.square().mean()))
    assert report.critical.q_star == Q_STAR

    # without the option the first layers are far from q*: images enter at q ~ sigma_w^2 * m2
    plain = _mlp(depth=12, width=256, fan_in=784)
    initialize(plain, scheme, gain="critical", activation="tanh", q_star=Q_STAR,
               generator=torch.Generator().manual_seed(0))
    q_plain = preactivation_q(plain, x)
    assert q_plain["0"] > 30 * Q_STAR


@pytest.mark.parametrize("scheme", ["orthogonal", "gaussian"])
@pytest.mark.parametrize("fan_in", [32, 300])  # tall and wide first matrix
def test_second_moment_alone_matches_the_first_layer(scheme, fan_in):
    # inputs with second moment 4: first pre-activations at q* for a tall or a wide W_1
    x = 2.0 * torch.randn(2048, fan_in, generator=torch.Generator().manual_seed(1))
    model = _mlp(depth=3, width=128, fan_in=fan_in)
    initialize(model, scheme, gain="critical", q_star=0.5, input_q="match", inputs=4.0,
               generator=torch.Generator().manual_seed(2))
    q = preactivation_q(model, x)
    assert q["0"] == pytest.approx(0.5, rel=0.08)
    assert q["4"] == pytest.approx(0.5, rel=0.15)


def test_conv_and_recurrent_input_layers_are_matched():
    x = 3.0 * torch.randn(64, 2, 12, 12, generator=torch.Generator().manual_seed(0))
    conv = nn.Sequential(nn.Conv2d(2, 64, 3, padding=1), nn.Tanh(), nn.Conv2d(64, 64, 3, padding=1))
    initialize(conv, "delta_orthogonal", gain="critical", q_star=0.25, input_q="match", inputs=x,
               generator=torch.Generator().manual_seed(0))
    # the centre tap sees the same pixel statistics as the whole input (interior positions)
    assert preactivation_q(conv, x)["0"] == pytest.approx(0.25, rel=0.1)

    rnn = nn.RNN(28, 128, batch_first=True)
    seq = 3.0 * torch.randn(64, 5, 28, generator=torch.Generator().manual_seed(1))
    initialize(rnn, "orthogonal", gain="critical", q_star=0.25, input_q="match", inputs=seq,
               recurrent="all", generator=torch.Generator().manual_seed(0))
    first_step = seq[:, 0] @ rnn.weight_ih_l0.detach().T  # h_0 = 0, zero biases at sigma_b ~ 0.1
    assert float(first_step.square().mean()) == pytest.approx(
        0.25 - critical_point("tanh", q_star=0.25).sigma_b ** 2 * 2, rel=0.1
    )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"gain": "critical", "input_q": "match"}, "input_q='match' needs the data's scale"),
        ({"gain": 1.0, "input_q": "match", "inputs": 1.0}, "needs gain='critical'"),
        ({"gain": "critical", "input_q": "yes", "inputs": 1.0}, r"initialize: input_q must be one of \[None, 'match'\], got 'yes'"),
        ({"gain": "critical", "input_q": "match", "inputs": -1.0}, "finite and > 0"),
        ({"gain": 1.0, "q_star": 0.1}, "initialize: q_star is only used with gain='critical'"),
        ({"gain": 0.0}, r"initialize: gain must be a number > 0 or 'critical' \(0 makes every weight zero, .*\), got 0.0"),
        ({"gain": -1.5}, r"initialize: gain must be a number > 0 or 'critical' \(.* a negative gain flips their sign\), got -1.5"),
        ({"rest": "tf"}, r"initialize: rest must be one of \['keep', 'keras'\], got 'tf'"),
    ],
    ids=["no-inputs", "not-critical", "bad-input_q", "bad-moment", "q_star-without-critical",
         "zero-gain", "negative-gain", "bad-rest"],
)
def test_bad_arguments_name_what_was_expected(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        initialize(_mlp(2, 8, 4), **kwargs)


def test_recurrent_hh_cannot_match_the_input_matrix():
    with pytest.raises(ConfigurationError, match="recurrent='hh' leaves alone"):
        initialize(nn.RNN(4, 8), gain="critical", q_star=0.1, recurrent="hh", input_q="match",
                   inputs=1.0)


def test_a_bad_gain_is_named_before_a_q_star_conflict():
    # the recipe sets q_star; overriding gain=-1 must say the gain is wrong
    with pytest.raises(ConfigurationError, match=r"initialize: gain must be a number > 0 or 'critical' .*, got -1$"):
        initialize(_mlp(2, 8, 4), gain=-1, q_star=1 / 64)
