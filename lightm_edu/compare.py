"""LightM-UNet and its peers in one table: parameters, MACs, FLOPs, latency and peak memory.

Written for chapter 10 and for ``lightm-edu compare``. Every model of
:data:`lightm_edu.baselines.PEERS` is built at the paper's settings (:data:`PAPER_SETTINGS`:
2D 3 x 512 x 512 with 2 classes, 3D 1 x 128^3 with 3 classes) and measured alike:

    params          parameters, sum(p.numel()) of the model build_peer returns
    GMACs, GFLOPs   one forward pass of one sample, counted by lightm_edu.flops.count_flops (fvcore
                    with the package's handles; the conventions are in the docstring of
                    lightm_edu.flops: FLOPs = 2 x MACs + elementwise FLOPs)
    ... @ batch     the same for the training batch b (b x the per-sample count)
    forward         median latency and peak memory of one forward pass at batch 1, no gradients
    train step      median latency and peak memory of one training step (forward, cross-entropy,
                    backward, Adam) at the training batch b
    LightM-UNet     also the analytic count (lightmunet_cost) and what thop reports (thop_count),
                    the tool behind the paper's figures

Training batch b (:func:`default_batch`): on a GPU 12 in 2D and 2 in 3D, the batches at which the
official LightM-UNet code and the MONAI peers were timed on one GPU; on a CPU 2 in both (12 images
of 512 x 512 need about 40 GiB for LightM-UNet's training step). A step that runs out of memory is
recorded as "OOM" and the table goes on.

    >>> rows = compare(2, models=["lightmunet", "unet"], measure=False)
    >>> write_tables(rows, "results/comparison_2d")  # comparison_2d.csv and comparison_2d.md

A file can hold several runs, e.g. one on a GPU and one on a CPU: :func:`merge_rows` adds a new
run to the rows :func:`read_table` reads back (``lightm-edu compare ... --out STEM --merge``), and
the Markdown page has one table per device.
"""

from __future__ import annotations

import csv
import datetime
import gc
import math
import platform
from pathlib import Path

import torch

from ._atomic import atomic_output
from .baselines import MAMBA_MODELS, PAPER_SETTINGS, PEERS, build_peer, count_parameters
from .flops import count_flops, lightmunet_cost, measure_speed, thop_count

__all__ = ["compare", "write_tables", "format_markdown", "read_table", "merge_rows", "default_batch", "device_name",
           "scan_label", "COLUMNS", "FUSED", "MAMBA_MODELS"]

COLUMNS = ("model", "name", "input", "params", "gmacs", "gflops", "batch", "gmacs_batch", "gflops_batch",
           "analytic_gmacs", "thop_gmacs", "thop_params", "forward_ms", "forward_peak_mib", "train_ms",
           "train_peak_mib", "device", "scan_backend", "torch", "date", "uncounted_ops")
"""The columns of a row (and of the CSV file), in order. Counts and measurements are numbers; a
value that was not measured or does not apply is "" and one that ran out of memory is "OOM"."""

OOM = "OOM"


FUSED = "mamba_ssm + causal_conv1d (fused)"
"""The scan-backend label of a Mamba model that runs mamba_ssm's fused kernel (``mamba_inner_fn``)."""


def scan_label(backend: str) -> str:
    """The table's name for how a Mamba block runs: the scan backend, or :data:`FUSED` when the
    mamba_ssm backend has causal_conv1d and so takes the fused path (convolution, projections, scan
    and gate in one kernel; less memory for the training step)."""
    from .mamba import _fused_path_available

    return FUSED if backend == "mamba_ssm" and _fused_path_available() else backend


def default_batch(spatial_dims: int, device_type: str) -> int:
    """The training batch of the table: 12 (2D) or 2 (3D) on a GPU, 2 on a CPU (module docstring)."""
    if device_type == "cuda":
        return {2: 12, 3: 2}[spatial_dims]
    return 2


def device_name(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' on a GPU; the processor's name and the threads torch uses on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads()
    return f"CPU ({name}), {threads} thread{'s' if threads > 1 else ''}"


def _is_out_of_memory(err: BaseException) -> bool:
    message = str(err).lower()
    return (isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in message
            or "can't allocate memory" in message)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _or_oom(device: torch.device, work):
    """``work()``, or "OOM" when it runs out of memory on ``device`` (any other error is raised)."""
    try:
        return work()
    except (RuntimeError, MemoryError) as err:
        if not _is_out_of_memory(err):
            raise
        _free(device)
        return OOM


def _resolve_device(device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but CUDA is not available here; use 'cpu'.")
    return device


def compare(spatial_dims: int, models=None, device="auto", measure: bool = True, repeats: int = 5,
            batch: int | None = None, size=None, scan_backend: str | None = None, warmup: int | None = None,
            progress: bool = True, train_step: bool = True) -> list[dict]:
    """Build, count and (optionally) time every model; one row per model (see :data:`COLUMNS`).

    Args:
        spatial_dims: 2 or 3; the inputs are :data:`PAPER_SETTINGS` ``[spatial_dims]``.
        models: names from :data:`~lightm_edu.baselines.PEERS` (default: all of them, LightM-UNet first).
        device: "auto" (a GPU if there is one), "cpu" or "cuda". Counting runs there too.
        measure: False: parameters and counts only (no latency or memory columns).
        repeats: timed runs per measurement (the median is reported).
        batch: the training batch b (default :func:`default_batch`).
        size: spatial size, an int or one per axis (default the paper's: 512^2 or 128^3).
        scan_backend: selective-scan backend of the Mamba models (default: the global choice).
        warmup: untimed runs before timing (default 2 on a GPU, 1 on a CPU).
        progress: show a tqdm bar over the models.
        train_step: False: time the forward pass only (for a device whose memory a training step at
            this size would exceed: a CPU process that runs out of memory is killed, not warned).
    Returns:
        list of dicts, one per model, keys :data:`COLUMNS`.
    Raises:
        ValueError for an unknown model, bad spatial_dims, a size a model cannot take, or cuda
        without CUDA.
    """
    from tqdm.auto import tqdm

    from .scan import get_scan_backend, resolve_backend

    if spatial_dims not in PAPER_SETTINGS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    models = list(PEERS) if models is None else list(models)
    unknown = [m for m in models if m not in PEERS]
    if unknown:
        raise ValueError(f"Unknown model {', '.join(map(repr, unknown))}; choose from {', '.join(PEERS)}.")
    device = _resolve_device(device)
    settings = PAPER_SETTINGS[spatial_dims]
    in_channels, out_channels = settings["in_channels"], settings["out_channels"]
    size = settings["image_size"] if size is None else size
    size = (int(size),) * spatial_dims if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != spatial_dims:
        raise ValueError(f"size {size} has {len(size)} axes; a {spatial_dims}D input needs {spatial_dims}.")
    batch = default_batch(spatial_dims, device.type) if batch is None else int(batch)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}.")
    warmup = (2 if device.type == "cuda" else 1) if warmup is None else warmup
    where = device_name(device)

    rows = []
    bar = tqdm(models, desc=f"compare {spatial_dims}D", unit="model", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        overrides = {"scan_backend": scan_backend} if scan_backend and name in MAMBA_MODELS else {}
        torch.manual_seed(0)
        model = build_peer(name, spatial_dims, in_channels, out_channels, image_size=size, **overrides).to(device)
        row = dict.fromkeys(COLUMNS, "")
        row.update(model=PEERS[name].title, name=name, input="x".join(map(str, (in_channels, *size))),
                   params=count_parameters(model), batch=batch, device=where, torch=torch.__version__,
                   date=datetime.date.today().isoformat())
        if name in MAMBA_MODELS:
            row["scan_backend"] = scan_label(resolve_backend(scan_backend or get_scan_backend(), device.type))
        one = torch.randn(1, in_channels, *size, device=device)  # (1, c, *S)

        counted = _or_oom(device, lambda: count_flops(model, one))
        if isinstance(counted, str):  # OOM
            row.update(gmacs=OOM, gflops=OOM, gmacs_batch=OOM, gflops_batch=OOM)
        else:
            row.update(gmacs=counted.macs / 1e9, gflops=counted.flops / 1e9, gmacs_batch=batch * counted.macs / 1e9,
                       gflops_batch=batch * counted.flops / 1e9,
                       uncounted_ops=" ".join(sorted(counted.unsupported)))
        if name == "lightmunet":
            config = dict(PEERS[name].configs[spatial_dims])
            row["analytic_gmacs"] = lightmunet_cost(spatial_dims, in_channels, out_channels, size, **config)[0].macs / 1e9
            thop = _or_oom(device, lambda: thop_count(model, one))
            row["thop_gmacs"] = thop if isinstance(thop, str) else thop["macs"] / 1e9
            row["thop_params"] = thop if isinstance(thop, str) else thop["params"]

        if measure:
            forward = _or_oom(device, lambda: measure_speed(model, one, train=False, repeats=repeats, warmup=warmup))
            row.update(_speed_columns("forward", forward))
            del one
            _free(device)
            if not train_step:
                rows.append(row)
                del model
                _free(device)
                continue
            many = _or_oom(device, lambda: torch.randn(batch, in_channels, *size, device=device))  # (b, c, *S)
            train = many if isinstance(many, str) else _or_oom(
                device, lambda: measure_speed(model, many, train=True, repeats=repeats, warmup=warmup))
            row.update(_speed_columns("train", train))
            del many
        rows.append(row)
        del model
        _free(device)
    return rows


def _speed_columns(prefix: str, result) -> dict:
    if isinstance(result, str):  # OOM
        return {f"{prefix}_ms": OOM, f"{prefix}_peak_mib": OOM}
    return {f"{prefix}_ms": result["seconds"] * 1e3, f"{prefix}_peak_mib": result["peak_bytes"] / 2 ** 20}


# ------------------------------------------------------------------------------------ tables

def _cell(value, digits: int = 2) -> str:
    if value == "" or value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def _memory(mib) -> str:
    if not isinstance(mib, (int, float)):
        return _cell(mib)
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"


def _latency(ms) -> str:
    if not isinstance(ms, (int, float)):
        return _cell(ms)
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def _is_measured(row: dict) -> bool:
    return row["forward_ms"] != "" or row["train_ms"] != ""


def _groups(rows: list[dict]) -> list[list[dict]]:
    """Rows of one run together: same device, batch and date, measured or not (first appearance order)."""
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["device"], row["batch"], row["date"], _is_measured(row)), []).append(row)
    return list(groups.values())


def format_markdown(rows: list[dict]) -> str:
    """The Markdown page of :func:`write_tables`: a title, then per run (device) a line of settings
    and a table, then notes (the FLOP convention, LightM-UNet's analytic and thop counts)."""
    first = rows[0]
    dims = len(first["input"].split("x")) - 1
    lines = [f"# LightM-UNet and its peers, {dims}D input {first['input']}", "",
             "Parameters; MACs and FLOPs of one forward pass of one sample (and of the training batch); "
             "latency (median of several runs) and peak memory of a forward pass at batch 1 without "
             "gradients and of a training step (forward, cross-entropy, backward, Adam) at the training "
             "batch. fp32 throughout."]
    for group in _groups(rows):
        head = group[0]
        batch = head["batch"]
        if _is_measured(head):
            title = head["device"]
            settings = (f"{head['device']}; torch {head['torch']}; {head['date']}; training batch {batch}.")
            if all(r["train_ms"] == "" for r in group):
                title = f"{head['device']}, forward pass only"
                settings = (f"{head['device']}; torch {head['torch']}; {head['date']}. Forward pass only: the "
                            "training step was not run on this device (`--forward-only`).")
        else:
            title = "Counts only (no timing)"
            settings = (f"Counted on {head['device']}; torch {head['torch']}; {head['date']}. Latency and "
                        "memory: not measured in this run.")
        lines += ["", f"## {title}", "", settings, ""]
        header = ["Model", "Params (M)", "GMACs", "GFLOPs", f"GFLOPs @ batch {batch}", "Forward ms (batch 1)",
                  "Forward peak memory", f"Train step ms (batch {batch})", "Train step peak memory", "Scan backend"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 2) + ["---"]) + "|")
        for r in group:
            params = r["params"] / 1e6 if isinstance(r["params"], (int, float)) else r["params"]
            cells = [r["model"], _cell(params), _cell(r["gmacs"]), _cell(r["gflops"]), _cell(r["gflops_batch"]),
                     _latency(r["forward_ms"]), _memory(r["forward_peak_mib"]), _latency(r["train_ms"]),
                     _memory(r["train_peak_mib"]), r["scan_backend"] or "–"]
            lines.append("| " + " | ".join(cells) + " |")

    notes = ["MAC: one multiply-accumulate; FLOPs = 2 x MACs + elementwise FLOPs (one per output element "
             "of every elementwise operation, 5 per element of a normalisation or softmax); counted by "
             "`lightm_edu.flops.count_flops` (fvcore with the package's operator handles), conventions in "
             "`lightm_edu/flops.py`. Many papers, and thop, report MACs under the name \"FLOPs\". "
             "The GFLOPs of a batch are the batch times those of one sample."]
    lightm = next((r for r in rows if r["name"] == "lightmunet" and r["analytic_gmacs"] != ""), None)
    if lightm is not None:
        agree = ("the same as the measured count" if isinstance(lightm["gmacs"], float)
                 and round(lightm["gmacs"] * 1e9) == round(lightm["analytic_gmacs"] * 1e9)
                 else f"measured: {_cell(lightm['gmacs'])}")
        thop = (f"thop reports {_cell(lightm['thop_gmacs'])} GMACs and {_cell(lightm['thop_params'] / 1e6)} M "
                "parameters (it misses the selective scan and the weights the fused Mamba path reads "
                "directly: `lightm_edu.flops.thop_blind_spots`)" if isinstance(lightm["thop_params"], int)
                else f"thop: {_cell(lightm['thop_gmacs'])}")
        notes.append(f"LightM-UNet: the analytic count (`lightm_edu.flops.lightmunet_cost`) gives "
                     f"{_cell(lightm['analytic_gmacs'])} GMACs, {agree}; {thop}.")
    uncounted = {r["model"]: r["uncounted_ops"] for r in rows if r["uncounted_ops"]}
    if uncounted:
        notes.append("Operators traced but not counted: " +
                     "; ".join(f"{model}: {ops}" for model, ops in uncounted.items()) + ".")
    notes.append("Models as built by `lightm_edu.baselines.build_peer` at the paper's settings "
                 "(configurations and sources: `describe_peer`): nnU-Net is MONAI's DynUNet with nnU-Net's "
                 "default plan; U-Mamba is re-implemented on this package's Mamba block.")
    if not all(_is_measured(r) for r in rows):
        notes.append(f"To add latency and memory: `lightm-edu compare --dims {dims} --device cuda "
                     f"--out results/comparison_{dims}d --merge` on a GPU (or `--device cpu`); each device "
                     "gets its own table.")
    if any(_is_measured(r) for r in rows):
        notes.append("Peak memory: on a GPU `torch.cuda.max_memory_allocated` during one step beyond what "
                     "was allocated before it; on a CPU the peak of live tensor memory from the profiler's "
                     "allocation records. OOM: the step ran out of memory on that device.")
    lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def write_tables(rows: list[dict], stem) -> tuple:
    """Write ``rows`` as ``<stem>.csv`` (all :data:`COLUMNS`, raw numbers) and ``<stem>.md``
    (:func:`format_markdown`), each atomically.

    Args:
        rows: from :func:`compare`, or from several runs (e.g. a GPU and a CPU; see :func:`merge_rows`).
        stem: path without the extension, e.g. "results/comparison_2d".
    Returns:
        (csv path, markdown path)
    """
    if not rows:
        raise ValueError("No rows to write.")
    stem = Path(stem)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    with atomic_output(csv_path) as temporary:
        with open(temporary, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(row[k]) for k in COLUMNS})
    with atomic_output(md_path) as temporary:
        Path(temporary).write_text(format_markdown(rows))
    return csv_path, md_path


def read_table(csv_path) -> list[dict]:
    """Rows back from a CSV file of :func:`write_tables`, numbers as int or float."""
    def value(text: str):
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(csv_path, newline="") as f:
        return [{k: value(row.get(k, "")) if k not in ("device", "torch", "date") else row.get(k, "")
                 for k in COLUMNS} for row in csv.DictReader(f)]


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """The rows of a new run added to those of earlier runs.

    An earlier measured row is replaced by a new row of the same device, model and scan backend;
    counts-only rows are always replaced; every other measured row is kept (so a run of some models,
    or of one more scan path, adds rows to a device's table). Rows are ordered by device (first
    appearance), then as in :data:`lightm_edu.baselines.PEERS`.
    """
    replaced = {_row_key(r) for r in new}
    rows = [r for r in old if _is_measured(r) and _row_key(r) not in replaced] + list(new)
    devices: dict = {}
    for row in rows:
        devices.setdefault(row["device"], len(devices))
    order = {name: i for i, name in enumerate(PEERS)}
    return sorted(rows, key=lambda r: (devices[r["device"]], order.get(r["name"], len(order))))


def _row_key(row: dict) -> tuple:
    return row["device"], row["name"], row["scan_backend"]


def _csv_value(value):
    # floats with enough digits to compare counts exactly at the paper's sizes (GMACs to 1 MAC)
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.9f}".rstrip("0").rstrip(".")
    return value
