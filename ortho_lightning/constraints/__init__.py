"""Keeping weights orthogonal: hard constraints (geotorch parametrizations with a gain, per
gate block, flattened conv view), soft penalties and projections. Pure torch + geotorch."""

from ortho_lightning.constraints.orthogonalize import (
    OrthogonalMatrix,
    is_orthogonalized,
    matrix_tensor_names,
    orthogonalize,
    orthogonalized_tensors,
    remove_orthogonalization,
    selected_tensors,
    split_state_dict,
    update_base,
)
from ortho_lightning.constraints.penalties import (
    PENALTIES,
    block_defects,
    orthogonality_defect,
    orthogonality_penalty,
    total_penalty,
)
from ortho_lightning.constraints.projection import PROJECTIONS, project_orthogonal_

__all__ = [
    "PENALTIES",
    "PROJECTIONS",
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
