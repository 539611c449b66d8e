"""Keeping weights orthogonal: hard constraints (geotorch parametrizations with a gain, per
gate block, flattened conv view), soft penalties and projections. Pure torch + geotorch."""

from ortho_lightning.constraints.config import ConstraintConfig
from ortho_lightning.constraints.orthogonalize import (
    matrix_tensor_names,
    orthogonalize,
    remove_orthogonalization,
    selected_tensors,
    update_base,
)
from ortho_lightning.constraints.parametrization import (
    MANIFOLDS,
    TRIVIALIZATIONS,
    Manifold,
    OrthogonalMatrix,
    is_orthogonalized,
    orthogonalized_tensors,
)
from ortho_lightning.constraints.penalties import (
    PENALTIES,
    block_defects,
    orthogonality_defect,
    orthogonality_penalty,
    total_penalty,
)
from ortho_lightning.constraints.projection import PROJECTIONS, project_orthogonal_
from ortho_lightning.constraints.state import split_state_dict

__all__ = [
    "MANIFOLDS",
    "PENALTIES",
    "PROJECTIONS",
    "TRIVIALIZATIONS",
    "ConstraintConfig",
    "Manifold",
    "OrthogonalMatrix",
    "block_defects",
    "is_orthogonalized",
    "matrix_tensor_names",
    "orthogonality_defect",
    "orthogonality_penalty",
    "orthogonalize",
    "orthogonalized_tensors",
    "project_orthogonal_",
    "remove_orthogonalization",
    "selected_tensors",
    "split_state_dict",
    "total_penalty",
    "update_base",
]
