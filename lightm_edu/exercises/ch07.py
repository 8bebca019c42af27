"""Checkers for the exercises of chapter 7, "Medical images".

Each checker runs the learner's function on small arrays whose answers are computed here in a few
lines of NumPy (and, for the affine, by :func:`nibabel.affines.apply_affine`), and returns a
:class:`~lightm_edu.exercises.Feedback`: truthy when correct, and otherwise saying what is wrong,
naming typical mistakes, with a hint. A checker never raises on a wrong or missing answer.

    check_window(fn)          exercise 1: fn(hu, level, width) -> intensities in [0, 1] (CT windowing)
    check_volume_ml(fn)       exercise 2: fn(label, spacing, value) -> volume of one class in millilitres
    check_voxel_to_world(fn)  exercise 3: fn(affine, index) -> (x, y, z) in millimetres
    check_dice_iou(fn)        exercise 4: fn(truth, prediction, n_classes) -> {class: (dice, iou)}
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from ._checking import Feedback, call_learner, correct, in_case, wrong

__all__ = ["check_window", "check_volume_ml", "check_voxel_to_world", "check_dice_iou",
           "window_reference", "volume_ml_reference", "voxel_to_world_reference", "dice_iou_reference",
           "WINDOW_CASES", "AFFINE_CASES"]


def _as_float_array(value):
    """A float64 NumPy array from an array, a tensor, a list or a number; None if impossible."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().double().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return array


def _as_real(value):
    """A Python float from a number, a NumPy scalar or a one-element array/tensor; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    array = _as_float_array(value)
    if array is None or array.size != 1:
        return None
    return float(array.reshape(()))


def _close(a, b, rtol=1e-6, atol=1e-9) -> bool:
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


class _Diagnosis:
    """The feedback on a wrong answer, preferring a case where exactly one typical mistake fits.

    A mistake can be invisible in one case (with 1 mm voxels, a voxel count equals a volume in
    mm^3), so a case where several known mistakes give the learner's answer is kept only as a
    fallback while the next cases are tried.
    """

    def __init__(self):
        self.fallback = None

    def settle(self, matches: list, make_feedback) -> Feedback | None:
        """``make_feedback(match or None)`` now if this case is unambiguous, else None (go on)."""
        if len(matches) == 1:
            return make_feedback(matches[0])
        if self.fallback is None:
            self.fallback = make_feedback(matches[0] if matches else None)
        return None if matches else self.fallback


# ----------------------------------------------------------------------------------- exercise 1

#: (level, width) in Hounsfield units for exercise 1: soft tissue, lung and bone windows.
WINDOW_CASES = ((40.0, 400.0), (-600.0, 1500.0), (400.0, 1800.0))


def _hu_values() -> np.ndarray:
    """A (4, 9) array of CT values from air to dense bone, in Hounsfield units."""
    row = np.array([-1000, -850, -500, -100, 0, 40, 80, 300, 1500], dtype=np.float64)
    return np.stack([row, row + 7.5, row - 12.0, row[::-1]])


def window_reference(hu, level, width) -> np.ndarray:
    """``clip((hu - (level - width / 2)) / width, 0, 1)``: the window [level - width/2, level + width/2]
    mapped to [0, 1] (black to white)."""
    low = level - width / 2
    return np.clip((np.asarray(hu, dtype=np.float64) - low) / width, 0.0, 1.0)


def check_window(fn) -> Feedback:
    """Check ``fn(hu, level, width) -> array``: the CT values ``hu`` (any shape) mapped linearly to
    [0, 1], ``level - width / 2`` to 0 and ``level + width / 2`` to 1, clipped outside. Compared
    with :func:`window_reference` for the windows of ``WINDOW_CASES``."""
    hu = _hu_values()
    diagnosis = _Diagnosis()
    for level, width in WINDOW_CASES:
        case = f"Case level={level:g}, width={width:g} (HU values from -1012 to 1507, shape {hu.shape})."
        given = hu.copy()
        got, problem = call_learner(fn, given, level, width)
        if problem is not None:
            return in_case(problem, case)
        if not np.array_equal(given, hu):
            return wrong("Your function changed the input array in place.", case,
                         "Work on a copy (np.clip and arithmetic return new arrays).")
        values = _as_float_array(got)
        expected = window_reference(hu, level, width)
        if values is None or values.dtype == object:
            return wrong(f"Expected an array of numbers, got {type(got).__name__}.", case)
        if values.shape != expected.shape:
            return wrong(f"Your result has shape {values.shape}; the input has shape {expected.shape}.", case,
                         "Window every value: the output has the shape of the input.")
        if _close(values, expected):
            continue
        low, high = level - width / 2, level + width / 2
        known = (
            ((hu - low) / width, "Values below the window or above it fall outside [0, 1].",
             "Clip the result to [0, 1]: everything darker than the window is black, brighter is white "
             "(np.clip(x, 0, 1))."),
            (np.clip((hu - (level - width)) / (2 * width), 0, 1), "Your window is twice as wide as asked.",
             "The window spans level - width/2 to level + width/2: `width` is its whole width, not half of it."),
            (window_reference(hu, width, level), "You swapped level and width.",
             "The level is the centre of the window, the width its extent."),
            (255 * expected, "Your values run from 0 to 255.",
             "Return intensities in [0, 1] (0 black, 1 white), without the factor 255."),
            (1 - expected, "Your grey scale is inverted: low HU should be black (0), high HU white (1).", ""),
            (np.clip((hu - level) / width, 0, 1), "Your window starts at the level instead of at level - width/2.",
             "The level is the centre of the window."),
        )
        worst = np.unravel_index(np.nanargmax(np.abs(values - expected)), expected.shape)
        example = (f"For {hu[worst]:g} HU you have {values[worst]:.4g}, expected {expected[worst]:.4g} "
                   f"(the window is {low:g} to {high:g} HU).")

        def feedback(match, case=case, example=example):
            if match is None:
                return wrong("Your windowed values differ.", case, example,
                             "Map level - width/2 to 0 and level + width/2 to 1, linearly, then clip to [0, 1].")
            return wrong(match[0], case, example, match[1])

        settled = diagnosis.settle([(t, h) for c, t, h in known if _close(values, c)], feedback)
        if settled is not None:
            return settled
    if diagnosis.fallback is not None:
        return diagnosis.fallback
    return correct("Correct: your windows match.",
                   "Checked the soft-tissue (40, 400), lung (-600, 1500) and bone (400, 1800) windows.")


# ----------------------------------------------------------------------------------- exercise 2


def _ellipsoid_label(shape, seed: int) -> np.ndarray:
    """A label map (d, h, w) with two touching ellipsoidal classes 1 and 2, in random places."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), axis=-1).astype(float)
    label = np.zeros(shape, dtype=np.uint8)
    centre = np.array(shape) * rng.uniform(0.4, 0.6, size=3)
    radii = np.array(shape) * rng.uniform(0.15, 0.3, size=3)
    inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1
    label[inside & (grid[..., 0] < centre[0])] = 1
    label[inside & (grid[..., 0] >= centre[0])] = 2
    return label


#: (label shape, spacing in mm, class value) for exercise 2: isotropic and anisotropic voxels.
#: Anisotropic cases come first: with 1 mm voxels, mm^3 and voxel counts cannot be told apart.
VOLUME_CASES = (((40, 48, 12), (0.7, 0.7, 5.0), 2), ((30, 44, 20), (0.8, 1.2, 2.5), 1),
                ((36, 50, 35), (1.0, 1.0, 1.0), 1))


def volume_ml_reference(label, spacing, value) -> float:
    """Volume of the voxels of ``label`` equal to ``value``, in millilitres: count x voxel volume
    (the product of ``spacing``, in mm^3) / 1000."""
    return float((np.asarray(label) == value).sum() * math.prod(spacing) / 1000.0)


def check_volume_ml(fn) -> Feedback:
    """Check ``fn(label, spacing, value) -> volume in millilitres`` of class ``value`` of a label
    map (d, h, w) with voxel size ``spacing`` (mm per axis), for every case of ``VOLUME_CASES``."""
    diagnosis = _Diagnosis()
    for index, (shape, spacing, value) in enumerate(VOLUME_CASES):
        label = _ellipsoid_label(shape, seed=index)
        case = f"Case label of shape {shape}, spacing {spacing} mm, value {value}."
        got, problem = call_learner(fn, label.copy(), spacing, value)
        if problem is not None:
            return in_case(problem, case)
        number = _as_real(got)
        if number is None:
            return wrong(f"Expected one number (millilitres), got {type(got).__name__}: {got!r}.", case)
        expected = volume_ml_reference(label, spacing, value)
        if math.isclose(number, expected, rel_tol=1e-6):
            continue
        count = int((label == value).sum())
        voxel = math.prod(spacing)
        known = (
            (expected * 1000, "You returned cubic millimetres.",
             "1 ml = 1 cm^3 = 1000 mm^3: divide by 1000."),
            (count, "You returned the number of voxels.",
             f"Each voxel is {' x '.join(f'{s:g}' for s in spacing)} = {voxel:g} mm^3: multiply by the product "
             "of the spacing, then convert to ml."),
            (count / 1000, "You left out the voxel size.",
             f"Multiply the voxel count by the product of the spacing ({voxel:g} mm^3 here)."),
            (count * spacing[0] ** 3 / 1000, "You used the first spacing for all three axes.",
             "Voxels need not be cubes: the voxel volume is spacing[0] * spacing[1] * spacing[2]."),
            (count * sum(spacing) / 1000, "You added the spacings.",
             "A voxel's volume is the product of its three sides."),
            (float((label > 0).sum()) * voxel / 1000, "You measured every foreground class together.",
             f"Count only the voxels equal to value={value}."),
        )
        matches = [(t, h) for c, t, h in known
                   if math.isclose(number, c, rel_tol=1e-6) and not math.isclose(c, expected, rel_tol=1e-6)]

        def feedback(match, case=case, number=number, expected=expected):
            if match is None:
                return wrong(f"You have {number:.6g} ml, expected {expected:.6g} ml.", case,
                             "Volume = (number of voxels with that value) x (voxel volume in mm^3) / 1000.")
            return wrong(match[0], case, f"You have {number:.6g}, expected {expected:.6g} ml.", match[1])

        settled = diagnosis.settle(matches, feedback)
        if settled is not None:
            return settled
    if diagnosis.fallback is not None:
        return diagnosis.fallback
    return correct("Correct: your volumes match.",
                   "Checked isotropic 1 mm voxels and anisotropic ones (0.7 x 0.7 x 5.0 mm, 0.8 x 1.2 x 2.5 mm).")


# ----------------------------------------------------------------------------------- exercise 3


def _rotation_z(degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    return np.array([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0], [0.0, 0.0, 1.0]])


def _affine(linear, offset) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = offset
    return affine


#: (description, affine, voxel index) for exercise 3.
AFFINE_CASES = (
    ("1 mm voxels shifted by 1 mm (the hippocampus files)", _affine(np.eye(3), (1.0, 1.0, 1.0)), (10, 20, 5)),
    ("anisotropic 0.7 x 0.7 x 5 mm voxels, RAS", _affine(np.diag([0.7, 0.7, 5.0]), (-170.0, -150.0, -300.0)),
     (100, 50, 12)),
    ("0.8 x 0.8 x 2.5 mm voxels, x and y flipped (stored LPS-like)",
     _affine(np.diag([-0.8, -0.8, 2.5]), (200.0, 180.0, -90.0)), (30, 7, 40)),
    ("an oblique acquisition: 1 x 1 x 3 mm voxels rotated by 20 degrees about z",
     _affine(_rotation_z(20) @ np.diag([1.0, 1.0, 3.0]), (-60.0, 25.0, 10.0)), (12, 34, 5)),
)


def voxel_to_world_reference(affine, index) -> np.ndarray:
    """World coordinates (x, y, z) in mm of voxel ``index`` (i, j, k): ``affine @ (i, j, k, 1)``."""
    from nibabel.affines import apply_affine

    return np.asarray(apply_affine(np.asarray(affine), np.asarray(index, dtype=np.float64)), dtype=np.float64)


def check_voxel_to_world(fn) -> Feedback:
    """Check ``fn(affine, index) -> (x, y, z)``: the world position in mm of voxel ``index`` (three
    integers (i, j, k)) under the 4 x 4 ``affine`` of a NIfTI file; compared with
    :func:`nibabel.affines.apply_affine` for every case of ``AFFINE_CASES``."""
    diagnosis = _Diagnosis()
    for description, affine, index in AFFINE_CASES:
        case = f"Case: {description}; index {index}."
        given = affine.copy()
        got, problem = call_learner(fn, given, index)
        if problem is not None:
            return in_case(problem, case)
        if not np.array_equal(given, affine):
            return wrong("Your function changed the affine in place.", case, "Work on a copy.")
        values = _as_float_array(got)
        if values is None or values.dtype == object:
            return wrong(f"Expected three numbers (x, y, z), got {type(got).__name__}: {got!r}.", case)
        values = values.ravel()
        expected = voxel_to_world_reference(affine, index)
        homogeneous = np.append(expected, 1.0)
        if values.shape == (4,) and _close(values, homogeneous):
            return wrong("You returned the homogeneous 4-vector (x, y, z, 1).", case,
                         "Drop the last coordinate: return the first three.")
        if values.shape != (3,):
            return wrong(f"Expected three coordinates (x, y, z), got {values.size} numbers: {got!r}.", case)
        if _close(values, expected, rtol=1e-6, atol=1e-6):
            continue
        linear, offset = affine[:3, :3], affine[:3, 3]
        ijk = np.asarray(index, dtype=np.float64)
        known = (
            (linear @ ijk, "You left out the translation.",
             "The last column of the affine, affine[:3, 3], is the world position of voxel (0, 0, 0): add it."),
            ((affine.T @ np.append(ijk, 1.0))[:3], "You multiplied by the transposed affine.",
             "World = affine @ (i, j, k, 1): the index is a column vector on the right."),
            (linear @ ijk[::-1] + offset, "You reversed the index to (k, j, i).",
             "The affine's columns belong to the array axes in their order: i, j, k."),
            (np.diag(linear) * ijk + offset, "You used only the diagonal of the affine (the spacing).",
             "Right only when the voxel axes are aligned with the world axes; an oblique affine mixes them: "
             "use the full 3 x 3 part, affine[:3, :3] @ (i, j, k)."),
            (np.abs(np.diag(linear)) * ijk + offset, "You used the voxel sizes (the zooms), which are always "
             "positive, instead of the affine.",
             "The signs and off-diagonal entries of the affine say in which world direction each axis runs."),
        )
        matches = [(t, h) for c, t, h in known
                   if _close(values, c, rtol=1e-6, atol=1e-6) and not _close(c, expected, rtol=1e-6, atol=1e-6)]
        example = f"You have {np.round(values, 4).tolist()}, expected {np.round(expected, 4).tolist()}."

        def feedback(match, case=case, example=example):
            if match is None:
                return wrong("Your world coordinates differ.", case, example,
                             "World (x, y, z, 1) = affine @ (i, j, k, 1).")
            return wrong(match[0], case, example, match[1])

        settled = diagnosis.settle(matches, feedback)
        if settled is not None:
            return settled
    if diagnosis.fallback is not None:
        return diagnosis.fallback
    return correct("Correct: your coordinates match nibabel.affines.apply_affine.",
                   "Checked shifted, anisotropic, flipped and oblique affines.")


# ----------------------------------------------------------------------------------- exercise 4


def _disk(shape, centre, radius) -> np.ndarray:
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def _dice_iou_cases():
    """(description, truth, prediction, n_classes): label maps of class indices."""
    truth2d = _disk((32, 32), (16, 12), 8).astype(np.int64)
    pred2d = _disk((32, 32), (17, 14), 7).astype(np.int64)
    truth3d = _ellipsoid_label((12, 16, 10), seed=3).astype(np.int64)
    pred3d = np.roll(truth3d, 1, axis=1)
    pred3d[pred3d == 2] = 0                          # class 2 missed entirely
    pred3d[0, 0, :2] = 1                             # and two stray voxels of class 1
    only_one = truth3d.copy()
    only_one[only_one == 2] = 0                      # class 2 in neither mask, class 3 only predicted
    pred_one = np.roll(only_one, -1, axis=2)
    pred_one[-2:, -2:, -2:] = 3
    return (
        ("a 2D lung-like disk and a shifted, smaller prediction (2 classes)", truth2d, pred2d, 2),
        ("a 3D label map (3 classes); class 2 is not predicted at all", truth3d, pred3d, 3),
        ("a 3D label map (4 classes); class 2 is in neither mask, class 3 only in the prediction",
         only_one, pred_one, 4),
        ("a perfect prediction (3 classes)", truth3d, truth3d.copy(), 3),
    )


def dice_iou_reference(truth, prediction, n_classes) -> dict:
    """{c: (Dice, IoU)} for the foreground classes c = 1 .. n_classes - 1 of two label maps; both
    are nan where class c is in neither map (0 / 0), and 0 where it is in one only."""
    truth, prediction = np.asarray(truth), np.asarray(prediction)
    result = {}
    for c in range(1, n_classes):
        t, p = truth == c, prediction == c
        intersection, total, union = (t & p).sum(), t.sum() + p.sum(), (t | p).sum()
        result[c] = ((2 * intersection / total, intersection / union) if union else (math.nan, math.nan))
    return result


def _same_number(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or (not math.isnan(a) and not math.isnan(b)
                                                 and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9))


def check_dice_iou(fn) -> Feedback:
    """Check ``fn(truth, prediction, n_classes) -> {class index: (dice, iou)}`` for the foreground
    classes 1 .. n_classes - 1 of two label maps of the same shape; nan for a class in neither
    map. Compared with :func:`dice_iou_reference` (which agrees with MONAI's DiceMetric and MeanIoU
    with ``ignore_empty=False`` wherever a class is present)."""
    for description, truth, prediction, n_classes in _dice_iou_cases():
        case = f"Case: {description}."
        got, problem = call_learner(fn, truth.copy(), prediction.copy(), n_classes)
        if problem is not None:
            if "ZeroDivisionError" in problem.title:
                problem.details.append("A class in neither map has 0 / 0: return nan for it (float('nan')).")
            return in_case(problem, case)
        expected = dice_iou_reference(truth, prediction, n_classes)
        if not isinstance(got, dict):
            return wrong(f"Expected a dict {{class index: (dice, iou)}}, got {type(got).__name__}.", case,
                         "E.g. {1: (0.91, 0.83), 2: (0.0, 0.0)}.")
        keys = {int(k) if isinstance(k, numbers.Integral) else k for k in got}
        if 0 in keys:
            return wrong("Your dict has an entry for class 0, the background.", case,
                         "Report the foreground classes 1 .. n_classes - 1 only: the background's Dice is "
                         "high for any prediction and says nothing.")
        if keys != set(expected):
            return wrong(f"Your dict has the keys {sorted(keys, key=str)}; expected the class indices "
                         f"{sorted(expected)}.", case, "One entry per foreground class, 1 .. n_classes - 1.")
        for c, (dice, iou) in expected.items():
            pair = got[c] if c in got else next(v for k, v in got.items() if int(k) == c)
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                return wrong(f"Class {c}: expected a pair (dice, iou), got {pair!r}.", case)
            d, i = _as_real(pair[0]), _as_real(pair[1])
            if d is None or i is None:
                return wrong(f"Class {c}: (dice, iou) must be two numbers, got {pair!r}.", case)
            if _same_number(d, dice) and _same_number(i, iou):
                continue
            t, p = truth == c, prediction == c
            line = f"Class {c}: you have (dice, iou) = ({d:.4g}, {i:.4g}), expected ({dice:.4g}, {iou:.4g})."
            if math.isnan(dice):
                hint = ("Class {c} is in neither map: Dice and IoU are 0 / 0, undefined. Return nan, so that "
                        "averages leave the class out (np.nanmean), rather than 0 (a failure that did not "
                        "happen) or 1 (a success nobody earned).").format(c=c)
                return wrong(f"Class {c} is in neither mask: its scores should be nan.", case, line, hint)
            if _same_number(d, iou) and _same_number(i, dice):
                return wrong(f"Class {c}: you swapped Dice and IoU.", case, line,
                             "Return (dice, iou); Dice is never smaller than IoU.")
            if _same_number(d, dice / 2):
                return wrong(f"Class {c}: your Dice lacks the factor 2.", case, line,
                             "Dice = 2 |T and P| / (|T| + |P|): a perfect match must give 1.")
            if _same_number(d, iou):
                return wrong(f"Class {c}: your Dice is the IoU.", case, line,
                             "Dice divides 2 |T and P| by |T| + |P|; IoU divides |T and P| by |T or P|.")
            if _same_number(i, dice):
                return wrong(f"Class {c}: your IoU is the Dice.", case, line,
                             "IoU = |T and P| / |T or P| (the union).")
            if t.sum() and not p.sum() and (math.isnan(d) or math.isnan(i)):
                return wrong(f"Class {c} is in the truth but not predicted: its scores are 0, not nan.", case,
                             line, "Only a class in neither map is undefined; one missed entirely is a "
                                   "complete failure: 0.")
            fg_t, fg_p = truth > 0, prediction > 0
            merged = 2 * (fg_t & fg_p).sum() / max(int(fg_t.sum() + fg_p.sum()), 1)
            if _same_number(d, merged) and not _same_number(merged, dice):
                return wrong(f"Class {c}: you measured all foreground classes together.", case, line,
                             f"Compare truth == {c} with prediction == {c}, one class at a time.")
            return wrong(f"Class {c}: your scores differ.", case, line,
                         "Use the boolean masks truth == c and prediction == c.")
    return correct("Correct: your Dice and IoU match, per class, with nan where a class is in neither map.",
                   "Checked a 2D mask, a missed class, an absent class, a class predicted only, and a perfect "
                   "prediction.")
