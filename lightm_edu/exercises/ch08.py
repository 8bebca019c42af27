"""Checkers for the exercises of chapter 8, "Training LightM-UNet on chest X-rays".

Each checker compares the learner's answer with what the package's training and evaluation code
actually does (a real ``LambdaLR`` schedule built like :func:`lightm_edu.train.train` builds it,
MONAI's ``DiceCELoss`` with the training arguments, the time-budget rule of the training loop, a
metrics table like :func:`lightm_edu.evaluate.evaluate` writes) and returns a
:class:`~lightm_edu.exercises.Feedback`: truthy when correct, and otherwise saying what is wrong,
naming typical mistakes, with a hint. A checker never raises on a wrong or missing answer.

    check_poly_lr(fn)          exercise 1: fn(epoch, epochs, lr0, power) -> the learning rate of an epoch
    check_dice_ce(fn)          exercise 2: fn(logits (b, k, h, w), label (b, 1, h, w)) -> the training loss
    check_epochs_run(fn)       exercise 3: fn(epoch_seconds, max_minutes, epochs) -> epochs that run
    check_worst_cases(fn)      exercise 4: fn(table, k) -> the k case ids with the lowest Dice, worst first
"""

from __future__ import annotations

import math
import numbers

from ._checking import Feedback, as_number, call_learner, correct, in_case, wrong

__all__ = ["check_poly_lr", "check_dice_ce", "check_epochs_run", "check_worst_cases", "training_loss",
           "scheduled_lrs", "epochs_run", "metrics_table", "POLY_LR_CASES", "EPOCHS_RUN_CASES"]

#: (epochs, lr0, power) for exercise 1: the committed 2D recipe, the official one, a linear decay.
POLY_LR_CASES = ((16, 1e-3, 0.9), (100, 1e-4, 0.9), (5, 0.01, 1.0))

#: (epoch_seconds, max_minutes, epochs) for exercise 3.
EPOCHS_RUN_CASES = (([44.9] * 16, 7.5, 16),      # the budget ends in the middle of the run
                    ([50.0] * 16, 7.5, 16),      # the clock reads exactly 450 s before the 10th epoch
                    ([30.0] * 12, 60.0, 12),     # the budget is never reached: all epochs run
                    ([100.0, 40.0, 40.0, 40.0, 40.0, 40.0], 2.0, 6))  # a slow first epoch


# ----------------------------------------------------------------------------------- exercise 1


def scheduled_lrs(epochs: int, lr0: float, power: float = 0.9) -> list[float]:
    """The learning rate of every epoch as the training loop gets it: Adam with lr0, stepped by a
    ``LambdaLR`` of :func:`lightm_edu.train.poly_lr_factor` once per epoch, exactly as
    :func:`lightm_edu.train.train` builds it."""
    import torch

    from ..train import poly_lr_factor

    weight = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.Adam([weight], lr=lr0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda epoch: poly_lr_factor(min(epoch, epochs - 1), epochs, power))
    lrs = []
    for _ in range(epochs):
        lrs.append(optimiser.param_groups[0]["lr"])
        optimiser.step()  # (no gradient: nothing changes) keeps the scheduler from warning
        scheduler.step()
    return lrs


def check_poly_lr(fn) -> Feedback:
    """Check ``fn(epoch, epochs, lr0, power) -> learning rate during epoch`` (epochs counted from 0).

    Compared, epoch by epoch, with the learning rates that a real optimiser and ``LambdaLR``
    scheduler give when built like :func:`lightm_edu.train.train` builds them
    (:func:`scheduled_lrs`), for every case of ``POLY_LR_CASES``.
    """
    for epochs, lr0, power in POLY_LR_CASES:
        case = f"Case epochs={epochs}, lr0={lr0:g}, power={power:g}."
        expected = scheduled_lrs(epochs, lr0, power)
        got = []
        for epoch in range(epochs):
            value, problem = call_learner(fn, epoch, epochs, lr0, power)
            if problem is not None:
                return in_case(problem, f"{case} epoch={epoch}.")
            number = as_number(value)
            if number is None:
                return wrong(f"Expected a number, got {type(value).__name__}: {value!r}.", f"{case} epoch={epoch}.")
            got.append(number)
        if all(math.isclose(g, e, rel_tol=1e-6, abs_tol=1e-12) for g, e in zip(got, expected)):
            continue
        first = next(i for i, (g, e) in enumerate(zip(got, expected))
                     if not math.isclose(g, e, rel_tol=1e-6, abs_tol=1e-12))
        details = [case, f"Epoch {first}: you have {got[first]:.6g}, the scheduler gives {expected[first]:.6g}."]
        known = (
            ([lr0 * (1 - min(e + 1, epochs) / epochs) ** power for e in range(epochs)],
             "You are one epoch ahead: the first epoch (epoch 0) runs at lr0 itself.",
             "Use (1 - epoch / epochs) with epoch counted from 0."),
            ([(1 - e / epochs) ** power for e in range(epochs)],
             "You returned the factor, not the learning rate.", "Multiply the factor by lr0."),
            ([lr0 * (1 - e / epochs) for e in range(epochs)],
             "You left out the power.", "The factor is (1 - epoch / epochs) ** power."),
            ([lr0 * (1 - (e / epochs) ** power) for e in range(epochs)],
             "The power applies to the whole bracket (1 - epoch / epochs), not to epoch / epochs.",
             "lr0 * (1 - epoch / epochs) ** power."),
            ([lr0 * (1 - e // epochs) ** power for e in range(epochs)],
             "Integer division: epoch // epochs is 0 for every epoch, so the rate never decays.",
             "Use true division, epoch / epochs."),
        )
        if power == 1.0:  # with power 1, leaving out the power is not a mistake
            known = tuple(k for k in known if "power" not in k[1].lower())
        for candidate, title, hint in known:
            if all(math.isclose(g, c, rel_tol=1e-6, abs_tol=1e-12) for g, c in zip(got, candidate)):
                return wrong(title, *details, hint)
        return Feedback(False, "Not yet: your learning rates differ from the scheduler's.",
                        details + ["The rate of epoch e (from 0) is lr0 * (1 - e / epochs) ** power."])
    return correct("Correct: your learning rates match a real optimiser with the package's LambdaLR schedule.",
                   f"Checked {len(POLY_LR_CASES)} schedules, every epoch of each.")


# ----------------------------------------------------------------------------------- exercise 2


def training_loss(logits, label):
    """The loss :func:`lightm_edu.train.train` minimises, :func:`lightm_edu.train.make_loss`:
    MONAI's ``DiceCELoss`` with no background in the Dice term, one-hot labels, softmax, smoothing
    1e-5 and weights 1 : 1.

    Args:
        logits: (b, k, *spatial) raw class scores.
        label: (b, 1, *spatial) class indices 0 .. k - 1.
    """
    from ..train import make_loss

    return make_loss()(logits, label)


def _loss_cases():
    """(description, logits, label): 2 and 3 classes, a batch of 2, one image without foreground."""
    import torch

    generator = torch.Generator().manual_seed(8)
    cases = []
    for b, k, size in ((2, 2, (16, 16)), (3, 3, (12, 10))):
        logits = torch.randn(b, k, *size, generator=generator) * 2
        label = torch.randint(0, k, (b, 1, *size), generator=generator)
        cases.append((f"logits {tuple(logits.shape)}, label {tuple(label.shape)}", logits, label))
    logits = torch.randn(2, 2, 8, 8, generator=generator)
    label = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    label[0, 0, 2:6, 3:7] = 1  # the second image has no foreground at all
    cases.append(("logits (2, 2, 8, 8), label (2, 1, 8, 8) with an image without foreground", logits, label))
    return cases


def _loss_variants(logits, label) -> list[tuple[float, str, str]]:
    """(value, mistake, hint) of typical wrong losses for these inputs."""
    import torch
    import torch.nn.functional as F
    from monai.losses import DiceLoss

    def dice(**kwargs):
        arguments = dict(include_background=False, to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5)
        arguments.update(kwargs)
        return DiceLoss(**arguments)(logits, label).item()

    ce = F.cross_entropy(logits, label[:, 0]).item()
    return [
        (dice(include_background=True) + ce, "Your Dice term includes the background class.",
         "Leave out channel 0: the training loss uses include_background=False."),
        (dice(batch=True) + ce, "You computed one Dice over the whole batch.",
         "Compute the Dice of each image and each foreground class, then average them."),
        (dice(softmax=False) + ce, "Your Dice term uses the raw logits, not probabilities.",
         "Apply softmax over the class axis (dim=1) before the Dice."),
        (dice(), "You returned the Dice loss only.", "Add the cross-entropy term (weights 1 : 1)."),
        (ce, "You returned the cross-entropy only.", "Add the soft Dice loss over the foreground classes."),
        (dice() + ce * logits.shape[0], "Your cross-entropy is summed over the batch, not averaged.",
         "Average the cross-entropy over every pixel of every image (F.cross_entropy's default)."),
        (dice() + F.cross_entropy(torch.softmax(logits, 1), label[:, 0]).item(),
         "Your cross-entropy got probabilities: F.cross_entropy applies log-softmax itself.",
         "Pass the raw logits to F.cross_entropy."),
    ]


def check_dice_ce(fn) -> Feedback:
    """Check ``fn(logits, label) -> scalar loss`` against :func:`training_loss` (MONAI's
    ``DiceCELoss`` with the training arguments) on 2- and 3-class inputs; typical mistakes
    (background in the Dice, batch Dice, no softmax, one term only, summed cross-entropy) are named."""
    import torch

    for description, logits, label in _loss_cases():
        case = f"Case {description}."
        expected = training_loss(logits, label).item()
        got, problem = call_learner(fn, logits.clone(), label.clone())
        if problem is not None:
            return in_case(problem, case)
        if isinstance(got, torch.Tensor) and got.numel() != 1:
            return wrong(f"Your loss has shape {tuple(got.shape)}; a loss is one number.", case,
                         "Average over images, classes and pixels (mean), as the formula says.")
        value = as_number(got)
        if value is None:
            return wrong(f"Expected a number (or a one-element tensor), got {type(got).__name__}.", case)
        if math.isclose(value, expected, rel_tol=1e-4, abs_tol=1e-5):
            continue
        for candidate, title, hint in _loss_variants(logits, label):
            if math.isclose(value, candidate, rel_tol=1e-4, abs_tol=1e-5):
                return wrong(title, case, f"You have {value:.6f}, the training loss is {expected:.6f}.", hint)
        return wrong(f"Your loss is {value:.6f}, the training loss is {expected:.6f}.", case,
                     "Soft Dice per image and foreground class, (2 sum(p g) + 1e-5) / (sum(p) + sum(g) + 1e-5); "
                     "the loss is 1 - their mean, plus the mean cross-entropy of the logits.")
    return correct("Correct: your loss matches MONAI's DiceCELoss as the training loop uses it.",
                   f"Checked {len(_loss_cases())} inputs with 2 and 3 classes.")


# ----------------------------------------------------------------------------------- exercise 3


def epochs_run(epoch_seconds, max_minutes: float, epochs: int) -> int:
    """How many epochs the training loop runs: before each epoch it stops once the time since the
    start exceeds ``max_minutes`` (the rule of :func:`lightm_edu.train.train`), counting only the
    given epoch durations as time."""
    elapsed, run = 0.0, 0
    for seconds in list(epoch_seconds)[:epochs]:
        if elapsed > 60 * max_minutes:
            break
        elapsed += seconds
        run += 1
    return run


def check_epochs_run(fn) -> Feedback:
    """Check ``fn(epoch_seconds, max_minutes, epochs) -> number of epochs the loop runs`` against
    :func:`epochs_run` for every case of ``EPOCHS_RUN_CASES``."""
    for seconds, minutes, epochs in EPOCHS_RUN_CASES:
        shown = f"[{seconds[0]:g}, {seconds[1]:g}, ...]" if len(set(seconds)) > 1 else f"[{seconds[0]:g}] * {len(seconds)}"
        case = f"Case epoch_seconds={shown}, max_minutes={minutes:g}, epochs={epochs}."
        expected = epochs_run(seconds, minutes, epochs)
        got, problem = call_learner(fn, list(seconds), minutes, epochs)
        if problem is not None:
            return in_case(problem, case)
        if isinstance(got, bool) or not isinstance(got, numbers.Real) or got != int(got):
            return wrong(f"Expected a whole number of epochs, got {got!r}.", case)
        got = int(got)
        if got == expected:
            continue
        budget = 60 * minutes
        finished_inside, total = 0, 0.0
        for s in seconds[:epochs]:
            if total + s > budget:
                break
            total += s
            finished_inside += 1
        details = [case, f"You have {got}, the loop runs {expected}."]
        if got == expected - 1 and sum(seconds[:expected - 1]) == budget:
            return wrong("The loop stops only when the time *exceeds* the budget (elapsed > budget).", *details,
                         "An epoch that starts exactly at the budget still runs.")
        if got == finished_inside:
            return wrong("You counted only the epochs that finish inside the budget.", *details,
                         "The loop checks the clock before an epoch starts: an epoch that starts in time runs "
                         "to its end, even past the budget.")
        if got == epochs_run(seconds, minutes * 60, epochs) or got == epochs_run(seconds, minutes / 60, epochs):
            return wrong("Minutes and seconds are mixed up.", *details,
                         "max_minutes is in minutes and the durations in seconds: the budget is 60 * max_minutes s.")
        if got > epochs:
            return wrong(f"You ran more than the {epochs} epochs the configuration asks for.", *details,
                         "The run also ends after `epochs` epochs, whatever the time.")
        return wrong(f"You have {got} epochs, the loop runs {expected}.", *details,
                     "Before each epoch: stop if the elapsed time is greater than 60 * max_minutes; "
                     "otherwise run it and add its duration.")
    return correct("Correct: your count follows the time-budget rule of the training loop.",
                   f"Checked {len(EPOCHS_RUN_CASES)} runs, including one that never reaches its budget.")


# ----------------------------------------------------------------------------------- exercise 4


def metrics_table(n: int = 12, seed: int = 4):
    """A per-case metrics table like the one :func:`lightm_edu.evaluate.evaluate` writes for the
    lungs: case_id, dice_lung, iou_lung, hd95_lung (made up, distinct Dice values), in case-id order."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    dice = 1 - rng.permutation(np.linspace(0.012, 0.31, n)) ** 1.5
    hd95 = np.round(2 + 60 * (1 - dice) + rng.uniform(0, 25, n), 2)
    table = pd.DataFrame({"case_id": [f"vp_{i:04d}" for i in rng.choice(np.arange(1, 999), n, replace=False)],
                          "dice_lung": dice, "iou_lung": dice / (2 - dice), "hd95_lung": hd95})
    return table.sort_values("case_id").reset_index(drop=True)


def check_worst_cases(fn) -> Feedback:
    """Check ``fn(table, k) -> list of the k case ids with the lowest dice_lung, worst first`` on
    tables from :func:`metrics_table`; the learner's table is a copy, so changing it does no harm."""
    for n, k, seed in ((12, 3, 4), (20, 5, 11)):
        table = metrics_table(n, seed)
        case = f"Case a table of {n} cases, k={k}."
        expected = list(table.sort_values("dice_lung")["case_id"][:k])
        got, problem = call_learner(fn, table.copy(), k)
        if problem is not None:
            return in_case(problem, case)
        if hasattr(got, "tolist"):
            got = got.tolist()
        if isinstance(got, tuple):
            got = list(got)
        if not isinstance(got, list):
            return wrong(f"Expected a list of case ids, got {type(got).__name__}.", case,
                         "Return e.g. list(table.sort_values(...)['case_id'][:k]).")
        if got == expected:
            continue
        details = [case, f"You have {got}, expected {expected}."]
        by_index = list(table.sort_values("dice_lung").index[:k])
        if got == by_index:
            return wrong("You returned row numbers, not case ids.", *details, "Take the 'case_id' column.")
        if got == list(table.sort_values("dice_lung", ascending=False)["case_id"][:k]):
            return wrong("Those are the best cases, not the worst.", *details,
                         "A low Dice is bad: sort in ascending order.")
        if got == list(table.sort_values("hd95_lung")["case_id"][:k]):
            return wrong("You sorted by HD95 in ascending order: those are the cases with the *smallest* "
                         "boundary error.", *details, "Sort by dice_lung, lowest first.")
        if len(got) != k:
            return wrong(f"You returned {len(got)} case ids, not k = {k}.", *details)
        if sorted(got) == sorted(expected):
            return wrong("The right cases, in the wrong order.", *details, "Put the worst (lowest Dice) first.")
        return wrong("Not the cases with the lowest Dice.", *details, "Sort by dice_lung, ascending, and take k.")
    return correct("Correct: you found the worst cases, worst first.")
