"""The tidy results table: one row per run and logged step.

Fixed schema, in this order: ``cell_id``, one column per grid axis (named by its key, in the
grid's axis order), ``seed``, ``step``, then the metric columns sorted by name. Empty cells mean
"not logged at this step". Plain CSV (no pandas needed to read it).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ortho_lightning.exceptions import DataError
from ortho_lightning.experiments.locks import atomic_write_text

ID_COLUMN, SEED_COLUMN, STEP_COLUMN = "cell_id", "seed", "step"


def table_columns(axis_names: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The schema for these axes and rows: id, axes, seed, step, then sorted metric names."""
    fixed = [ID_COLUMN, *axis_names, SEED_COLUMN, STEP_COLUMN]
    metrics = sorted({k for row in rows for k in row if k not in fixed})
    return fixed + metrics


def cell_table_rows(cell_id: str, axes: Mapping[str, Any], seed: int,
                    rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stamp a run's metric rows with its id, axis values and seed (``step`` defaults to 0).

    A metric named like an axis or a fixed column is an error: it would silently overwrite it.
    """
    out = []
    for row in rows:
        clash = [k for k in row if k in axes or k in (ID_COLUMN, SEED_COLUMN)]
        if clash:
            raise DataError(f"cell {cell_id!r}: metric name(s) {clash} clash with the table's "
                            "id/axis/seed columns; rename them")
        out.append({ID_COLUMN: cell_id, **axes, SEED_COLUMN: seed,
                    STEP_COLUMN: row.get(STEP_COLUMN, 0),
                    **{k: v for k, v in row.items() if k != STEP_COLUMN}})
    return out


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if hasattr(value, "item"):  # a 0-d tensor or numpy scalar
        return _format(value.item())
    return str(value)


def _parse(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def write_table(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows under ``columns`` as CSV, atomically (a temporary file then a rename)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_format(row.get(c)) for c in columns])
    return atomic_write_text(path, text.getvalue())  # a unique temporary name per writer


def read_table(path: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Read a table written by :func:`write_table`: ``(columns, rows)`` with numbers parsed
    back to int/float/bool and empty fields to ``None``."""
    columns, rows = read_table_loose(path)
    if not columns:
        raise DataError(f"results table {str(path)!r} is empty (no header)")
    missing = [c for c in (ID_COLUMN, SEED_COLUMN, STEP_COLUMN) if c not in columns]
    if missing:
        raise DataError(f"results table {str(path)!r} lacks column(s) {missing}; has {columns}")
    return columns, rows


def read_lightning_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a Lightning ``CSVLogger`` ``metrics.csv`` into one row per step.

    Lightning writes one line per ``log`` flush, so train and validation values of the same
    step sit on different lines with the others empty; they are merged here (last value wins).
    The ``epoch`` column is kept as a metric.
    """
    columns, rows = read_table_loose(path)
    if STEP_COLUMN not in columns:
        raise DataError(f"Lightning metrics file {str(path)!r} has no 'step' column: {columns}")
    merged: dict[int, dict[str, Any]] = {}
    for row in rows:
        step = row[STEP_COLUMN]
        into = merged.setdefault(step, {STEP_COLUMN: step})
        into.update({k: v for k, v in row.items() if v is not None and k != STEP_COLUMN})
    return [merged[s] for s in sorted(merged)]


def read_table_loose(path: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Any CSV with a header, parsed like :func:`read_table` but without the schema check."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file {str(path)!r} does not exist")
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        columns = next(reader, [])
        return columns, [dict(zip(columns, map(_parse, line))) for line in reader]
