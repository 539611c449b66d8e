import pytest
import yaml

from ortho_lightning.exceptions import ConfigurationError
from ortho_lightning.experiments.cli import main
from ortho_lightning.experiments.report import linear_slope, make_report

SPEC = {
    "name": "toy", "kind": "function", "function": "tests.experiments.fake_cells:quadratic",
    "base": {"steps": 4}, "axes": {"a": [1.0, 2.0, 4.0], "b": [1, 3]}, "seed": [0, 1],
    "report": {
        "figures": [
            {"name": "loss_vs_a", "x": "a", "y": "loss", "hue": "b", "where": {"step": "last"},
             "fit": "linear"},
            {"name": "curves", "x": "step", "y": ["loss", "noise"], "hue": ["a", "b"], "logy": True},
        ],
        "summary": {"group": ["a", "b"], "columns": ["loss"], "where": {"step": "last"}},
    },
}


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    assert main(["experiment", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    return tmp_path / "out"


def test_experiment_writes_figures_and_summary(folder):
    for name in ("loss_vs_a", "curves"):
        for ext in ("png", "svg"):
            assert (folder / "figures" / f"{name}.{ext}").stat().st_size > 1000
    text = (folder / "summary.md").read_text()
    assert "12 finished cells, 48 rows" in text
    assert "![loss_vs_a](figures/loss_vs_a.png)" in text
    # last step is 3: loss = a*b*9, so slope vs a is 9*b (b=1 -> 9, b=3 -> 27)
    assert "| loss_vs_a | b=1 | mean | 9 |" in text and "| loss_vs_a | b=3 | mean | 27 |" in text
    assert "| 4 | 3 | 108 ± 0 (n=2) |" in text


def test_report_redraws_from_the_table_alone(folder):
    (folder / "summary.md").unlink()
    for f in (folder / "figures").iterdir():
        f.unlink()
    import shutil

    shutil.rmtree(folder / "cells")  # no cell outputs, no training: only results.csv
    assert main(["report", str(folder)]) == 0
    assert (folder / "figures" / "curves.svg").is_file()
    assert "| loss_vs_a | b=3 | mean | 27 |" in (folder / "summary.md").read_text()


def test_report_on_a_non_experiment_folder_is_an_error(tmp_path):
    with pytest.raises(ConfigurationError, match=r"^make_report: folder must be an experiment folder "
                       r"\(one with an experiment.yaml\), got '.*'$"):
        make_report(tmp_path)


def _set_first_figure(folder, key, value):
    """Rewrite the experiment.yaml in ``folder`` with its first figure's ``key`` set to ``value``."""
    spec = yaml.safe_load((folder / "experiment.yaml").read_text())
    spec["report"]["figures"][0][key] = value
    (folder / "experiment.yaml").write_text(yaml.safe_dump(spec))


def test_report_names_a_missing_column(folder):
    _set_first_figure(folder, "y", "accuracy")
    with pytest.raises(ConfigurationError, match=r"^report figure '.*': x, y and hue must be columns of "
                       r"the results table \[.*'loss'.*\] \(missing ones listed\), got \['accuracy'\]$"):
        make_report(folder)


def test_report_names_unknown_and_missing_figure_keys_and_summary_columns(folder):
    _set_first_figure(folder, "colour", "red")
    with pytest.raises(ConfigurationError, match=r"^report figure 'loss_vs_a': keys must be among "
                       r"\['name', .*\] \(unknown ones listed\), got \['colour'\]$"):
        make_report(folder)
    spec = yaml.safe_load((folder / "experiment.yaml").read_text())
    del spec["report"]["figures"][0]["colour"], spec["report"]["figures"][0]["x"]
    (folder / "experiment.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigurationError, match=r"^report figure 'loss_vs_a': x must be given \(a "
                       r"figure needs 'name', 'x' and 'y'\), got None$"):
        make_report(folder)
    spec["report"] = {"summary": {"group": ["a"], "columns": ["loss", "acc"]}}
    (folder / "experiment.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigurationError, match=r"^report summary: group and columns must be columns "
                       r"of the results table \[.*\] \(missing ones listed\), got \['acc'\]$"):
        make_report(folder)


def test_linear_slope_matches_closed_form():
    slope, icpt = linear_slope([1, 2, 3, 4], [3, 5, 7, 9])
    assert slope == pytest.approx(2.0) and icpt == pytest.approx(1.0)


def test_median_and_quartiles_interpolate_like_numpy():
    from ortho_lightning.experiments.report import _median_iqr

    assert _median_iqr([10.0, 1.0, 3.0, 2.0]) == pytest.approx((2.5, 1.75, 4.75))


def test_unknown_aggregate_is_named(folder):
    _set_first_figure(folder, "agg", "mode")
    with pytest.raises(ConfigurationError, match=r"agg must be one of \['mean', 'median'\], got 'mode'"):
        make_report(folder)


def test_final_filter_takes_each_columns_last_value_per_cell():
    from ortho_lightning.experiments.report import filter_rows

    rows = [{"cell_id": "a", "step": 9, "val": 0.5, "test": None},
            {"cell_id": "a", "step": 10, "val": None, "test": 0.7},
            {"cell_id": "a", "step": 4, "val": 0.2, "test": None},
            {"cell_id": "b", "step": 3, "val": 0.1, "test": None}]
    final = sorted(filter_rows(rows, {"step": "final"}), key=lambda r: r["cell_id"])
    assert final == [{"cell_id": "a", "step": 10, "val": 0.5, "test": 0.7},
                     {"cell_id": "b", "step": 3, "val": 0.1}]
    assert [r["step"] for r in filter_rows(rows, {"step": "last"})] == [10, 3]
