"""Finding the image/mask pairs of a data set folder, and checking every file before training.

    case        one {"case_id", "image", "label"} dict: the id (file name without extension) and
                the paths of the image and of its mask ("label", MONAI's name for it), as str
    layout      "png": images/<id>.png + masks/<id>.png (2D)
                "decathlon": imagesTr/<id>.nii.gz + labelsTr/<id>.nii.gz (NIfTI, 2D or 3D)

Chapter 7 uses them: :func:`find_cases` lists a folder, :func:`check_cases` opens every file and
reports every problem at once (unreadable file, image and mask of different size, unexpected mask
values, wrong channel count), so that a broken file is found before training, not in the middle.
Files are read with Pillow (PNG) and nibabel (NIfTI); nothing is written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .tasks import DataError, SegmentationTask

__all__ = ["find_cases", "check_cases", "LAYOUTS"]

# layout -> (image folder, mask folder, file suffix)
LAYOUTS = {
    "png": ("images", "masks", ".png"),
    "decathlon": ("imagesTr", "labelsTr", ".nii.gz"),
}
_MAX_LISTED = 20  # file names listed in one message before "... and N more"


def _listing(names, limit: int = _MAX_LISTED) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def show_progress() -> bool:
    """Whether long loops show a progress bar by default: in a terminal or a notebook, not in CI logs."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def _detect_layout(folder: Path) -> str:
    found = [name for name, (images, masks, _) in LAYOUTS.items()
             if (folder / images).is_dir() and (folder / masks).is_dir()]
    if len(found) == 1:
        return found[0]
    expected = " or ".join(f"{images}/ + {masks}/ ({name})" for name, (images, masks, _) in LAYOUTS.items())
    if not found:
        present = sorted(p.name + "/" for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DataError(f"{folder}: no recognised data set layout: expected the sub-folders {expected}; "
                        f"found {_listing(present) if present else 'no sub-folders'}. Point at the data set "
                        "folder itself (the one that holds those sub-folders).")
    raise DataError(f"{folder}: holds both layouts ({expected}); pass layout='png' or layout='decathlon'.")


def _files_by_id(folder: Path, suffix: str) -> dict[str, Path]:
    """{case id: path} of the files in one sub-folder; anything else (but hidden files) is an error."""
    files, unexpected = {}, []
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue  # hidden files (.DS_Store, macOS "._" resource forks) are not data
        if path.is_file() and path.name.endswith(suffix) and len(path.name) > len(suffix):
            files[path.name[: -len(suffix)]] = path
        else:
            unexpected.append(path.name)
    if unexpected:
        raise DataError(f"{folder}: {len(unexpected)} entr{'y is' if len(unexpected) == 1 else 'ies are'} "
                        f"not {suffix} files: {_listing(sorted(unexpected))}. Move them out of the folder "
                        "(only image/mask files belong there).")
    return files


def find_cases(folder, layout: str | None = None) -> list[dict]:
    """The image/mask pairs in a data set folder, sorted by case id.

    Args:
        folder: the data set folder (str or Path), e.g. ``data_root() / TASKS["cxr_lung"].folder``.
        layout: "png" or "decathlon"; None detects it from the sub-folders.

    Returns:
        [{"case_id": "vp_0001", "image": ".../images/vp_0001.png", "label": ".../masks/vp_0001.png"}, ...]

    Raises:
        FileNotFoundError: the folder does not exist.
        DataError: no recognised layout; images without masks or masks without images (all listed);
            files of another type in the image or mask folder; no cases at all.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"data set folder {folder} does not exist: check the path (data sets live "
                                "under the folder named by LIGHTM_EDU_DATA).")
    if layout is None:
        layout = _detect_layout(folder)
    elif layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: choose one of {sorted(LAYOUTS)} (or None to detect it)")
    image_folder, mask_folder, suffix = LAYOUTS[layout]
    image_dir, mask_dir = folder / image_folder, folder / mask_folder
    for sub in (image_dir, mask_dir):
        if not sub.is_dir():
            raise DataError(f"{folder}: layout {layout!r} needs the sub-folder {sub.name}/, which is missing.")
    images, masks = _files_by_id(image_dir, suffix), _files_by_id(mask_dir, suffix)
    summary, problems = [], []  # summary: one line per direction; problems: one line per file
    if lonely := sorted(set(images) - set(masks)):
        summary.append(f"{len(lonely)} image(s) in {image_dir.name}/ have no mask in {mask_dir.name}/: "
                       f"{_listing(i + suffix for i in lonely)}")
        problems += [f"{image_dir.name}/{i}{suffix}: no mask {mask_dir.name}/{i}{suffix}" for i in lonely]
    if lonely := sorted(set(masks) - set(images)):
        summary.append(f"{len(lonely)} mask(s) in {mask_dir.name}/ have no image in {image_dir.name}/: "
                       f"{_listing(i + suffix for i in lonely)}")
        problems += [f"{mask_dir.name}/{i}{suffix}: no image {image_dir.name}/{i}{suffix}" for i in lonely]
    if problems:
        raise DataError(f"{folder}: every image needs a mask with the same file name, and the other way "
                        "round. " + "; ".join(summary) + ". Add the missing files, or move the unpaired "
                        "ones out of the folder.", problems)
    if not images:
        raise DataError(f"{folder}: {image_dir.name}/ and {mask_dir.name}/ hold no {suffix} files.")
    return [{"case_id": case_id, "image": str(images[case_id]), "label": str(masks[case_id])}
            for case_id in sorted(images)]


# --- checking every file ---------------------------------------------------------------------------

def _read_png(path: str):
    """(array (h, w) or (h, w, c), channels) of a PNG, fully decoded."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        if image.format != "PNG":
            raise OSError(f"not a PNG file (Pillow reads it as {image.format})")
        image.load()
        return np.asarray(image), len(image.getbands())


def _read_nifti(path: str):
    """(array, affine) of a NIfTI file, fully decoded."""
    import nibabel
    import numpy as np

    image = nibabel.load(path)
    return np.asanyarray(image.dataobj), image.affine


def _mask_values(mask) -> list:
    """The distinct values of a mask array (fast path for 8-bit masks)."""
    import numpy as np

    if mask.dtype == np.uint8:
        return np.flatnonzero(np.bincount(mask.ravel(), minlength=256)).tolist()
    return np.unique(mask).tolist()


def _format_values(values) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _check_pair(case: dict, task: SegmentationTask, name) -> list[str]:
    """Problems of one case (empty when the pair is fine)."""
    import numpy as np

    problems = []
    read = _read_png if task.layout == "png" else _read_nifti
    image_name, label_name = name(case["image"]), name(case["label"])
    # *_info: the number of channels (PNG) or the affine (NIfTI)
    try:
        image, image_info = read(case["image"])
    except Exception as error:  # any failure to decode is a broken file, whatever the library raises
        problems.append(f"{image_name}: cannot be read ({type(error).__name__}: {error})")
        image = None
    try:
        mask, mask_info = read(case["label"])
    except Exception as error:
        problems.append(f"{label_name}: cannot be read ({type(error).__name__}: {error})")
        mask = None

    if task.layout == "png":
        image_shape = None
        if image is not None:
            image_shape = image.shape[:2]
            if image_info != task.in_channels:
                problems.append(f"{image_name}: {image_info} channels, expected {task.in_channels}")
            if task.intensity == "scale_0_255" and image.dtype != np.uint8:
                problems.append(f"{image_name}: {image.dtype} pixels, expected 8-bit (the task scales "
                                "0..255 to 0..1)")
        if mask is not None and mask_info != 1:
            problems.append(f"{label_name}: a mask must have 1 channel, this one has {mask_info}")
            mask = None
        mask_shape = None if mask is None else mask.shape[:2]
    else:
        image_shape = None
        if image is not None:
            if image.ndim == task.spatial_dims and task.in_channels == 1:
                image_shape = image.shape
            elif image.ndim == task.spatial_dims + 1 and image.shape[-1] == task.in_channels:
                image_shape = image.shape[:-1]  # NIfTI stores channels last
            else:
                problems.append(f"{image_name}: shape {image.shape} is not {task.spatial_dims}D with "
                                f"{task.in_channels} channel(s)")
        mask_shape = None
        if mask is not None:
            if mask.ndim != task.spatial_dims:
                problems.append(f"{label_name}: shape {mask.shape}, expected a {task.spatial_dims}D mask "
                                "without channels")
                mask = None
            else:
                mask_shape = mask.shape
        if image_shape is not None and mask_shape is not None and not np.allclose(
                image_info, mask_info, atol=1e-3):
            problems.append(f"{image_name} and {label_name}: different affines (voxel-to-world "
                            "mappings), so the mask does not lie on the image")
    if image_shape is not None and mask_shape is not None and tuple(image_shape) != tuple(mask_shape):
        problems.append(f"{image_name} and {label_name}: image size {tuple(image_shape)} differs from mask "
                        f"size {tuple(mask_shape)}")
    if mask is not None:
        unexpected = [v for v in _mask_values(mask) if v not in task.label_values]
        if unexpected:
            problems.append(f"{label_name}: mask values {_format_values(unexpected)} are not among the "
                            f"task's label values {task.label_values}")
    return problems


def check_cases(cases: list[dict], task: SegmentationTask, deep: bool = True, progress: bool | None = None) -> None:
    """Check every case of a data set; raise one :class:`DataError` that lists every problem.

    With ``deep`` every file is opened and fully decoded (Pillow for PNG, nibabel for NIfTI) and
    checked for: unreadable or corrupt file, wrong number of image channels, image and mask of
    different size (or, NIfTI, different affine), mask values outside ``task.label_values``.
    Without ``deep`` only that every file exists.

    Args:
        cases: from :func:`find_cases`.
        task: the task the data is for (layout, label values, channels).
        deep: open every file (True) or only check that it exists (False).
        progress: show a progress bar; None: in a terminal or a notebook, not in logs.

    Raises:
        DataError: the message lists each problem by file name; ``error.problems`` holds them.
    """
    from tqdm.auto import tqdm

    if not isinstance(task, SegmentationTask):
        raise TypeError(f"task must be a SegmentationTask (e.g. lightm_edu.data.TASKS['hippocampus']), "
                        f"got {type(task).__name__}")
    cases = list(cases)
    for index, case in enumerate(cases):
        if not isinstance(case, dict) or not {"image", "label"} <= set(case):
            raise TypeError(f"case {index} must be a dict with 'image' and 'label' paths (as find_cases "
                            f"returns), got {case!r}")
    if not cases:
        raise DataError("no cases to check: the list is empty (did find_cases look in the right folder?)")

    paths = [str(c[key]) for c in cases for key in ("image", "label")]
    suffix = LAYOUTS[task.layout][2]
    if foreign := [p for p in paths if not p.lower().endswith(suffix)]:
        raise DataError(f"task {task.name!r} reads {suffix} files (layout {task.layout!r}), but "
                        f"{len(foreign)} path(s) are not: {_listing(Path(p).name for p in foreign)}; pass the "
                        "task that matches these cases")
    root = Path(os.path.commonpath([os.path.dirname(p) for p in paths]))
    if all(Path(p).parent == root for p in paths):
        root = root.parent  # keep the sub-folder in the names: images/x.png, not x.png

    def name(path) -> str:
        path = Path(path)
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)

    problems = []
    if progress is None:
        progress = show_progress()
    for case in tqdm(cases, desc=f"checking {task.name}", unit="case", disable=not progress):
        missing = [name(case[key]) for key in ("image", "label") if not Path(case[key]).is_file()]
        if missing:
            problems.extend(f"{m}: file does not exist" for m in missing)
        elif deep:
            problems.extend(_check_pair(case, task, name))
    if problems:
        raise DataError(
            f"{len(problems)} problem(s) in {len(cases)} case(s) of task {task.name!r} under {root}:\n  "
            + "\n  ".join(problems)
            + "\nReplace the broken files with fresh copies (a data set's MANIFEST.sha256 lists the expected "
            "checksums: python data_download/verify_checksums.py), or move those cases out of the folder.",
            problems)
