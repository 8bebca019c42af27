"""Checkers for the exercises of chapter 10, "What a model costs".

Each checker compares the learner's answer with what the code actually holds or does (the
parameters of a real :class:`~lightm_edu.mamba.Mamba` block, the multiply-accumulates that
:func:`lightm_edu.flops.count_flops` measures for a real convolution, the count an fvcore trace of
a Mamba block gets from the learner's operator handle) and returns a
:class:`~lightm_edu.exercises.Feedback`: truthy when correct, and otherwise saying what is wrong,
naming typical mistakes, with a hint. A checker never raises on a wrong or missing answer.

    check_mamba_params(fn)   exercise 1: fn(d_model, d_state=16, d_conv=4, expand=2) -> parameters of a Mamba block
    check_conv_macs(fn)      exercise 2: fn(in_channels, out_channels, kernel_size, input_size, stride=1,
                             padding=0, groups=1) -> multiply-accumulates of one convolution
    check_scan_handle(fn)    exercise 3: fn(inputs, outputs) -> FLOPs of the traced selective scan
                             (an fvcore operator handle for prim::PythonOp.SelectiveScanOperator)
"""

from __future__ import annotations

import functools
import math

from ._checking import Feedback, as_number, call_learner, correct, in_case, wrong

__all__ = ["check_mamba_params", "check_conv_macs", "check_scan_handle", "mamba_params", "conv_macs_measured",
           "conv_macs_by_formula", "scan_flops_expected", "scan_flops_traced", "MAMBA_CASES", "CONV_CASES",
           "SCAN_CASES", "SCAN_OPERATOR"]

#: (d_model, d_state, d_conv, expand) for exercise 1.
MAMBA_CASES = ((32, 16, 4, 2),     # the first RVM layer of LightM-UNet
               (64, 16, 4, 2),
               (256, 16, 4, 2),
               (48, 8, 3, 1),      # other d_state, d_conv and expand
               (100, 16, 4, 2))    # dt_rank = ceil(100 / 16) = 7: tests the rounding up

#: (in_channels, out_channels, kernel_size, input_size, stride, padding, groups) for exercise 2.
CONV_CASES = ((32, 64, 3, (64, 64), 1, 1, 1),          # a 3x3 convolution keeping the size
              (16, 32, 3, (32, 48, 32), 2, 1, 1),      # a strided 3x3x3 convolution halving the volume
              (64, 64, 3, (40, 40), 1, 1, 64),         # depthwise: one filter per channel
              (128, 2, 1, (256, 256), 1, 0, 1),        # a 1x1 head
              (3, 32, 3, (31, 33), 1, 0, 1))           # odd sizes, no padding

#: (d_model, batch, length, d_state) of the Mamba blocks traced for exercise 3.
SCAN_CASES = ((16, 1, 10, 16),
              (32, 2, 7, 16),
              (8, 3, 5, 4))

#: The operator the handle of exercise 3 counts, as the tracer names it.
SCAN_OPERATOR = "prim::PythonOp.SelectiveScanOperator"


def _whole_number(value):
    """An int from a whole number (int, integral float, one-element tensor or array), else None."""
    value = as_number(value)
    if value is None or not math.isfinite(value) or value != int(value):
        return None
    return int(value)


def _show(value: float) -> str:
    """A count as the learner gave it: 1234 for a whole number, else 1234.5."""
    return str(int(value)) if math.isfinite(value) and value == int(value) else repr(value)


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__}: {text[:80] + '...' if len(text) > 80 else text}"


# ----------------------------------------------------------------------------------- exercise 1


def mamba_params(d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> int:
    """The parameters of a real ``lightm_edu.mamba.Mamba(d_model, d_state, d_conv, expand)``:
    the sum of ``p.numel()`` over its parameters."""
    from ..mamba import Mamba

    return sum(p.numel() for p in Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand).parameters())


def _params_by_formula(d_model, d_state, d_conv, expand, rank=math.ceil, in_proj_width=2, conv_bias=True,
                       dt_bias=True, with_D=True, with_A=True, use_expand=True):
    d = expand * d_model if use_expand else d_model
    r = rank(d_model / 16)
    return (d_model * in_proj_width * d                 # in_proj (no bias)
            + d * d_conv + (d if conv_bias else 0)      # depthwise conv1d
            + d * (r + 2 * d_state)                     # x_proj (no bias)
            + r * d + (d if dt_bias else 0)             # dt_proj
            + (d * d_state if with_A else 0)            # A_log
            + (d if with_D else 0)                      # D
            + d * d_model)                              # out_proj (no bias)


def check_mamba_params(fn) -> Feedback:
    """Check ``fn(d_model, d_state=16, d_conv=4, expand=2) -> parameters`` against counting the
    parameters of a real Mamba block (:func:`mamba_params`) for every case of ``MAMBA_CASES``."""
    for d_model, d_state, d_conv, expand in MAMBA_CASES:
        case = f"Case d_model={d_model}, d_state={d_state}, d_conv={d_conv}, expand={expand}."
        expected = mamba_params(d_model, d_state, d_conv, expand)
        got, problem = call_learner(fn, d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        if problem is not None:
            return in_case(problem, case)
        value = as_number(got)
        if value is None or not math.isfinite(value):
            return wrong(f"Expected a whole number of parameters, got {_describe(got)}.", case)
        if value == expected:
            continue
        d = expand * d_model
        details = [case, f"You have {_show(value)}, a Mamba block with these settings has {expected} parameters "
                         f"(d_inner = {d}, dt_rank = {math.ceil(d_model / 16)})."]
        args = (d_model, d_state, d_conv, expand)
        vectors = "conv1d's bias, dt_proj's bias and D each have d_inner numbers"
        known = (
            (_params_by_formula(*args, rank=lambda x: x),
             "dt_rank must be a whole number: you used d_model / 16 without rounding.",
             "dt_rank = ceil(d_model / 16) (math.ceil), here 7 for d_model = 100."),
            (_params_by_formula(*args, rank=math.floor),
             "You rounded dt_rank down: Mamba rounds d_model / 16 up.",
             "dt_rank = ceil(d_model / 16) (math.ceil), here 7 for d_model = 100, not 6."),
            (_params_by_formula(*args, in_proj_width=1),
             "in_proj is too small: it produces both x and z, 2 x d_inner outputs.",
             "in_proj has d_model x 2 d_inner weights (no bias), not d_model x d_inner."),
            (_params_by_formula(*args, with_A=False),
             "You forgot A_log, the (d_inner, d_state) matrix that holds A.",
             "A is learned too: add d_inner x d_state for A_log."),
            (_params_by_formula(*args, conv_bias=False),
             f"You are d_inner = {d} short: one vector of d_inner numbers is missing: the conv1d bias, "
             "the dt_proj bias or D.",
             f"Count all three: {vectors}."),
            (_params_by_formula(*args, conv_bias=False, dt_bias=False),
             f"You are 2 x d_inner = {2 * d} short: two of the d_inner-sized vectors are missing "
             "(the conv1d bias, the dt_proj bias, D).",
             f"Count all three: {vectors}."),
            (_params_by_formula(*args, conv_bias=False, dt_bias=False, with_D=False),
             f"You are 3 x d_inner = {3 * d} short: you forgot the conv1d bias, the dt_proj bias and D.",
             f"{vectors[0].upper() + vectors[1:]}."),
            (_params_by_formula(*args, with_A=False, with_D=False),
             "You forgot the parameters of the SSM itself: A_log (d_inner x d_state) and D (d_inner).",
             "They belong to the Mamba module, not to a submodule: count them too."),
            (_params_by_formula(*args, use_expand=False),
             "You used d_model as the inner width: the inner branch is expand x d_model wide.",
             "d_inner = expand * d_model."),
        )
        for candidate, title, hint in known:
            if math.isclose(value, candidate, rel_tol=0, abs_tol=1e-6):
                return wrong(title, *details, hint)
        if value != int(value):
            return wrong(f"Expected a whole number of parameters, got {value!r}.", *details,
                         "dt_rank = ceil(d_model / 16) is a whole number.")
        return wrong("Not the parameter count of this block.", *details,
                     "With d = expand * d_model and r = ceil(d_model / 16): in_proj d_model x 2d, "
                     "conv1d d x d_conv + d, x_proj d x (r + 2 d_state), dt_proj r x d + d, A_log d x d_state, D d, "
                     "out_proj d x d_model.",
                     "Compare with sum(p.numel() for p in Mamba(d_model).parameters()) and "
                     "[(n, p.numel()) for n, p in Mamba(d_model).named_parameters()].")
    return correct("Correct: your counts match the parameters of real Mamba blocks.",
                   f"Checked {len(MAMBA_CASES)} blocks, with d_model = 100 testing dt_rank = ceil(d_model / 16).")


# ----------------------------------------------------------------------------------- exercise 2


@functools.lru_cache(maxsize=None)
def conv_macs_measured(in_channels: int, out_channels: int, kernel_size: int, input_size: tuple, stride: int = 1,
                       padding: int = 0, groups: int = 1) -> int:
    """The multiply-accumulates :func:`lightm_edu.flops.count_flops` measures for one forward pass
    of a bias-free ``Conv2d``/``Conv3d`` (by ``len(input_size)``) on a batch of one."""
    import torch
    from torch import nn

    from ..flops import count_flops

    conv_type = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(input_size)]
    conv = conv_type(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                     bias=False)
    return int(count_flops(conv, torch.zeros(1, in_channels, *input_size)).macs)


def conv_macs_by_formula(in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, groups=1,
                         use_groups=True, use_output=True, plus_one=True, rounding=math.floor,
                         use_padding=True) -> int:
    """out_elements x (in_channels / groups) x prod(kernel) (the flags build typical mistakes)."""
    pad = padding if use_padding else 0
    if use_output:
        spatial = [rounding((s + 2 * pad - kernel_size) / stride) + (1 if plus_one else 0) for s in input_size]
    else:
        spatial = list(input_size)
    per_output = (in_channels // groups if use_groups else in_channels) * kernel_size ** len(input_size)
    return out_channels * math.prod(spatial) * per_output


def check_conv_macs(fn) -> Feedback:
    """Check ``fn(in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, groups=1)
    -> MACs`` against :func:`conv_macs_measured` for every case of ``CONV_CASES``."""
    for cin, cout, k, size, stride, padding, groups in CONV_CASES:
        kind = f"Conv{len(size)}d"
        case = (f"Case {kind}({cin}, {cout}, kernel_size={k}, stride={stride}, padding={padding}, groups={groups}) "
                f"on input_size={size}.")
        expected = conv_macs_measured(cin, cout, k, size, stride, padding, groups)
        got, problem = call_learner(fn, cin, cout, k, size, stride=stride, padding=padding, groups=groups)
        if problem is not None:
            return in_case(problem, case)
        value = as_number(got)
        if value is None or not math.isfinite(value):
            return wrong(f"Expected a whole number of multiply-accumulates, got {_describe(got)}.", case)
        if value == expected:
            continue
        out_size = tuple((s + 2 * padding - k) // stride + 1 for s in size)
        details = [case, f"You have {_show(value)}, the convolution does {expected} MACs "
                         f"(its output is {cout} x {' x '.join(map(str, out_size))})."]
        args = (cin, cout, k, size, stride, padding, groups)
        known = (
            (2 * expected, "You counted FLOPs (2 per multiply-accumulate), not MACs.",
             "One MAC is a multiply and an add: count each once, do not double."),
            (conv_macs_by_formula(*args, use_groups=False),
             "You ignored groups: each output sees only in_channels / groups input channels.",
             "MACs per output element = (in_channels / groups) x prod(kernel); a depthwise convolution "
             "(groups = in_channels) has one input channel per filter."),
            (conv_macs_by_formula(*args, use_output=False),
             "You used the input size: count one dot product per output element.",
             "The output size per axis is floor((s + 2 padding - k) / stride) + 1; with stride 2 it is about half."),
            (conv_macs_by_formula(*args, plus_one=False),
             "Off by one in the output size: you forgot the + 1.",
             "Output size per axis = floor((s + 2 padding - k) / stride) + 1 (the first window is at 0)."),
            (conv_macs_by_formula(*args, rounding=math.ceil),
             "You rounded the output size up: a window that does not fit is not computed.",
             "Output size per axis = floor((s + 2 padding - k) / stride) + 1."),
            (conv_macs_by_formula(*args, use_padding=False),
             "You ignored the padding: it adds padding voxels at both ends of every axis.",
             "Output size per axis = floor((s + 2 padding - k) / stride) + 1."),
        )
        for candidate, title, hint in known:
            if math.isclose(value, candidate, rel_tol=1e-9):
                return wrong(title, *details, hint)
        return wrong("Not the multiply-accumulates of this convolution.", *details,
                     "MACs = out_channels x prod(output size) x (in_channels / groups) x prod(kernel), "
                     "output size per axis floor((s + 2 padding - k) / stride) + 1.")
    return correct("Correct: your counts match what count_flops measures for real convolutions.",
                   f"Checked {len(CONV_CASES)} convolutions: 2D and 3D, strided, depthwise, 1x1, unpadded.")


# ----------------------------------------------------------------------------------- exercise 3


def scan_flops_expected(batch: int, length: int, d_inner: int, d_state: int) -> int:
    """FLOPs of one selective scan with D, z, a Delta bias and softplus: 9 b L d N + 6 b L d."""
    return 9 * batch * length * d_inner * d_state + 6 * batch * length * d_inner


def scan_flops_traced(handle, d_model: int, batch: int, length: int, d_state: int):
    """Trace a ``Mamba(d_model, d_state)`` block on ``(batch, length, d_model)`` zeros with fvcore,
    the scan as one :data:`SCAN_OPERATOR` counted by ``handle`` only (the wrapped learner's
    handle). Returns the count fvcore records for the scan."""
    import warnings

    import torch
    from fvcore.nn import FlopCountAnalysis

    from ..flops import _scan_as_one_operator
    from ..mamba import Mamba

    block = Mamba(d_model, d_state=d_state, scan_backend="sequential").eval()
    x = torch.zeros(batch, length, d_model)
    with torch.no_grad(), _scan_as_one_operator(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's use of torch.jit, tracer warnings
        analysis = FlopCountAnalysis(block, x)
        analysis.set_op_handle(**{SCAN_OPERATOR: handle})
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_operator = analysis.by_operator()
    # fvcore files a number returned by a handle under the operator's name without its "prim::"
    return by_operator.get(SCAN_OPERATOR.split("::", 1)[1], 0)


class _HandleProbe:
    """Wraps the learner's handle for fvcore: records what it returns and the first problem (an
    exception, a non-number, a negative count) and always gives fvcore a valid number."""

    def __init__(self, fn):
        self.fn, self.values, self.problem = fn, [], None

    def __call__(self, inputs, outputs):
        if self.problem is not None:
            return 0
        got, problem = call_learner(self.fn, inputs, outputs)
        if problem is None:
            value = _whole_number(got)
            if isinstance(got, dict):
                problem = wrong(f"Your handle returned a {type(got).__name__}; return one number, the FLOPs.",
                                "fvcore accepts a Counter too, but this exercise asks for the total as an int.")
            elif value is None:
                problem = wrong(f"Your handle should return a whole number of FLOPs, got {_describe(got)}.",
                                "Shapes from get_shape are lists of ints: the product of ints is an int.")
            elif value < 0:
                problem = wrong(f"Your handle returned a negative count, {value}.")
        if problem is not None:
            self.problem = problem
            return 0
        self.values.append(value)
        return value


def check_scan_handle(fn) -> Feedback:
    """Check the fvcore handle ``fn(inputs, outputs) -> FLOPs`` for :data:`SCAN_OPERATOR` by tracing
    Mamba blocks (:func:`scan_flops_traced`) for every case of ``SCAN_CASES`` and comparing with
    :func:`lightm_edu.flops.selective_scan_cost`."""
    from ..flops import selective_scan_cost

    if fn is None or fn is Ellipsis or not callable(fn):
        _, problem = call_learner(fn)
        return problem
    for d_model, batch, length, d_state in SCAN_CASES:
        d = 2 * d_model
        case = (f"Case Mamba(d_model={d_model}, d_state={d_state}) on x of shape ({batch}, {length}, {d_model}): "
                f"u is ({batch}, {d}, {length}), A is ({d}, {d_state}).")
        expected = selective_scan_cost(batch, length, d, d_state).flops
        probe = _HandleProbe(fn)
        try:
            got = scan_flops_traced(probe, d_model, batch, length, d_state)
        except Exception as error:  # not the learner's own exception (the probe catches those)
            return wrong(f"Tracing the block failed: {type(error).__name__}: {error}", case,
                         "Your handle should only read shapes and return an int.")
        if probe.problem is not None:
            return in_case(probe.problem, case)
        if not probe.values:
            return wrong("Your handle was never called.", case,
                         f'Register it as set_op_handle(**{{"{SCAN_OPERATOR}": your_handle}}).')
        if got == expected:
            continue
        details = [case, f"Your handle counts {got} FLOPs, the scan takes {expected} "
                         f"(9 b L d N + 6 b L d with b={batch}, L={length}, d={d}, N={d_state})."]
        b, n, half = batch, d_state, d_model
        known = (
            (selective_scan_cost(b, length, d, n).macs,
             "You returned MACs only: FLOPs = 2 x MACs + elementwise FLOPs.",
             "The scan has 3 b L d N + b L d MACs and 3 b L d N + 4 b L d elementwise FLOPs: "
             "9 b L d N + 6 b L d FLOPs."),
            (2 * selective_scan_cost(b, length, d, n).macs,
             "You doubled the MACs but left out the elementwise FLOPs (Delta A, exp, Delta B u, bias, "
             "softplus, SiLU(z), the gate).",
             "Add 3 b L d N + 4 b L d elementwise FLOPs: 9 b L d N + 6 b L d in all."),
            (9 * b * length * d * n,
             "You forgot the per-channel term 6 b L d (the skip D u, the Delta bias and softplus, SiLU(z), the gate).",
             "FLOPs = 9 b L d N + 6 b L d."),
            (9 * b * length * d * n + 4 * b * length * d,
             "Per (batch, step, channel) the scan has 6 FLOPs: the skip D u is a MAC (2 FLOPs) besides the 4 "
             "elementwise ones.",
             "FLOPs = 9 b L d N + 6 b L d."),
            (scan_flops_expected(b, length, half, n),
             "You used d_model: the handle sees u, already d_inner = 2 d_model channels wide.",
             "Take d from u's shape (b, d, L) as it is."),
            (scan_flops_expected(b, length, d, d),
             "You read d_state from the wrong axis of A: A is (d_inner, d_state).",
             "N = get_shape(inputs[2])[1]."),
        )
        for candidate, title, hint in known:
            if got == candidate:
                return wrong(title, *details, hint)
        return wrong("Not the FLOPs of the selective scan.", *details,
                     "u = inputs[0] is (b, d, L) (channels before steps), A = inputs[2] is (d, N); "
                     "use fvcore.nn.jit_handles.get_shape and return 9 b L d N + 6 b L d.")
    return correct("Correct: fvcore counts the traced scan with your handle as selective_scan_cost does.",
                   f"Checked {len(SCAN_CASES)} traced Mamba blocks with different batch, length, width and d_state.")
