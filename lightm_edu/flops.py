"""Honest cost accounting for LightM-UNet: parameters, MACs, FLOPs, latency and peak memory.

Written for chapter 10. Four tools, each checkable against the others:

    count_flops(model, x)         measured: fvcore traces one forward pass; our handles count every
                                  operator, the selective scan included, by stage and by kind
    lightmunet_cost(config, size) analytic: the same numbers from the configuration and input size
                                  alone (tests hold the two together); any size, no forward pass
    measure_speed(model, x)       wall time (median of several runs after warm-up) and peak memory
                                  of a forward pass or of a training step
    thop_count(model, x)          what the ``thop`` package reports (the figures in the LightM-UNet
                                  paper), and :func:`thop_blind_spots` says what it missed and why

Glossary:

    parameter   one learnable number (an entry of a weight, bias, A_log, D or scale tensor)
    MAC         one multiply-accumulate, a <- a + x * y: the unit of convolutions, linear layers,
                matrix products, interpolation and the scan's recurrence. Most papers (and
                ``thop``, and ``fvcore``) report MACs under the name "FLOPs".
    FLOP        one floating-point operation. Here FLOPs = 2 x MACs + elementwise FLOPs, where
                every elementwise operation (add, multiply, bias, ReLU, SiLU, exp, softplus,
                a max-pool comparison) counts 1 FLOP per output element, whatever it costs in
                machine instructions, and a normalisation counts 5 FLOPs per element (4 without
                an affine part; the estimate ``fvcore`` uses).
    b           batch size.  S: spatial size of a feature map, e.g. (h, w) or (d, h, w).
    L           tokens per sequence, L = prod(S): an RVM layer flattens the whole map into one sequence.
    C           channels of a feature map (d_model of its Mamba block).
    d_inner     expand * C, the width of the Mamba block's inner branch (2 C in LightM-UNet).
    N           d_state, the size of the state per channel (16).
    r           dt_rank = ceil(C / 16), the rank of the Delta projection.
    k           d_conv, the width of Mamba's causal convolution (4).

The selective scan. Its cost does not depend on the backend that runs it, so every backend is
counted alike: 9 FLOPs per (batch, step, channel, state) element, the figure the Mamba authors
give. We split it as 3 elementwise FLOPs (Delta A, its exponential, Delta B_t u_t) and 3 MACs
(the state update, which a parallel scan does about twice, and the read-out <h_t, C_t>). Per
(batch, step, channel) come 1 MAC for the skip D u_t and 4 elementwise FLOPs (the bias and
softplus of Delta, SiLU(z), the gate product):

    scan MACs  = 3 b L d_inner N + b L d_inner
    scan FLOPs = 2 x MACs + 3 b L d_inner N + 4 b L d_inner = 9 b L d_inner N + 6 b L d_inner

What fvcore misses on its own, and the handles here add: any scan (a Python loop or a custom
autograd function is invisible or counted 0), elementwise operations, ReLU, max-pooling,
trilinear interpolation, biases. Everything is counted as PyTorch runs it, e.g. the causal
convolution is a Conv1d with padding k - 1 that computes L + k - 1 outputs and keeps L.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import statistics
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Cost", "FlopCount", "count_flops", "flop_handles", "selective_scan_cost", "lightmunet_cost",
           "lightmunet_params", "measure_speed", "thop_count", "thop_blind_spots", "fused_reference_path",
           "format_count", "KINDS", "STAGES"]

#: Kinds of work in the breakdown, in display order.
KINDS = ("convolutions", "Mamba projections", "causal conv", "scan", "RVM projections", "norms",
         "interpolation", "pooling", "elementwise", "other linear algebra")


@dataclass
class Cost:
    """MACs and elementwise FLOPs of some part of a network; ``flops`` = 2 x macs + elementwise."""

    macs: int = 0
    elementwise: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs + self.elementwise

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.macs + other.macs, self.elementwise + other.elementwise)


@dataclass
class FlopCount:
    """The cost of one forward pass.

    Attributes:
        by_stage_and_kind: {(stage, kind): Cost}; stages "stem", "encoder.0", ..., "decoder.0", ...,
            "head" (or "" for the modules of a model that is not a LightMUNet), kinds from
            :data:`KINDS`.
        by_operator: {operator: Cost} (measured counts only).
        unsupported: operators that were traced but not counted (empty when nothing was missed).
        params: the model's parameters.
    """

    by_stage_and_kind: dict = field(default_factory=dict)
    by_operator: dict = field(default_factory=dict)
    unsupported: dict = field(default_factory=dict)
    params: int = 0

    def total(self) -> Cost:
        return sum(self.by_stage_and_kind.values(), Cost())

    @property
    def macs(self) -> int:
        return self.total().macs

    @property
    def flops(self) -> int:
        return self.total().flops

    def by_stage(self) -> dict:
        """{stage: Cost}, in the order the data visits the stages."""
        out = {}
        for (stage, _), cost in self.by_stage_and_kind.items():
            out[stage] = out.get(stage, Cost()) + cost
        return dict(sorted(out.items(), key=lambda item: _stage_order(item[0])))

    def by_kind(self) -> dict:
        """{kind: Cost} in the order of :data:`KINDS`."""
        out = {}
        for (_, kind), cost in self.by_stage_and_kind.items():
            out[kind] = out.get(kind, Cost()) + cost
        return {kind: out[kind] for kind in KINDS if kind in out}

    def table(self, by: str = "stage") -> str:
        """A plain-text table by "stage" or "kind": MACs, FLOPs (in G or M) and the share of all FLOPs."""
        rows = self.by_stage() if by == "stage" else self.by_kind()
        total = self.total()
        scale, prefix = (1e9, "G") if total.flops >= 1e9 else (1e6, "M")
        lines = [f"{by:<22}{prefix + 'MACs':>12}{prefix + 'FLOPs':>12}{'share':>8}"]
        for name, cost in list(rows.items()) + [("total", total)]:
            share = cost.flops / total.flops if total.flops else 0.0
            lines.append(f"{name or '(model)':<22}{cost.macs / scale:>12.3f}{cost.flops / scale:>12.3f}{share:>8.1%}")
        return "\n".join(lines)


STAGES = ("stem", "encoder", "decoder", "head")


def _stage_order(stage: str):
    part, _, index = stage.partition(".")
    return (STAGES.index(part) if part in STAGES else -1, int(index) if index else 0)


def format_count(n: float, unit: str = "") -> str:
    """1_234_567 -> '1.23 M'; for tables and prose."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {prefix}{unit}"
    return f"{n:g} {unit}".strip()


# ----------------------------------------------------------------------------- the scan's cost

def selective_scan_cost(batch: int, length: int, d_inner: int, d_state: int, with_D: bool = True,
                        with_z: bool = True, with_delta_bias: bool = True, delta_softplus: bool = True) -> Cost:
    """The cost of one selective scan (module docstring): 9 b L d_inner N FLOPs plus per-channel terms.

    Args:
        batch, length, d_inner, d_state: b, L, d_inner, N; u is (b, d_inner, L), A is (d_inner, N).
        with_D, with_z, with_delta_bias, delta_softplus: which optional parts the scan computes.
    """
    elements = batch * length * d_inner * d_state  # one per (b, t, d, n)
    channels = batch * length * d_inner  # one per (b, t, d)
    macs = 3 * elements + (channels if with_D else 0)
    elementwise = 3 * elements + channels * (int(with_delta_bias) + int(delta_softplus) + 2 * int(with_z))
    return Cost(macs, elementwise)


# ------------------------------------------------------------------------------ fvcore handles
# Each handle returns a Counter {"<operator>/macs": n, "<operator>/elementwise": n}; fvcore sums
# them per module.

def _shape(value):
    from fvcore.nn.jit_handles import get_shape

    return get_shape(value)


def _counts(op: str, macs: int = 0, elementwise: int = 0) -> Counter:
    return Counter({f"{op}/macs": int(macs), f"{op}/elementwise": int(elementwise)})


def _conv_handle(inputs, outputs):
    # aten::_convolution(input, weight, bias, stride, padding, dilation, transposed, ...)
    x, w, out = _shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])
    if inputs[6].toIValue():
        # transposed (weight (in, out / groups, *k)): each input element is scattered to
        # (out_channels / groups) * prod(kernel) outputs, one MAC each (the peers' upsampling)
        macs = math.prod(x) * math.prod(w[1:])
    else:
        # each output element is a dot product over (in_channels / groups) * prod(kernel) inputs
        macs = math.prod(out) * math.prod(w[1:])
    bias = math.prod(out) if _shape(inputs[2]) is not None else 0
    return _counts("conv", macs, bias)


def _linear_handle(inputs, outputs):
    # aten::linear(input (..., in), weight (out, in), bias (out,) or None)
    out = _shape(outputs[0])
    w = _shape(inputs[1])
    bias = math.prod(out) if _shape(inputs[2]) is not None else 0
    return _counts("linear", math.prod(out) * w[-1], bias)


def _matmul_handle(inputs, outputs):
    # (..., m, k) @ (..., k, n) -> (..., m, n): k MACs per output element
    a = _shape(inputs[0])
    return _counts("matmul", math.prod(_shape(outputs[0])) * a[-1])


def _addmm_handle(inputs, outputs):
    # aten::addmm(bias, x (m, k), w (k, n)): k MACs per output element, plus the bias add
    out = math.prod(_shape(outputs[0]))
    return _counts("linear", out * _shape(inputs[1])[-1], out)


def _elementwise_handle(op: str, per_element: int = 1):
    def handle(inputs, outputs):
        return _counts(op, 0, per_element * math.prod(_shape(outputs[0])))
    return handle


def _norm_handle(op: str, affine_index: int):
    def handle(inputs, outputs):
        affine = _shape(inputs[affine_index]) is not None
        return _counts(op, 0, (5 if affine else 4) * math.prod(_shape(inputs[0])))
    return handle


def _interpolation_handle(op: str, corners: int):
    # linear interpolation: each output element is a weighted sum of 2^d neighbours
    def handle(inputs, outputs):
        return _counts(op, corners * math.prod(_shape(outputs[0])), 0)
    return handle


def _max_pool_handle(inputs, outputs):
    # window - 1 comparisons per output element; the window is in/out per axis (stride = kernel)
    window = math.prod(_shape(inputs[0])) // math.prod(_shape(outputs[0]))
    return _counts("max_pool", 0, (window - 1) * math.prod(_shape(outputs[0])))


def _scan_handle_from(u_index: int, A_index: int):
    """Handle for an autograd Function whose tensor inputs put u (b, d, l) and A (d, n) at these
    positions (fvcore passes only the tensor arguments of a Python op)."""
    def handle(inputs, outputs):
        b, d, length = _shape(inputs[u_index])
        n = _shape(inputs[A_index])[1]
        full = sum(1 for v in inputs if _shape(v) == [b, d, length])  # u, delta, and z if given
        vectors = sum(1 for v in inputs if _shape(v) == [d])  # D and delta_bias if given
        cost = selective_scan_cost(b, length, d, n, with_D=vectors >= 1, with_z=full >= 3,
                                   with_delta_bias=vectors >= 2, delta_softplus=True)
        return _counts("scan", cost.macs, cost.elementwise)
    return handle


def _mamba_inner_handle(inputs, outputs):
    """mamba_ssm's fused ``MambaInnerFn``: causal conv, SiLU, x_proj, Delta projection, scan, gate,
    out_proj, all in one autograd Function (the in_proj product comes before it)."""
    shapes = [_shape(v) for v in inputs]
    b, two_d, length = shapes[0]
    d = two_d // 2
    conv_w = shapes[1]  # (d, 1, k) or (d, k)
    k = conv_w[-1]
    matrices = [s for s in shapes[2:] if s is not None and len(s) == 2]  # x_proj, dt_proj, out_proj, A
    x_proj, dt_proj, out_proj, A = matrices[:4]
    tokens = b * length
    counts = Counter()
    counts += _counts("conv", b * d * k * length, b * d * length)  # the kernel computes exactly L outputs
    counts += _counts("silu", 0, b * d * length)
    counts += _counts("linear", tokens * d * x_proj[0] + tokens * dt_proj[1] * d + tokens * d * out_proj[0])
    cost = selective_scan_cost(b, length, d, A[1])
    counts += _counts("scan", cost.macs, cost.elementwise)
    return counts


def _causal_conv1d_handle(inputs, outputs):
    # causal_conv1d's CausalConv1dFn: x (b, d, l), weight (d, k), bias (d,)
    b, d, length = _shape(inputs[0])
    k = _shape(inputs[1])[-1]
    return _counts("conv", b * d * k * length, b * d * length)


def _einsum_handle(inputs, outputs):
    # fvcore's own einsum count is in multiply-accumulates (its "flop" is a MAC)
    from fvcore.nn.jit_handles import einsum_flop_jit

    return _counts("einsum", einsum_flop_jit(inputs, outputs))


def _no_arithmetic_handle(inputs, outputs):
    # copies and fills (padding, clone, nearest-neighbour upsampling) move data without arithmetic
    return Counter()


_ELEMENTWISE_OPS = ("add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "exp", "sigmoid",
                    "silu", "silu_", "relu", "relu_", "softplus", "tanh", "gelu", "pow", "sqrt", "rsqrt",
                    "leaky_relu", "leaky_relu_", "prelu", "ne")
# Operators of the peer models (lightm_edu.baselines) that only move data.
_NO_ARITHMETIC_OPS = ("pad", "clone", "fill_", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d")


def flop_handles() -> dict:
    """{fvcore operator name: handle} for every operator LightM-UNet runs, on every scan backend,
    and those of the peer models in :mod:`lightm_edu.baselines` (transposed convolutions, instance
    norm, einsum, LeakyReLU/PReLU, softmax at 5 FLOPs per element: max, subtract, exp, sum, divide).

    Use with ``fvcore.nn.FlopCountAnalysis(...).set_op_handle(**flop_handles())``; the counts are
    Counters keyed "<operator>/macs" and "<operator>/elementwise".
    """
    handles = {
        "aten::_convolution": _conv_handle,
        "aten::linear": _linear_handle,
        "aten::matmul": _matmul_handle,
        "aten::mm": _matmul_handle,
        "aten::bmm": _matmul_handle,
        "aten::addmm": _addmm_handle,
        "aten::group_norm": _norm_handle("group_norm", 2),
        "aten::layer_norm": _norm_handle("layer_norm", 2),
        "aten::instance_norm": _norm_handle("instance_norm", 1),
        "aten::einsum": _einsum_handle,
        "aten::softmax": _elementwise_handle("softmax", 5),
        "aten::upsample_bilinear2d": _interpolation_handle("interpolate", 4),
        "aten::upsample_trilinear3d": _interpolation_handle("interpolate", 8),
        "aten::upsample_linear1d": _interpolation_handle("interpolate", 2),
        "aten::max_pool1d": _max_pool_handle,
        "aten::max_pool2d": _max_pool_handle,
        "aten::max_pool3d": _max_pool_handle,
        # The selective scan, whatever runs it: our tracing wrapper (every backend, see
        # _scan_as_one_operator), the "parallel" backend's autograd Function, mamba_ssm's kernels.
        "prim::PythonOp.SelectiveScanOperator": _scan_handle_from(0, 2),
        "prim::PythonOp._ChunkedSelectiveScan": _scan_handle_from(0, 2),
        "prim::PythonOp.SelectiveScanFn": _scan_handle_from(0, 2),
        "prim::PythonOp.MambaInnerFn": _mamba_inner_handle,
        "prim::PythonOp.CausalConv1dFn": _causal_conv1d_handle,
    }
    for op in _ELEMENTWISE_OPS:
        handles[f"aten::{op}"] = _elementwise_handle(op.rstrip("_"))
    for op in _NO_ARITHMETIC_OPS:
        handles[f"aten::{op}"] = _no_arithmetic_handle
    return handles


class SelectiveScanOperator(torch.autograd.Function):
    """The selective scan as one opaque operator for the tracer, computed by the chosen backend.

    Tracing would unroll the "sequential" loop into L steps and cannot follow the "parallel"
    backend's shape arithmetic; inside this Function tracing is paused, so the trace holds a
    single ``prim::PythonOp.SelectiveScanOperator`` node that :func:`flop_handles` counts. For
    counting only (no backward).
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend):
        from .scan import selective_scan

        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return selective_scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                  delta_softplus=delta_softplus, backend=backend)
        finally:
            torch._C._set_tracing_state(state)


def _scan_through_operator(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                           return_last_state=False, backend=None):
    if return_last_state:
        raise NotImplementedError("counting does not support return_last_state")
    return SelectiveScanOperator.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend)


@contextlib.contextmanager
def _scan_as_one_operator():
    """Route every selective_scan call of the Mamba block and the layers through
    :class:`SelectiveScanOperator` (whatever the backend), then restore them."""
    from . import layers, mamba

    saved = mamba.selective_scan, layers.selective_scan
    mamba.selective_scan = layers.selective_scan = _scan_through_operator
    try:
        yield
    finally:
        mamba.selective_scan, layers.selective_scan = saved


# -------------------------------------------------------------------------- measured counting

def _kind(module_name: str, op: str, mamba_names: set) -> str:
    """Which kind of work an operator is, from the operator and the module it runs in
    (``mamba_names``: the names of the Mamba blocks)."""
    path = module_name.split(".")
    in_mamba = any(".".join(path[:i]) in mamba_names for i in range(len(path) + 1))
    simple = {"scan": "scan", "group_norm": "norms", "layer_norm": "norms", "instance_norm": "norms",
              "interpolate": "interpolation", "max_pool": "pooling"}
    if op in simple:
        return simple[op]
    if op == "conv":
        return "causal conv" if in_mamba else "convolutions"
    if op in ("linear", "matmul", "einsum"):
        if path[-1] == "projection":
            return "RVM projections"
        return "Mamba projections" if in_mamba else "other linear algebra"
    return "elementwise"


def _stage(module_name: str) -> str:
    parts = module_name.split(".")
    if parts[0] in ("encoder", "decoder") and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0] if parts[0] in STAGES else ""


def count_flops(model: nn.Module, *inputs: torch.Tensor) -> FlopCount:
    """Measured cost of ``model(*inputs)``: fvcore's FlopCountAnalysis with :func:`flop_handles`.

    Traces one forward pass without gradients (on the model's own scan backend; the scan is counted
    the same on every backend). For a :class:`~lightm_edu.model.LightMUNet` the stages are "stem",
    "encoder.i", "decoder.i" and "head".

    Args:
        model: any module (LightMUNet, a Mamba block, a layer).
        inputs: its inputs, e.g. x (b, c, *S).
    Returns:
        a :class:`FlopCount`; ``unsupported`` lists operators that were seen but not counted.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _scan_as_one_operator(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fvcore's use of torch.jit, on import too
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(model, inputs if len(inputs) > 1 else inputs[0])
            analysis.set_op_handle(**flop_handles())
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            per_module = analysis.by_module_and_operator()
            unsupported = dict(analysis.unsupported_ops())
    finally:
        model.train(was_training)

    from .layers import VSSMixer
    from .mamba import Mamba

    mamba_names = {name for name, m in model.named_modules() if isinstance(m, (Mamba, VSSMixer))}
    result = FlopCount(unsupported=unsupported, params=sum(p.numel() for p in model.parameters()))
    for name, own in _own_counts(per_module).items():
        for key, value in own.items():
            if not value:
                continue
            op, _, part = key.partition("/")
            cost = Cost(value, 0) if part == "macs" else Cost(0, value)
            slot = (_stage(name), _kind(name, op, mamba_names))
            result.by_stage_and_kind[slot] = result.by_stage_and_kind.get(slot, Cost()) + cost
            result.by_operator[op] = result.by_operator.get(op, Cost()) + cost
    return result


def _own_counts(per_module: dict) -> dict:
    """{module: Counter} with each module's own operators only (fvcore's include the submodules')."""
    own = {}
    for name, counts in per_module.items():
        children = [child for child in per_module
                    if child != name and child.startswith(name + "." if name else "") and
                    "." not in child[len(name) + 1 if name else 0:]]
        rest = Counter(counts)
        for child in children:
            rest.subtract(per_module[child])
        own[name] = +rest  # drop zeros
    return own


# ----------------------------------------------------------------------------- analytic count

def _mamba_params(c: int, d_state: int, d_conv: int, expand: int) -> int:
    d, r = expand * c, math.ceil(c / 16)
    return (c * 2 * d  # in_proj
            + d * d_conv + d  # conv1d weight and bias
            + d * (r + 2 * d_state)  # x_proj
            + r * d + d  # dt_proj weight and bias
            + d * d_state + d  # A_log, D
            + d * c)  # out_proj


def _rvm_params(c_in: int, c_out: int, d_state: int, d_conv: int, expand: int) -> int:
    # LayerNorm (shared), Mamba, Linear with bias, the adjustment factor s
    return 2 * c_in + _mamba_params(c_in, d_state, d_conv, expand) + c_in * c_out + c_out + 1


def _check_official_layout(config: dict) -> dict:
    defaults = dict(init_filters=32, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), d_state=16, d_conv=4,
                    expand=2, mixer="mamba", adjustment_factor=True, residual=True)
    config = {**defaults, **config}
    if config["mixer"] != "mamba" or not config["adjustment_factor"] or not config["residual"]:
        raise ValueError("The analytic count covers the official layout only (mixer='mamba', "
                         "adjustment_factor=True, residual=True); use count_flops for variants.")
    return config


def lightmunet_params(spatial_dims: int, in_channels: int, out_channels: int, **config) -> int:
    """Parameters of ``LightMUNet(spatial_dims, in_channels, out_channels, **config)``, by formula.

    Each Mamba(C) has 6 C^2 + 4 C r + 110 C parameters with the defaults (r = ceil(C / 16)).
    """
    return sum(lightmunet_cost(spatial_dims, in_channels, out_channels, None, **config)[1].values())


def lightmunet_cost(spatial_dims: int, in_channels: int, out_channels: int, input_size, batch: int = 1,
                    **config):
    """Analytic cost of one forward pass of LightMUNet on a (batch, in_channels, *input_size) input.

    Counts exactly what :func:`count_flops` measures, from the configuration alone (no tensors),
    so it works at any size, e.g. the paper's 512 x 512 images and 128^3 volumes.

    Args:
        spatial_dims, in_channels, out_channels, **config: as :class:`~lightm_edu.model.LightMUNet`
            (official layout only).
        input_size: spatial size S, each divisible by 2^(stages - 1); None to count parameters only.
        batch: b.
    Returns:
        (FlopCount, {stage: parameters}); the FlopCount is empty when input_size is None.
    """
    c = _check_official_layout(config)
    f, n_state, k, expand = c["init_filters"], c["d_state"], c["d_conv"], c["expand"]
    dims = spatial_dims
    kernel3 = 3 ** dims
    count = FlopCount()
    params: dict = {}
    sizes = None
    if input_size is not None:
        sizes = tuple(int(s) for s in input_size)
        if len(sizes) != dims:
            raise ValueError(f"input_size {sizes} has {len(sizes)} axes, spatial_dims is {dims}.")
        step = 2 ** (len(c["blocks_down"]) - 1)
        if any(s % step for s in sizes):
            raise ValueError(f"input_size {sizes} is not divisible by {step}.")

    def voxels(level):  # b * prod(S / 2^level): positions of a map at that level
        return batch * math.prod(s // 2 ** level for s in sizes)

    def add(stage, kind, macs=0, elementwise=0):
        slot = (stage, kind)
        count.by_stage_and_kind[slot] = count.by_stage_and_kind.get(slot, Cost()) + Cost(macs, elementwise)

    def rvm(stage, c_in, c_out, level):
        params[stage] = params.get(stage, 0) + _rvm_params(c_in, c_out, n_state, k, expand)
        if sizes is None:
            return
        tokens, length = voxels(level), voxels(level) // batch
        d, r = expand * c_in, math.ceil(c_in / 16)
        add(stage, "norms", 0, 2 * 5 * tokens * c_in)  # the shared LayerNorm, applied twice
        add(stage, "Mamba projections", tokens * c_in * 2 * d)  # in_proj
        add(stage, "elementwise", 0, 2 * d * n_state)  # A = -exp(A_log)
        add(stage, "causal conv", batch * d * k * (length + k - 1), batch * d * (length + k - 1))  # with bias
        add(stage, "elementwise", 0, tokens * d)  # SiLU after the conv
        add(stage, "Mamba projections", tokens * d * (r + 2 * n_state) + tokens * r * d + tokens * d * c_in)
        scan = selective_scan_cost(batch, length, d, n_state)
        add(stage, "scan", scan.macs, scan.elementwise)
        add(stage, "elementwise", 0, 2 * tokens * c_in)  # s * x and the residual add
        add(stage, "RVM projections", tokens * c_in * c_out, tokens * c_out)  # Linear with bias

    def group_norm_relu(stage, channels, level):
        params[stage] = params.get(stage, 0) + 2 * channels
        if sizes is not None:
            add(stage, "norms", 0, 5 * voxels(level) * channels)
            add(stage, "elementwise", 0, voxels(level) * channels)  # ReLU

    def separable(stage, c_in, c_out, kernel, level, bias):
        params[stage] = params.get(stage, 0) + c_in * kernel + c_in * c_out + (c_in + c_out if bias else 0)
        if sizes is not None:
            v = voxels(level)
            add(stage, "convolutions", v * c_in * kernel + v * c_in * c_out,
                (v * c_in + v * c_out) if bias else 0)

    # stem
    separable("stem", in_channels, f, kernel3, 0, bias=False)
    # encoder
    level = 0
    for i, n_blocks in enumerate(c["blocks_down"]):
        stage, width = f"encoder.{i}", f * 2 ** i
        if i > 0:
            rvm(stage, width // 2, width, level)  # at the higher resolution
            level += 1
            if sizes is not None:
                add(stage, "pooling", 0, (2 ** dims - 1) * voxels(level) * width)
        for _ in range(n_blocks):
            group_norm_relu(stage, width, level)
            rvm(stage, width, width, level)
            group_norm_relu(stage, width, level)
            rvm(stage, width, width, level)
            if sizes is not None:
                add(stage, "elementwise", 0, voxels(level) * width)  # x + h
    # decoder
    n_up = len(c["blocks_up"])
    for i, n_blocks in enumerate(c["blocks_up"]):
        stage, width = f"decoder.{i}", f * 2 ** (n_up - i - 1)
        params[stage] = params.get(stage, 0) + 2 * width * width  # 1x1 reduce, no bias
        level -= 1
        if sizes is not None:
            add(stage, "convolutions", voxels(level + 1) * 2 * width * width)
            add(stage, "interpolation", 2 ** dims * voxels(level) * width)
            add(stage, "elementwise", 0, voxels(level) * width)  # + skip
        for _ in range(n_blocks):
            group_norm_relu(stage, width, level)
            separable(stage, width, width, kernel3, level, bias=False)
            params[stage] += 1  # the adjustment factor s'
            if sizes is not None:
                add(stage, "elementwise", 0, 2 * voxels(level) * width)  # s' * x and the add
            group_norm_relu(stage, width, level)
    # head
    group_norm_relu("head", f, level)
    separable("head", f, out_channels, 1, level, bias=True)
    count.params = sum(params.values())
    return count, params


# ------------------------------------------------------------------------- latency and memory

@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence what C++ code writes to the process's stderr (file descriptor 2) for a moment: the
    profiler's library announces every start and stop there, which would clutter notebooks and logs.
    Python exceptions are unaffected (they are raised, not written)."""
    import os
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real file descriptor 2 (some embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(step) -> int:
    """Peak of live tensor memory allocated on the CPU while ``step()`` runs, from the profiler's
    allocation records (tracemalloc cannot see tensor storage, and the resident set size keeps
    memory the C allocator has cached)."""
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    running = itertools.accumulate(e.self_cpu_memory_usage for e in events)
    return max(itertools.chain([0], running))


def measure_speed(model: nn.Module, x: torch.Tensor, train: bool = False, repeats: int = 5,
                  warmup: int = 2) -> dict:
    """Wall time and peak memory of a forward pass (``train=False``) or one training step.

    A training step is forward, cross-entropy against random labels, backward and an Adam update,
    as in training. Runs ``warmup`` untimed steps, then ``repeats`` timed ones; reports the median.
    Peak memory is that of one step beyond what was allocated before it: on a GPU
    ``torch.cuda.max_memory_allocated``; on the CPU the peak of live tensor memory from the
    profiler's allocation records (measured in an extra, untimed step).

    Args:
        model: on the device where it should run.  x: input (b, c, *S) on the same device.
    Returns:
        {"seconds": median, "all_seconds": [...], "peak_bytes": int, "device": str, "train": bool}
    """
    device = x.device
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    was_training = model.training
    if train:
        model.train()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
        out_channels = getattr(model, "out_channels", None)

        def step():
            logits = model(x)  # (b, classes, *S)
            classes = out_channels or logits.shape[1]
            target = torch.randint(0, classes, (logits.shape[0], *logits.shape[2:]), device=device)
            loss = F.cross_entropy(logits, target)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

    try:
        for _ in range(warmup):
            step()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        if device.type == "cuda":
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            step()
            sync()
            peak = torch.cuda.max_memory_allocated(device) - base
        else:
            peak = _cpu_peak_bytes(step)
    finally:
        model.train(was_training)
    return {"seconds": statistics.median(times), "all_seconds": times, "peak_bytes": int(peak),
            "device": str(device), "train": train}


# ------------------------------------------------------------------------------ thop's view

@contextlib.contextmanager
def fused_reference_path(model: nn.Module):
    """Run every Mamba block of ``model`` through :meth:`~lightm_edu.mamba.Mamba.forward_fused_reference`
    (the computation of mamba_ssm's fused fast path, in plain PyTorch), then restore it.

    The fused path is what the official code runs on a GPU with ``causal_conv1d`` installed, and it
    reads most Mamba weights directly instead of calling their modules.
    """
    from .mamba import Mamba

    blocks = [m for m in model.modules() if isinstance(m, Mamba)]
    for block in blocks:
        # (tokens, spatial=None): the signature of the RVM layer's mixer call
        block.forward = lambda tokens, spatial=None, _block=block: _block.forward_fused_reference(tokens)
    try:
        yield model
    finally:
        for block in blocks:
            del block.forward


def _thop_modules(model: nn.Module, x: torch.Tensor) -> set:
    """The modules whose parameters thop counts: those called in the forward pass that thop has a
    rule for (thop counts parameters in a forward hook of ruled modules only)."""
    from thop.profile import register_hooks

    called = set()
    hooks = [m.register_forward_hook(lambda module, args, out: called.add(module)) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return {m for m in called if type(m) in register_hooks}


def thop_count(model: nn.Module, x: torch.Tensor, fused: bool = True) -> dict:
    """What ``thop.profile`` reports for ``model(x)``: its "MACs" and "params".

    Args:
        model, x: the network and one input (b, c, *S).
        fused: run the Mamba blocks as mamba_ssm's fused fast path does (as the official code does
            on a GPU; see :func:`fused_reference_path`). False: through their submodules.
    Returns:
        {"macs": thop's MACs, "params": thop's parameter count}
    """
    import io

    from thop import profile

    context = fused_reference_path(model) if fused else contextlib.nullcontext(model)
    was_training = model.training
    with context, contextlib.redirect_stdout(io.StringIO()):  # thop prints a line per rule
        macs, params = profile(model, inputs=(x,), verbose=False)
    model.train(was_training)
    return {"macs": int(macs), "params": int(params)}


def thop_blind_spots(model: nn.Module, x: torch.Tensor, fused: bool = True) -> dict:
    """The parameters thop does not count, grouped by the reason.

    Reasons: "module never called (weights used directly)" (the fused Mamba path reads the weights
    of in_proj, conv1d, x_proj, dt_proj and out_proj itself; dt_proj is never called on any path); "GroupNorm (no thop rule)"; "held by a module without
    a thop rule" (A_log, D, the adjustment factors: parameters of Mamba and RVMLayer themselves);
    "other". Counts add up to (all parameters - thop's count).

    Returns:
        {reason: {"params": int, "names": [parameter names]}}
    """
    from thop.profile import register_hooks

    context = fused_reference_path(model) if fused else contextlib.nullcontext(model)
    with context:
        counted = _thop_modules(model, x)
    counted_ids = {id(p) for m in counted for p in m.parameters()}
    missed: dict = {}
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in counted_ids:
                continue
            if isinstance(module, nn.GroupNorm):
                reason = "GroupNorm (no thop rule)"
            elif type(module) in register_hooks:
                reason = "module never called (weights used directly)"
            elif any(True for _ in module.children()):
                reason = "held by a module without a thop rule"
            else:
                reason = "other"
            entry = missed.setdefault(reason, {"params": 0, "names": []})
            entry["params"] += p.numel()
            entry["names"].append(f"{module_name}.{name}" if module_name else name)
    return missed
