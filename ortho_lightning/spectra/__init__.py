"""Spectra of a network (pure torch.func, no Lightning): per-sample Jacobian singular values
(input-output, layer-to-layer, recurrent state-to-state), the true Fisher's eigenvalues, trace
and spectral density, weight singular values, and their summaries.

Conventions shared by every function here:

- Inputs and outputs are batch-first; per-sample Jacobians are taken from ONE forward pass of
  the whole batch, which is exact when samples do not interact (eval mode for the standard
  layers). Models are measured in eval mode by default (``eval_mode=True``: dropout off,
  batch-norm running statistics) and every submodule's mode is restored afterwards.
- Parameters are the trainable ``named_parameters()``, passed through
  :func:`torch.func.functional_call`; for geotorch / ``torch.nn.utils.parametrize`` modules
  these are the unconstrained originals, so Fisher spectra are those of the parametrized
  model in the coordinates the optimizer moves, differentiated through the parametrization.
  Frozen parameters are not variables. No ``.grad`` is written and the global RNG is not used
  (Lanczos, Hutchinson and SLQ draw from ``generator``, default a private one seeded with 0;
  ``seed=`` is its deprecated spelling).
- Matrix-free operators (the Fisher, its dual, the NTK) share one interface,
  :class:`~ortho_lightning.spectra.linear_operator.LinearOperator` (``shape``, ``dtype``,
  ``device``, ``@``, checked inputs), which Lanczos and SLQ take.
- Fused ``nn.RNN``/``LSTM``/``GRU`` kernels: Jacobians use reverse mode, and every
  measurement runs with the oneDNN/cuDNN RNN backends off (torch.func cannot enter them; see
  :func:`~ortho_lightning.spectra._common.ad_friendly_backends`).
- The exact Fisher spectrum comes from the (N*C x N*C) dual Gram (structured per layer for
  Linear/Conv1d/Conv2d, torch.func for everything else, recurrent layers included); for large
  N*C use ``method="lanczos"``, :func:`fisher_trace` (``"hutchinson"``) and
  :func:`spectral_density`.
- The empirical NTK Theta = J J^T (:func:`ntk_matrix`, :func:`ntk_eigenvalues`,
  :func:`ntk_trace`, :func:`ntk_drift`) is N times the Gaussian-likelihood Fisher's dual Gram.
"""

from ortho_lightning.spectra.bound import FisherBound, fisher_max_bound
from ortho_lightning.spectra.empirical import empirical_fisher_eigenvalues
from ortho_lightning.spectra.fisher import fisher_eigenvalues, fisher_trace, spectral_density
from ortho_lightning.spectra.gram import fisher_gram
from ortho_lightning.spectra.jacobian import (
    jacobian_singular_values,
    layer_jacobian_singular_values,
    recurrent_state_jacobian_singular_values,
)
from ortho_lightning.spectra.linear_operator import LinearOperator, MatvecOperator
from ortho_lightning.spectra.ntk import (
    NTKOperator,
    kernel_distance,
    kernel_eigenvalues,
    ntk_drift,
    ntk_eigenvalues,
    ntk_matrix,
    ntk_trace,
)
from ortho_lightning.spectra.operators import FisherOperator
from ortho_lightning.spectra.summary import summarize
from ortho_lightning.spectra.weights import (
    conv_operator_singular_values,
    weight_singular_values,
    weight_spectra,
)

__all__ = [
    "FisherBound",
    "FisherOperator",
    "LinearOperator",
    "MatvecOperator",
    "NTKOperator",
    "conv_operator_singular_values",
    "empirical_fisher_eigenvalues",
    "fisher_eigenvalues",
    "fisher_gram",
    "fisher_max_bound",
    "fisher_trace",
    "jacobian_singular_values",
    "kernel_distance",
    "kernel_eigenvalues",
    "layer_jacobian_singular_values",
    "ntk_drift",
    "ntk_eigenvalues",
    "ntk_matrix",
    "ntk_trace",
    "recurrent_state_jacobian_singular_values",
    "spectral_density",
    "summarize",
    "weight_singular_values",
    "weight_spectra",
]
