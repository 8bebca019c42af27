"""The checkers of chapter 9 accept the reference solutions and name the typical mistakes."""

from __future__ import annotations

import math

import torch

from lightm_edu.exercises import ch09


def message(feedback) -> str:
    return str(feedback).lower()


# ----------------------------------------------------------------------------------- windows


def solution_window_count(image_size, roi_size, overlap):
    count = 1
    for size, roi in zip(image_size, roi_size):
        step = max(int(roi * (1 - overlap)), 1)
        count *= math.ceil((max(size, roi) - roi) / step) + 1
    return count


def test_window_count_accepts_solution():
    feedback = ch09.check_window_count(solution_window_count)
    assert feedback, str(feedback)


def test_windows_run_counts_monai_windows():
    assert ch09.windows_run((40, 56, 40), (32, 48, 32), 0.5) == 8
    assert ch09.windows_run((256, 256), (128, 128), 0.5) == 9
    assert ch09.windows_run((24, 56, 40), (32, 48, 32), 0.5) == 4


def test_window_count_placeholder_is_not_attempted():
    def placeholder(image_size, roi_size, overlap):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch09.check_window_count(placeholder))


def test_window_count_without_overlap_is_named():
    feedback = ch09.check_window_count(lambda i, r, o: math.prod(math.ceil(s / w) for s, w in zip(i, r)))
    assert not feedback and "ignored the overlap" in message(feedback)


def test_window_count_rounding_down_is_named():
    def floor(image_size, roi_size, overlap):
        return math.prod((max(s, r) - r) // max(int(r * (1 - overlap)), 1) + 1 for s, r in zip(image_size, roi_size))

    feedback = ch09.check_window_count(floor)
    assert not feedback and "rounded down" in message(feedback)


def test_window_count_whole_axis_is_named():
    def whole_axis(image_size, roi_size, overlap):
        return math.prod(math.ceil(max(s, r) / max(int(r * (1 - overlap)), 1)) for s, r in zip(image_size, roi_size))

    feedback = ch09.check_window_count(whole_axis)
    assert not feedback and "must fit inside" in message(feedback)


def test_window_count_sum_instead_of_product_is_named():
    def summed(image_size, roi_size, overlap):
        return sum(math.ceil((max(s, r) - r) / max(int(r * (1 - overlap)), 1)) + 1 for s, r in zip(image_size, roi_size))

    feedback = ch09.check_window_count(summed)
    assert not feedback and "product" in message(feedback)


# ----------------------------------------------------------------------------------- memory


def solution_tensor_gib(shape, dtype):
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size() / 2 ** 30


def test_tensor_gib_accepts_solution():
    feedback = ch09.check_tensor_gib(solution_tensor_gib)
    assert feedback, str(feedback)


def test_tensor_gib_reference_value():
    assert ch09.tensor_gib((2, 32, 128, 128, 128), "float32") == 0.5


def test_tensor_gib_gb_is_named():
    feedback = ch09.check_tensor_gib(lambda s, d: math.prod(s) * torch.empty((), dtype=d).element_size() / 1e9)
    assert not feedback and "gb (10**9 bytes)" in message(feedback)


def test_tensor_gib_fixed_four_bytes_is_named():
    feedback = ch09.check_tensor_gib(lambda s, d: math.prod(s) * 4 / 2 ** 30)
    assert not feedback and "assumed 4 bytes" in message(feedback)


def test_tensor_gib_bits_and_mib_are_named():
    def bits(s, d):
        return math.prod(s) * torch.empty((), dtype=d).element_size() * 8 / 2 ** 30

    def mib(s, d):
        return math.prod(s) * torch.empty((), dtype=d).element_size() / 2 ** 20

    assert "bits" in message(ch09.check_tensor_gib(bits))
    assert "mib" in message(ch09.check_tensor_gib(mib))


def test_tensor_gib_accepts_a_tensor_result():
    feedback = ch09.check_tensor_gib(lambda s, d: torch.tensor(solution_tensor_gib(s, d), dtype=torch.float64))
    assert feedback, str(feedback)


# ----------------------------------------------------------------------------------- patch start


def solution_patch_start(centre, patch_size, image_size):
    return tuple(min(max(c - p // 2, 0), s - p) for c, p, s in zip(centre, patch_size, image_size))


def test_patch_start_accepts_solution():
    feedback = ch09.check_patch_start(solution_patch_start)
    assert feedback, str(feedback)


def test_patch_start_by_cropping_matches_the_formula():
    for centre, patch, size in ch09.PATCH_CASES:
        assert ch09.patch_start_by_cropping(centre, patch, size) == solution_patch_start(centre, patch, size)


def test_patch_start_unclamped_is_named():
    feedback = ch09.check_patch_start(lambda c, p, s: tuple(x - y // 2 for x, y in zip(c, p)))
    assert not feedback and "leaves the image" in message(feedback)


def test_patch_start_at_centre_is_named():
    feedback = ch09.check_patch_start(lambda c, p, s: tuple(min(max(x, 0), n - y) for x, y, n in zip(c, p, s)))
    assert not feedback and "started the patch at the centre" in message(feedback)


def test_patch_start_off_by_one_is_named():
    feedback = ch09.check_patch_start(
        lambda c, p, s: tuple(min(max(x - y // 2, 0), n - y + 1) for x, y, n in zip(c, p, s)))
    assert not feedback and "off by one" in message(feedback)


def test_patch_start_corrected_centre_is_named():
    feedback = ch09.check_patch_start(
        lambda c, p, s: tuple(min(max(x, y // 2), n - y // 2) for x, y, n in zip(c, p, s)))
    assert not feedback and "corrected centre" in message(feedback)


def test_patch_start_wrong_length_is_named():
    feedback = ch09.check_patch_start(lambda c, p, s: (0,))
    assert not feedback and "numbers for" in message(feedback)
