"""Single-input Fisher moments against explicit autograd Fisher spectra of random tanh MLPs
at a critical point (float64), and the measured Fisher of spectra.fisher_eigenvalues at batch
size 1 equal to the explicit one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.init import critical_point
from ortho_lightning.theory.fisher import fisher_moments

SIGMA_B = math.sqrt(0.05)
WIDTH, OUTPUTS = 400, 10


def _random_mlp(depth, weights, sigma_w, q, gen):
    """An nn.Sequential tanh MLP (width 400, 10 outputs, float64) with the theory's weights,
    and one input on the fixed point."""
    kw = {"generator": gen, "dtype": torch.float64}
    layers = []
    for _ in range(depth):
        lin = nn.Linear(WIDTH, WIDTH, dtype=torch.float64)
        a = torch.randn(WIDTH, WIDTH, **kw)
        if weights == "orthogonal":
            qm, r = torch.linalg.qr(a)
            w = qm * torch.sign(torch.diagonal(r))
        else:
            w = a / math.sqrt(WIDTH)
        with torch.no_grad():
            lin.weight.copy_(sigma_w * w)
            lin.bias.copy_(SIGMA_B * torch.randn(WIDTH, **kw))
        layers += [lin, nn.Tanh()]
    out = nn.Linear(WIDTH, OUTPUTS, dtype=torch.float64)
    with torch.no_grad():
        out.weight.copy_(sigma_w * torch.randn(OUTPUTS, WIDTH, **kw) / math.sqrt(WIDTH))
        out.bias.copy_(SIGMA_B * torch.randn(OUTPUTS, **kw))
    x = torch.randn(WIDTH, **kw)
    x = x / x.norm() * math.sqrt(WIDTH * (q - SIGMA_B**2) / sigma_w**2)
    return nn.Sequential(*layers, out), x


def _explicit_fisher_eigenvalues(model, x):
    """Eigenvalues of J_theta J_theta^T (C x C), J_theta by one backward pass per output."""
    params = list(model.parameters())
    f = model(x)
    rows = [
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(f[c], params, retain_graph=True)])
        for c in range(f.numel())
    ]
    g = torch.stack(rows)
    return torch.linalg.eigvalsh(g @ g.T)


@pytest.mark.parametrize("weights", ["orthogonal", "gaussian"])
def test_fisher_moments_match_random_mlps(weights):
    cp = critical_point("tanh", sigma_b=SIGMA_B)
    gen = torch.Generator().manual_seed(0)
    for depth in (4, 8):
        ev = [
            _explicit_fisher_eigenvalues(*_random_mlp(depth, weights, cp.sigma_w, cp.q_star, gen))
            for _ in range(6)
        ]
        th = fisher_moments("tanh", cp.sigma_w, SIGMA_B, depth, WIDTH, OUTPUTS, weights,
                            q_star=cp.q_star)
        # at criticality the mean is (N E[phi^2] + 1)(L + 1): linear in depth
        assert th.mean == pytest.approx(th.scale * (depth + 1), rel=1e-9)
        mean = sum(float(e.mean()) for e in ev) / len(ev)
        var = sum(float(e.var(unbiased=False)) for e in ev) / len(ev)
        print(f"{weights} L={depth}: mean {mean:.1f} (theory {th.mean:.1f}), "
              f"var {var:.4g} (theory {th.variance:.4g})")
        assert mean == pytest.approx(th.mean, rel=0.06)
        # the sample variance of C eigenvalues misses Var(mean) = 2 / (C (C + 1)) of the
        # variance (Wick); 10 eigenvalues per draw make it a noisy statistic
        expected = th.variance * (1 - 2 / (OUTPUTS * (OUTPUTS + 1)))
        assert var == pytest.approx(expected, rel=0.35)


def test_spectra_fisher_at_batch_one_is_the_explicit_one():
    spectra = pytest.importorskip("ortho_lightning.spectra")
    cp = critical_point("tanh", sigma_b=SIGMA_B)
    model, x = _random_mlp(3, "orthogonal", cp.sigma_w, cp.q_star, torch.Generator().manual_seed(1))
    measured = spectra.fisher_eigenvalues(model, x[None], likelihood="gaussian")
    explicit = _explicit_fisher_eigenvalues(model, x).flip(0)
    assert measured[:OUTPUTS] == pytest.approx(explicit.tolist(), rel=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"width": 0}, "fisher_moments: width must be an integer >= 1, got 0"),
     ({"n_outputs": 2.5}, "fisher_moments: n_outputs must be an integer >= 1, got 2.5"),
     ({"weights": "unitary"}, "fisher_moments: weights must be one of")],
    ids=["width", "outputs", "weights"],
)
def test_bad_input_messages(kwargs, match):
    args = {"activation": "tanh", "sigma_w": 1.0, "sigma_b": 0.1, "depth": 2, "width": 10,
            "n_outputs": 3, **kwargs}
    with pytest.raises(ConfigurationError, match=match):
        fisher_moments(**args)
