"""Checkers for the exercises of chapter 4, "The Mamba block".

Each checker takes the learner's answer, compares it with :class:`lightm_edu.Mamba` itself (its
parameters, its ``conv1d`` path, its ``dt_proj.bias``, its output) and returns a
:class:`~lightm_edu.exercises.Feedback`. When the answer is wrong, the checker compares it with the
results of typical mistakes (a forgotten term, the wrong end of the convolution cut, a bias added
twice) and names the mistake it recognises. A checker never raises on a wrong answer.

    from lightm_edu.exercises import ch04
    ch04.check_parameter_count(fn)   # exercise 1: fn(d_model, d_state, d_conv, expand) -> int
    ch04.check_causal_conv(fn)       # exercise 2: fn(x, weight, bias) -> (b, d_inner, l)
    ch04.check_inverse_softplus(fn)  # exercise 3: fn(dt) -> bias with softplus(bias) = dt
    ch04.check_block_forward(fn)     # exercise 4: fn(block, u) -> block(u), from the block's parts

Shapes follow the package: the block's input and output u are (b, l, d_model); inside the block the
x branch is (b, d_inner, l); ``conv1d.weight`` is (d_inner, 1, d_conv).
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings

from ._checking import Feedback, call_learner, compare_tensors, correct, not_attempted, wrong

__all__ = ["check_parameter_count", "check_causal_conv", "check_inverse_softplus", "check_block_forward",
           "PARAMETER_COUNT_CASES"]

#: The configurations (d_model, d_state, d_conv, expand) on which exercise 1 is checked.
PARAMETER_COUNT_CASES = ((32, 16, 4, 2), (48, 16, 4, 2), (40, 8, 3, 3), (20, 4, 2, 1))


def _block(d_model, seed=0, **kwargs):
    """A lightm_edu.Mamba made from its own RNG, leaving the learner's random state untouched."""
    import torch

    from lightm_edu.mamba import Mamba

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Mamba(d_model, **kwargs)


# ----------------------------------------------------------------------------------- exercise 1


def _parameter_terms(d_model, d_state, d_conv, expand):
    """{parameter name: number of values} of lightm_edu.Mamba with these arguments, and the block."""
    block = _block(d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    return {name: p.numel() for name, p in block.named_parameters()}, block


def _as_number(value):
    """A plain number from the learner's return value (also a one-element tensor), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return value
    try:  # a one-element tensor or a numpy scalar
        number = value.item()
    except Exception:
        return None
    return number if isinstance(number, numbers.Real) and not isinstance(number, bool) else None


#: Parameters with d_inner values each: a count that misses one of them cannot say which.
_VECTORS = ("conv1d.bias", "dt_proj.bias", "D")


def _count_mistakes(terms, block, d_model, d_state, d_conv, expand):
    """{description: total} for typical mistakes in counting the parameters of one block."""
    d_inner, rank = block.d_inner, block.dt_rank
    total = sum(terms.values())
    mistakes = {}
    vectors = [name for name in _VECTORS if name in terms]  # same size: they cannot be told apart

    def label(name):
        return f"one of the vectors of d_inner values ({', '.join(vectors)})" if name in _VECTORS else f"`{name}`"

    for name, size in terms.items():
        mistakes[f"You left out {label(name)}."] = total - size
        mistakes[f"You counted {label(name)} twice."] = total + size
    for a, b in itertools.combinations(terms, 2):
        both = (f"two of the vectors of d_inner values ({', '.join(vectors)})"
                if a in _VECTORS and b in _VECTORS else f"{label(a)} and {label(b)}")
        mistakes[f"You left out {both}."] = total - terms[a] - terms[b]
    mistakes["You counted a bias for `in_proj`, but Mamba's in_proj has none (bias=False)."] = total + 2 * d_inner
    mistakes["You counted a bias for `out_proj`, but Mamba's out_proj has none (bias=False)."] = total + d_model
    mistakes["You counted a bias for `x_proj`, but x_proj has none (bias=False)."] = total + rank + 2 * d_state
    for other, how in ((d_model / 16, "d_model / 16 without rounding up"),
                       (d_model // 16, "d_model // 16 (rounded down)"),
                       (math.ceil(d_inner / 16), "ceil(d_inner / 16)")):
        mistakes[f"Your dt_rank looks like {how}; it is ceil(d_model / 16), rounded up."] = \
            total + 2 * d_inner * (other - rank)
    mistakes["`A_log` has one row of d_state values per channel: (d_inner, d_state), not (d_state,)."] = \
        total - terms["A_log"] + d_state
    mistakes["The convolution is depthwise (groups = d_inner): its weight is (d_inner, 1, d_conv), "
             "not (d_inner, d_inner, d_conv)."] = total + d_inner * (d_inner - 1) * d_conv
    mistakes["`in_proj` makes both branches, x and z: 2 * d_inner outputs, not d_inner."] = total - d_model * d_inner
    mistakes["`x_proj` makes dt, B and C: dt_rank + 2 * d_state outputs (one of B, C is missing)."] = \
        total - d_inner * d_state
    mistakes["`D` has one value per channel (d_inner,), not one in total."] = total - terms["D"] + 1
    mistakes["`x_proj` reads the d_inner channels of the x branch, not the d_model channels of the input."] = \
        total - terms["x_proj.weight"] + d_model * (rank + 2 * d_state)
    mistakes["`dt_proj` maps dt_rank -> d_inner (weight and bias), not dt_rank -> d_model."] = \
        total - terms["dt_proj.weight"] - terms["dt_proj.bias"] + (rank + 1) * d_model
    return mistakes


def check_parameter_count(fn) -> Feedback:
    """Check ``fn(d_model, d_state, d_conv, expand)``, the number of parameters of a Mamba block.

    The answer is compared with ``sum(p.numel() for p in lightm_edu.Mamba(...).parameters())`` for
    the configurations in :data:`PARAMETER_COUNT_CASES`, which vary every argument (and make
    ``ceil(d_model / 16)`` differ from ``d_model // 16``). A wrong count is matched against typical
    mistakes: a parameter left out or counted twice, a bias that does not exist, the wrong
    ``dt_rank``, a non-depthwise convolution, or the formula 6 d^2 + 4 d dt_rank + 110 d, which holds
    only for the defaults.
    """
    if fn is None or fn is Ellipsis:
        return not_attempted("the function")
    answers, expected, diagnoses = [], [], []
    for d_model, d_state, d_conv, expand in PARAMETER_COUNT_CASES:
        args = f"d_model={d_model}, d_state={d_state}, d_conv={d_conv}, expand={expand}"
        got, problem = call_learner(fn, d_model, d_state, d_conv, expand)
        if problem is not None:
            if not problem.title.startswith("Not attempted"):
                problem.details.append(f"This happened for {args}.")
            return problem
        number = _as_number(got)
        if number is None:
            return wrong(f"Your function should return a number, got {type(got).__name__} (for {args}).",
                         "Return the total count, e.g. `return total`.")
        terms, block = _parameter_terms(d_model, d_state, d_conv, expand)
        answers.append(number)
        expected.append(sum(terms.values()))
        diagnoses.append({hint: value for hint, value
                          in _count_mistakes(terms, block, d_model, d_state, d_conv, expand).items()})
    if all(math.isclose(a, e, rel_tol=0, abs_tol=1e-6) for a, e in zip(answers, expected)):
        if any(isinstance(a, float) and not float(a).is_integer() for a in answers):
            return wrong("The totals are right but not whole numbers.", "Return an int.")
        rows = ", ".join(f"{c[0]}/{c[1]}/{c[2]}/{c[3]}: {e:,}" for c, e in zip(PARAMETER_COUNT_CASES, expected))
        return correct("Correct: your count matches lightm_edu.Mamba for every configuration.",
                       f"(d_model/d_state/d_conv/expand: parameters) {rows}.")
    first_wrong = next(i for i, (a, e) in enumerate(zip(answers, expected))
                       if not math.isclose(a, e, rel_tol=0, abs_tol=1e-6))
    d_model, d_state, d_conv, expand = PARAMETER_COUNT_CASES[first_wrong]
    details = [f"For d_model={d_model}, d_state={d_state}, d_conv={d_conv}, expand={expand} you return "
               f"{answers[first_wrong]:,}, but the block has {expected[first_wrong]:,} parameters."]
    # A mistake that explains the answer in every configuration.
    for hint in diagnoses[0]:
        if all(hint in diag and math.isclose(a, diag[hint], rel_tol=0, abs_tol=1e-6)
               for a, diag in zip(answers, diagnoses)):
            return wrong("Not yet: " + hint, *details)
    defaults_formula = [6 * c[0] ** 2 + 4 * c[0] * math.ceil(c[0] / 16) + 110 * c[0] for c in PARAMETER_COUNT_CASES]
    if all(math.isclose(a, f, abs_tol=1e-6) for a, f in zip(answers, defaults_formula)):
        return wrong("Not yet: 6 d^2 + 4 d dt_rank + 110 d holds only for d_state=16, d_conv=4, expand=2.",
                     *details, "Write each parameter's size in terms of d_inner = expand * d_model, "
                     "dt_rank, d_state and d_conv, and add them up.")
    right = [c for c, a, e in zip(PARAMETER_COUNT_CASES, answers, expected) if math.isclose(a, e, abs_tol=1e-6)]
    if right:
        details.append("It is right for " + ", ".join(f"{c[0]}/{c[1]}/{c[2]}/{c[3]}" for c in right)
                       + " (d_model/d_state/d_conv/expand): look for a term that depends on the "
                       "arguments that differ.")
    # A single mistake that explains the first wrong configuration, as a lead.
    leads = [hint for hint, value in diagnoses[first_wrong].items()
             if math.isclose(answers[first_wrong], value, abs_tol=1e-6)]
    if leads:
        details.append("In that configuration the difference matches this mistake: " + leads[0])
    details.append("Nine tensors: in_proj.weight, conv1d.weight, conv1d.bias, x_proj.weight, "
                   "dt_proj.weight, dt_proj.bias, out_proj.weight, A_log, D. Write down the shape of "
                   "each (`for name, p in Mamba(32).named_parameters(): print(name, p.shape)`).")
    return Feedback(False, "Not yet: the count is off.", details)


# ----------------------------------------------------------------------------------- exercise 2


def _conv_cases():
    """(description, block, x) for exercise 2: a block's conv1d and an input (b, d_inner, l)."""
    import torch

    cases = []
    for seed, (d_model, d_conv, length) in enumerate(((8, 4, 12), (3, 3, 7), (4, 4, 2))):
        block = _block(d_model, seed=seed, d_conv=d_conv)
        g = torch.Generator().manual_seed(100 + seed)
        x = torch.randn(2, block.d_inner, length, generator=g)
        cases.append((f"d_inner = {block.d_inner}, d_conv = {d_conv}, l = {length}", block, x))
    return cases


def _conv_reference(block, x):
    """Mamba's conv1d path before the SiLU: pad d_conv - 1 on both sides, keep the first l outputs."""
    return block.conv1d(x)[..., : x.shape[-1]]


def _conv_mistakes(block, x):
    import torch.nn.functional as F

    w, b = block.conv1d.weight, block.conv1d.bias
    k, d, length = w.shape[-1], w.shape[0], x.shape[-1]
    full = F.conv1d(x, w, b, padding=k - 1, groups=d)  # (b, d, l + k - 1)
    mistakes = {
        "You kept the *last* l outputs: output t then uses x_t ... x_(t+d_conv-1), future tokens. "
        "Keep the first l, `[..., :l]`.": full[..., -length:] if length <= full.shape[-1] else None,
        "Your output is the correct convolution passed through SiLU. The exercise asks for the "
        "convolution alone (Mamba applies SiLU afterwards).": F.silu(full[..., :length]),
        "The bias is missing: add `bias[:, None]` (or pass it to F.conv1d).":
            F.conv1d(x, w, None, padding=k - 1, groups=d)[..., :length],
        "The kernel is reversed. nn.Conv1d computes a cross-correlation: output t is "
        "sum_k w[k] x[t - (d_conv - 1) + k], so w[-1] multiplies the current token x_t.":
            F.conv1d(x, w.flip(-1), b, padding=k - 1, groups=d)[..., :length],
    }
    with warnings.catch_warnings():  # 'same' with an even kernel warns about an extra copy
        warnings.simplefilter("ignore")
        mistakes["You used 'same' (centred) padding: output t then sees future tokens. Pad d_conv - 1 "
                 "zeros on the left only."] = F.conv1d(x, w, b, padding="same", groups=d)
    return {hint: value for hint, value in mistakes.items() if value is not None}


def _matches(got, value, rtol=1e-5, atol=1e-6, equal_nan=False):
    import torch

    return (isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(value.shape)
            and torch.allclose(got.detach().to(value.dtype), value, rtol=rtol, atol=atol, equal_nan=equal_nan))


def check_causal_conv(fn) -> Feedback:
    """Check ``fn(x, weight, bias) -> out``, the causal depthwise convolution of the Mamba block.

    ``x`` is (b, d_inner, l), ``weight`` is ``conv1d.weight`` of shape (d_inner, 1, d_conv) and
    ``bias`` is (d_inner,); ``out`` must be (b, d_inner, l) and equal ``block.conv1d(x)[..., :l]``,
    the convolution path of :class:`lightm_edu.Mamba` before its SiLU. Checked for d_conv 4 and 3 and
    a sequence shorter than the kernel; a correct answer is also run inside a block, where SiLU of
    it must be exactly what ``x_proj`` receives. Recognises the wrong end of the cut, centred
    padding, a missing bias, a reversed kernel and an extra SiLU, and tests causality directly.
    """
    import torch

    if fn is None or fn is Ellipsis:
        return not_attempted("the function")
    for what, block, x in _conv_cases():
        weight, bias = block.conv1d.weight.detach().clone(), block.conv1d.bias.detach().clone()
        with torch.no_grad():
            expected = _conv_reference(block, x)
            got, problem = call_learner(fn, x.clone(), weight, bias)
        if problem is not None:
            if not problem.title.startswith("Not attempted"):
                problem.details.append(f"This happened for {what} (x of shape {tuple(x.shape)}, weight "
                                       f"{tuple(weight.shape)}).")
            return problem
        if not isinstance(got, torch.Tensor):
            return wrong(f"Your function should return a tensor, got {type(got).__name__}.")
        length, k = x.shape[-1], weight.shape[-1]
        if got.ndim == 3 and got.shape[:2] == expected.shape[:2] and got.shape[-1] != length:
            extra = got.shape[-1] - length
            if extra == k - 1:
                return wrong(f"Your output has length {got.shape[-1]} = l + d_conv - 1 ({what}).",
                             "nn.Conv1d with padding d_conv - 1 pads both ends; keep only the first l "
                             "outputs, `[..., :l]`, which makes the convolution causal.")
            if extra == -(k - 1):
                return wrong(f"Your output has length {got.shape[-1]} = l - d_conv + 1 ({what}).",
                             "Without padding the convolution loses d_conv - 1 positions; pad d_conv - 1 "
                             "zeros in front so that every position has an output.")
            if k != 4 and extra in (4 - k, 3):
                return wrong(f"Your output has length {got.shape[-1]} instead of l = {length} ({what}).",
                             "Did you write 4 (or 3 = 4 - 1) for the kernel width? Read it from the weight, "
                             "d_conv = weight.shape[-1], so that the function works for any d_conv.")
        for hint, value in _conv_mistakes(block, x).items():
            if _matches(got, value) and not _matches(got, expected):
                return wrong("Not yet: " + hint, f"Seen for {what}.")
        problem = compare_tensors(got, expected, f"output ({what})", rtol=1e-5, atol=1e-6,
                                  hint="Output t is bias + sum over k of weight[:, 0, k] * "
                                       "x[:, :, t - (d_conv - 1) + k], with x = 0 before the start.")
        if problem is not None:
            # Causality, measured with the learner's own function: change one token and see what moves.
            t0 = length // 2
            x2 = x.clone()
            x2[..., t0:] += 1.0
            other, _ = call_learner(fn, x2, weight, bias)
            if (isinstance(other, torch.Tensor) and other.shape == got.shape and t0 > 0
                    and not torch.allclose(other[..., :t0], got[..., :t0])):
                problem.details.append(f"It is not causal: changing x from t = {t0} on changes your "
                                       f"output before t = {t0}.")
            return problem
    # Inside a real block: make in_proj pass u through to the x branch, then compare with what
    # x_proj receives in Mamba.forward (that is SiLU(conv path)).
    block = _block(8, seed=5, expand=1)
    seen = []
    handle = block.x_proj.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    with torch.no_grad():
        block.in_proj.weight.zero_()
        block.in_proj.weight[: block.d_inner].copy_(torch.eye(block.d_inner))
        u = torch.randn(1, 9, 8, generator=torch.Generator().manual_seed(7))  # (b, l, d_model)
        block(u)
        handle.remove()
        mine, problem = call_learner(fn, u.transpose(1, 2).clone(), block.conv1d.weight.detach().clone(),
                                     block.conv1d.bias.detach().clone())
        if problem is not None:
            return problem
        gap = (torch.nn.functional.silu(mine).transpose(1, 2) - seen[0]).abs().max().item()
    return correct("Correct: your convolution is Mamba's conv1d path (before the SiLU).",
                   "Checked for d_conv = 4 and 3 and for a sequence shorter than the kernel.",
                   f"Inside a Mamba block, SiLU of your output equals what x_proj receives to {gap:.1g}.")


# ----------------------------------------------------------------------------------- exercise 3


def _dt_values(dtype=None):
    """Step sizes Delta: log-uniform in [1e-4, 1e-1] (the init range) and a few larger ones."""
    import torch

    dtype = dtype or torch.float64
    g = torch.Generator().manual_seed(3)
    small = torch.exp(torch.rand(20, generator=g, dtype=torch.float64) * math.log(1e3) + math.log(1e-4))
    large = torch.tensor([0.3, 1.0, 2.0, 5.0, 10.0], dtype=torch.float64)
    return torch.cat([small, large]).to(dtype)


def check_inverse_softplus(fn) -> Feedback:
    """Check ``fn(dt) -> bias``, the inverse of softplus used to initialise ``dt_proj.bias``.

    ``dt`` is a float64 tensor of positive step sizes, log-uniform in [1e-4, 1e-1] plus some up to
    10; the answer must satisfy ``softplus(bias) = dt``, i.e. ``bias = log(exp(dt) - 1)``. A correct
    answer is also tried on the ``dt_proj.bias`` of a :class:`lightm_edu.Mamba` (it must give back
    the bias from ``softplus(bias)``) and in float32, where ``torch.expm1`` keeps small steps
    accurate. Recognises ``log(dt)`` (the small-dt approximation), softplus itself, a missing log and
    a missing ``dt +`` term.
    """
    import torch
    import torch.nn.functional as F

    if fn is None or fn is Ellipsis:
        return not_attempted("the function")
    dt = _dt_values()
    got, problem = call_learner(fn, dt.clone())
    if problem is not None:
        if not problem.title.startswith("Not attempted"):
            problem.details.append("The input was a float64 tensor of 25 step sizes between 1e-4 and 10.")
        return problem
    expected = torch.log(torch.expm1(dt))  # (25,)
    if not isinstance(got, torch.Tensor):
        return wrong(f"Your function should return a tensor like its input, got {type(got).__name__}.",
                     "Use torch functions (torch.log, torch.exp, torch.expm1), which work elementwise.")
    if tuple(got.shape) == tuple(dt.shape) and not torch.allclose(got.detach().double(), expected,
                                                                  rtol=1e-6, atol=1e-9):
        got64 = got.detach().double()
        mistakes = (
            (torch.log(dt), "You return log(dt), which is only the small-dt approximation.",
             "softplus(v) = log(1 + e^v) is close to e^v for very negative v, so log(dt) is nearly right "
             "for tiny dt but wrong by up to dt / 2 and more: solve log(1 + e^b) = dt exactly for b."),
            (F.softplus(dt), "You apply softplus to dt; the exercise asks for its inverse.",
             "Find b with softplus(b) = dt: e^b = e^dt - 1."),
            (torch.expm1(dt), "You return e^dt - 1: the logarithm is missing.",
             "e^b = e^dt - 1, so b = log(e^dt - 1)."),
            (torch.log(-torch.expm1(-dt)), "You return log(1 - e^(-dt)): the `dt +` in front is missing.",
             "log(e^dt - 1) = log(e^dt (1 - e^(-dt))) = dt + log(1 - e^(-dt))."),
            (-expected, "The sign is flipped.", "softplus(b) = dt with b = log(e^dt - 1)."),
        )
        for value, title, hint in mistakes:
            if torch.allclose(got64, value, rtol=1e-6, atol=1e-9):
                return wrong("Not yet: " + title, hint)
    problem = compare_tensors(got, expected, "bias", rtol=1e-6, atol=1e-9,
                              hint="The bias b solves softplus(b) = log(1 + e^b) = dt.")
    if problem is not None:
        if tuple(got.shape) == tuple(dt.shape):
            worst = int((got.detach().double() - expected).abs().nan_to_num(float("inf")).argmax())
            problem.details.append(f"The largest difference is for dt = {dt[worst].item():.4g}.")
        return problem
    # The block's own initialisation: softplus(bias) gives back dt; the learner's inverse gives back bias.
    block = _block(64, seed=11)
    bias = block.dt_proj.bias.detach().double()  # (d_inner,)
    back, _ = call_learner(fn, F.softplus(bias))
    round_trip = (back - bias).abs().max().item() if isinstance(back, torch.Tensor) else float("nan")
    details = [f"On the dt_proj.bias of a Mamba(64) block: inverse_softplus(softplus(bias)) gives back "
               f"the bias to {round_trip:.1g}."]
    dt32 = _dt_values(torch.float32)
    out32, _ = call_learner(fn, dt32.clone())
    if isinstance(out32, torch.Tensor):
        rel = ((F.softplus(out32.float().double()) - dt32.double()).abs() / dt32.double()).max().item()
        if rel > 1e-5:
            details.append(f"In float32, softplus of your result is off by up to {rel:.1e} (relative) for "
                           f"small dt: exp(dt) - 1 cancels digits. torch.expm1(dt) computes e^dt - 1 "
                           f"accurately, as the package does (dt + log(-expm1(-dt))).")
        else:
            details.append(f"In float32 it is accurate too (relative error {rel:.1e}).")
    return correct("Correct: softplus of your bias gives back dt.", *details)


# ----------------------------------------------------------------------------------- exercise 4


def _forward_variant(block, u, mistake=None):
    """Mamba's forward pass from its parts, optionally with one typical mistake (for diagnosis).

    ``mistake=None`` gives ``block(u)`` (the tests check this), so the variants differ from the
    package in exactly one place.
    """
    import torch
    import torch.nn.functional as F

    from lightm_edu import selective_scan

    length = u.shape[1]
    xz = block.in_proj(u).transpose(1, 2)  # (b, 2 d_inner, l)
    x, z = xz.chunk(2, dim=1)  # (b, d_inner, l) each
    if mistake == "swap_xz":
        x, z = z, x
    conv = block.conv1d(x)  # (b, d_inner, l + d_conv - 1)
    conv = conv[..., -length:] if mistake == "anti_causal" else conv[..., :length]
    x = conv if mistake == "no_silu" else F.silu(conv)  # (b, d_inner, l)
    x_dbl = block.x_proj(x.transpose(1, 2))  # (b, l, dt_rank + 2 n)
    dt, B, C = torch.split(x_dbl, [block.dt_rank, block.d_state, block.d_state], dim=-1)
    if mistake == "swap_BC":
        B, C = C, B
    dt = block.dt_proj(dt) if mistake == "double_bias" else dt @ block.dt_proj.weight.t()  # (b, l, d_inner)
    A = -torch.exp(block.A_log.float())  # (d_inner, n)
    y = selective_scan(x, dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2),
                       D=None if mistake == "no_D" else block.D.float(),
                       z=None if mistake == "no_gate" else z,
                       delta_bias=None if mistake == "no_bias" else block.dt_proj.bias.float(),
                       delta_softplus=mistake != "no_softplus", backend="sequential")  # (b, d_inner, l)
    return block.out_proj(y.transpose(1, 2))  # (b, l, d_model)


_SHORTCUT = "this exercise builds the forward pass from the block's parts: do not call block(u)"

_FORWARD_MISTAKES = {
    "swap_xz": "x and z are swapped: the first d_inner channels of in_proj's output are x, the last "
               "d_inner are the gate z (`x, z = xz.chunk(2, dim=1)`).",
    "anti_causal": "You kept the last l outputs of conv1d: keep the first l (`[..., :l]`), or the "
                   "block sees future tokens.",
    "no_silu": "The SiLU after the convolution is missing.",
    "swap_BC": "B and C are swapped: x_proj's output splits into (dt, B, C) in that order.",
    "double_bias": "dt_proj's bias is added twice: once by calling dt_proj(dt) and again as delta_bias. "
                   "Multiply by dt_proj.weight only (`dt @ block.dt_proj.weight.t()`) and let the scan add "
                   "the bias.",
    "no_D": "The skip term D u is missing: pass D=block.D to the scan.",
    "no_gate": "The gate is missing: pass z (the second half of in_proj's output) to the scan, which "
               "multiplies by SiLU(z).",
    "no_bias": "The bias of Delta is missing: pass delta_bias=block.dt_proj.bias to the scan.",
    "no_softplus": "Delta is not passed through softplus: call the scan with delta_softplus=True.",
}


def check_block_forward(fn) -> Feedback:
    """Check ``fn(block, u) -> out``, the forward pass of a Mamba block written from its parts.

    ``block`` is a :class:`lightm_edu.Mamba` with perturbed parameters (so that ``D``, the biases and
    every weight matter) and ``u`` is (b, l, d_model); the answer must equal ``block(u)``. The
    block's own ``forward`` is disabled while the learner's function runs. Recognises swapped x and z
    or B and C, the wrong end of the convolution cut, a missing SiLU, gate, skip, bias or softplus, and
    the dt bias added twice.
    """
    import torch

    if fn is None or fn is Ellipsis:
        return not_attempted("the function")
    block = _block(8, seed=21, d_state=4, scan_backend="sequential")
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(22)
        for name, p in block.named_parameters():
            if name != "A_log":
                p.add_(0.1 * torch.randn_like(p))
    u = torch.randn(2, 11, 8, generator=torch.Generator().manual_seed(23))  # (b, l, d_model)
    with torch.no_grad():
        expected = block(u)  # (b, l, d_model)

    def no_shortcut(*args, **kwargs):
        raise RuntimeError(_SHORTCUT)

    block.forward = no_shortcut
    try:
        with torch.no_grad():
            got, problem = call_learner(fn, block, u.clone())
    finally:
        del block.forward
    if problem is not None:
        if _SHORTCUT in problem.title:
            return wrong("Not yet: your function calls the block itself (block(u) or block.forward).",
                         "Build the output from the parts: block.in_proj, block.conv1d, block.x_proj, "
                         "block.dt_proj.weight and .bias, block.A_log, block.D, lightm_edu.selective_scan "
                         "and block.out_proj.")
        return problem
    if isinstance(got, torch.Tensor) and got.ndim == 3 and tuple(got.shape) != tuple(expected.shape):
        if tuple(got.shape) == (2, block.d_inner, 11):
            return wrong(f"Your output has shape {tuple(got.shape)} = (b, d_inner, l).",
                         "The last step is missing: transpose to (b, l, d_inner) and apply out_proj.")
        if tuple(got.shape) == (2, 8, 11):
            return wrong(f"Your output has shape {tuple(got.shape)} = (b, d_model, l).",
                         "out_proj works on the last dimension: transpose y to (b, l, d_inner) first.")
    if _matches(got, expected, rtol=1e-4, atol=1e-5):
        gap = (got.detach() - expected).abs().max().item()
        return correct("Correct: your forward pass reproduces block(u).",
                       "It is identical to block(u)." if gap == 0 else
                       f"Largest difference {gap:.1g}: float32 round-off (operations in another order).")
    if isinstance(got, torch.Tensor) and tuple(got.shape) == tuple(expected.shape):
        with torch.no_grad():
            for mistake, hint in _FORWARD_MISTAKES.items():
                if _matches(got, _forward_variant(block, u, mistake), rtol=1e-4, atol=1e-5, equal_nan=True):
                    return wrong("Not yet: " + hint)
        if not torch.isfinite(got).all():
            return wrong("Your output contains inf or NaN.",
                         "Is A negative? A = -exp(A_log): without the minus sign the state grows at "
                         "every step.")
    problem = compare_tensors(got, expected, "output", rtol=1e-4, atol=1e-5,
                              hint="Follow Mamba.forward step by step: in_proj, chunk into x and z, causal "
                                   "conv + SiLU, x_proj and split, dt_proj's weight, A = -exp(A_log), then "
                                   "the scan with D, z, delta_bias and delta_softplus=True, then out_proj.")
    return problem if problem is not None else wrong("Not yet: the output differs from block(u).")
