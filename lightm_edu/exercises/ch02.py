"""Checkers for the exercises of chapter 2 (selectivity: the selective scan).

Each checker takes the learner's function, runs it on small random problems, compares the result
with the package (:func:`lightm_edu.scan.sequential.discretize_selective`,
:func:`lightm_edu.selective_scan` with ``backend="sequential"``, and chapter 1's
:mod:`lightm_edu.ssm`) and returns a :class:`~lightm_edu.exercises.Feedback`. When the values are
wrong, the checker compares them with the results of typical mistakes (a forgotten term, an
off-by-one, the wrong discretisation rule) and names the mistake it recognises.

    from lightm_edu.exercises import ch02
    ch02.check_selective_step(selective_step)           # exercise 1: one step of the recurrence
    ch02.check_selective_scan_loop(selective_scan_loop) # exercise 2: the whole loop
    ch02.check_half_life_delta(half_life_delta)         # exercise 3: a delta with a given memory
    ch02.check_lti_output(lti_output)                   # exercise 4: constant parameters = convolution

Shapes follow the package: u, delta (b, d, l); A (d, n); B, C (b, n, l); the state x is (b, d, n).
"""

from __future__ import annotations

import math

from ._checking import Feedback, call_learner, compare_tensors, correct, wrong

__all__ = ["check_selective_step", "check_selective_scan_loop", "check_half_life_delta",
           "check_lti_output"]


def _generator(seed: int):
    import torch

    return torch.Generator().manual_seed(seed)


def _step_problem(seed: int, b: int = 2, d: int = 3, n: int = 5):
    """Inputs of one step: x_prev (b, d, n), delta_t (b, d), A (d, n), B_t (b, n), u_t (b, d)."""
    import torch

    g = _generator(seed)
    x_prev = torch.randn(b, d, n, generator=g, dtype=torch.float64)
    delta_t = torch.rand(b, d, generator=g, dtype=torch.float64) * 0.9 + 0.1
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 3.0 - 0.5
    B_t = torch.randn(b, n, generator=g, dtype=torch.float64)
    u_t = torch.randn(b, d, generator=g, dtype=torch.float64)
    return x_prev, delta_t, A, B_t, u_t


def _scan_problem(seed: int, b: int = 2, d: int = 3, n: int = 5, length: int = 7):
    """A random selective-scan problem without D, z or softplus: u, delta, A, B, C."""
    import torch

    g = _generator(seed)
    u = torch.randn(b, d, length, generator=g, dtype=torch.float64)
    delta = torch.rand(b, d, length, generator=g, dtype=torch.float64) * 0.9 + 0.1
    A = -torch.rand(d, n, generator=g, dtype=torch.float64) * 3.0 - 0.5
    B = torch.randn(b, n, length, generator=g, dtype=torch.float64)
    C = torch.randn(b, n, length, generator=g, dtype=torch.float64)
    return u, delta, A, B, C


def _clone(*tensors):
    return tuple(t.clone() for t in tensors)


def _recognise(got, mistakes: dict, rtol: float = 1e-6, atol: float = 1e-9) -> str:
    """The hint of the first typical mistake whose result equals ``got``, or ""."""
    import torch

    if not isinstance(got, torch.Tensor):
        return ""
    got = got.detach().to(torch.float64)
    for hint, value in mistakes.items():
        if tuple(value.shape) == tuple(got.shape) and torch.allclose(got, value.to(torch.float64),
                                                                     rtol=rtol, atol=atol):
            return hint
    return ""


def _with_recognised(feedback: Feedback, got, mistakes: dict) -> Feedback:
    hint = _recognise(got, mistakes)
    if hint:
        feedback.details.insert(0, f"This looks like a known slip: {hint}")
    return feedback


def _with_shapes(failure: Feedback, shapes: str) -> Feedback:
    """Add the input shapes to the feedback on an exception (most are broadcasting errors)."""
    if failure.title.startswith("Your function raised"):
        failure.details.append(shapes)
    return failure


# --------------------------------------------------------------------------- exercise 1


def check_selective_step(fn) -> Feedback:
    """Exercise 1: one step of the selective recurrence.

    ``fn(x_prev, delta_t, A, B_t, u_t)`` with x_prev (b, d, n), delta_t (b, d), A (d, n), B_t (b, n),
    u_t (b, d) must return ``x_t = exp(delta_t A) * x_prev + delta_t B_t u_t``, shape (b, d, n).
    The reference is the package's :func:`~lightm_edu.scan.sequential.discretize_selective` applied
    to a sequence of length 1.
    """
    import torch

    from ..scan.sequential import discretize_selective

    for seed in (0, 1):
        x_prev, delta_t, A, B_t, u_t = _step_problem(seed)
        dA, dBu = discretize_selective(delta_t.unsqueeze(-1), A, B_t.unsqueeze(-1), u_t.unsqueeze(-1))
        dA, dBu = dA[:, :, 0], dBu[:, :, 0]  # (b, d, n) each
        expected = dA * x_prev + dBu  # (b, d, n)
        b, d, n = x_prev.shape
        shapes = (f"Shapes here: x_prev {tuple(x_prev.shape)}, delta_t {tuple(delta_t.shape)}, "
                  f"A {tuple(A.shape)}, B_t {tuple(B_t.shape)}, u_t {tuple(u_t.shape)}. Add axes with "
                  "unsqueeze (or [..., None]) so that delta_t and u_t become (b, d, 1) and B_t (b, 1, n).")
        got, failure = call_learner(fn, *_clone(x_prev, delta_t, A, B_t, u_t))
        if failure is not None:
            return _with_shapes(failure, shapes)
        feedback = compare_tensors(got, expected, name="x_t", rtol=1e-6, atol=1e-9, hint=shapes)
        if feedback is None:
            continue
        input_term = dBu
        mistakes = {
            "you left out the decayed previous state A_bar * x_prev.": input_term,
            "you left out the input term delta_t * B_t * u_t.": dA * x_prev,
            "you multiplied x_prev by A itself; the discrete decay is A_bar = exp(delta_t * A).":
                A * x_prev + input_term,
            "you multiplied x_prev by delta_t * A; the discrete decay is exp(delta_t * A).":
                delta_t.unsqueeze(-1) * A * x_prev + input_term,
            "you used the Euler decay 1 + delta_t * A; Mamba uses the exact exp(delta_t * A).":
                (1 + delta_t.unsqueeze(-1) * A) * x_prev + input_term,
            "you used exp(A) without the step size: the decay is exp(delta_t * A).":
                torch.exp(A) * x_prev + input_term,
            "the input term lacks delta_t: B_bar_t = delta_t * B_t.":
                dA * x_prev + B_t.unsqueeze(1) * u_t.unsqueeze(-1),
        }
        return _with_recognised(feedback, got, mistakes)
    return correct("Correct: your step matches the package on two random problems "
                   f"(b={b}, d={d}, n={n}).")


# --------------------------------------------------------------------------- exercise 2


def _states(u, delta, A, B):
    """All states x_t, (b, d, l, n), by the package's discretisation and a plain loop."""
    import torch

    from ..scan.sequential import discretize_selective

    dA, dBu = discretize_selective(delta, A, B, u)  # (b, d, l, n)
    x, states = torch.zeros_like(dA[:, :, 0]), []
    for dA_t, dBu_t in zip(dA.unbind(2), dBu.unbind(2)):
        x = dA_t * x + dBu_t
        states.append(x)
    return torch.stack(states, dim=2)


def check_selective_scan_loop(fn) -> Feedback:
    """Exercise 2: the selective scan as a loop, without D, z or softplus.

    ``fn(u, delta, A, B, C)`` with u, delta (b, d, l), A (d, n), B, C (b, n, l) must return
    y (b, d, l) with ``y_t = <x_t, C_t>`` and ``x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t``,
    ``x_{-1} = 0``. The reference is ``lightm_edu.selective_scan(..., backend="sequential")``.
    """
    import torch

    from ..scan import selective_scan

    for seed, (b, d, n, length) in ((0, (2, 3, 5, 7)), (1, (1, 2, 4, 1))):
        u, delta, A, B, C = _scan_problem(seed, b=b, d=d, n=n, length=length)
        expected = selective_scan(u, delta, A, B, C, backend="sequential")  # (b, d, l)
        got, failure = call_learner(fn, *_clone(u, delta, A, B, C))
        if failure is not None:
            return _with_shapes(failure, f"Shapes here: u, delta {tuple(u.shape)}, A {tuple(A.shape)}, "
                                         f"B, C {tuple(B.shape)}.")
        shape_hint = ""
        if isinstance(got, torch.Tensor):
            if tuple(got.shape) == (b, d, length, n):
                shape_hint = ("You returned the states x_t, (b, d, l, n). The output is "
                              "y_t = <x_t, C_t>: multiply by C_t and sum over n.")
            elif tuple(got.shape) == (b, length, d):
                shape_hint = "Your output is (b, l, d); the package keeps time last: (b, d, l)."
        feedback = compare_tensors(
            got, expected, name="y", rtol=1e-6, atol=1e-9,
            hint=shape_hint or (f"Shapes here: u, delta {tuple(u.shape)}, A {tuple(A.shape)}, "
                                f"B, C {tuple(B.shape)}; y must be {tuple(expected.shape)}."))
        if feedback is None:
            continue
        states = _states(u, delta, A, B)  # (b, d, l, n)
        readout = lambda xs: torch.einsum("bdln,bnl->bdl", xs, C)  # noqa: E731
        shifted = torch.cat([torch.zeros_like(states[:, :, :1]), states[:, :, :-1]], dim=2)
        no_decay = torch.cumsum((delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1), dim=2)
        mistakes = {
            "off by one: y_t must read the state *after* step t (x_t), not x_{t-1}.": readout(shifted),
            "you applied softplus to delta; in this exercise delta is used as given.":
                selective_scan(u, delta, A, B, C, delta_softplus=True, backend="sequential"),
            "the state never decays: multiply x_{t-1} by exp(delta_t * A) at every step.":
                readout(no_decay),
            "you read out with C at the first step only; C_t changes with t, use C[:, :, t].":
                torch.einsum("bdln,bn->bdl", states, C[:, :, 0]),
        }
        feedback.details.append(f"(Problem: b={b}, d={d}, n={n}, l={length}.)")
        return _with_recognised(feedback, got, mistakes)
    return correct("Correct: your loop matches lightm_edu.selective_scan(backend='sequential') "
                   "on two random problems, including one of length 1.")


# --------------------------------------------------------------------------- exercise 3

_HALF_LIFE_CASES = ((-1.0, 10), (-4.0, 10), (-16.0, 3), (-2.5, 100))


def check_half_life_delta(fn) -> Feedback:
    """Exercise 3: the step size that halves the state in k steps.

    ``fn(a, k)`` gets one negative diagonal entry ``a`` of A and a number of steps ``k``, and must
    return the delta (a positive number) for which, with no input, ``x_{t+k} = x_t / 2``, that is
    ``exp(k delta a) = 1/2``. The kept fraction is measured with the package's selective scan.
    """
    import torch

    from ..scan import selective_scan

    for a, k in _HALF_LIFE_CASES:
        got, failure = call_learner(fn, a, k)
        if failure is not None:
            return failure
        try:
            if isinstance(got, (str, bytes)):
                raise TypeError
            value = float(got)
        except (TypeError, ValueError, RuntimeError):
            return wrong(f"half_life_delta({a}, {k}) returned a {type(got).__name__}; expected a number.",
                         "Return a Python float (or a one-element tensor).")
        if not math.isfinite(value):
            return wrong(f"half_life_delta({a}, {k}) returned {value}.",
                         "Look for a division by zero or the log of a non-positive number.")
        expected = math.log(2.0) / (k * abs(a))
        if math.isclose(value, expected, rel_tol=1e-6):
            continue
        # Measure what the learner's delta does: an impulse at t = 0, then k steps without input.
        u = torch.zeros(1, 1, k + 1, dtype=torch.float64)
        u[..., 0] = 1.0
        delta = torch.full_like(u, value)
        A = torch.tensor([[a]], dtype=torch.float64)
        ones = torch.ones(1, 1, k + 1, dtype=torch.float64)
        kept = None
        if value > 0:
            y = selective_scan(u, delta, A, ones, ones, backend="sequential")[0, 0]  # (k + 1,)
            kept = (y[k] / y[0]).item()
        mistakes = {
            "a step size must be positive: check the sign (a is negative, so delta = -ln 2 / (k a)).":
                -expected,
            "you used 1/2 instead of ln 2: solve exp(k delta a) = 1/2 with the logarithm.": 0.5 / (k * abs(a)),
            "you used log10; use the natural logarithm, math.log(2).": math.log10(2.0) / (k * abs(a)),
            "you left out k: the decay over k steps is exp(delta a)^k = exp(k delta a).": math.log(2.0) / abs(a),
            "you left out a: the decay per step is exp(delta a), which depends on a.": math.log(2.0) / k,
            "you multiplied by k instead of dividing by it.": math.log(2.0) * k / abs(a),
        }
        known = next((hint for hint, wrong_value in mistakes.items()
                      if math.isclose(value, wrong_value, rel_tol=1e-6)), "")
        measured = (f"With your delta = {value:.6g} the state keeps {kept:.4g} of its value after "
                    f"{k} steps (measured with the selective scan), not 0.5." if kept is not None else
                    f"Your delta = {value:.6g} is not positive, so it is not a valid step size.")
        return wrong(f"half_life_delta({a}, {k}) = {value:.6g} is not right.",
                     f"This looks like a known slip: {known}" if known else "",
                     measured,
                     "Hint: with no input, k steps multiply the state by exp(delta a)^k; set that to 1/2 "
                     "and solve for delta.")
    return correct("Correct: delta = ln 2 / (k |a|). Each of the "
                   f"{len(_HALF_LIFE_CASES)} cases keeps exactly half of the state after k steps.",
                   "The larger |a|, the smaller the delta that gives the same memory: this is why the "
                   "n channels of S4D-Real (a = -1, ..., -n) remember over different time scales.")


# --------------------------------------------------------------------------- exercise 4


def check_lti_output(fn) -> Feedback:
    """Exercise 4: with constant delta, B and C the selective scan is chapter 1's convolution.

    ``fn(u, delta, A, B, C)`` gets one channel: u (l,), a float delta, A, B, C of shape (n,), and
    must return y (l,) computed as a causal convolution (chapter 1's functions). The reference is
    the selective scan with delta, B and C repeated at every time step.
    """
    import torch

    from .. import ssm
    from ..scan import selective_scan

    for seed, (n, length, delta) in ((0, (4, 32, 0.3)), (1, (3, 9, 1.2))):
        g = _generator(seed)
        u = torch.randn(length, generator=g, dtype=torch.float64)
        A = -torch.arange(1, n + 1, dtype=torch.float64) * (0.5 + torch.rand(1, generator=g, dtype=torch.float64))
        B = torch.randn(n, generator=g, dtype=torch.float64)
        C = torch.randn(n, generator=g, dtype=torch.float64)
        expected = selective_scan(
            u.view(1, 1, length), torch.full((1, 1, length), delta, dtype=torch.float64), A.view(1, n),
            B.view(1, n, 1).expand(1, n, length), C.view(1, n, 1).expand(1, n, length),
            backend="sequential")[0, 0]  # (l,)
        got, failure = call_learner(fn, *_clone(u), delta, *_clone(A, B, C))
        if failure is not None:
            return failure
        feedback = compare_tensors(
            got, expected, name="y", rtol=1e-6, atol=1e-9,
            hint=f"u has shape {tuple(u.shape)}; y must have the same shape.")
        if feedback is None:
            continue
        A_zoh, B_zoh = ssm.discretize_zoh(A, B, delta)
        A_bar, B_bar = ssm.discretize_mamba(A, B, delta)
        K = ssm.ssm_kernel(A_bar, B_bar, C, length)
        mistakes = {
            "you discretised with discretize_zoh; the selective scan uses Mamba's rule "
            "(A_bar = exp(delta A), B_bar = delta B), which is ssm.discretize_mamba.":
                ssm.causal_convolution(u, ssm.ssm_kernel(A_zoh, B_zoh, C, length)),
            "you forgot to discretise B: the kernel is C A_bar^k B_bar with B_bar = delta B.":
                ssm.causal_convolution(u, ssm.ssm_kernel(A_bar, B, C, length)),
            "your kernel is shifted by one step: K_0 = C B_bar multiplies u_t itself.":
                torch.cat([torch.zeros(1, dtype=torch.float64), ssm.causal_convolution(u, K)[:-1]]),
        }
        feedback.details.append(f"(Problem: n={n}, l={length}, delta={delta}.)")
        return _with_recognised(feedback, got, mistakes)
    return correct("Correct: the convolution with K_k = C A_bar^k B_bar equals the selective scan "
                   "when delta, B and C do not change with t.")
