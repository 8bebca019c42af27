"""The comparison table (lightm_edu.compare and ``lightm-edu compare``) at tiny sizes: rows for every
model, counts equal to the analytic and registry ones, out-of-memory recorded, CSV and Markdown."""

from __future__ import annotations

import csv

import pytest
import torch

from lightm_edu import cli
from lightm_edu import compare as compare_module
from lightm_edu.baselines import build_peer, count_parameters, describe_peer
from lightm_edu.compare import COLUMNS, FUSED, OOM, compare, merge_rows, read_table, write_tables
from lightm_edu.flops import lightmunet_cost

MODELS = ["lightmunet", "segresnet", "unet"]  # models whose parameters do not depend on the input size
SIZE = 64


@pytest.fixture(scope="module")
def counted_rows():
    return compare(2, models=MODELS, device="cpu", measure=False, size=SIZE, progress=False)


def markdown_table(text: str) -> list[list[str]]:
    """The cells of the Markdown table in ``text`` (header first, the alignment row left out)."""
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]
    return [rows[0]] + rows[2:]


def test_one_row_per_requested_model_in_order(counted_rows):
    assert [r["name"] for r in counted_rows] == MODELS
    assert all(set(r) == set(COLUMNS) for r in counted_rows)
    assert all(r["input"] == "3x64x64" for r in counted_rows)


def test_lightmunet_macs_equal_the_analytic_count(counted_rows):
    row = counted_rows[0]
    count, _ = lightmunet_cost(2, 3, 2, (SIZE, SIZE))
    assert round(row["gmacs"] * 1e9) == count.macs
    assert round(row["gflops"] * 1e9) == count.flops
    assert row["analytic_gmacs"] == row["gmacs"]


def test_thop_columns_only_for_lightmunet_and_below_the_real_count(counted_rows):
    lightm, *others = counted_rows
    assert 0 < lightm["thop_gmacs"] < lightm["gmacs"] and 0 < lightm["thop_params"] < lightm["params"]
    assert all(r["thop_gmacs"] == r["analytic_gmacs"] == "" for r in others)


def test_parameters_equal_the_registry_and_the_built_model(counted_rows):
    for row in counted_rows:
        built = build_peer(row["name"], 2, 3, 2, image_size=SIZE)
        assert row["params"] == count_parameters(built) == describe_peer(row["name"])["parameters"][0]


def test_batch_columns_are_the_batch_times_one_sample(counted_rows):
    for row in counted_rows:
        assert row["batch"] == 2  # the CPU default
        assert row["gflops_batch"] == pytest.approx(2 * row["gflops"])
        assert row["gmacs_batch"] == pytest.approx(2 * row["gmacs"])


def test_counts_only_rows_have_no_timings_and_name_the_scan_backend(counted_rows):
    for row in counted_rows:
        assert row["forward_ms"] == row["train_ms"] == row["forward_peak_mib"] == row["train_peak_mib"] == ""
        assert row["scan_backend"] == ("parallel" if row["name"] == "lightmunet" else "")
        assert row["uncounted_ops"] == "" and row["torch"] == torch.__version__
        assert row["device"].startswith("CPU")


def test_a_measured_tiny_run_fills_latency_and_memory():
    rows = compare(2, models=["lightmunet", "unet"], device="cpu", size=32, repeats=1, batch=2, progress=False)
    for row in rows:
        assert row["forward_ms"] > 0 and row["train_ms"] > 0
        assert row["forward_peak_mib"] > 0 and row["train_peak_mib"] > row["forward_peak_mib"]


def test_forward_only_runs_no_training_step_and_says_so(monkeypatch, tmp_path):
    calls = []
    real = compare_module.measure_speed

    def recording(model, x, train=False, **kwargs):
        calls.append(train)
        return real(model, x, train=train, **kwargs)

    monkeypatch.setattr(compare_module, "measure_speed", recording)
    rows = compare(2, models=["unet"], device="cpu", size=32, repeats=1, progress=False, train_step=False)
    assert calls == [False]  # the forward pass only
    assert rows[0]["forward_ms"] > 0 and rows[0]["train_ms"] == rows[0]["train_peak_mib"] == ""
    _, md_path = write_tables(rows, tmp_path / "forward")
    text = md_path.read_text()
    assert "forward pass only" in text and "the training step was not run on this device" in text
    assert markdown_table(text)[1][7] == "–"  # the training-step column


def test_out_of_memory_is_recorded_not_raised(monkeypatch, tmp_path):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    monkeypatch.setattr(compare_module, "measure_speed", out_of_memory)
    rows = compare(2, models=["unet"], device="cpu", size=32, progress=False)
    assert rows[0]["forward_ms"] == rows[0]["train_ms"] == rows[0]["train_peak_mib"] == OOM
    assert rows[0]["gmacs"] > 0  # the counts are still there
    _, md_path = write_tables(rows, tmp_path / "oom")
    assert markdown_table(md_path.read_text())[1][5] == OOM


def test_other_errors_are_not_hidden_as_oom(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(compare_module, "measure_speed", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        compare(2, models=["unet"], device="cpu", size=32, progress=False)


def test_csv_and_markdown_are_written_and_parse(counted_rows, tmp_path):
    counted_rows = [{**r, "date": "2024-03-08"} for r in counted_rows]
    csv_path, md_path = write_tables(counted_rows, tmp_path / "comparison_2d")
    assert (csv_path.name, md_path.name) == ("comparison_2d.csv", "comparison_2d.md")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison_2d.csv", "comparison_2d.md"]  # no temporaries
    with open(csv_path, newline="") as f:
        read = list(csv.DictReader(f))
    assert [r["name"] for r in read] == MODELS and list(read[0]) == list(COLUMNS)
    for row, original in zip(read, counted_rows):
        assert int(row["params"]) == original["params"]
        assert round(float(row["gmacs"]) * 1e9) == round(original["gmacs"] * 1e9)  # exact to one MAC

    text = md_path.read_text()
    assert "2024-03-08" in text and "CPU" in text and "not measured" in text and "lightm_edu/flops.py" in text
    assert "--out results/comparison_2d --merge" in text  # how to add the timings
    table = markdown_table(text)
    assert table[0][:4] == ["Model", "Params (M)", "GMACs", "GFLOPs"]
    assert [r[0] for r in table[1:]] == [describe_peer(m)["title"] for m in MODELS]
    assert all(len(r) == len(table[0]) for r in table)
    assert float(table[1][1]) == pytest.approx(counted_rows[0]["params"] / 1e6, abs=0.005)
    assert float(table[1][2]) == pytest.approx(counted_rows[0]["gmacs"], abs=0.005)


def test_csv_reads_back_to_the_same_rows(counted_rows, tmp_path):
    csv_path, _ = write_tables(counted_rows, tmp_path / "t")
    read = read_table(csv_path)
    for row, original in zip(read, counted_rows):
        assert row["params"] == original["params"] and row["name"] == original["name"]
        assert row["gmacs"] == pytest.approx(original["gmacs"], rel=1e-12)
        assert row["forward_ms"] == "" and row["torch"] == original["torch"]


def test_merge_keeps_other_devices_and_one_table_per_device(counted_rows, tmp_path):
    gpu = [{**r, "device": "NVIDIA H100 80GB HBM3", "batch": 12, "forward_ms": 12.5, "forward_peak_mib": 300.0,
            "train_ms": OOM, "train_peak_mib": OOM} for r in counted_rows]
    cpu = [{**r, "forward_ms": 800.0, "forward_peak_mib": 40.0, "train_ms": 5000.0, "train_peak_mib": 750.0}
           for r in counted_rows]
    merged = merge_rows(gpu + counted_rows, cpu)  # the counts-only rows are replaced by the CPU run
    assert [r["device"] for r in merged] == ["NVIDIA H100 80GB HBM3"] * 3 + [counted_rows[0]["device"]] * 3
    # A new GPU row replaces the one of that model (in its place); one with another scan path is added.
    again = {**gpu[0], "forward_ms": 11.0}
    assert merge_rows(merged, [again]) == [again] + merged[1:]
    fused = {**gpu[0], "scan_backend": FUSED}
    assert merge_rows(merged, [fused]) == merged[:1] + [fused] + merged[1:]
    _, md_path = write_tables(merged, tmp_path / "both")
    text = md_path.read_text()
    assert "## NVIDIA H100 80GB HBM3" in text and f"## {counted_rows[0]['device']}" in text
    assert "Train step ms (batch 12)" in text and "Train step ms (batch 2)" in text
    assert "Counts only" not in text


def test_write_tables_refuses_no_rows(tmp_path):
    with pytest.raises(ValueError, match="No rows"):
        write_tables([], tmp_path / "empty")


@pytest.mark.parametrize("kwargs, message", [
    (dict(spatial_dims=1), "spatial_dims must be 2 or 3"),
    (dict(spatial_dims=2, models=["unet", "nnunet"]), "Unknown model 'nnunet'"),
    (dict(spatial_dims=2, size=(64, 64, 64)), "has 3 axes"),
    (dict(spatial_dims=2, batch=0), "batch must be at least 1"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare(measure=False, progress=False, device="cpu", **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_an_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        compare(2, models=["unet"], device="cuda", measure=False, size=32, progress=False)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and "--no-measure" in out and "--dims" in out


@pytest.mark.parametrize("argv, message", [
    (["compare", "--dims", "4"], "argument --dims: invalid choice: 4 (choose from 2, 3)"),
    (["compare"], "the following arguments are required: --dims"),
    (["compare", "--dims", "3", "--size", "64", "64", "--no-measure"], "--size takes 1 or 3 numbers"),
    (["compare", "--dims", "2", "--models", "unet", "vnet", "--no-measure"], "Unknown model 'vnet'"),
])
def test_cli_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_cli_writes_and_merges_the_tables(tmp_path, capsys):
    stem = tmp_path / "results" / "comparison_2d"
    assert cli.main(["compare", "--dims", "2", "--device", "cpu", "--no-measure", "--models", "unet",
                     "--size", "32", "--no-progress", "--out", str(stem)]) == 0
    out = capsys.readouterr().out
    assert "| UNet (MONAI, residual units) |" in out
    assert (tmp_path / "results" / "comparison_2d.csv").is_file()
    assert (tmp_path / "results" / "comparison_2d.md").is_file()
    assert cli.main(["compare", "--dims", "2", "--device", "cpu", "--models", "unet", "--size", "32", "--repeats",
                     "1", "--no-progress", "--out", str(stem), "--merge"]) == 0
    rows = read_table(stem.with_suffix(".csv"))
    assert len(rows) == 1 and rows[0]["forward_ms"] > 0  # the measured run replaced the counts-only row


def test_the_scan_label_says_when_mamba_ssm_takes_the_fused_path(monkeypatch):
    import lightm_edu.mamba as mamba
    from lightm_edu.compare import scan_label

    monkeypatch.setattr(mamba, "_fused_path_available", lambda: True)
    assert scan_label("mamba_ssm") == FUSED == "mamba_ssm + causal_conv1d (fused)"
    assert scan_label("parallel") == "parallel"
    monkeypatch.setattr(mamba, "_fused_path_available", lambda: False)
    assert scan_label("mamba_ssm") == "mamba_ssm"
