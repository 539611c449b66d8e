"""Spectra of a network (pure torch.func, no Lightning): per-sample Jacobian singular values
(input-output, layer-to-layer, recurrent state-to-state), the true Fisher's eigenvalues, trace
and spectral density, weight singular values, and their summaries."""

from ortho_lightning.spectra.fisher import fisher_eigenvalues, fisher_trace, spectral_density
from ortho_lightning.spectra.gram import fisher_gram
from ortho_lightning.spectra.jacobian import (
    jacobian_singular_values,
    layer_jacobian_singular_values,
    recurrent_state_jacobian_singular_values,
)
from ortho_lightning.spectra.operators import FisherOperator
from ortho_lightning.spectra.summary import summarize
from ortho_lightning.spectra.weights import (
    conv_operator_singular_values,
    weight_singular_values,
    weight_spectra,
)

__all__ = [
    "FisherOperator",
    "conv_operator_singular_values",
    "fisher_eigenvalues",
    "fisher_gram",
    "fisher_trace",
    "jacobian_singular_values",
    "layer_jacobian_singular_values",
    "recurrent_state_jacobian_singular_values",
    "spectral_density",
    "summarize",
    "weight_singular_values",
    "weight_spectra",
]
