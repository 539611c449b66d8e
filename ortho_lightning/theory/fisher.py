"""First two moments of the single-input Fisher spectrum of a wide random MLP, in the spirit
of Hayase & Karakida 2020 (FIM of networks at dynamical isometry).

Network: ``h_l = W_l x_{l-1} + b_l``, ``x_l = phi(h_l)`` for ``l = 1..L`` (width ``N``; ``W_l``
orthogonal times ``sigma_w`` or Gaussian of variance ``sigma_w^2 / N``), read out by
``f = W_{L+1} x_L + b_{L+1}`` (``C`` outputs, ``W_{L+1}`` Gaussian of variance
``sigma_w^2 / N``); biases ``N(0, sigma_b^2)``; the input on the fixed point
(``||x_0||^2 = N E[phi(h)^2]``). With a unit-variance Gaussian likelihood the single-input
Fisher is ``F = J_theta^T J_theta``; its ``C`` non-zero eigenvalues are those of
``Theta = J_theta J_theta^T = sum_{l=1}^{L+1} (||x_{l-1}||^2 + 1) B_l B_l^T`` with
``B_l = df/dh_l``. Writing ``A_l = J_l J_l^T``, ``J_l = D_L W_L ... W_{l+1} D_l``:

- ``B_l B_l^T = W_{L+1} A_l W_{L+1}^T`` has mean ``sigma_w^2 tr(A_l)/N``, with
  ``tr(A_l)/N = chi^{L-l} E[D^2]``;
- Wick's theorem for the Gaussian readout gives
  ``(1/C) E tr(W A W^T W B W^T) = sigma_w^4 (tr A tr B / N^2 + (C + 1) tr(AB) / N^2)``, and
  freeness gives ``tr(A_l A_k)/N = chi^{k-l} E[(J_k J_k^T)^2]`` for ``l <= k`` (second moments
  from :func:`ortho_lightning.theory.free_probability.jacobian_moments`' rule).

So the mean eigenvalue is ``c (1 + sum_{j=1}^{L} chi^j)`` with ``c = N E[phi^2] + 1``, which is
``c (L + 1)`` at criticality (linear in depth), and the variance is
``c^2 sigma_w^4 (C + 1) / N * sum_{l,k} tr(A_l A_k)/N``: a relative spread that stays
``O(sqrt(C/N))`` in depth for orthogonal weights with small ``s_D`` and grows with depth for
Gaussian ones. Leading order in ``1/N``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ortho_lightning.activations import Activation
from ortho_lightning.theory.free_probability import _q_star, check_network, jacobian_moments
from ortho_lightning.validation import check_int


@dataclass(frozen=True)
class FisherMoments:
    """Moments of the ``C`` non-zero eigenvalues ``lambda`` of the single-input Fisher:
    ``mean = E[lambda]``, ``second = E[lambda^2]``, ``variance``; ``scale = N E[phi^2] + 1``
    (so ``mean / scale = depth + 1`` at criticality)."""

    mean: float
    second: float
    variance: float
    scale: float


def fisher_moments(
    activation: str | Activation,
    sigma_w: float,
    sigma_b: float,
    depth: int,
    width: int,
    n_outputs: int,
    weights: str = "orthogonal",
    *,
    q_star: float | None = None,
) -> FisherMoments:
    """Leading-order moments of the single-input Fisher spectrum (see the module docstring)."""
    check_network("fisher_moments", sigma_w, depth, weights, q_star, activation=activation)
    check_int("fisher_moments", "width", width, minimum=1)
    check_int("fisher_moments", "n_outputs", n_outputs, minimum=1)
    q = _q_star(activation, sigma_w, sigma_b) if q_star is None else q_star
    jac = jacobian_moments(activation, sigma_w, sigma_b, depth, weights, q_star=q)
    chi, s_d, s_w = jac.chi, jac.s_d, jac.s_w
    e2 = chi / sigma_w**2  # E[phi'(h)^2]
    post = (q - sigma_b**2) / sigma_w**2  # E[phi(h)^2] = ||x||^2 / N on the fixed point
    c = width * post + 1.0
    L = depth
    tr_a = [chi ** (L - j) * e2 for j in range(1, L + 1)]  # tr(A_l)/N
    sec = [(chi ** (L - k) * e2) ** 2 * (1 + (L - k) * (s_d + s_w) + s_d) for k in range(1, L + 1)]
    mean = c * (1.0 + sigma_w**2 * sum(tr_a))
    cross = 0.0
    for j in range(1, L + 1):
        for k in range(1, L + 1):
            lo, hi = min(j, k), max(j, k)
            cross += chi ** (hi - lo) * sec[hi - 1]
    variance = c**2 * sigma_w**4 * (n_outputs + 1) / width * cross
    return FisherMoments(mean, mean**2 + variance, variance, c)
