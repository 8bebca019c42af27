"""Accuracy beside cost: the held-out Dice of networks trained with one recipe, next to what they cost.

Chapter 10 uses it. A row is one training run, described by its configuration file
(``configs/<run>.json``: task, model, recipe, split, budget) and read from what the run left in
``results/``:

    <run>_log.csv            one row per epoch (train loss, lr, seconds, validation Dice)
    <run>_test_metrics.csv   one row per held-out case (Dice, IoU, HD95 per foreground class)

Parameters, MACs and FLOPs are counted here, on the CPU, for the network the configuration builds
at the size it is applied to (one training patch; for the chest X-rays the whole 256 x 256 image),
with :func:`lightm_edu.flops.count_flops`. The table:

    lightm-edu accuracy configs/cxr_lung_2d.json configs/cxr_lung_2d_dynunet.json \\
        configs/cxr_lung_2d_segresnet.json configs/cxr_lung_2d_umamba_bot.json \\
        --trained-on "NVIDIA H100 80GB HBM3" --out results/accuracy_cxr_lung_2d

and :func:`lightm_edu.viz.plot_accuracy_vs_cost` draws it the way the LightM-UNet paper's figure 1
does (Dice against GFLOPs, bubble area proportional to the parameters), from measured values.

Glossary:

    run           one training run: a configuration file and its results (same stem)
    held-out      the test cases of the run's split: never trained on, never used to pick a checkpoint
    best epoch    the epoch with the best validation Dice (the checkpoint that was tested)
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import torch

from ._atomic import atomic_output

__all__ = ["ACCURACY_COLUMNS", "run_summary", "accuracy_rows", "write_accuracy_tables", "read_accuracy_table",
           "format_accuracy_markdown", "plot_accuracy_vs_cost", "AXES"]

ACCURACY_COLUMNS = ("model", "name", "run", "task", "input", "params", "gmacs", "gflops", "test_cases", "dice",
                    "dice_sd", "iou", "hd95", "epochs", "iterations", "batch", "lr", "seconds_per_epoch",
                    "best_epoch", "best_val_dice", "trained_on")
"""The columns of a row (and of the CSV file), in order."""


def _read_csv(path: Path, what: str) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"No {what} at {path}: train and evaluate the run first (see checkpoints/README.md), "
                                "or give the folder that holds its results.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no rows.")
    return rows


def _number(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def run_summary(config_path, results_dir="results") -> dict:
    """Held-out metrics and training facts of one run, from its configuration and result files.

    Returns:
        dict with run (the configuration's stem), task, name (the model), test_cases, dice (mean over
        cases of the mean over foreground classes, as ``lightm-edu evaluate`` prints it), dice_sd
        (standard deviation over cases), iou, hd95, epochs (epochs run), iterations, batch, lr,
        seconds_per_epoch (median over the logged epochs), best_epoch, best_val_dice.
    Raises:
        FileNotFoundError naming a missing result file; ValueError for files without the columns.
    """
    from .train import load_config

    return _summary(load_config(config_path), Path(config_path).stem, Path(results_dir))


def _summary(config, run: str, results_dir: Path) -> dict:
    """:func:`run_summary` of a loaded TrainConfig whose result files start with ``run``."""
    from .data import TASKS

    task = TASKS[config.task]
    classes = task.class_names[1:]
    cases = _read_csv(results_dir / f"{run}_test_metrics.csv", "test metrics")
    missing = [f"dice_{c}" for c in classes if f"dice_{c}" not in cases[0]]
    if missing:
        raise ValueError(f"{results_dir / f'{run}_test_metrics.csv'} has no column {', '.join(missing)}: it is not "
                         f"the output of `lightm-edu evaluate` for the task {task.name}.")

    def per_case(metric):  # mean over foreground classes, one value per case
        return [statistics.fmean(_number(row[f"{metric}_{c}"]) for c in classes) for row in cases]

    dice = per_case("dice")
    log = _read_csv(results_dir / f"{run}_log.csv", "training log")
    validated = [row for row in log if row.get("val_dice", "") != ""]
    best = max(validated, key=lambda row: float(row["val_dice"])) if validated else None
    return dict(run=run, task=task.name, name=config.model, test_cases=len(cases), dice=statistics.fmean(dice),
                dice_sd=statistics.stdev(dice) if len(dice) > 1 else math.nan,
                iou=statistics.fmean(per_case("iou")), hd95=statistics.fmean(per_case("hd95")),
                epochs=len(log), iterations=config.iterations_per_epoch, batch=config.batch_size, lr=config.lr,
                seconds_per_epoch=statistics.median(float(row["seconds"]) for row in log),
                best_epoch=int(best["epoch"]) if best else "", best_val_dice=float(best["val_dice"]) if best else "")


def accuracy_rows(config_paths, results_dir="results", trained_on: str = "", progress: bool = True) -> list[dict]:
    """One row per run (see :data:`ACCURACY_COLUMNS`): :func:`run_summary` plus the parameters,
    GMACs and GFLOPs of the run's network at its input size, counted on the CPU.

    Args:
        config_paths: training configuration files; each run's results are ``results_dir/<stem>_*.csv``.
        trained_on: the device the runs were trained on (it sets what seconds_per_epoch means).
    """
    from tqdm.auto import tqdm

    from .baselines import PEERS
    from .data import TASKS
    from .flops import count_flops
    from .train import build_model, load_config

    rows = []
    for path in tqdm(list(config_paths), desc="runs", unit="run", disable=not progress):
        config = load_config(path)
        summary = _summary(config, Path(path).stem, Path(results_dir))
        task = TASKS[config.task]
        patch = tuple(config.patch_size) if config.patch_size else tuple(task.patch_size)
        torch.manual_seed(0)
        # The "parallel" backend: counts do not depend on the backend, and it runs everywhere.
        model = build_model(task, config.init_filters, "parallel", config.model, config.model_options, patch).eval()
        counted = count_flops(model, torch.zeros(1, task.in_channels, *patch))  # (1, c, *patch)
        row = dict.fromkeys(ACCURACY_COLUMNS, "")
        row.update(summary, model=PEERS[config.model].title, input="x".join(map(str, (task.in_channels, *patch))),
                   params=counted.params, gmacs=counted.macs / 1e9, gflops=counted.flops / 1e9,
                   trained_on=trained_on)
        rows.append(row)
    return rows


def _cell(value, digits: int) -> str:
    if value == "" or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def format_accuracy_markdown(rows: list[dict]) -> str:
    """The Markdown page of :func:`write_accuracy_tables`: a title, the table, and how it was made."""
    if not rows:
        raise ValueError("No rows to format: give at least one run.")
    first = rows[0]
    batches = sorted({(r["epochs"], r["iterations"], r["batch"], r["lr"]) for r in rows})
    lines = [f"# Held-out accuracy and cost: {first['task']}, input {first['input']}", "",
             "Every network trained with the same recipe, split, augmentation, seed and budget (see the "
             "configuration files), tested on the held-out cases of the split with the checkpoint of its best "
             "validation epoch. Parameters, MACs and FLOPs of one forward pass of one input of the size "
             "shown (`lightm_edu.flops.count_flops`).", "",
             "| Model | Params (M) | GMACs | GFLOPs | Held-out Dice | SD | IoU | HD95 (px) | Test cases "
             "| Epochs x iterations (batch) | Seconds per epoch | Best validation Dice (epoch) | Run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f} | {_cell(r['gmacs'], 2)} | {_cell(r['gflops'], 2)} "
                     f"| **{r['dice']:.4f}** | {_cell(r['dice_sd'], 4)} | {r['iou']:.4f} | {_cell(r['hd95'], 2)} "
                     f"| {r['test_cases']} | {r['epochs']} x {r['iterations']} ({r['batch']}) "
                     f"| {_cell(r['seconds_per_epoch'], 1)} | {_cell(r['best_val_dice'], 4)} ({r['best_epoch']}) "
                     f"| `configs/{r['run']}.json` |")
    devices = sorted({r["trained_on"] for r in rows if r["trained_on"]})
    lines += ["", "Notes:", "",
              f"- Trained on {', '.join(devices) if devices else 'a device not recorded'}; seconds per epoch are "
              "the median of the logged training epochs (validation not included), so they compare the networks "
              "on that device only.",
              "- Learning rate, epochs and batch: " + "; ".join(f"lr {lr:g}, {e} x {i} iterations of batch {b}"
                                                                for e, i, b, lr in batches)
              + ". One recipe for all, not tuned per network; one run each (seed 0).",
              "- Dice, IoU and HD95: means over the test cases of the mean over foreground classes; SD: standard "
              "deviation of the per-case Dice.", ""]
    return "\n".join(lines)


def write_accuracy_tables(rows: list[dict], stem) -> tuple[Path, Path]:
    """Write ``stem.csv`` (every column, full precision) and ``stem.md`` atomically."""
    if not rows:
        raise ValueError("No rows to write: give at least one run.")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = stem.with_name(stem.name + ".csv"), stem.with_name(stem.name + ".md")
    with atomic_output(csv_path) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ACCURACY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    with atomic_output(md_path) as temporary:
        Path(temporary).write_text(format_accuracy_markdown(rows))
    return csv_path, md_path


def read_accuracy_table(csv_path) -> list[dict]:
    """The rows of a ``stem.csv`` written by :func:`write_accuracy_tables`, numbers as numbers."""
    integers = {"params", "test_cases", "epochs", "iterations", "batch", "best_epoch"}
    rows = []
    for row in _read_csv(Path(csv_path), "accuracy table"):
        for key, text in row.items():
            if key in integers and text != "":
                row[key] = int(text)
            elif key not in ("model", "name", "run", "task", "input", "trained_on") and text != "":
                row[key] = float(text)
        rows.append(row)
    return rows


AXES = {"gflops": "GFLOPs of one forward pass", "gmacs": "GMACs of one forward pass",
        "params": "parameters (millions)", "seconds_per_epoch": "training seconds per epoch"}
"""What :func:`plot_accuracy_vs_cost` can put on the x axis (a column of the rows)."""


def plot_accuracy_vs_cost(rows: list[dict], x: str = "gflops", ax=None, bubble_scale: float = 40.0):
    """Held-out Dice against a cost, one bubble per run whose area is proportional to the parameters
    (the layout of the LightM-UNet paper's figure 1, drawn from measured values).

    Args:
        rows: from :func:`accuracy_rows` or :func:`read_accuracy_table`.
        x: the cost on the x axis, a key of :data:`AXES`.
        ax: matplotlib Axes to draw into; a new figure is made when None.
        bubble_scale: marker area in points^2 per million parameters.
    Returns:
        the Axes (``ax.figure`` is the figure).
    """
    import matplotlib.pyplot as plt

    from .baselines import MAMBA_MODELS

    if x not in AXES:
        raise ValueError(f"x must be one of {', '.join(AXES)}, got {x!r}.")
    if not rows:
        raise ValueError("No rows to plot: give at least one run.")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.6))
    values = [r[x] / 1e6 if x == "params" else r[x] for r in rows]
    near = 0.1 * (max(values) - min(values) or 1.0)
    for row, value in zip(rows, values):
        mamba = row["name"] in MAMBA_MODELS
        colour = "#0072B2" if mamba else "#E69F00"  # Mamba models blue, convolutional ones orange
        area = bubble_scale * row["params"] / 1e6
        ax.scatter(value, row["dice"], s=area, color=colour, alpha=0.45,
                   edgecolors="black" if row["name"] == "lightmunet" else colour, linewidths=1.5, zorder=3)
        # The label goes above the bubble, or below it when a close neighbour sits higher.
        below = any(abs(v - value) < near and r["dice"] > row["dice"] for r, v in zip(rows, values))
        offset = (0.5 * area ** 0.5 + 4) * (-1 if below else 1)
        ax.annotate(f"{row['model']}\n{row['params'] / 1e6:.1f}M params", (value, row["dice"]),
                    textcoords="offset points", xytext=(0, offset), ha="center", va="top" if below else "bottom",
                    fontsize=8, zorder=4)
    low, high = min(r["dice"] for r in rows), max(r["dice"] for r in rows)
    span = max(high - low, 0.005)
    ax.set_ylim(low - 0.6 * span, high + 0.6 * span)  # room for the labels above and below the bubbles
    left, right = min(values), max(values)
    pad = 0.25 * max(right - left, 0.1 * right, 1e-9)
    ax.set_xlim(left - pad, right + pad)
    first = rows[0]
    ax.set_xlabel(f"{AXES[x]}" + (f" (input {first['input']})" if x in ("gflops", "gmacs") else ""))
    ax.set_ylabel(f"held-out Dice ({first['test_cases']} cases)")
    ax.set_title(f"Accuracy and cost, {first['task']}: bubble area = parameters", fontsize=10)
    ax.grid(alpha=0.3)
    for label, colour in (("Mamba models", "#0072B2"), ("convolutional", "#E69F00")):
        ax.scatter([], [], s=60, color=colour, alpha=0.45, label=label)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return ax
