"""Theory to hold beside measurements: mean-field signal propagation (length and correlation
maps, q*, c*, chi_1, depth scales, phase; the critical point chi_1 = 1 that init's
``gain="critical"`` uses), free-probability densities of the squared
singular values of a wide network's input-output Jacobian (point masses apart), their
closed-form moments, the first moments of the single-input Fisher spectrum, the spectrum of
the conditional Fisher of one input (its dual, the single-input NTK), a phase-diagram
figure, a Monte-Carlo reference MLP, and the Wasserstein-1 distance between measured
eigenvalues and a prediction. Pure torch / numpy / scipy: no Lightning.

    from ortho_lightning.theory import mean_field, jacobian_spectrum_density, wasserstein1
    spectrum = jacobian_spectrum_density("tanh", sigma_w, sigma_b, depth=32, weights="orthogonal")
    grid, density = spectrum              # continuous part; spectrum.atoms / .atom_masses
    wasserstein1(measured_sv**2, spectrum)
"""

from ortho_lightning.theory.conditional_fisher import (
    ConditionalFisherSpectrum,
    conditional_fisher_moments,
    conditional_fisher_spectrum,
)
from ortho_lightning.theory.criticality import CriticalPoint, critical_point
from ortho_lightning.theory.distance import wasserstein1
from ortho_lightning.theory.fisher import FisherMoments, fisher_moments
from ortho_lightning.theory.free_probability import (
    WEIGHT_LAWS,
    JacobianMoments,
    SpectralDensity,
    SquaredDerivativeLaw,
    jacobian_moments,
    jacobian_s_transform,
    jacobian_spectrum_density,
    s_transform_derivative,
    s_transform_weights,
    squared_derivative_law,
)
from ortho_lightning.theory.mean_field import (
    PHASES,
    MeanField,
    correlation_map,
    correlation_slope,
    mean_field,
)
from ortho_lightning.theory.phase_diagram import phase_diagram
from ortho_lightning.theory.simulate import random_mlp_jacobian_eigenvalues

__all__ = [
    "PHASES",
    "WEIGHT_LAWS",
    "ConditionalFisherSpectrum",
    "CriticalPoint",
    "FisherMoments",
    "JacobianMoments",
    "MeanField",
    "SpectralDensity",
    "SquaredDerivativeLaw",
    "conditional_fisher_moments",
    "conditional_fisher_spectrum",
    "correlation_map",
    "correlation_slope",
    "critical_point",
    "fisher_moments",
    "jacobian_moments",
    "jacobian_s_transform",
    "jacobian_spectrum_density",
    "mean_field",
    "phase_diagram",
    "random_mlp_jacobian_eigenvalues",
    "s_transform_derivative",
    "s_transform_weights",
    "squared_derivative_law",
    "wasserstein1",
]
