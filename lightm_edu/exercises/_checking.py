"""Building blocks of the exercise checkers: feedback objects and tensor comparisons."""

from __future__ import annotations

import html
import numbers
import traceback
from dataclasses import dataclass, field


@dataclass
class Feedback:
    """The result of checking one answer.

    Attributes:
        passed: whether the answer is correct.
        title: one line, e.g. "Correct" or "Not yet: wrong shape".
        details: further lines: what differs, and a hint.
    """

    passed: bool
    title: str
    details: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        mark = "[correct]" if self.passed else "[not yet]"
        return "\n".join([f"{mark} {self.title}"] + [f"  - {line}" for line in self.details])

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour, mark = ("#1a7f37", "&#10004;") if self.passed else ("#b35900", "&#10008;")
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.details)
        body = f"<ul style='margin:0.2em 0 0 1em'>{items}</ul>" if items else ""
        return (f"<div style='border-left:4px solid {colour};padding:0.3em 0.8em'>"
                f"<b style='color:{colour}'>{mark} {html.escape(self.title)}</b>{body}</div>")


def correct(message: str = "Correct.", *details: str) -> Feedback:
    return Feedback(True, message, list(details))


def wrong(title: str, *details: str) -> Feedback:
    return Feedback(False, title, [d for d in details if d])


def not_attempted(what: str = "this exercise") -> Feedback:
    return Feedback(False, f"Not attempted yet: fill in {what}, then run the check again.")


def in_case(feedback: Feedback, case: str) -> Feedback:
    """Say which test case a failure comes from (not needed for "not attempted yet")."""
    if not feedback.title.startswith("Not attempted"):
        feedback.details.insert(0, case)
    return feedback


def call_learner(fn, *args, **kwargs):
    """Call the learner's function; return ``(result, None)`` or ``(None, Feedback)`` when it
    raised, returned None, or is still the ``NotImplementedError`` placeholder.

    The Feedback of a failure is falsy (it did not pass), so test it with ``is not None``::

        result, failure = call_learner(fn, x)
        if failure is not None:
            return failure
    """
    if fn is None or fn is Ellipsis:
        return None, not_attempted()
    if not callable(fn):
        return None, wrong(f"Expected a function, got a {type(fn).__name__}.",
                           "Pass the function itself, without calling it: check(my_function).")
    try:
        result = fn(*args, **kwargs)
    except NotImplementedError:
        return None, not_attempted("the function body")
    except Exception as error:  # the learner's bug: report it instead of stopping the notebook
        frames = _learner_frames(traceback.extract_tb(error.__traceback__))
        where = ""
        if frames:
            where = f" (line {frames[-1].lineno}" + (f": {frames[-1].line})" if frames[-1].line else ")")
        return None, wrong(f"Your function raised {type(error).__name__}: {error}{where}",
                           "Run it on the example inputs in the exercise to see the full traceback.")
    if result is None:
        return None, wrong("Your function returned None.", "Did you forget a `return` statement?")
    return result, None


def _learner_frames(frames):
    """The traceback frames from the learner's code: not from this checker, this package or a
    library (so an error raised deep inside torch points at the learner's line that called it)."""
    import os

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    libraries = ("site-packages", "dist-packages", os.path.dirname(os.__file__))
    return [f for f in frames
            if not f.filename.startswith(package) and not any(lib in f.filename for lib in libraries)]


def compare_tensors(got, expected, name: str = "result", rtol: float = 1e-4, atol: float = 1e-6,
                    hint: str = "") -> Feedback | None:
    """Compare a learner's tensor with the expected one.

    Returns None when they agree (so checkers can chain comparisons), else a Feedback saying what
    differs: type, shape, NaNs, or the largest error and where it is.
    """
    import torch

    if not isinstance(got, torch.Tensor):
        try:
            got = torch.as_tensor(got, dtype=expected.dtype)
        except Exception:
            return wrong(f"`{name}` should be a tensor, got {type(got).__name__}.", hint)
    if tuple(got.shape) != tuple(expected.shape):
        return wrong(f"`{name}` has shape {tuple(got.shape)}, expected {tuple(expected.shape)}.",
                     "Check which dimensions you summed over or broadcast.", hint)
    got = got.detach().to(expected.dtype)
    if torch.isnan(got).any() and not torch.isnan(expected).any():
        return wrong(f"`{name}` contains NaN.", "Look for 0/0 or the log of a non-positive number.", hint)
    if torch.allclose(got, expected, rtol=rtol, atol=atol):
        return None
    error = (got - expected).abs()
    worst = divmod_index(int(error.argmax()), tuple(expected.shape))
    return wrong(f"`{name}` has the right shape but different values.",
                 f"Largest difference {error.max().item():.3g} at index {worst}: "
                 f"you have {got[worst].item():.6g}, expected {expected[worst].item():.6g}.", hint)


def as_number(value):
    """The learner's value as a Python float: a Python or NumPy real number, or a one-element
    tensor or array; None for anything else (a bool included). Never raises."""
    if not isinstance(value, numbers.Real) and hasattr(value, "item"):
        try:
            value = value.item()
        except Exception:  # more than one element, or an object whose item() is something else
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def as_int_tuple(value):
    """A tuple of ints from a tuple/list/torch.Size/array of whole numbers (e.g. a shape a learner
    returned), else None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (tuple, list)):
        return None
    items = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or v != int(v):
            return None
        items.append(int(v))
    return tuple(items)


def divmod_index(flat: int, shape: tuple) -> tuple:
    """Turn a flat index into a multi-index for ``shape``."""
    index = []
    for size in reversed(shape):
        flat, rest = divmod(flat, size)
        index.append(rest)
    return tuple(reversed(index))
