"""The checkers of chapter 8 accept the reference solutions and name the typical mistakes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightm_edu.exercises import ch08
from lightm_edu.train import poly_lr_factor


def message(feedback) -> str:
    return str(feedback).lower()


# ----------------------------------------------------------------------------------- schedule


def solution_poly_lr(epoch, epochs, lr0, power=0.9):
    return lr0 * (1 - epoch / epochs) ** power


def test_poly_lr_accepts_solution():
    feedback = ch08.check_poly_lr(solution_poly_lr)
    assert feedback, str(feedback)


def test_scheduled_lrs_follow_poly_lr_factor():
    lrs = ch08.scheduled_lrs(16, 1e-3)
    assert lrs[0] == 1e-3
    assert all(abs(lr - 1e-3 * poly_lr_factor(e, 16)) < 1e-12 for e, lr in enumerate(lrs))


def test_poly_lr_placeholder_is_not_attempted():
    def placeholder(epoch, epochs, lr0, power=0.9):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch08.check_poly_lr(placeholder))


def test_poly_lr_one_epoch_ahead_is_named():
    feedback = ch08.check_poly_lr(lambda e, n, lr0, p=0.9: lr0 * (1 - (e + 1) / n) ** p)
    assert not feedback and "one epoch ahead" in message(feedback)


def test_poly_lr_factor_only_is_named():
    feedback = ch08.check_poly_lr(lambda e, n, lr0, p=0.9: (1 - e / n) ** p)
    assert not feedback and "factor, not the learning rate" in message(feedback)


def test_poly_lr_missing_power_is_named():
    feedback = ch08.check_poly_lr(lambda e, n, lr0, p=0.9: lr0 * (1 - e / n))
    assert not feedback and "left out the power" in message(feedback)


def test_poly_lr_power_on_the_ratio_is_named():
    feedback = ch08.check_poly_lr(lambda e, n, lr0, p=0.9: lr0 * (1 - (e / n) ** p))
    assert not feedback and "whole bracket" in message(feedback)


def test_poly_lr_integer_division_is_named():
    feedback = ch08.check_poly_lr(lambda e, n, lr0, p=0.9: lr0 * (1 - e // n) ** p)
    assert not feedback and "integer division" in message(feedback)


def test_poly_lr_non_number_is_named():
    feedback = ch08.check_poly_lr(lambda e, n, lr0, p=0.9: [lr0])
    assert not feedback and "expected a number" in message(feedback)


# ----------------------------------------------------------------------------------- Dice + CE


def solution_dice_ce(logits, label):
    k = logits.shape[1]
    p = logits.softmax(dim=1)
    g = F.one_hot(label[:, 0], k).permute(0, 3, 1, 2).float()
    p, g = p[:, 1:], g[:, 1:]
    intersection = (p * g).sum(dim=(2, 3))
    dice = (2 * intersection + 1e-5) / (p.sum(dim=(2, 3)) + g.sum(dim=(2, 3)) + 1e-5)
    return (1 - dice.mean()) + F.cross_entropy(logits, label[:, 0])


def _with(**changes):
    """The solution with one typical mistake."""
    def loss(logits, label):
        k = logits.shape[1]
        p = logits if changes.get("no_softmax") else logits.softmax(dim=1)
        g = F.one_hot(label[:, 0], k).permute(0, 3, 1, 2).float()
        if not changes.get("background"):
            p, g = p[:, 1:], g[:, 1:]
        dims = (0, 2, 3) if changes.get("batch") else (2, 3)
        dice = (2 * (p * g).sum(dim=dims) + 1e-5) / (p.sum(dim=dims) + g.sum(dim=dims) + 1e-5)
        ce = F.cross_entropy(logits, label[:, 0], reduction="sum" if changes.get("ce_sum") else "mean")
        if changes.get("ce_sum"):
            ce = ce / label[0].numel()   # summed over the batch, averaged over the pixels of one image
        if changes.get("dice_only"):
            return 1 - dice.mean()
        if changes.get("ce_only"):
            return ce
        return (1 - dice.mean()) + ce
    return loss


def test_dice_ce_accepts_solution():
    feedback = ch08.check_dice_ce(solution_dice_ce)
    assert feedback, str(feedback)


def test_training_loss_is_monai_dice_ce():
    torch.manual_seed(0)
    logits, label = torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8))
    assert torch.allclose(ch08.training_loss(logits, label), solution_dice_ce(logits, label), atol=1e-6)


def test_dice_ce_background_is_named():
    feedback = ch08.check_dice_ce(_with(background=True))
    assert not feedback and "background" in message(feedback)


def test_dice_ce_batch_dice_is_named():
    feedback = ch08.check_dice_ce(_with(batch=True))
    assert not feedback and "whole batch" in message(feedback)


def test_dice_ce_no_softmax_is_named():
    feedback = ch08.check_dice_ce(_with(no_softmax=True))
    assert not feedback and "softmax" in message(feedback)


def test_dice_ce_one_term_is_named():
    assert "dice loss only" in message(ch08.check_dice_ce(_with(dice_only=True)))
    assert "cross-entropy only" in message(ch08.check_dice_ce(_with(ce_only=True)))


def test_dice_ce_summed_cross_entropy_is_named():
    feedback = ch08.check_dice_ce(_with(ce_sum=True))
    assert not feedback and "summed over the batch" in message(feedback)


def test_dice_ce_non_scalar_is_named():
    feedback = ch08.check_dice_ce(lambda logits, label: logits.mean(dim=(2, 3)))
    assert not feedback and "one number" in message(feedback)


def test_dice_ce_exception_is_reported():
    feedback = ch08.check_dice_ce(lambda logits, label: logits @ label)
    assert not feedback and "raised" in message(feedback) and "case logits" in message(feedback)


# ----------------------------------------------------------------------------------- time budget


def solution_epochs_run(epoch_seconds, max_minutes, epochs):
    elapsed, run = 0.0, 0
    for seconds in epoch_seconds[:epochs]:
        if elapsed > 60 * max_minutes:
            break
        elapsed += seconds
        run += 1
    return run


def test_epochs_run_accepts_solution():
    feedback = ch08.check_epochs_run(solution_epochs_run)
    assert feedback, str(feedback)


def test_epochs_run_reference_examples():
    assert ch08.epochs_run([45.0] * 16, 7.5, 16) == 11      # epoch 11 starts at exactly 450 s
    assert ch08.epochs_run([30.0] * 12, 60.0, 12) == 12


def test_epochs_run_only_finished_epochs_is_named():
    def finished_inside(epoch_seconds, max_minutes, epochs):
        elapsed, run = 0.0, 0
        for seconds in epoch_seconds[:epochs]:
            if elapsed + seconds > 60 * max_minutes:
                break
            elapsed += seconds
            run += 1
        return run

    feedback = ch08.check_epochs_run(finished_inside)
    assert not feedback and "finish inside the budget" in message(feedback)


def test_epochs_run_greater_or_equal_is_named():
    def at_least(epoch_seconds, max_minutes, epochs):
        elapsed, run = 0.0, 0
        for seconds in epoch_seconds[:epochs]:
            if elapsed >= 60 * max_minutes:
                break
            elapsed += seconds
            run += 1
        return run

    feedback = ch08.check_epochs_run(at_least)
    assert not feedback and "exceeds" in message(feedback)


def test_epochs_run_minutes_as_seconds_is_named():
    feedback = ch08.check_epochs_run(lambda s, m, n: solution_epochs_run(s, m / 60, n))
    assert not feedback and "minutes and seconds" in message(feedback)


def test_epochs_run_cap_ignored_is_named():
    def no_cap(epoch_seconds, max_minutes, epochs):
        return solution_epochs_run(epoch_seconds + [30.0] * 20, max_minutes, epochs + 20)

    feedback = ch08.check_epochs_run(no_cap)
    assert not feedback and "more than the" in message(feedback)


def test_epochs_run_float_is_named():
    feedback = ch08.check_epochs_run(lambda s, m, n: 10.5)
    assert not feedback and "whole number" in message(feedback)


# ----------------------------------------------------------------------------------- worst cases


def solution_worst_cases(table, k):
    return list(table.sort_values("dice_lung")["case_id"][:k])


def test_worst_cases_accepts_solution():
    feedback = ch08.check_worst_cases(solution_worst_cases)
    assert feedback, str(feedback)


def test_metrics_table_has_distinct_dice_and_the_evaluate_columns():
    table = ch08.metrics_table()
    assert list(table.columns) == ["case_id", "dice_lung", "iou_lung", "hd95_lung"]
    assert table["dice_lung"].is_unique and table["dice_lung"].between(0, 1).all()


def test_worst_cases_best_instead_is_named():
    feedback = ch08.check_worst_cases(lambda t, k: list(t.sort_values("dice_lung", ascending=False)["case_id"][:k]))
    assert not feedback and "best cases" in message(feedback)


def test_worst_cases_row_numbers_are_named():
    feedback = ch08.check_worst_cases(lambda t, k: list(t.sort_values("dice_lung").index[:k]))
    assert not feedback and "row numbers" in message(feedback)


def test_worst_cases_hd95_ascending_is_named():
    feedback = ch08.check_worst_cases(lambda t, k: list(t.sort_values("hd95_lung")["case_id"][:k]))
    assert not feedback and "hd95" in message(feedback)


def test_worst_cases_wrong_order_is_named():
    feedback = ch08.check_worst_cases(lambda t, k: solution_worst_cases(t, k)[::-1])
    assert not feedback and "wrong order" in message(feedback)


def test_worst_cases_not_a_list_is_named():
    feedback = ch08.check_worst_cases(lambda t, k: "vp_0001")
    assert not feedback and "list of case ids" in message(feedback)
