"""Sliding-window prediction and per-case, per-class metrics (Dice, IoU, 95% Hausdorff distance).

The training chapters (8 and 9) use it. Everything a checkpoint needs to predict
is inside it: the model configuration, the task (classes and preprocessing) and the patch size.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ._atomic import atomic_output
from .train import _plain, load_checkpoint, model_from_config, pick_device

__all__ = ["model_from_checkpoint", "predict_logits", "case_metrics", "evaluate", "predict_folder"]


def model_from_checkpoint(path, device="cpu", scan_backend: str | None = None):
    """(model in eval mode, checkpoint dict) from a checkpoint written by :func:`lightm_edu.train.train`."""
    state = load_checkpoint(path)
    for key in ("model", "model_config", "task"):
        if key not in state:
            raise ValueError(f"{path} has no {key!r} entry: it was not written by lightm_edu.train.")
    model = model_from_config(state.get("model_name", "lightmunet"), state["model_config"], scan_backend)
    model.load_state_dict({k: v.float() for k, v in state["model"].items()})
    return model.to(device).eval(), state


def predict_logits(model, image: torch.Tensor, patch_size, overlap: float = 0.5, sw_batch_size: int = 4):
    """Logits for one batch of images (b, c, *s) by Gaussian-weighted sliding windows of ``patch_size``."""
    from monai.inferers import sliding_window_inference

    with torch.no_grad():
        return sliding_window_inference(image, roi_size=tuple(patch_size), sw_batch_size=sw_batch_size,
                                        predictor=model, overlap=overlap, mode="gaussian")


def evaluate(checkpoint, data_dir=None, split: str = "test", cases=None, out_csv=None, device="auto",
             progress: bool = True, figures_dir=None) -> dict:
    """Evaluate a checkpoint on the ``split`` ("train", "val" or "test") cases of its own split (or
    on ``cases``, or on every case of the folder ``data_dir``).

    ``out_csv``: write the per-case rows there; ``figures_dir``: an overlay figure per case there.

    Returns:
        {"rows": per-case rows, "per_class": {class: {"dice", "iou", "hd95"}}, "mean_dice", "mean_iou"}
    """
    from . import data

    device = pick_device(device)
    model, state = model_from_checkpoint(checkpoint, device)
    task = data.TASKS[state["task"]]
    if cases is None and data_dir is not None:
        cases = data.find_cases(Path(data_dir))  # a folder given here is evaluated whole
    elif cases is None:
        # The checkpoint's own data set (LIGHTM_EDU_DATA unless it was trained on another folder) and split.
        folder = Path(state["config"].get("data_dir") or data.data_root() / task.folder)
        wanted = checkpoint_split(state, checkpoint)[split]
        by_id = {c["case_id"]: c for c in data.find_cases(folder)}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise data.DataError(f"{len(missing)} of the {len(wanted)} {split!r} cases of {checkpoint}'s split are "
                                 f"not in {folder} (e.g. {', '.join(missing[:3])}). Point LIGHTM_EDU_DATA at the "
                                 "data set it was trained on, or give --data DIR to evaluate a whole folder.")
        cases = [by_id[i] for i in wanted]
    rows = case_metrics(model, cases, task, state["patch_size"], device, progress=progress, figures_dir=figures_dir)
    per_class = {c: {m: _nanmean([r[f"{m}_{c}"] for r in rows]) for m in METRICS} for c in task.class_names[1:]}
    summary = {"rows": rows, "per_class": per_class,
               "mean_dice": _nanmean([v["dice"] for v in per_class.values()]),
               "mean_iou": _nanmean([v["iou"] for v in per_class.values()])}
    if out_csv:
        _write_csv(out_csv, rows)
    return summary


METRICS = ("dice", "iou", "hd95")


def checkpoint_split(state: dict, checkpoint="the checkpoint") -> dict:
    """The train/val/test case ids a checkpoint was trained with: stored in it (checkpoints since
    per-epoch validation, and every exported one), else its split file."""
    from . import data

    split = state.get("split")
    if split is None:
        config = state.get("config", {})
        path = Path(config.get("split_file") or Path(config.get("out_dir", ".")) / "split.json")
        if not path.is_file():
            raise ValueError(f"{checkpoint} records no train/val/test split and its split file {path} is not "
                             "here. Give --data DIR to evaluate every case of a folder.")
        split = data.load_split(path)
    return {part: list(split[part]) for part in ("train", "val", "test")}


def case_metrics(model, cases: list[dict], task, patch_size, device, metrics=METRICS, progress: bool = True,
                 figures_dir=None) -> list[dict]:
    """One row per case: ``{"case_id", "<metric>_<class>": value}`` for every foreground class.

    Each case goes through the task's evaluation transforms and sliding-window inference
    (:func:`predict_logits`), then MONAI's metrics on one-hot masks: Dice, IoU (``MeanIoU``) and
    the 95th percentile Hausdorff distance (``hd95``, in voxels of the transformed image).
    With ``figures_dir``, an overlay figure per case (ground truth above prediction, with the Dice
    of each class; :func:`lightm_edu.viz.overlay_montage`) is written there as ``<case_id>.png``.
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU
    from monai.networks.utils import one_hot
    from tqdm import tqdm

    from . import data

    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {list(METRICS)}.")
    makers = {"dice": lambda: DiceMetric(include_background=False, reduction="none"),
              "iou": lambda: MeanIoU(include_background=False, reduction="none"),
              "hd95": lambda: HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")}
    chosen = {name: makers[name]() for name in metrics}
    dataset = data.make_dataset(cases, data.eval_transforms(task))
    n_classes = len(task.class_names)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for index in tqdm(range(len(dataset)), desc="evaluate", disable=not progress):
            item = dataset[index]
            image = _plain(item["image"]).unsqueeze(0).to(device)  # (1, c, *s)
            label = _plain(item["label"]).unsqueeze(0).to(device)  # (1, 1, *s)
            logits = predict_logits(model, image, patch_size)  # (1, n_classes, *s)
            predicted = one_hot(logits.argmax(1, keepdim=True), n_classes)
            truth = one_hot(label.long(), n_classes)
            row = {"case_id": cases[index]["case_id"]}
            for name, metric in chosen.items():
                values = metric(predicted, truth)[0]  # (n_classes - 1,)
                for class_name, value in zip(task.class_names[1:], values.tolist()):
                    row[f"{name}_{class_name}"] = value
            rows.append(row)
            if figures_dir is not None:
                _save_overlay(Path(figures_dir) / f"{row['case_id']}.png", image[0, 0], label[0, 0],
                              logits.argmax(1)[0], task, row)
    finally:
        model.train(was_training)
    return rows


def _save_overlay(path: Path, image, label, prediction, task, row: dict) -> None:
    """(*s) tensors -> one PNG: ground truth (top) and prediction (bottom), written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # files only; keeps an interactive backend if one is active
    import matplotlib.pyplot as plt

    from .viz import overlay_montage

    dice = ", ".join(f"{c} {row[f'dice_{c}']:.3f}" for c in task.class_names[1:] if f"dice_{c}" in row)
    fig = overlay_montage(image.cpu(), label.cpu().long(), prediction.cpu(), class_names=list(task.class_names),
                          title=f"{row['case_id']}" + (f" (Dice {dice})" if dice else ""))
    try:
        with atomic_output(path, suffix=".png") as temporary:
            fig.savefig(temporary, format="png", dpi=100)
    finally:
        plt.close(fig)


def _nanmean(values):
    kept = [v for v in values if v == v and v != float("inf")]
    return sum(kept) / len(kept) if kept else float("nan")


def _write_csv(path, rows) -> None:
    with atomic_output(path) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _input_files(folder: Path, layout: str) -> list[Path]:
    """Images to predict: the image sub-folder of either layout if present, else the folder itself."""
    for sub in ("images", "imagesTr", "imagesTs"):
        if (folder / sub).is_dir():
            folder = folder / sub
            break
    suffixes = (".png",) if layout == "png" else (".nii.gz", ".nii")
    files = sorted(p for p in folder.iterdir() if p.name.endswith(suffixes) and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"No {' or '.join(suffixes)} images in {folder}: give a folder of images "
                                "(or one with an images/ or imagesTr/ sub-folder).")
    return files


def predict_folder(checkpoint, input_dir, output_dir, device="auto", progress: bool = True) -> list[Path]:
    """Segment every image of ``input_dir`` and write one mask per image to ``output_dir``, in the
    input's format: PNG masks with the task's raw label values (0/255 for the lungs) at the image's
    size, or NIfTI label volumes with the image's affine. Returns the written paths."""
    import nibabel as nib
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from . import data

    device = pick_device(device)
    model, state = model_from_checkpoint(checkpoint, device)
    task = data.TASKS[state["task"]]
    files = _input_files(Path(input_dir), task.layout)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    transforms = data.eval_transforms(task, with_label=False)
    raw_values = np.asarray(task.label_values)
    written = []
    for path in tqdm(files, desc="predict", disable=not progress):
        try:
            image = transforms({"image": str(path)})["image"]
        except Exception as error:
            raise ValueError(f"{path} could not be read as a {task.layout} image ({error}).") from None
        logits = predict_logits(model, _plain(image).unsqueeze(0).to(device), state["patch_size"])
        classes = logits.argmax(1)[0].cpu().numpy()  # (*padded size)
        target = output_dir / path.name
        if task.layout == "png":
            with Image.open(path) as original:
                width, height = original.size
            h, w = task.image_size if task.image_size else (height, width)
            mask = Image.fromarray(raw_values[classes[:h, :w]].astype(np.uint8))
            with atomic_output(target) as temporary:
                mask.resize((width, height), Image.NEAREST).save(temporary, format="PNG")
        else:
            original = nib.load(str(path))
            size = original.shape[:3]
            labels = raw_values[classes[:size[0], :size[1], :size[2]]].astype(np.uint8)
            with atomic_output(target, suffix=".nii.gz") as temporary:  # nibabel reads the format from the name
                nib.save(nib.Nifti1Image(labels, original.affine), str(temporary))
        written.append(target)
    return written
