"""Checkers for the exercises of chapter 3, "Scanning in parallel".

Every scan here is *time-major*, as in :mod:`lightm_edu.scan.linear`: time is dimension 0, shape
(l, ...), and ``h_t = a_t h_{t-1} + x_t`` with ``h_{-1} = 0``.

    check_combine(fn)              fn(left, right) -> (a, x): compose two affine steps
    check_log_depth_scan(fn)       fn(a, x) -> h: the Hillis-Steele scan, (l, ...) -> (l, ...)
    check_carries(fn)              fn(local_last, decay_last) -> entering: pass 2 of the chunked scan
    check_hillis_steele_work(n)    the number of combine operations of Hillis-Steele for l = 12

:func:`chunk_summaries` prepares the inputs of the carries exercise (pass 1 of the chunked scan).
Each checker returns a :class:`~lightm_edu.exercises.Feedback` and never raises on a wrong answer.
"""

from __future__ import annotations

import math
import numbers

from ._checking import Feedback, call_learner, compare_tensors, correct, not_attempted, wrong

__all__ = ["check_combine", "check_log_depth_scan", "check_carries", "check_hillis_steele_work",
           "chunk_summaries", "HILLIS_STEELE_LENGTH"]

#: The sequence length of the counting question (exercise 4).
HILLIS_STEELE_LENGTH = 12


def _random_steps(length, *shape, seed=0, dtype=None):
    """Decays in (0.5, 1) and standard normal inputs, time-major: a, x (length, *shape)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    dtype = dtype or torch.float64
    a = (0.5 + 0.5 * torch.rand(length, *shape, generator=g)).to(dtype)
    x = torch.randn(length, *shape, generator=g).to(dtype)
    return a, x


def _close(got, expected, rtol=1e-5, atol=1e-7):
    """True when ``got`` is a tensor of the expected shape with (almost) the expected values."""
    import torch

    return (isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(expected.shape)
            and torch.allclose(got.detach().to(expected.dtype), expected, rtol=rtol, atol=atol))


def _as_pair(result, what):
    """``(a, x)`` from a learner's result, or a Feedback saying why it is not a pair of tensors."""
    import torch

    if not isinstance(result, (tuple, list)) or len(result) != 2:
        kind = f"a {type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        return None, wrong(f"{what} should return a pair (a, x), got {kind}.",
                           "End with `return a, x` (a tuple of two tensors).")
    if not all(isinstance(t, torch.Tensor) for t in result):
        return None, wrong(f"{what} should return two tensors, got "
                           f"({type(result[0]).__name__}, {type(result[1]).__name__}).")
    return tuple(result), None


# ----------------------------------------------------------------------------------- exercise 1


def check_combine(fn) -> Feedback:
    """Check ``fn(left, right)``, the composition of two affine steps.

    ``left = (a1, x1)`` is applied first, ``right = (a2, x2)`` second; the answer must be
    ``(a2 * a1, a2 * x1 + x2)``, as :func:`lightm_edu.scan.linear.combine` computes. On success the
    feedback also reports associativity and the identity element, measured with ``fn`` itself.
    """
    import torch

    from lightm_edu.scan.linear import combine

    a, x = _random_steps(3, 4, 5, seed=1)
    p, q, r = [(a[i], x[i]) for i in range(3)]
    originals = [t.clone() for pair in (p, q) for t in pair]
    result, problem = call_learner(fn, p, q)
    if problem is not None:
        return problem
    if any(not torch.equal(t, o) for t, o in zip((*p, *q), originals)):
        return wrong("Your function changed its inputs in place.",
                     "Build new tensors (e.g. `a2 * a1`) instead of using `*=`, `+=` or `out=`: the "
                     "scans call combine on tensors that are still needed afterwards.")
    result, problem = _as_pair(result, "Your function")
    if problem is not None:
        return problem
    got_a, got_x = result
    exp_a, exp_x = combine(p, q)
    a1, x1 = p
    a2, x2 = q
    if _close(got_a, exp_a) and _close(got_x, combine(q, p)[1]) and not _close(got_x, exp_x):
        return wrong("The `x` part has the steps in the opposite order.",
                     "`left` = (a1, x1) happens first, `right` = (a2, x2) second: the second map "
                     "decays the first one's input, so the new x is a2 * x1 + x2 (not a1 * x2 + x1).")
    problem = compare_tensors(got_a, exp_a, "a (first element)",
                              hint="Composing h -> a1 h + x1 and then h -> a2 h + x2 multiplies the "
                                   "decays: the new a is a2 * a1.")
    if problem is not None:
        return problem
    if not _close(got_x, exp_x):
        for candidate, title, hint in (
            (x1 + x2, "The `x` part is x1 + x2: the first input is not decayed.",
             "By the time the second step runs, x1 has been multiplied by a2: the new x is a2 * x1 + x2."),
            (a2 * x1, "The `x` part is missing the second step's own input x2.",
             "The new x is a2 * x1 + x2."),
            (a1 * x1 + x2, "The `x` part decays x1 by a1 instead of a2.",
             "x1 enters the state at the first step and is then decayed by the *second* step: a2 * x1 + x2."),
        ):
            if _close(got_x, candidate):
                return wrong(title, hint)
    problem = compare_tensors(got_x, exp_x, "x (second element)",
                              hint="Apply the second map to the output of the first: "
                                   "a2 * (a1 h + x1) + x2 = (a2 a1) h + (a2 x1 + x2).")
    if problem is not None:
        return problem
    # Correct: measure associativity and the identity with the learner's own function.
    left_first, _ = _as_pair(fn(fn(p, q), r), "fn")
    right_first, _ = _as_pair(fn(p, fn(q, r)), "fn")
    gap = max((u - v).abs().max().item() for u, v in zip(left_first, right_first))
    identity = (torch.ones_like(a1), torch.zeros_like(x1))
    id_gap = max((u - v).abs().max().item() for pair in (fn(identity, p), fn(p, identity))
                 for u, v in zip(pair, p))
    return correct("Correct: your combine composes two affine steps.",
                   f"Associativity: (p . q) . r and p . (q . r) differ by at most {gap:.2g} (round-off).",
                   f"Identity: combining with (1, 0) on either side changes p by at most {id_gap:.2g}.")


# ----------------------------------------------------------------------------------- exercise 2


def check_log_depth_scan(fn) -> Feedback:
    """Check ``fn(a, x) -> h``, an inclusive scan of ``h_t = a_t h_{t-1} + x_t`` (``h_{-1} = 0``).

    ``a`` and ``x`` are time-major, (l, ...). The answer is compared with
    :func:`lightm_edu.scan.linear.linear_scan_sequential` for lengths 1, 2, 5, 8 and 13 (powers of
    two and not). Typical mistakes are named: too few rounds, an exclusive scan, returning the
    decays instead of the states, changing the inputs in place.
    """
    import torch

    from lightm_edu.scan.linear import linear_scan_log_depth, linear_scan_sequential

    lengths = (1, 2, 5, 8, 13)
    failures = []
    for length in lengths:
        a, x = _random_steps(length, 2, 3, seed=10 + length)
        expected = linear_scan_sequential(a, x)
        a_in, x_in = a.clone(), x.clone()
        got, problem = call_learner(fn, a_in, x_in)
        if problem is not None:
            if not problem.title.startswith("Not attempted"):
                problem.details.append(f"This happened for l = {length} (a and x of shape {tuple(a.shape)}).")
            return problem
        if not isinstance(got, torch.Tensor):
            return wrong(f"Your function should return one tensor h of shape {tuple(expected.shape)}, "
                         f"got {type(got).__name__}.",
                         "Return only the x part (the states), not the pair (a, x).")
        problem = compare_tensors(got, expected, f"h for l = {length}")
        if problem is None:
            if not (torch.equal(a_in, a) and torch.equal(x_in, x)):
                return wrong("The states are right, but your function overwrote its inputs a and x.",
                             "Build new tensors each round (torch.cat, or clone first): the caller may "
                             "still need a and x.")
            continue
        needed = math.ceil(math.log2(length)) if length > 1 else 0
        if tuple(got.shape) == tuple(expected.shape):
            got = got.detach().to(expected.dtype)
            exclusive = torch.cat([torch.zeros_like(expected[:1]), expected[:-1]])
            if _close(got, exclusive):
                return wrong(f"At l = {length} you return the exclusive scan (the state before each step).",
                             "This scan is inclusive: position t holds h_t, which includes step t itself.")
            if _close(got, torch.cumprod(a, dim=0)):
                return wrong(f"At l = {length} you return the running product of the decays (the `a` part).",
                             "The states h_t are the `x` part of the combined pairs.")
            if _close(got, x):
                return wrong(f"At l = {length} you return x unchanged: no round was applied.",
                             "Loop over rounds: offset = 1, 2, 4, ... while offset < l.")
            for rounds in range(1, needed):
                if _close(got, linear_scan_log_depth(a, x, rounds=rounds)):
                    return wrong(f"At l = {length} your scan stops after {rounds} round(s); it needs "
                                 f"ceil(log2 {length}) = {needed}.",
                                 "Keep doubling the offset while offset < l (not <= l/2 or < log2 l).")
        failures.append((length, problem))
    if not failures:
        return correct("Correct: your log-depth scan matches linear_scan_sequential.",
                       f"Checked lengths {', '.join(map(str, lengths))}, powers of two and not.")
    length, problem = failures[0]
    passed = [n for n in lengths if n not in {f[0] for f in failures}]
    details = list(problem.details)
    if passed:
        details.append(f"It is right for l = {', '.join(map(str, passed))} but not for "
                       f"l = {', '.join(str(f[0]) for f in failures)}.")
        if all(n & (n - 1) == 0 for n in passed) and any(f[0] & (f[0] - 1) for f in failures):
            details.append("It works only for powers of two: when 2^k does not divide l, positions "
                           "t < offset must keep their values while the others combine.")
    details.append("Round k combines every position t >= 2^k with position t - 2^k: "
                   "(a, x)[t] <- (a, x)[t - 2^k] . (a, x)[t], all at once, using the old values; "
                   "positions t < 2^k keep theirs (put them back in front with torch.cat).")
    return Feedback(False, problem.title, details)


# ----------------------------------------------------------------------------------- exercise 3


def chunk_summaries(a, x, chunk):
    """Pass 1 of the chunked scan, by the definition: every chunk scanned from a zero state.

    Args:
        a, x: (l, ...), time-major; l must be a multiple of ``chunk``.
        chunk: steps per chunk.
    Returns:
        local (c, chunk, ...): the scan inside each chunk started from h = 0;
        decay (c, chunk, ...): products a_first * ... * a_t inside each chunk.
        ``local[:, -1]`` and ``decay[:, -1]`` summarise each whole chunk.
    """
    import torch

    from lightm_edu.scan.linear import linear_scan_sequential

    length = x.shape[0]
    if length % chunk:
        raise ValueError(f"chunk_summaries: l = {length} is not a multiple of chunk = {chunk}.")
    rest = x.shape[1:]
    ac = a.reshape(length // chunk, chunk, *rest)  # (c, chunk, ...)
    xc = x.reshape(length // chunk, chunk, *rest)  # (c, chunk, ...)
    # Scan along dimension 1 (inside each chunk) by moving it to the front: chunks become batch.
    local = linear_scan_sequential(ac.transpose(0, 1), xc.transpose(0, 1)).transpose(0, 1)
    decay = torch.cumprod(ac, dim=1)
    return local.contiguous(), decay


def check_carries(fn) -> Feedback:
    """Check ``fn(local_last, decay_last) -> entering``, pass 2 of the chunked scan.

    ``local_last[k]`` is the state at the end of chunk k when the chunk starts from zero, and
    ``decay_last[k]`` the product of all decays in chunk k, both (c, ...). The answer is the state
    entering each chunk, (c, ...): ``entering[0] = 0`` and
    ``entering[k] = decay_last[k-1] * entering[k-1] + local_last[k-1]``.
    Checked against :func:`lightm_edu.scan.linear.linear_scan_sequential` at the chunk boundaries.
    """
    import torch

    from lightm_edu.scan.linear import linear_scan_sequential

    cases = ((5, 4, (3,)), (7, 3, (2, 2)), (1, 6, (3,)))  # (chunks, chunk, trailing shape)
    for seed, (n_chunks, chunk, shape) in enumerate(cases):
        a, x = _random_steps(n_chunks * chunk, *shape, seed=20 + seed)
        h = linear_scan_sequential(a, x)
        hc = h.reshape(n_chunks, chunk, *shape)  # (c, chunk, ...)
        expected = torch.cat([torch.zeros_like(hc[:1, -1]), hc[:-1, -1]])  # (c, ...)
        local, decay = chunk_summaries(a, x, chunk)
        local_last, decay_last = local[:, -1].clone(), decay[:, -1].clone()
        got, problem = call_learner(fn, local_last.clone(), decay_last.clone())
        if problem is not None:
            return problem
        label = f"entering ({n_chunks} chunks of {chunk} steps)"
        if compare_tensors(got, expected, label) is None:
            continue
        if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(expected.shape):
            got = got.detach().to(expected.dtype)
            shifted = torch.cat([torch.zeros_like(local_last[:1]), local_last[:-1]])
            candidates = (
                (hc[:, -1], "You return the state *leaving* each chunk.",
                 "Pass 3 needs the state entering chunk k, which is the state leaving chunk k-1 "
                 "(and zero for the first chunk)."),
                (shifted, "You pass on only the previous chunk's local result.",
                 "The state leaving chunk k-1 is its local result plus the state that entered it, "
                 "decayed through the chunk: decay_last[k-1] * entering[k-1] + local_last[k-1]."),
                (torch.cumsum(shifted, dim=0), "The carried state is not decayed.",
                 "Multiply the state entering chunk k-1 by decay_last[k-1] before adding local_last[k-1]."),
            )
            for candidate, title, hint in candidates:
                if n_chunks > 1 and _close(got, candidate):
                    return wrong(title, hint)
            if not torch.allclose(got[0], torch.zeros_like(got[0])):
                return wrong("The state entering the first chunk should be zero (h_{-1} = 0).",
                             "Start from torch.zeros_like(local_last[0]).")
        problem = compare_tensors(got, expected, label,
                                  hint="entering[k] = decay_last[k-1] * entering[k-1] + local_last[k-1], "
                                       "with entering[0] = 0: a short sequential loop over the chunks.")
        if problem is not None:
            return problem
    # Pass 3 with the learner's carries reproduces the whole scan.
    a, x = _random_steps(20, 3, seed=20)
    local, decay = chunk_summaries(a, x, 4)
    entering = fn(local[:, -1].clone(), decay[:, -1].clone())
    h = (local + decay * entering.unsqueeze(1)).reshape(20, 3)
    gap = (h - linear_scan_sequential(a, x)).abs().max().item()
    return correct("Correct: your carries give the state entering every chunk.",
                   f"With them, pass 3 (h = local + decay * entering) matches the sequential scan to "
                   f"{gap:.2g}.")


# ----------------------------------------------------------------------------------- exercise 4


def check_hillis_steele_work(answer) -> Feedback:
    """Check the number of :func:`~lightm_edu.scan.linear.combine` operations (one per position
    and round) that the Hillis-Steele scan performs for l = 12 (``HILLIS_STEELE_LENGTH``)."""
    length = HILLIS_STEELE_LENGTH
    if answer is None or answer is Ellipsis:
        return not_attempted("the number")
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return wrong(f"Expected a number, got {type(answer).__name__}.",
                     "Assign an integer, e.g. `hillis_steele_combines = 40`.")
    offsets = [2 ** k for k in range(math.ceil(math.log2(length)))]  # 1, 2, 4, 8
    expected = sum(length - o for o in offsets)  # 11 + 10 + 8 + 4 = 33
    if answer == expected:
        return correct(f"Correct: {' + '.join(str(length - o) for o in offsets)} = {expected} combines.",
                       f"That is {expected / (length - 1):.1f}x the {length - 1} of the sequential loop, "
                       f"in {len(offsets)} rounds instead of {length - 1} steps.")
    known = {
        length * len(offsets): ("That is l * ceil(log2 l), the bound behind O(l log l).",
                                "Not every position combines in every round: in the round with offset o, "
                                "only positions t >= o have a partner t - o."),
        round(length * math.log2(length), 2): ("That is l * log2 l, the asymptotic estimate.",
                                               "Count exactly, round by round."),
        length - 1: ("That is the work of the sequential loop.",
                     "Hillis-Steele does more work than the loop, in exchange for fewer rounds."),
        len(offsets): ("That is the number of rounds (the depth), not the number of combines.",
                       "Add up the combines of every round."),
        sum(length - o for o in offsets[:-1]): (f"You left out the last round (offset {offsets[-1]}).",
                                                f"{offsets[-1]} < {length}, so that round still combines "
                                                f"{length - offsets[-1]} positions."),
        sum(length - o + 1 for o in offsets): ("Off by one in every round.",
                                               "With offset o, positions o, o+1, ..., l-1 combine: l - o of them."),
        2 * (length - 1): ("That is about what Blelloch's work-efficient scan does (about 2 l).",
                           "Hillis-Steele is not work-efficient: count its combines round by round."),
    }
    title, hint = known.get(round(float(answer), 2), (f"{answer} is not the count.", ""))
    return wrong(title, hint, f"Rounds use offsets {', '.join(map(str, offsets))}; in the round with "
                              "offset o, every position t >= o combines with t - o.")
