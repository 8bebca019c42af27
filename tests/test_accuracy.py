"""Accuracy beside cost: the table of trained runs, its numbers, its errors and its plot."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lightm_edu import cli
from lightm_edu.accuracy import (ACCURACY_COLUMNS, accuracy_rows, plot_accuracy_vs_cost, read_accuracy_table,
                                 run_summary, write_accuracy_tables)
from lightm_edu.flops import lightmunet_cost

ROOT = Path(__file__).resolve().parent.parent
RUNS = ["cxr_lung_2d", "cxr_lung_2d_dynunet", "cxr_lung_2d_segresnet", "cxr_lung_2d_umamba_bot"]
CONFIGS = [ROOT / "configs" / f"{run}.json" for run in RUNS]


@pytest.fixture(scope="module")
def committed_rows():
    return accuracy_rows(CONFIGS, ROOT / "results", trained_on="NVIDIA H100 80GB HBM3", progress=False)


def test_the_committed_table_is_what_the_committed_runs_give(committed_rows, tmp_path):
    """results/accuracy_cxr_lung_2d.csv is regenerated from the committed configs, logs and test metrics."""
    committed = read_accuracy_table(ROOT / "results" / "accuracy_cxr_lung_2d.csv")
    assert [r["run"] for r in committed] == RUNS
    for ours, theirs in zip(committed_rows, committed):
        for key in ACCURACY_COLUMNS:
            if isinstance(theirs[key], float):
                assert ours[key] == pytest.approx(theirs[key], rel=1e-8), (ours["run"], key)
            else:
                assert ours[key] == theirs[key], (ours["run"], key)


def test_every_run_used_the_same_recipe_split_and_budget():
    configs = [json.loads(path.read_text()) for path in CONFIGS]
    keys = set().union(*configs)
    differing = {key for key in keys if len({json.dumps(c.get(key)) for c in configs}) > 1}
    # Only the network (and where its outputs go) differ; scan_backend is set where there is a scan.
    assert differing == {"model", "out_dir", "scan_backend"}
    assert [c.get("model", "lightmunet") for c in configs] == ["lightmunet", "dynunet", "segresnet", "umamba_bot"]
    assert [c.get("scan_backend") for c in configs] == ["auto", None, None, "auto"]


def test_metrics_are_the_means_of_the_per_case_files(committed_rows):
    for row in committed_rows:
        with open(ROOT / "results" / f"{row['run']}_test_metrics.csv", newline="") as f:
            cases = list(csv.DictReader(f))
        dice = np.array([float(c["dice_lung"]) for c in cases])
        assert row["test_cases"] == len(cases) == 200
        assert row["dice"] == pytest.approx(dice.mean(), rel=1e-12)
        assert row["dice_sd"] == pytest.approx(dice.std(ddof=1), rel=1e-9)
        assert row["hd95"] == pytest.approx(np.mean([float(c["hd95_lung"]) for c in cases]), rel=1e-12)
        with open(ROOT / "results" / f"{row['run']}_log.csv", newline="") as f:
            log = list(csv.DictReader(f))
        best = int(np.argmax([float(r["val_dice"]) for r in log]))
        assert row["best_epoch"] == best + 1 and row["epochs"] == len(log) == 26
        assert row["seconds_per_epoch"] == pytest.approx(np.median([float(r["seconds"]) for r in log]))


def test_counts_are_those_of_the_networks_the_configs_build(committed_rows):
    by_name = {r["name"]: r for r in committed_rows}
    lightm = by_name["lightmunet"]
    assert lightm["params"] == 5_011_683  # the official code's count for 1 input channel, 2 classes
    analytic = lightmunet_cost(2, 1, 2, (256, 256))[0]
    assert lightm["gmacs"] * 1e9 == pytest.approx(analytic.macs, rel=1e-9)
    assert lightm["gflops"] * 1e9 == pytest.approx(analytic.flops, rel=1e-9)
    # The peers at 1 input channel instead of the paper's 3: the first 3x3 convolution (32 filters)
    # has 2 x 32 x 9 = 576 weights fewer; U-Mamba's first block also has a 1x1 shortcut (2 x 32 fewer).
    assert by_name["dynunet"]["params"] == 33_446_818 - 576
    assert by_name["segresnet"]["params"] == 6_299_106 - 576
    assert by_name["umamba_bot"]["params"] == 47_515_532 - 576 - 64
    assert all(r["input"] == "1x256x256" for r in committed_rows)


def test_missing_results_name_the_file_and_the_fix(tmp_path, capsys):
    config = tmp_path / "cxr_lung_2d_unet.json"
    config.write_text(json.dumps({"task": "cxr_lung", "model": "unet"}))
    with pytest.raises(FileNotFoundError, match=r"No test metrics at .*cxr_lung_2d_unet_test_metrics.csv: train and "
                                                r"evaluate the run first"):
        run_summary(config, tmp_path)
    assert cli.main(["accuracy", str(config), "--results", str(tmp_path), "--no-progress"]) == 1
    assert "cxr_lung_2d_unet_test_metrics.csv" in capsys.readouterr().err
    (tmp_path / "cxr_lung_2d_unet_test_metrics.csv").write_text("case_id,dice_liver\nx,0.5\n")
    with pytest.raises(ValueError, match="no column dice_lung: it is not the output of `lightm-edu evaluate`"):
        run_summary(config, tmp_path)


def test_several_classes_are_averaged_per_case(tmp_path):
    """A 3D run (two foreground classes): Dice per case = mean of its classes, then the mean over cases."""
    config = tmp_path / "hippo.json"
    config.write_text(json.dumps({"task": "hippocampus", "epochs": 2, "iterations_per_epoch": 5, "batch_size": 2}))
    (tmp_path / "hippo_test_metrics.csv").write_text(
        "case_id,dice_anterior,iou_anterior,hd95_anterior,dice_posterior,iou_posterior,hd95_posterior\n"
        "a,0.8,0.6,2.0,0.6,0.4,4.0\nb,1.0,1.0,0.0,0.8,0.6,1.0\n")
    (tmp_path / "hippo_log.csv").write_text("epoch,train_loss,lr,seconds,val_dice\n1,0.9,0.1,3.0,0.5\n2,0.5,0.05,5.0,0.4\n")
    summary = run_summary(config, tmp_path)
    assert summary["dice"] == pytest.approx((0.7 + 0.9) / 2) and summary["dice_sd"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    assert summary["iou"] == pytest.approx((0.5 + 0.8) / 2) and summary["hd95"] == pytest.approx((3.0 + 0.5) / 2)
    assert (summary["best_epoch"], summary["best_val_dice"], summary["seconds_per_epoch"]) == (1, 0.5, 4.0)


def test_tables_round_trip_and_cli_writes_them(committed_rows, tmp_path):
    csv_path, md_path = write_accuracy_tables(committed_rows, tmp_path / "acc")
    again = read_accuracy_table(csv_path)
    assert [r["dice"] for r in again] == pytest.approx([r["dice"] for r in committed_rows], rel=1e-8)
    text = md_path.read_text()
    assert "| LightM-UNet | 5.01 | 13.54 | 29.21 | **0.9614** |" in text
    assert "Trained on NVIDIA H100 80GB HBM3" in text and not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError, match="No rows"):
        write_accuracy_tables([], tmp_path / "none")


def test_plot_bubbles_have_the_area_of_the_parameters(committed_rows):
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_accuracy_vs_cost(committed_rows, bubble_scale=10.0)
    bubbles = [c for c in ax.collections if len(c.get_offsets())]
    assert len(bubbles) == 4
    for bubble, row in zip(bubbles, committed_rows):
        assert bubble.get_sizes()[0] == pytest.approx(10.0 * row["params"] / 1e6)
        assert tuple(bubble.get_offsets()[0]) == pytest.approx((row["gflops"], row["dice"]))
    assert "LightM-UNet\n5.0M params" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError, match="x must be one of gflops, gmacs, params, seconds_per_epoch"):
        plot_accuracy_vs_cost(committed_rows, x="latency")
