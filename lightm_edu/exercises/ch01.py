"""Checkers for the exercises of chapter 1, "State-space models from scratch".

Each checker takes the learner's answer, compares it with :mod:`lightm_edu.ssm`, and returns a
:class:`~lightm_edu.exercises.Feedback` (truthy when correct) that says what is wrong and gives a
hint. None of them raises on a wrong or missing answer.

    check_zoh_diagonal(fn)          exercise 1: zero-order hold for a diagonal A, including A = 0
    check_kernel_taps(fn)           exercise 2: the kernel K_k = C A_bar^k B_bar with a loop
    check_mode_decay(slow, fast, half_life_steps)
                                    exercise 3: decay per step of the S4D-Real modes
    check_lti_by_convolution(fn)    exercise 4: the output of an LTI SSM as a convolution
"""

from __future__ import annotations

import math

import torch

from ..ssm import discretize_zoh, ssm_kernel, ssm_recurrence
from ._checking import Feedback, as_number, call_learner, compare_tensors, correct, in_case, not_attempted, wrong

__all__ = ["check_zoh_diagonal", "check_kernel_taps", "check_mode_decay", "check_lti_by_convolution",
           "MODE_DECAY_DELTA", "MODE_DECAY_N"]

# The setting of exercise 3: S4D-Real with n = 16 modes, A = -(1..16), discretised with this step.
MODE_DECAY_DELTA = 0.01
MODE_DECAY_N = 16


def _close(got: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    return tuple(got.shape) == tuple(expected.shape) and torch.allclose(got, expected, rtol=rtol, atol=atol)


def _as_tensor(value, like: torch.Tensor):
    """The learner's value as a tensor of ``like``'s dtype, or None if it cannot be converted."""
    try:
        return torch.as_tensor(value).detach().to(like.dtype)
    except Exception:
        return None


# ------------------------------------------------------------------------------------ exercise 1


def _zoh_cases():
    """(description, A, B, delta) for exercise 1; A is diagonal, float64."""
    g = torch.Generator().manual_seed(1)
    A3 = -torch.arange(1, 5, dtype=torch.float64).repeat(3, 1)  # (3, 4), S4D-Real
    return [
        ("a diagonal A = (-1, -2, -4, -16) with delta = 0.1",
         torch.tensor([-1.0, -2.0, -4.0, -16.0], dtype=torch.float64),
         torch.tensor([1.0, 0.5, -1.0, 2.0], dtype=torch.float64), 0.1),
        ("A = (0, -1, -3) with delta = 0.5 (the first mode has A = 0)",
         torch.tensor([0.0, -1.0, -3.0], dtype=torch.float64),
         torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), 0.5),
        ("a batch of diagonals A of shape (3, 4) with one delta per row, delta of shape (3, 1)",
         A3, torch.randn(3, 4, generator=g, dtype=torch.float64),
         torch.tensor([[0.01], [0.1], [1.0]], dtype=torch.float64)),
    ]


def check_zoh_diagonal(fn) -> Feedback:
    """Exercise 1: ``fn(A, B, delta) -> (A_bar, B_bar)``, zero-order hold for a diagonal ``A``.

    Compared with :func:`lightm_edu.ssm.discretize_zoh` on three cases: a plain diagonal, a diagonal
    that contains 0 (where ``B_bar = delta * B`` in the limit), and a batch of diagonals with a tensor
    ``delta``. Recognises Mamba's rule ``B_bar = delta B``, Euler's ``A_bar = 1 + delta A``, a factor
    of delta too many or too few, and NaN at ``A = 0``.
    """
    if fn is None or fn is Ellipsis:
        return not_attempted("the function zoh_diagonal")
    for number, (what, A, B, delta) in enumerate(_zoh_cases(), start=1):
        result, feedback = call_learner(fn, A.clone(), B.clone(), delta)
        case = f"Test case {number}: {what}."
        if feedback is not None:
            return in_case(feedback, case)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            return wrong("Return a pair (A_bar, B_bar).", case,
                         f"Your function returned a {type(result).__name__}"
                         + (f" of length {len(result)}." if isinstance(result, (tuple, list)) else "."))
        A_bar_exp, B_bar_exp = discretize_zoh(A, B, delta)
        A_bar, B_bar = (_as_tensor(r, A) for r in result)
        if A_bar is None or B_bar is None:
            return wrong("A_bar and B_bar should be tensors.", case)
        d = torch.as_tensor(delta, dtype=A.dtype)
        if A_bar.shape == A_bar_exp.shape and not _close(A_bar, A_bar_exp):
            if _close(A_bar, 1 + d * A):
                return wrong("A_bar is Euler's 1 + delta*A, not the zero-order hold.", case,
                             "The exact solution of x' = a x over one step multiplies x by exp(delta*a).")
        fb = compare_tensors(A_bar, A_bar_exp, "A_bar", rtol=1e-6, atol=1e-9,
                             hint="A_bar = exp(delta * A), element by element.")
        if fb is not None:
            return in_case(fb, case)
        if B_bar.shape == B_bar_exp.shape and not _close(B_bar, B_bar_exp):
            zero = A == 0
            if not torch.isfinite(B_bar).all():
                at_zero = bool((~torch.isfinite(B_bar) & zero.expand_as(B_bar)).any())
                return wrong("B_bar contains NaN or inf" + (" where A = 0." if at_zero else "."), case,
                             "(exp(delta*a) - 1) / a is 0/0 at a = 0, but its limit is delta. Write it as "
                             "delta * expm1(delta*a) / (delta*a) and use torch.where to put 1 where "
                             "delta*a == 0 (torch.expm1 is also more accurate for small delta*a).")
            if _close(B_bar, d * B):
                return wrong("B_bar is Mamba's simplified rule delta * B, not the zero-order hold.", case,
                             "ZOH integrates exp(s*a) over the step: B_bar = (exp(delta*a) - 1) / a * B. "
                             "delta * B is only its first-order term.")
            if _close(B_bar, B_bar_exp * d):
                return wrong("B_bar has one factor of delta too many.", case,
                             "B_bar = (exp(delta*a) - 1) / a * B; if you wrote it with expm1(delta*a) / "
                             "(delta*a), multiply by delta once.")
            if _close(B_bar, B_bar_exp / d):
                return wrong("B_bar is missing a factor of delta.", case,
                             "(exp(delta*a) - 1) / (delta*a) tends to 1, but B_bar should tend to delta * B "
                             "for small delta*a: multiply by delta.")
        fb = compare_tensors(B_bar, B_bar_exp, "B_bar", rtol=1e-6, atol=1e-9,
                             hint="B_bar = (exp(delta*a) - 1) / a * B, and delta * B where a = 0.")
        if fb is not None:
            return in_case(fb, case)
    return correct("Correct: your zero-order hold matches discretize_zoh.",
                   "Checked a plain diagonal, a diagonal with A = 0 (limit delta * B) and a batch of "
                   "diagonals with one delta per row.")


# ------------------------------------------------------------------------------------ exercise 2


def _kernel_cases():
    """(description, A_bar, B_bar, C, length) for exercise 2; full (n, n) matrices, float64."""
    from ..ssm import mass_spring_damper

    A, B, C, _ = mass_spring_damper()
    A_bar, B_bar = discretize_zoh(A, B, 0.1)
    g = torch.Generator().manual_seed(2)
    M = torch.randn(3, 3, generator=g, dtype=torch.float64)
    A_bar3 = 0.5 * M / torch.linalg.matrix_norm(M, ord=2)  # a stable, non-symmetric 3x3 matrix
    B3 = torch.randn(3, generator=g, dtype=torch.float64)
    C3 = torch.randn(3, generator=g, dtype=torch.float64)
    return [
        ("the spring discretised with ZOH at delta = 0.1, 10 taps", A_bar, B_bar, C, 10),
        ("a random non-symmetric 3x3 A_bar, 7 taps", A_bar3, B3, C3, 7),
        ("the same 3x3 system, 1 tap", A_bar3, B3, C3, 1),
    ]


def check_kernel_taps(fn) -> Feedback:
    """Exercise 2: ``fn(A_bar, B_bar, C, length) -> K`` of shape (length,), ``K_k = C A_bar^k B_bar``.

    Compared with :func:`lightm_edu.ssm.ssm_kernel` for full (n, n) matrices. Recognises a kernel
    that starts at ``C A_bar B_bar`` (off by one), the element-wise power ``A_bar ** k`` in place of
    the matrix power, the transposed ``A_bar``, and a reversed kernel.
    """
    if fn is None or fn is Ellipsis:
        return not_attempted("the function kernel_taps")
    for number, (what, A_bar, B_bar, C, length) in enumerate(_kernel_cases(), start=1):
        case = f"Test case {number}: {what}."
        result, feedback = call_learner(fn, A_bar.clone(), B_bar.clone(), C.clone(), length)
        if feedback is not None:
            return in_case(feedback, case)
        expected = ssm_kernel(A_bar, B_bar, C, length)
        K = _as_tensor(result, expected)
        if K is None:
            return wrong(f"The kernel should be a tensor, got {type(result).__name__}.", case,
                         "Collect the taps in a list and return torch.stack(taps).")
        if K.ndim == 1 and K.shape[0] != length:
            return wrong(f"The kernel has {K.shape[0]} taps, expected {length}.", case,
                         "Compute K_k for k = 0, 1, ..., length - 1: exactly `length` taps.")
        if K.shape == expected.shape and not _close(K, expected):
            longer = ssm_kernel(A_bar, B_bar, C, length + 1)
            elementwise = torch.stack([C @ (A_bar ** k) @ B_bar for k in range(length)])
            transposed = ssm_kernel(A_bar.T, B_bar, C, length)
            if _close(K, longer[1:]):
                return wrong("Your kernel is shifted by one tap: it starts with C A_bar B_bar.", case,
                             "The first tap is K_0 = C B_bar (A_bar^0 is the identity): the input of the "
                             "current step enters the state before y_t is read out.")
            if _close(K, expected.flip(0)):
                return wrong("Your kernel is reversed.", case, "K_0 = C B_bar comes first.")
            if _close(K, elementwise):
                return wrong("You used the element-wise power A_bar ** k.", case,
                             "For a matrix, A_bar ** k raises each entry to the power k. Use the matrix "
                             "power (torch.linalg.matrix_power) or, better, update v = A_bar @ v each step.")
            if _close(K, transposed):
                return wrong("You multiplied by the transpose of A_bar.", case,
                             "v @ A_bar computes A_bar^T v. Write A_bar @ v to apply A_bar to the vector v.")
        fb = compare_tensors(K, expected, "K", rtol=1e-6, atol=1e-10,
                             hint="K_k = C A_bar^k B_bar: start with v = B_bar and apply A_bar once per tap.")
        if fb is not None:
            return in_case(fb, case)
    return correct("Correct: your kernel matches ssm_kernel.",
                   "A loop of `length` matrix-vector products costs O(length n^2); for a diagonal A_bar "
                   "ssm_kernel computes all the powers at once.")


# ------------------------------------------------------------------------------------ exercise 3


def check_mode_decay(slowest, fastest, half_life_steps) -> Feedback:
    """Exercise 3: the decay per step of the slowest and fastest S4D-Real modes, and a half-life.

    The setting: n = 16 modes with ``A = -(1, ..., 16)``, step ``delta = 0.01``, Mamba's ``A_bar =
    exp(delta * A)``. Expected: ``slowest = exp(-0.01)``, ``fastest = exp(-0.16)``, and the number of
    steps after which the slowest mode keeps half its value, ``ln 2 / 0.01`` (within one step).
    Recognises swapped values, Euler's ``1 + delta * A``, and factors larger than 1.
    """
    values = {"slowest": slowest, "fastest": fastest, "half_life_steps": half_life_steps}
    missing = [name for name, v in values.items() if v is None or v is Ellipsis]
    if len(missing) == len(values):
        return not_attempted("slowest, fastest and half_life_steps")
    if missing:
        return wrong("Not finished: replace the `...` of " + ", ".join(missing) + " with a number.")
    numbers_ = {name: as_number(v) for name, v in values.items()}
    bad = [name for name, v in numbers_.items() if v is None]
    if bad:
        return wrong(", ".join(bad) + " should be a number (a float or a one-element tensor).")
    slow, fast, half = numbers_["slowest"], numbers_["fastest"], numbers_["half_life_steps"]
    delta, n = MODE_DECAY_DELTA, MODE_DECAY_N
    slow_exp, fast_exp = math.exp(-delta * 1), math.exp(-delta * n)
    half_exp = math.log(2) / delta

    def near(a, b, tol=1e-5):  # five significant digits are enough
        return math.isclose(a, b, rel_tol=tol, abs_tol=1e-12)

    if slow > 1 or fast > 1:
        return wrong("A decay factor larger than 1 would make the state grow without bound.",
                     "S4D-Real uses negative A = -(1, ..., n), so exp(delta * A) lies between 0 and 1.")
    if near(slow, fast_exp) and near(fast, slow_exp):
        return wrong("Your slowest and fastest values are swapped.",
                     "The slowest mode decays least: its A is closest to 0 (A = -1), so exp(delta*A) is "
                     "closest to 1.")
    if near(slow, 1 - delta, 1e-9) or near(fast, 1 - delta * n, 1e-9):
        return wrong("That is Euler's 1 + delta*A, a first-order approximation.",
                     "Mamba discretises A with the zero-order hold: A_bar = exp(delta * A). (If you "
                     "rounded exp(-0.01) to 0.99, give at least five significant digits.)")
    if not near(slow, slow_exp):
        hint = ("The slowest mode has A = -1 (S4D-Real: A = -(1, ..., n))."
                if near(slow, math.exp(-delta * n)) or near(slow, math.exp(-delta * (n - 1))) else
                "A_bar = exp(delta * A) for A = -1 and delta = 0.01.")
        return wrong(f"`slowest` = {slow:.6g} is not right.", hint)
    if not near(fast, fast_exp):
        hint = ("S4D-Real counts from 1 to n: the fastest mode has A = -16, not -15."
                if near(fast, math.exp(-delta * (n - 1))) else
                "The fastest mode has the most negative A: A = -16.")
        return wrong(f"`fastest` = {fast:.6g} is not right.", hint)
    if not abs(half - half_exp) <= 1.0:
        if abs(half - half_exp / n) <= 1.0:
            hint = "That is the half-life of the fastest mode; the question asks for the slowest (A = -1)."
        elif abs(half - 1 / delta) <= 1.0:
            hint = ("1/delta steps is the time constant (the value falls to 1/e = 0.37). For one half, "
                    "solve exp(-delta * k) = 1/2.")
        else:
            hint = "Solve slowest**k = 1/2 for k: k = ln 2 / (delta * 1)."
        return wrong(f"`half_life_steps` = {half:.4g} is not right.", hint)
    return correct("Correct.",
                   f"Per step the slowest mode keeps {slow_exp:.4f} of its value and the fastest "
                   f"{fast_exp:.4f}; the slowest mode halves after about {half_exp:.0f} steps, the "
                   f"fastest after about {half_exp / n:.1f}.")


# ------------------------------------------------------------------------------------ exercise 4


def _convolution_cases():
    """(description, A_bar, B_bar, C, D, u) for exercise 4: random diagonal systems, float64."""
    g = torch.Generator().manual_seed(4)
    cases = []
    for what, n, shape, D in (("n = 8, one sequence of length 300", 8, (300,), 0.7),
                              ("n = 4, a batch of shape (2, 3) of length 50", 4, (2, 3, 50), -1.3)):
        A = -torch.rand(n, generator=g, dtype=torch.float64) * 3 - 0.05  # (n,), negative
        B = torch.randn(n, generator=g, dtype=torch.float64)
        C = torch.randn(n, generator=g, dtype=torch.float64)
        A_bar, B_bar = discretize_zoh(A, B, 0.1)
        u = torch.randn(*shape, generator=g, dtype=torch.float64)
        cases.append((what, A_bar, B_bar, C, torch.tensor(D, dtype=torch.float64), u))
    return cases


def check_lti_by_convolution(fn) -> Feedback:
    """Exercise 4: ``fn(A_bar, B_bar, C, D, u) -> y``, the output of a diagonal LTI SSM.

    The answer should use :func:`~lightm_edu.ssm.ssm_kernel` and
    :func:`~lightm_edu.ssm.causal_convolution`; it is compared with the recurrence
    :func:`~lightm_edu.ssm.ssm_recurrence` on random diagonal systems, including a batch of inputs.
    Recognises a forgotten ``D u`` term and an output shifted by one step.
    """
    if fn is None or fn is Ellipsis:
        return not_attempted("the function lti_by_convolution")
    for number, (what, A_bar, B_bar, C, D, u) in enumerate(_convolution_cases(), start=1):
        case = f"Test case {number}: a random diagonal system, {what}."
        result, feedback = call_learner(fn, A_bar.clone(), B_bar.clone(), C.clone(), D.clone(), u.clone())
        if feedback is not None:
            return in_case(feedback, case)
        expected = ssm_recurrence(A_bar, B_bar, C, u, D)
        y = _as_tensor(result, expected)
        if y is None:
            return wrong(f"y should be a tensor, got {type(result).__name__}.", case)
        if y.shape == expected.shape and not _close(y, expected, rtol=1e-6, atol=1e-8):
            if _close(y, expected - D * u, rtol=1e-6, atol=1e-8):
                return wrong("You forgot the skip term D u.", case,
                             "Pass D to causal_convolution(u, K, D), or add D * u yourself.")
            shifted = torch.nn.functional.pad(expected[..., :-1], (1, 0))
            if _close(y[..., 1:], shifted[..., 1:], rtol=1e-6, atol=1e-8):
                return wrong("Your output is delayed by one step.", case,
                             "The first tap K_0 = C B_bar multiplies the current input u_t.")
        fb = compare_tensors(y, expected, "y", rtol=1e-6, atol=1e-8,
                             hint="K = ssm_kernel(A_bar, B_bar, C, length=u.shape[-1]); "
                                  "y = causal_convolution(u, K, D).")
        if fb is not None:
            return in_case(fb, case)
    return correct("Correct: the convolution gives the same output as the recurrence.",
                   "Checked one long sequence and a batch of sequences of random diagonal systems.")
