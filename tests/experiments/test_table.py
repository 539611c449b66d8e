import pytest

from ortho_lightning.exceptions import DataError
from ortho_lightning.experiments.grid import expand
from ortho_lightning.experiments.runner import run_grid
from ortho_lightning.experiments.table import (
    cell_table_rows,
    read_lightning_metrics,
    read_table,
    table_columns,
    write_table,
)


def test_schema_order_is_id_axes_seed_step_then_sorted_metrics(tmp_path):
    g = expand({"kind": "function", "function": "tests.experiments.fake_cells:quadratic",
                "axes": {"b": [1], "a": [0.5]}, "seed": [4]})
    run_grid(g, tmp_path, progress=False, report=False)
    columns, rows = read_table(tmp_path / "results.csv")
    assert columns == ["cell_id", "b", "a", "seed", "step", "loss", "noise"]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["seed"] == 4 and r["cell_id"] == g.cells[0].id for r in rows)


def test_round_trip_types_and_missing_values(tmp_path):
    rows = cell_table_rows("c", {"init": "orthogonal"}, 1,
                           [{"step": 0, "x": 1.5, "ok": True}, {"step": 2, "y": 3}])
    cols = table_columns(["init"], rows)
    write_table(tmp_path / "t.csv", cols, rows)
    _, back = read_table(tmp_path / "t.csv")
    assert back[0] == {"cell_id": "c", "init": "orthogonal", "seed": 1, "step": 0, "x": 1.5,
                       "ok": True, "y": None}
    assert back[1]["y"] == 3 and back[1]["x"] is None


def test_metric_clashing_with_axis_is_an_error():
    with pytest.raises(DataError, match=r"metric name\(s\) \['depth'\] clash"):
        cell_table_rows("c", {"depth": 4}, 0, [{"depth": 3.0}])


def test_lightning_metrics_rows_are_merged_per_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/acc\n0,9,0.5,\n0,9,,0.8\n1,19,0.3,\n")
    assert read_lightning_metrics(path) == [
        {"step": 9, "epoch": 0, "train/loss": 0.5, "val/acc": 0.8},
        {"step": 19, "epoch": 1, "train/loss": 0.3}]


def test_table_without_schema_columns_is_rejected(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['cell_id', 'seed', 'step'\]"):
        read_table(tmp_path / "t.csv")
