"""ConstraintConfig: keyword-only checked options shared by orthogonalize and
OrthogonalConstraint; the MANIFOLDS / TRIVIALIZATIONS tables are the one place a manifold or a
map is added."""

from __future__ import annotations

import dataclasses

import geotorch
import pytest
import torch
from torch import nn

from ortho_lightning.callbacks import OrthogonalConstraint
from ortho_lightning.constraints import (
    MANIFOLDS,
    TRIVIALIZATIONS,
    ConstraintConfig,
    Manifold,
    orthogonalize,
)
from ortho_lightning.constraints.parametrization import OrthogonalMatrix
from ortho_lightning.exceptions import ConfigurationError


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(6, 4).double()


def test_config_and_keywords_give_the_same_constrained_weight():
    by_keywords = orthogonalize(_linear(), gain=1.5, relax=0.2, triv="cayley")
    by_config = orthogonalize(_linear(), config=ConstraintConfig(gain=1.5, relax=0.2, triv="cayley"))
    assert torch.equal(by_keywords.weight, by_config.weight)
    s = torch.linalg.svdvals(by_config.weight.detach())
    # relaxed: singular values inside gain * [1 - 0.2, 1 + 0.2] (and a start clipped inside it)
    assert (s >= 1.5 * 0.8 - 1e-12).all() and (s <= 1.5 * 1.2 + 1e-12).all()


def test_config_is_keyword_only_frozen_and_resolves_the_manifold():
    with pytest.raises(TypeError):
        ConstraintConfig(2.0)  # type: ignore[misc]
    config = ConstraintConfig(relax=0.1, gain=2)
    assert (config.manifold, config.gain, type(config.gain)) == ("almost_orthogonal", 2.0, float)
    assert ConstraintConfig().manifold == "stiefel"
    assert config == ConstraintConfig(gain=2.0, relax=0.1, manifold="almost_orthogonal")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gain = 3.0  # type: ignore[misc]


def test_orthogonalize_options_are_keyword_only():
    with pytest.raises(TypeError):
        orthogonalize(_linear(), "weight", 2.0)  # type: ignore[misc]


def test_options_both_in_config_and_as_keywords_is_an_error():
    with pytest.raises(ConfigurationError, match=r"^orthogonalize: config must be the only source "
                       r"of the options \(also got \['gain'\]\)"):
        orthogonalize(_linear(), config=ConstraintConfig(gain=2.0), gain=3.0)
    with pytest.raises(ConfigurationError, match="^orthogonalize: config must be a ConstraintConfig"):
        orthogonalize(_linear(), config={"gain": 2.0})  # type: ignore[arg-type]


def test_the_callback_checks_its_options_into_one_config():
    cb = OrthogonalConstraint(gain=1.5, relax=0.1, init="haar")
    assert cb.config == ConstraintConfig(gain=1.5, relax=0.1, init="haar")
    assert (cb.gain, cb.relax, cb.manifold, cb.init, cb.triv) == (1.5, 0.1, "almost_orthogonal", "haar", "expm")


def test_manifold_table_picks_the_geotorch_module():
    exact = orthogonalize(_linear()).parametrizations.weight[0]
    relaxed = orthogonalize(_linear(), relax=0.3).parametrizations.weight[0]
    assert isinstance(exact, OrthogonalMatrix) and type(exact.manifold) is geotorch.Stiefel
    assert type(relaxed.manifold) is geotorch.AlmostOrthogonal and relaxed.manifold_name == "almost_orthogonal"


def test_a_new_trivialization_is_one_table_entry(monkeypatch):
    # torch's own matrix exponential: the same map as "expm", so the same constrained weight after
    # a gradient step (a start at the base point alone would not tell maps apart)
    monkeypatch.setitem(TRIVIALIZATIONS, "torch_expm", torch.linalg.matrix_exp)
    start = orthogonalize(_linear()).weight.detach()
    weights = []
    for triv in ("expm", "torch_expm"):
        lin = orthogonalize(_linear(), triv=triv)
        opt = torch.optim.SGD(lin.parameters(), lr=0.5)
        lin(torch.ones(3, 6, dtype=torch.float64)).square().sum().backward()
        opt.step()
        weights.append(lin.weight.detach())
    assert (weights[0] - start).abs().max() > 1e-3  # the step moved it
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=1e-12)


def test_a_new_manifold_is_one_table_entry(monkeypatch):
    # the special orthogonal group as a table entry: geotorch's SO (square only) and the polar
    # projection with the sign of one column flipped when the determinant is negative
    def so(size, triv, relax):
        return geotorch.SO(size, triv=triv)

    def project_so(M, relax, band_margin):
        U, _, Vh = torch.linalg.svd(M)
        d = torch.sign(torch.linalg.det(U @ Vh))
        U = torch.cat([U[..., :-1], U[..., -1:] * d[..., None, None]], dim=-1)
        return U @ Vh

    monkeypatch.setitem(MANIFOLDS, "so", Manifold(so, project_so))
    torch.manual_seed(1)
    lin = nn.Linear(4, 4).double()
    with torch.no_grad():
        lin.weight.copy_(torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64)))
    orthogonalize(lin, manifold="so", gain=2.0)
    W = lin.weight.detach() / 2.0
    torch.testing.assert_close(W.T @ W, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.linalg.det(W).item() == pytest.approx(1.0, abs=1e-12)
