"""The checkers of chapter 7 accept the reference solutions and name the typical mistakes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightm_edu.exercises import ch07


def message(feedback) -> str:
    return str(feedback).lower()


def placeholder(*args):
    raise NotImplementedError  # your code here


# ----------------------------------------------------------------------------------- window


def solution_window(hu, level, width):
    low = level - width / 2
    return np.clip((hu - low) / width, 0.0, 1.0)


def test_window_accepts_solution():
    feedback = ch07.check_window(solution_window)
    assert feedback, str(feedback)


def test_window_accepts_a_torch_solution():
    def torch_window(hu, level, width):
        return torch.clamp((torch.as_tensor(hu) - (level - width / 2)) / width, 0, 1)

    assert ch07.check_window(torch_window)


def test_window_agrees_with_the_viewers_windowing():
    from lightm_edu.viz import _apply_window

    hu = ch07._hu_values()
    for level, width in ch07.WINDOW_CASES:
        window = (level - width / 2, level + width / 2)
        assert np.allclose(_apply_window(hu, window), ch07.window_reference(hu, level, width), atol=1e-6)


@pytest.mark.parametrize("mistake, words", [
    (lambda hu, level, width: (hu - (level - width / 2)) / width, "clip"),
    (lambda hu, level, width: np.clip((hu - (level - width)) / (2 * width), 0, 1), "twice as wide"),
    (lambda hu, level, width: solution_window(hu, width, level), "swapped level and width"),
    (lambda hu, level, width: 255 * solution_window(hu, level, width), "0 to 255"),
    (lambda hu, level, width: 1 - solution_window(hu, level, width), "inverted"),
    (lambda hu, level, width: np.clip((hu - level) / width, 0, 1), "starts at the level"),
    (lambda hu, level, width: solution_window(hu, level, width)[0], "shape"),
    (lambda hu, level, width: np.clip((hu + 1000) / 2000, 0, 1), "differ"),
])
def test_window_mistakes_are_named(mistake, words):
    feedback = ch07.check_window(mistake)
    assert not feedback and words in message(feedback), str(feedback)


def test_window_in_place_change_is_named():
    def in_place(hu, level, width):
        hu -= level - width / 2
        hu /= width
        return np.clip(hu, 0, 1)

    feedback = ch07.check_window(in_place)
    assert not feedback and "in place" in message(feedback)


def test_window_placeholder_is_not_attempted():
    assert "not attempted" in message(ch07.check_window(placeholder))


# ----------------------------------------------------------------------------------- volume


def solution_volume_ml(label, spacing, value):
    return (label == value).sum() * math.prod(spacing) / 1000


def test_volume_accepts_solution():
    feedback = ch07.check_volume_ml(solution_volume_ml)
    assert feedback, str(feedback)


def test_volume_cases_hold_both_classes():
    for index, (shape, _, value) in enumerate(ch07.VOLUME_CASES):
        label = ch07._ellipsoid_label(shape, seed=index)
        assert set(np.unique(label)) == {0, 1, 2} and (label == value).sum() > 50


@pytest.mark.parametrize("mistake, words", [
    (lambda label, spacing, value: (label == value).sum() * math.prod(spacing), "cubic millimetres"),
    (lambda label, spacing, value: int((label == value).sum()), "number of voxels"),
    (lambda label, spacing, value: (label == value).sum() / 1000, "voxel size"),
    (lambda label, spacing, value: (label == value).sum() * spacing[0] ** 3 / 1000, "first spacing"),
    (lambda label, spacing, value: (label == value).sum() * sum(spacing) / 1000, "added the spacings"),
    (lambda label, spacing, value: (label > 0).sum() * math.prod(spacing) / 1000, "every foreground class"),
    (lambda label, spacing, value: "3.2 ml", "one number"),
])
def test_volume_mistakes_are_named(mistake, words):
    feedback = ch07.check_volume_ml(mistake)
    assert not feedback and words in message(feedback), str(feedback)


def test_volume_placeholder_is_not_attempted():
    assert "not attempted" in message(ch07.check_volume_ml(placeholder))


# ----------------------------------------------------------------------------------- affine


def solution_voxel_to_world(affine, index):
    return (affine @ np.array([*index, 1.0]))[:3]


def test_voxel_to_world_accepts_solution():
    feedback = ch07.check_voxel_to_world(solution_voxel_to_world)
    assert feedback, str(feedback)


def test_voxel_to_world_accepts_nibabel():
    from nibabel.affines import apply_affine

    assert ch07.check_voxel_to_world(lambda affine, index: apply_affine(affine, index))


@pytest.mark.parametrize("mistake, words", [
    (lambda affine, index: affine[:3, :3] @ np.asarray(index), "translation"),
    (lambda affine, index: (affine.T @ np.array([*index, 1.0]))[:3], "transposed"),
    (lambda affine, index: affine[:3, :3] @ np.asarray(index[::-1]) + affine[:3, 3], "reversed the index"),
    (lambda affine, index: np.diag(affine)[:3] * np.asarray(index) + affine[:3, 3], "diagonal"),
    (lambda affine, index: np.abs(np.diag(affine)[:3]) * np.asarray(index) + affine[:3, 3], "zooms"),
    (lambda affine, index: affine @ np.array([*index, 1.0]), "homogeneous"),
    (lambda affine, index: (affine @ np.array([*index, 1.0]))[:2], "three coordinates"),
])
def test_voxel_to_world_mistakes_are_named(mistake, words):
    feedback = ch07.check_voxel_to_world(mistake)
    assert not feedback and words in message(feedback), str(feedback)


def test_voxel_to_world_placeholder_is_not_attempted():
    assert "not attempted" in message(ch07.check_voxel_to_world(placeholder))


# ----------------------------------------------------------------------------------- Dice and IoU


def solution_dice_iou(truth, prediction, n_classes):
    scores = {}
    for c in range(1, n_classes):
        t, p = truth == c, prediction == c
        both, union, total = (t & p).sum(), (t | p).sum(), t.sum() + p.sum()
        scores[c] = (2 * both / total, both / union) if union else (float("nan"), float("nan"))
    return scores


def test_dice_iou_accepts_solution():
    feedback = ch07.check_dice_iou(solution_dice_iou)
    assert feedback, str(feedback)


def test_dice_iou_reference_agrees_with_monai_where_a_class_is_present():
    from monai.metrics import DiceMetric, MeanIoU
    from monai.networks.utils import one_hot

    for _, truth, prediction, n_classes in ch07._dice_iou_cases():
        as_one_hot = [one_hot(torch.as_tensor(x)[None, None], n_classes) for x in (prediction, truth)]
        dice = DiceMetric(include_background=False, ignore_empty=False, reduction="none")(*as_one_hot)[0]
        iou = MeanIoU(include_background=False, ignore_empty=False, reduction="none")(*as_one_hot)[0]
        for c, (d, i) in ch07.dice_iou_reference(truth, prediction, n_classes).items():
            if math.isnan(d):  # MONAI's ignore_empty=False gives 1 for a class in neither map
                assert dice[c - 1] == 1 and iou[c - 1] == 1
            else:
                assert math.isclose(d, dice[c - 1].item(), rel_tol=1e-5)
                assert math.isclose(i, iou[c - 1].item(), rel_tol=1e-5)


def test_dice_iou_cases_cover_the_special_cases():
    described = " ".join(case[0] for case in ch07._dice_iou_cases())
    assert "neither" in described and "not predicted" in described and "perfect" in described


def _with(scores_fn):
    """A wrong solution built from the right one by changing each class's (dice, iou)."""
    def fn(truth, prediction, n_classes):
        return {c: scores_fn(*pair) for c, pair in solution_dice_iou(truth, prediction, n_classes).items()}
    return fn


def _zero_when_empty(truth, prediction, n_classes):
    return {c: ((0.0, 0.0) if math.isnan(d) else (d, i))
            for c, (d, i) in solution_dice_iou(truth, prediction, n_classes).items()}


def _one_when_empty(truth, prediction, n_classes):
    return {c: ((1.0, 1.0) if math.isnan(d) else (d, i))
            for c, (d, i) in solution_dice_iou(truth, prediction, n_classes).items()}


def _with_background(truth, prediction, n_classes):
    scores = solution_dice_iou(truth, prediction, n_classes)
    scores[0] = (0.99, 0.98)
    return scores


def _python_division(truth, prediction, n_classes):
    scores = {}
    for c in range(1, n_classes):
        t, p = int((truth == c).sum()), int((prediction == c).sum())
        both = int(((truth == c) & (prediction == c)).sum())
        scores[c] = (2 * both / (t + p), both / (t + p - both))
    return scores


def _merged_foreground(truth, prediction, n_classes):
    t, p = truth > 0, prediction > 0
    dice = 2 * (t & p).sum() / (t.sum() + p.sum())
    iou = (t & p).sum() / (t | p).sum()
    return {c: (dice, iou) for c in range(1, n_classes)}


def _nan_when_missed(truth, prediction, n_classes):
    scores = {}
    for c in range(1, n_classes):
        t, p = truth == c, prediction == c
        both = (t & p).sum()
        scores[c] = (2 * both / (t.sum() + p.sum()), both / (t | p).sum()) if p.any() else (math.nan, math.nan)
    return scores


@pytest.mark.parametrize("mistake, words", [
    (_with(lambda d, i: (i, d)), "swapped dice and iou"),
    (_with(lambda d, i: (d / 2, i)), "factor 2"),
    (_with(lambda d, i: (i, i)), "your dice is the iou"),
    (_with(lambda d, i: (d, d)), "your iou is the dice"),
    (_zero_when_empty, "neither mask"),
    (_one_when_empty, "nan"),
    (_with_background, "class 0"),
    (_python_division, "zerodivisionerror"),
    (_merged_foreground, "all foreground classes together"),
    (_nan_when_missed, "0, not nan"),
    (lambda truth, prediction, n_classes: [(0.9, 0.8)], "dict"),
    (lambda truth, prediction, n_classes: {1: 0.9}, "pair"),
    (lambda truth, prediction, n_classes: {c: (0.5, 0.3) for c in range(1, 6)}, "keys"),
])
def test_dice_iou_mistakes_are_named(mistake, words):
    feedback = ch07.check_dice_iou(mistake)
    assert not feedback and words in message(feedback), str(feedback)


def test_dice_iou_placeholder_is_not_attempted():
    assert "not attempted" in message(ch07.check_dice_iou(placeholder))
