"""Checkers for the exercises of chapter 6, "LightM-UNet".

Each checker compares the learner's answer with :class:`lightm_edu.model.LightMUNet` itself (it
builds the model and runs it, counts its modules, asks its ``official_key_map``, or calls
:func:`lightm_edu.model.pad_to_multiple`) and returns a :class:`~lightm_edu.exercises.Feedback`:
truthy when correct, and otherwise saying what is wrong, naming typical mistakes, with a hint. A
checker never raises on a wrong or missing answer.

    check_encoder_shapes(fn)     exercise 1: fn(input_shape, init_filters) -> the output shape
                                 (b, c, *s) of every encoder stage
    check_rvm_count(fn)          exercise 2: fn(blocks_down, blocks_up) -> the number of RVM layers
    check_our_names(answer)      exercise 3: {official key: our key} for OFFICIAL_KEYS
    check_padded_size(fn)        exercise 4: fn(size, multiple) -> the size pad_to_multiple pads to
"""

from __future__ import annotations

import numbers

from ._checking import Feedback, as_int_tuple, call_learner, correct, in_case, not_attempted, wrong

__all__ = ["check_encoder_shapes", "check_rvm_count", "check_our_names", "check_padded_size",
           "OFFICIAL_KEYS", "ENCODER_SHAPE_CASES", "RVM_COUNT_CASES", "PADDED_SIZE_CASES"]

#: (input_shape, init_filters) for exercise 1: 2D and 3D, small enough to run the model quickly.
ENCODER_SHAPE_CASES = (((1, 1, 64, 64), 32), ((2, 3, 48, 80), 16), ((1, 1, 16, 32, 24), 8))

#: (blocks_down, blocks_up) for exercise 2.
RVM_COUNT_CASES = (((1, 2, 2, 4), (1, 1, 1)), ((2, 2, 2, 2), (2, 2, 2)), ((1, 1, 1), (1, 1)),
                   ((3, 1, 2, 1, 2), (1, 1, 1, 1)))

#: Official state-dict keys of LightMUNet(2, 1, 2) whose names in lightm_edu exercise 3 asks for.
OFFICIAL_KEYS = ("down_layers.3.4.conv1.skip_scale", "down_layers.1.0.0.mamba.A_log",
                 "up_samples.2.0.conv.weight", "up_layers.0.0.conv.1.conv.weight")

#: (spatial size, multiple) for exercise 4.
PADDED_SIZE_CASES = (((30, 32), 8), ((256, 256), 8), ((1, 7, 9), 8), ((100, 37), 16), ((17,), 4))



# ----------------------------------------------------------------------------------- exercise 1


def encoder_shapes_by_running(input_shape, init_filters):
    """The output shape of every encoder stage, read by forward hooks from a real LightMUNet run
    on a zero input of ``input_shape``."""
    import torch

    from ..model import LightMUNet

    spatial_dims, in_channels = len(input_shape) - 2, input_shape[1]
    torch.manual_seed(0)
    model = LightMUNet(spatial_dims, in_channels, 2, init_filters=init_filters).eval()
    shapes = []
    handles = [stage.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
               for stage in model.encoder]
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def check_encoder_shapes(fn) -> Feedback:
    """Check ``fn(input_shape, init_filters) -> [shape of stage 0, ..., shape of stage 3]``.

    ``input_shape`` is (b, c, *s) with 2 or 3 spatial axes, all divisible by 8; each answer shape
    is (b, channels, *spatial) of that encoder stage's output. Compared with forward hooks on a
    real LightMUNet for every case of ``ENCODER_SHAPE_CASES``.
    """
    for input_shape, init_filters in ENCODER_SHAPE_CASES:
        case = f"Case input_shape={input_shape}, init_filters={init_filters}."
        expected = encoder_shapes_by_running(input_shape, init_filters)
        got, problem = call_learner(fn, input_shape, init_filters)
        if problem is not None:
            return in_case(problem, case)
        if not isinstance(got, (list, tuple)) or not got or as_int_tuple(got) is not None:
            return wrong(f"Expected a list of {len(expected)} shapes (one tuple per encoder stage), got "
                         f"{got!r}.", case, "Return e.g. [(1, 32, 64, 64), (1, 64, 32, 32), ...].")
        shapes = [as_int_tuple(s) for s in got]
        if any(s is None for s in shapes):
            return wrong("Every shape should be a tuple of whole numbers.", case,
                         f"You returned {got!r}. Use integer division // for the sizes.")
        if len(shapes) != len(expected):
            return wrong(f"You returned {len(shapes)} shapes; the encoder has {len(expected)} stages.", case,
                         "Stage 0 keeps the full resolution; stages 1, 2, 3 each pool by 2.")
        for i, (s, e) in enumerate(zip(shapes, expected)):
            if s == e:
                continue
            b, c, *spatial = input_shape
            if len(s) == len(e) - 1 and s == e[1:]:
                return wrong(f"Stage {i}: you returned {s}, without the batch axis.", case,
                             f"Keep the batch size first: {e}.")
            if len(s) != len(e):
                return wrong(f"Stage {i}: your shape {s} has {len(s)} axes, expected {len(e)} "
                             "(batch, channels, then the spatial axes).", case)
            details = [case, f"Stage {i}: you have {s}, the model gives {e}."]
            if s[0] != e[0]:
                details.append("The batch size never changes.")
            if s[1] != e[1]:
                if s[1] == init_filters * 2 ** (i + 1):
                    details.append(f"Channels are one doubling ahead: stage 0 has init_filters = {init_filters} "
                                   f"channels, stage i has init_filters * 2**i.")
                elif s[1] == c:
                    details.append("The stem maps the input's channels to init_filters before stage 0.")
                else:
                    details.append("Stage i has init_filters * 2**i channels.")
            if s[2:] != e[2:]:
                if s[2:] == tuple(n // 2 ** (i + 1) for n in spatial):
                    details.append("You pool once too often: stage 0 has no pooling, so stage i is at "
                                   "1/2**i of the input size.")
                elif s[2:] == tuple(n // 2 ** max(i - 1, 0) for n in spatial):
                    details.append("You pool once too few: stages 1, 2, 3 each halve every spatial axis.")
                else:
                    details.append("Stage i is at 1/2**i of the input size in every spatial axis.")
            return Feedback(False, f"Not yet: the shape after encoder stage {i} differs.", details)
    return correct("Correct: your shapes match the encoder stages of a real LightMUNet.",
                   f"Checked {len(ENCODER_SHAPE_CASES)} inputs, 2D and 3D, with forward hooks on the model.")


# ----------------------------------------------------------------------------------- exercise 2


def rvm_count_by_building(blocks_down, blocks_up) -> int:
    """The number of RVMLayer modules in LightMUNet(2, 1, 2, init_filters=8, blocks_down, blocks_up)."""
    from ..layers import RVMLayer
    from ..model import LightMUNet

    model = LightMUNet(2, 1, 2, init_filters=8, blocks_down=blocks_down, blocks_up=blocks_up)
    return sum(isinstance(m, RVMLayer) for m in model.modules())


def check_rvm_count(fn) -> Feedback:
    """Check ``fn(blocks_down, blocks_up) -> number of RVM layers`` of a LightMUNet.

    Compared with counting :class:`~lightm_edu.layers.RVMLayer` modules in models built with
    every case of ``RVM_COUNT_CASES``; typical miscounts (no downsampling layers, one RVM layer per
    block, a downsampling layer in stage 0, RVM layers in the decoder) are named.
    """
    for blocks_down, blocks_up in RVM_COUNT_CASES:
        case = f"Case blocks_down={blocks_down}, blocks_up={blocks_up}."
        expected = rvm_count_by_building(blocks_down, blocks_up)
        got, problem = call_learner(fn, blocks_down, blocks_up)
        if problem is not None:
            return in_case(problem, case)
        if isinstance(got, bool) or not isinstance(got, numbers.Real):
            return wrong(f"Expected a whole number, got {type(got).__name__}: {got!r}.", case)
        if got == expected:
            continue
        n_down = len(blocks_down) - 1
        known = {
            2 * sum(blocks_down): ("You left out the downsampling RVM layers.",
                                   f"Every stage after the first starts with one RVM layer C/2 -> C: {n_down} more."),
            sum(blocks_down) + n_down: ("You counted one RVM layer per residual Mamba block.",
                                        "A residual Mamba block holds two RVM layers (rvm1 and rvm2)."),
            sum(blocks_down): ("You counted the residual Mamba blocks, not the RVM layers.",
                               "Each block holds two RVM layers, and stages 1, 2, ... start with one more."),
            2 * sum(blocks_down) + n_down + 1: ("You gave stage 0 a downsampling RVM layer too.",
                                                "Stage 0 keeps the stem's resolution and width: no RVM layer "
                                                "before its blocks, no pooling."),
            2 * sum(blocks_down) + n_down + sum(blocks_up): ("You counted the decoder's up blocks as RVM layers.",
                                                             "The decoder uses convolutions only (1x1 conv, "
                                                             "upsampling, depthwise-separable conv)."),
            2 * sum(blocks_down) + n_down + 2 * sum(blocks_up): ("You counted RVM layers in the decoder.",
                                                                 "The decoder has none: only the encoder runs Mamba."),
        }
        title, hint = known.get(got, (f"{got} is not the number of RVM layers.",
                                      "Count per encoder stage: 2 per residual Mamba block, plus 1 for the "
                                      "downsampling layer in every stage but the first."))
        return wrong(title, case, f"Building the model gives {expected}.", hint)
    return correct("Correct: your count matches the RVMLayer modules of every model built.",
                   f"Checked {len(RVM_COUNT_CASES)} configurations, including the official (1, 2, 2, 4): "
                   f"{rvm_count_by_building((1, 2, 2, 4), (1, 1, 1))} layers.")


# ----------------------------------------------------------------------------------- exercise 3


def our_names() -> dict:
    """{official key: our key} for every key of LightMUNet(2, 1, 2), from ``official_key_map``."""
    from ..model import LightMUNet

    model = LightMUNet(2, 1, 2, init_filters=8)
    return {official: ours for ours, official in model.official_key_map().items()}


def check_our_names(answer) -> Feedback:
    """Check ``answer = {official key: our key}`` for the keys in ``OFFICIAL_KEYS``.

    The expected names come from the inverse of :meth:`LightMUNet.official_key_map`. Each wrong
    name is reported; the classic slip, the block index (``down_layers.i.j`` is ``blocks.(j-1)``),
    is named.
    """
    if answer is None or answer is Ellipsis:
        return not_attempted("the dictionary")
    if not isinstance(answer, dict):
        return wrong(f"Expected a dict {{official key: our key}}, got {type(answer).__name__}.")
    expected = our_names()
    missing = [k for k in OFFICIAL_KEYS if answer.get(k) in (None, Ellipsis, "")]
    if len(missing) == len(OFFICIAL_KEYS):
        return not_attempted("our names of the official keys")
    problems = []
    for key in OFFICIAL_KEYS:
        got, right = answer.get(key), expected[key]
        if key in missing:
            problems.append(f"{key}: not filled in yet.")
            continue
        if not isinstance(got, str):
            problems.append(f"{key}: expected a string, got {type(got).__name__}.")
            continue
        got = got.strip()
        if got == right:
            continue
        line = f"{key}: you wrote {got!r}, expected our name for it."
        if got.startswith("encoder.") and ".blocks." in got and ".blocks." in right:
            index_got, index_right = got.split(".blocks.")[1].split(".")[0], right.split(".blocks.")[1].split(".")[0]
            if index_got != index_right and index_got.isdigit() and index_right.isdigit():
                line += (f" Check the block index: in down_layers.i.j the official j = 0 is the downsampling "
                         f"RVM layer, so j >= 1 is our blocks.(j-1); here that is blocks.{index_right}.")
        elif got == key:
            line += " That is the official name itself: rename it with the table in the model module's docstring."
        elif "skip_scale" in got or ".mamba." in got or ".proj." in got or ".conv1." in got or ".conv2." in got:
            line += (" Rename inside the layers too: conv1/conv2 -> rvm1/rvm2, mamba -> mixer, "
                     "proj -> projection, skip_scale -> adjustment_factor.")
        problems.append(line)
    if not problems:
        return correct("Correct: all names match LightMUNet.official_key_map().",
                       *[f"{k} -> {expected[k]}" for k in OFFICIAL_KEYS])
    return Feedback(False, f"Not yet: {len(problems)} of {len(OFFICIAL_KEYS)} names differ.",
                    problems + ["The table in `lightm_edu.model`'s docstring maps every official prefix to ours "
                                "and lists the renames inside the layers (conv1 -> rvm1, mamba -> mixer, ...)."])


# ----------------------------------------------------------------------------------- exercise 4


def check_padded_size(fn) -> Feedback:
    """Check ``fn(size, multiple) -> padded size``: the spatial size that
    :func:`lightm_edu.model.pad_to_multiple` pads ``size`` to (each axis up to the next multiple,
    unchanged when it already is one). Cases: ``PADDED_SIZE_CASES``."""
    import torch

    from ..model import pad_to_multiple

    for size, multiple in PADDED_SIZE_CASES:
        case = f"Case size={size}, multiple={multiple}."
        padded, _ = pad_to_multiple(torch.zeros(1, 1, *size), multiple)
        expected = tuple(padded.shape[2:])
        got, problem = call_learner(fn, size, multiple)
        if problem is not None:
            return in_case(problem, case)
        if isinstance(got, numbers.Real) and not isinstance(got, bool) and len(size) == 1:
            got = (got,)
        values = as_int_tuple(got)
        if values is None:
            return wrong(f"Expected a tuple of whole numbers, one per axis, got {got!r}.", case,
                         "Return e.g. (32, 32); use integer arithmetic (// and %).")
        if values == expected:
            continue
        if len(values) != len(expected):
            return wrong(f"You returned {len(values)} sizes for {len(size)} axes.", case)
        known = (
            (tuple(s + multiple - s % multiple for s in size),
             "Sizes that are already multiples get a whole extra multiple.",
             "A divisible size needs no padding: add (-s) % multiple, which is 0 then."),
            (tuple(s // multiple * multiple for s in size),
             "You rounded down: that would crop the image.",
             "Round up to the next multiple: s + (-s) % multiple, or ceil(s / multiple) * multiple."),
            (tuple((-s) % multiple for s in size),
             "You returned the padding per axis, not the padded size.",
             "Add it to the size: s + (-s) % multiple."),
        )
        for candidate, title, hint in known:
            if values == candidate:
                return wrong(title, case, f"You have {values}, pad_to_multiple gives {expected}.", hint)
        return wrong(f"You have {values}, pad_to_multiple gives {expected}.", case,
                     "Each axis goes up to the smallest multiple of `multiple` that is >= its size.")
    return correct("Correct: your padded sizes match pad_to_multiple.",
                   f"Checked {len(PADDED_SIZE_CASES)} sizes in 1 to 3 axes, divisible and not.")
