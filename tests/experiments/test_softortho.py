"""The report hook of the seed study's Figs. 7 and 8 (``experiments.softortho``), on a table whose
values are known: W_hh singular values drawn per measurement, validation and test accuracies
set per cell."""

import math

import pytest
import torch

from ortho_lightning.experiments.softortho import WHH, hlav_report, recurrent_sv_stats

STEPS_PER_EPOCH, EPOCHS = 10, 3


def _cell(arm, seed, val, test, svs):
    """Rows as the runner's table holds them: the weight monitor at fit start and each epoch's
    end, val/acc at each epoch's end (other columns empty), test/acc after fit."""
    cell_id = f"arm_{arm}-seed{seed}"
    rows = []
    for k, s in enumerate(svs):  # k = 0: the init
        rows.append({"cell_id": cell_id, "arm": arm, "seed": seed, "step": k * STEPS_PER_EPOCH,
                     f"{WHH}/max": s.max().item(), f"{WHH}/min": s.min().item(),
                     f"{WHH}/mean_sq": (s**2).mean().item(), f"{WHH}/std": s.std(unbiased=False).item()})
    for k, v in enumerate(val):
        rows.append({"cell_id": cell_id, "arm": arm, "seed": seed, "step": (k + 1) * STEPS_PER_EPOCH - 1,
                     "val/acc": v, "train/loss_step": 0.5})
    rows.append({"cell_id": cell_id, "arm": arm, "seed": seed, "step": EPOCHS * STEPS_PER_EPOCH,
                 "test/acc": test})
    return rows[::-1]  # out of order: the hook sorts by step


@pytest.fixture
def table():
    g = torch.Generator().manual_seed(0)
    svs = {(arm, seed): [torch.rand(16, generator=g, dtype=torch.float64) * 2 for _ in range(EPOCHS + 1)]
           for arm in ("adj_g1.025_l1", "glorot_normal") for seed in (0, 1)}
    val = {("adj_g1.025_l1", 0): [0.80, 0.90, 0.95], ("adj_g1.025_l1", 1): [0.84, 0.92, 0.97],
           ("glorot_normal", 0): [0.70, 0.85, 0.94], ("glorot_normal", 1): [0.70, 0.85, 0.94]}
    rows = [r for key in svs for r in _cell(*key, val[key], 0.9 + 0.01 * key[1], svs[key])]
    return rows, svs


def test_recurrent_sv_stats_are_the_spectrum_statistics(table):
    rows, svs = table
    cell = [r for r in rows if r["cell_id"] == "arm_glorot_normal-seed1"]
    stats = recurrent_sv_stats(cell)
    spectra = svs[("glorot_normal", 1)]
    assert len(stats["mean"]) == EPOCHS + 1
    for k, s in enumerate(spectra):
        assert stats["mean"][k] == pytest.approx(s.mean().item(), abs=1e-12)
        assert stats["std"][k] == pytest.approx(s.std(unbiased=False).item(), abs=1e-15)
        assert (stats["min"][k], stats["max"][k]) == (s.min().item(), s.max().item())


def test_hlav_report_tables_seed_means_beside_fig8(table, tmp_path):
    rows, _ = table
    text = hlav_report(list(rows[0]), rows, tmp_path)
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    adj = [c.strip() for c in lines["adj_g1.025_l1"].strip("|").split("|")]
    # seeds, epochs, epoch-1 mean ± sample std of (0.80, 0.84), Fig. 8's 0.773, final (0.95, 0.97)
    assert adj[1:8] == ["2", "3", f"0.820 ± {math.sqrt(0.0008):.3f}", "0.773",
                        f"0.960 ± {math.sqrt(0.0002):.3f}", "0.958", "0.905 ± 0.007"]
    assert adj[8] == "0.9500, 0.9700"
    glorot = [c.strip() for c in lines["glorot_normal"].strip("|").split("|")]
    assert glorot[3:7] == ["0.700 ± 0.000", "0.67", "0.940 ± 0.000", "0.951"]
    for name in ("fig8_val_acc", "fig7_recurrent_sv"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
