"""Checkers for the exercises of chapter 9, "Going 3D".

Each checker compares the learner's answer with what MONAI and PyTorch actually do (the windows
that ``sliding_window_inference`` runs, the bytes of a real tensor, the crop that
``RandCropByPosNegLabel`` takes around a foreground voxel) and returns a
:class:`~lightm_edu.exercises.Feedback`: truthy when correct, and otherwise saying what is wrong,
naming typical mistakes, with a hint. A checker never raises on a wrong or missing answer.

    check_window_count(fn)     exercise 1: fn(image_size, roi_size, overlap) -> number of windows
    check_tensor_gib(fn)       exercise 2: fn(shape, dtype) -> memory of a tensor in GiB
    check_patch_start(fn)      exercise 3: fn(centre, patch_size, image_size) -> first voxel of the patch
"""

from __future__ import annotations

import math
import numbers

from ._checking import Feedback, as_int_tuple, call_learner, correct, in_case, wrong

__all__ = ["check_window_count", "check_tensor_gib", "check_patch_start", "windows_run", "tensor_gib",
           "patch_start_by_cropping", "WINDOW_CASES", "TENSOR_CASES", "PATCH_CASES"]

#: (image_size, roi_size, overlap) for exercise 1.
WINDOW_CASES = (((40, 56, 40), (32, 48, 32), 0.5),     # a padded hippocampus volume and its patch
                ((256, 256), (128, 128), 0.5),
                ((96, 160, 160), (64, 64, 64), 0.25),
                ((24, 56, 40), (32, 48, 32), 0.5),     # one axis shorter than the window
                ((200, 130), (64, 64), 0.0))

#: (shape, dtype name) for exercise 2.
TENSOR_CASES = (((2, 32, 128, 128, 128), "float32"), ((1, 64, 512, 512), "bfloat16"),
                ((8, 32, 32, 48, 32), "float32"), ((2, 256, 16, 16, 16), "float16"))

#: (centre, patch_size, image_size) for exercise 3.
PATCH_CASES = (((20, 28, 20), (32, 48, 32), (40, 56, 40)),   # well inside: no correction
               ((3, 50, 39), (32, 48, 32), (40, 56, 40)),    # near the start of axis 0, the end of the others
               ((100, 250), (128, 128), (256, 256)),
               ((0, 0), (64, 64), (64, 96)))                 # the patch fills axis 0



# ----------------------------------------------------------------------------------- exercise 1


def windows_run(image_size, roi_size, overlap: float) -> int:
    """The number of windows MONAI's ``sliding_window_inference`` evaluates for one image of
    ``image_size`` (spatial), counted by running it with a predictor that counts its inputs."""
    import torch
    from monai.inferers import sliding_window_inference

    count = 0

    def predictor(batch):  # (n, 1, *roi_size): n windows at once
        nonlocal count
        count += batch.shape[0]
        return batch

    with torch.no_grad():
        sliding_window_inference(torch.zeros(1, 1, *image_size), roi_size=tuple(roi_size), sw_batch_size=4,
                                 predictor=predictor, overlap=overlap, mode="constant")
    return count


def _windows_by_formula(image_size, roi_size, overlap, rounding=math.ceil, use_overlap=True, fit=True) -> int:
    total = 1
    for size, roi in zip(image_size, roi_size):
        size = max(size, roi)
        step = max(int(roi * (1 - overlap)), 1) if use_overlap else roi
        total *= (rounding((size - roi) / step) + 1) if fit else rounding(size / step)
    return total


def check_window_count(fn) -> Feedback:
    """Check ``fn(image_size, roi_size, overlap) -> number of windows`` against counting the
    windows of a real ``sliding_window_inference`` run (:func:`windows_run`) for every case of
    ``WINDOW_CASES``."""
    for image_size, roi_size, overlap in WINDOW_CASES:
        case = f"Case image_size={image_size}, roi_size={roi_size}, overlap={overlap}."
        expected = windows_run(image_size, roi_size, overlap)
        got, problem = call_learner(fn, image_size, roi_size, overlap)
        if problem is not None:
            return in_case(problem, case)
        if isinstance(got, bool) or not isinstance(got, numbers.Real) or got != int(got):
            return wrong(f"Expected a whole number of windows, got {got!r}.", case)
        got = int(got)
        if got == expected:
            continue
        details = [case, f"You have {got}, MONAI runs {expected} windows."]
        known = (
            (_windows_by_formula(image_size, roi_size, overlap, use_overlap=False),
             "You ignored the overlap: windows step by roi * (1 - overlap), not by roi.",
             "Per axis: step = int(roi * (1 - overlap)), windows = ceil((size - roi) / step) + 1."),
            (_windows_by_formula(image_size, roi_size, overlap, rounding=math.floor),
             "You rounded down: the last window must reach the end of the axis.",
             "Use ceil((size - roi) / step) + 1; MONAI moves the last window back to end at the border."),
            (_windows_by_formula(image_size, roi_size, overlap, fit=False),
             "You divided the whole axis by the step: a window must fit inside the image.",
             "The first window starts at 0 and the last at size - roi: ceil((size - roi) / step) + 1."),
        )
        for candidate, title, hint in known:
            if got == candidate:
                return wrong(title, *details, hint)
        summed = 0
        for size, roi in zip(image_size, roi_size):
            step = max(int(roi * (1 - overlap)), 1)
            summed += math.ceil((max(size, roi) - roi) / step) + 1
        if got == summed:
            return wrong("You added the windows of each axis; the grid has their product.", *details)
        return wrong(f"You have {got}, MONAI runs {expected}.", *details,
                     "Count per axis, ceil((max(size, roi) - roi) / step) + 1 with step = int(roi * (1 - overlap)), "
                     "and multiply the axes.")
    return correct("Correct: your counts match the windows of a real sliding_window_inference run.",
                   f"Checked {len(WINDOW_CASES)} images in 2D and 3D, one with an axis shorter than the window.")


# ----------------------------------------------------------------------------------- exercise 2


def tensor_gib(shape, dtype_name: str) -> float:
    """GiB (2**30 bytes) of a tensor of ``shape`` and ``dtype`` (a name such as "float32"), from
    PyTorch's own element size."""
    import torch

    dtype = getattr(torch, dtype_name)
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size() / 2 ** 30


def check_tensor_gib(fn) -> Feedback:
    """Check ``fn(shape, dtype) -> GiB`` (``dtype`` a torch dtype) against :func:`tensor_gib`;
    GB instead of GiB, a fixed 4 bytes, bits and MiB are named."""
    import torch

    for shape, name in TENSOR_CASES:
        dtype = getattr(torch, name)
        case = f"Case shape={shape}, dtype=torch.{name}."
        expected = tensor_gib(shape, name)
        got, problem = call_learner(fn, shape, dtype)
        if problem is not None:
            return in_case(problem, case)
        if hasattr(got, "item") and getattr(got, "numel", lambda: 1)() == 1:
            got = got.item()
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            return wrong(f"Expected a number of GiB, got {type(got).__name__}: {got!r}.", case)
        got = float(got)
        if math.isclose(got, expected, rel_tol=1e-6):
            continue
        details = [case, f"You have {got:.6g}, the tensor takes {expected:.6g} GiB."]
        size = torch.empty((), dtype=dtype).element_size()
        elements = math.prod(shape)
        known = (
            (elements * size / 1e9, "You computed GB (10**9 bytes), not GiB (2**30 bytes).",
             "Divide the bytes by 2**30 = 1024**3."),
            (elements * 4 / 2 ** 30, f"You assumed 4 bytes per value; torch.{name} has {size}.",
             "Use torch.empty((), dtype=dtype).element_size() (or dtype.itemsize)."),
            (elements * size * 8 / 2 ** 30, "You counted bits, not bytes.", "A byte has 8 bits: leave out the 8."),
            (elements * size / 2 ** 20, "That is MiB (2**20 bytes), not GiB.", "Divide by 2**30."),
            (elements / 2 ** 30, "You counted values, not bytes.", "Multiply by the bytes per value."),
        )
        for candidate, title, hint in known:
            if math.isclose(got, candidate, rel_tol=1e-6):
                return wrong(title, *details, hint)
        return wrong(f"You have {got:.6g} GiB, the tensor takes {expected:.6g} GiB.", *details,
                     "GiB = (product of the shape) x (bytes per value) / 2**30.")
    return correct("Correct: your sizes match PyTorch's element sizes.",
                   f"Checked {len(TENSOR_CASES)} tensors in float32, bfloat16 and float16.")


# ----------------------------------------------------------------------------------- exercise 3


def patch_start_by_cropping(centre, patch_size, image_size) -> tuple[int, ...]:
    """The first voxel of the patch that MONAI's ``RandCropByPosNegLabel`` (as in the training
    transforms, pos=1, neg=0) crops around ``centre`` when it is the only foreground voxel: read
    from an image whose values are their own flat indices."""
    import numpy as np
    import torch
    from monai.transforms import RandCropByPosNegLabel

    label = torch.zeros(1, *image_size)
    label[(0, *centre)] = 1
    image = torch.arange(math.prod(image_size), dtype=torch.float64).reshape(1, *image_size)
    crop = RandCropByPosNegLabel(spatial_size=tuple(patch_size), pos=1.0, neg=0.0, num_samples=1)
    crop.set_random_state(0)
    patch = crop(image, label=label)[0]
    first = int(patch.reshape(-1)[0].item())
    return tuple(int(i) for i in np.unravel_index(first, image_size))


def check_patch_start(fn) -> Feedback:
    """Check ``fn(centre, patch_size, image_size) -> start`` (the index of the patch's first voxel
    on every axis) against the crop MONAI really takes (:func:`patch_start_by_cropping`)."""
    for centre, patch, size in PATCH_CASES:
        case = f"Case centre={centre}, patch_size={patch}, image_size={size}."
        expected = patch_start_by_cropping(centre, patch, size)
        got, problem = call_learner(fn, centre, patch, size)
        if problem is not None:
            return in_case(problem, case)
        values = as_int_tuple(got)
        if values is None:
            return wrong(f"Expected a tuple of whole numbers, one per axis, got {got!r}.", case)
        if values == expected:
            continue
        if len(values) != len(expected):
            return wrong(f"You returned {len(values)} numbers for {len(size)} axes.", case)
        details = [case, f"You have {values}, MONAI's patch starts at {expected}."]
        unclamped = tuple(c - p // 2 for c, p in zip(centre, patch))
        known = (
            (unclamped, "Your patch leaves the image: the centre must be moved so the patch fits.",
             "Clamp the start to 0 .. image_size - patch_size on every axis."),
            (tuple(min(max(c, 0), s - p) for c, p, s in zip(centre, patch, size)),
             "You started the patch at the centre: it should be centred on it.",
             "start = centre - patch_size // 2, then clamp it."),
            (tuple(min(max(c - p // 2, 0), s - p + 1) for c, p, s in zip(centre, patch, size)),
             "Off by one at the end: the last valid start is image_size - patch_size.",
             "The patch covers start .. start + patch_size - 1, which must be <= image_size - 1."),
            (tuple(min(max(c, p // 2), s - p // 2) for c, p, s in zip(centre, patch, size)),
             "You returned the corrected centre, not the start of the patch.", "Subtract patch_size // 2."),
        )
        for candidate, title, hint in known:
            if values == candidate:
                return wrong(title, *details, hint)
        return wrong("Not the patch MONAI crops.", *details,
                     "start = centre - patch_size // 2, clamped to 0 .. image_size - patch_size per axis.")
    return correct("Correct: your patches start where MONAI's crops start.",
                   f"Checked {len(PATCH_CASES)} centres, inside the image and near its borders.")
