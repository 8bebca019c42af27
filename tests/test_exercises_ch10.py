"""The checkers of chapter 10 accept the reference solutions and name the typical mistakes."""

from __future__ import annotations

import math

from lightm_edu.exercises import ch10
from lightm_edu.flops import selective_scan_cost


def message(feedback) -> str:
    return str(feedback).lower()


# ----------------------------------------------------------------------------------- Mamba parameters


def solution_mamba_params(d_model, d_state=16, d_conv=4, expand=2):
    d_inner = expand * d_model
    dt_rank = math.ceil(d_model / 16)
    in_proj = d_model * 2 * d_inner                   # x and z, no bias
    conv1d = d_inner * d_conv + d_inner               # depthwise weights + bias
    x_proj = d_inner * (dt_rank + 2 * d_state)        # Delta (low rank), B, C; no bias
    dt_proj = dt_rank * d_inner + d_inner             # weights + bias
    A_log = d_inner * d_state
    D = d_inner
    out_proj = d_inner * d_model                      # no bias
    return in_proj + conv1d + x_proj + dt_proj + A_log + D + out_proj


def mamba_with(**changes):
    """The solution with one typical mistake."""
    def fn(d_model, d_state=16, d_conv=4, expand=2):
        d = expand * d_model
        r = changes.get("rank", math.ceil)(d_model / 16)
        return (d_model * changes.get("in_proj_width", 2) * d + d * d_conv + changes.get("conv_bias", d)
                + d * (r + 2 * d_state) + r * d + changes.get("dt_bias", d) + changes.get("A_log", d * d_state)
                + changes.get("D", d) + d * d_model)
    return fn


def test_mamba_params_accepts_solution():
    feedback = ch10.check_mamba_params(solution_mamba_params)
    assert feedback, str(feedback)


def test_mamba_params_is_the_real_module_count():
    for case in ch10.MAMBA_CASES:
        assert ch10.mamba_params(*case) == solution_mamba_params(*case)
    assert ch10.mamba_params(32) == 9920


def test_mamba_params_placeholder_is_not_attempted():
    def placeholder(d_model, d_state=16, d_conv=4, expand=2):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch10.check_mamba_params(placeholder))


def test_mamba_params_forgotten_d_inner_vectors_are_named():
    for change in ({"conv_bias": 0}, {"dt_bias": 0}, {"D": 0}):
        feedback = ch10.check_mamba_params(mamba_with(**change))
        assert not feedback and "d_inner = 64 short" in message(feedback), str(feedback)
        assert "conv1d bias" in message(feedback) and "dt_proj bias" in message(feedback)
    feedback = ch10.check_mamba_params(mamba_with(conv_bias=0, dt_bias=0, D=0))
    assert not feedback and "forgot the conv1d bias, the dt_proj bias and d" in message(feedback)


def test_mamba_params_forgotten_A_log_is_named():
    feedback = ch10.check_mamba_params(mamba_with(A_log=0))
    assert not feedback and "forgot a_log" in message(feedback)


def test_mamba_params_dt_rank_without_ceil_is_named():
    feedback = ch10.check_mamba_params(mamba_with(rank=lambda x: x))
    assert not feedback and "without rounding" in message(feedback) and "d_model=100" in message(feedback)
    feedback = ch10.check_mamba_params(mamba_with(rank=math.floor))
    assert not feedback and "rounded dt_rank down" in message(feedback)
    feedback = ch10.check_mamba_params(mamba_with(rank=lambda x: int(x)))
    assert not feedback and "ceil" in message(feedback)


def test_mamba_params_small_in_proj_is_named():
    feedback = ch10.check_mamba_params(mamba_with(in_proj_width=1))
    assert not feedback and "in_proj is too small" in message(feedback)


def test_mamba_params_garbage_gets_feedback():
    for garbage in ("9920", float("nan"), float("inf"), [1, 2]):
        feedback = ch10.check_mamba_params(lambda d_model, d_state=16, d_conv=4, expand=2, g=garbage: g)
        assert not feedback and "whole number" in message(feedback), str(feedback)
    assert "returned none" in message(ch10.check_mamba_params(lambda d_model, **kw: None))
    assert "raised zerodivisionerror" in message(ch10.check_mamba_params(lambda d_model, **kw: 1 / 0))
    feedback = ch10.check_mamba_params(lambda d_model, **kw: 12345)
    assert not feedback and "not the parameter count" in message(feedback)


# ----------------------------------------------------------------------------------- convolution MACs


def solution_conv_macs(in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, groups=1):
    output_size = [(s + 2 * padding - kernel_size) // stride + 1 for s in input_size]
    per_output = (in_channels // groups) * kernel_size ** len(input_size)
    return out_channels * math.prod(output_size) * per_output


def conv_with(**flags):
    def fn(in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, groups=1):
        return ch10.conv_macs_by_formula(in_channels, out_channels, kernel_size, input_size, stride, padding,
                                         groups, **flags)
    return fn


def test_conv_macs_accepts_solution():
    feedback = ch10.check_conv_macs(solution_conv_macs)
    assert feedback, str(feedback)


def test_conv_macs_measured_is_out_elements_times_window():
    for cin, cout, k, size, stride, padding, groups in ch10.CONV_CASES:
        out = [(s + 2 * padding - k) // stride + 1 for s in size]
        expected = cout * math.prod(out) * (cin // groups) * k ** len(size)
        assert ch10.conv_macs_measured(cin, cout, k, size, stride, padding, groups) == expected
        assert solution_conv_macs(cin, cout, k, size, stride, padding, groups) == expected


def test_conv_macs_placeholder_is_not_attempted():
    def placeholder(in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, groups=1):
        raise NotImplementedError

    assert "not attempted" in message(ch10.check_conv_macs(placeholder))


def test_conv_macs_flops_instead_of_macs_is_named():
    feedback = ch10.check_conv_macs(lambda *args, **kwargs: 2 * solution_conv_macs(*args, **kwargs))
    assert not feedback and "counted flops" in message(feedback)


def test_conv_macs_ignoring_groups_is_named():
    feedback = ch10.check_conv_macs(conv_with(use_groups=False))
    assert not feedback and "ignored groups" in message(feedback) and "groups=64" in message(feedback)


def test_conv_macs_input_size_is_named():
    feedback = ch10.check_conv_macs(conv_with(use_output=False))
    assert not feedback and "used the input size" in message(feedback) and "stride=2" in message(feedback)


def test_conv_macs_output_size_mistakes_are_named():
    feedback = ch10.check_conv_macs(conv_with(plus_one=False))
    assert not feedback and "off by one" in message(feedback)
    feedback = ch10.check_conv_macs(conv_with(rounding=math.ceil))
    assert not feedback and "rounded the output size up" in message(feedback)
    feedback = ch10.check_conv_macs(conv_with(use_padding=False))
    assert not feedback and "ignored the padding" in message(feedback)


def test_conv_macs_garbage_gets_feedback():
    for garbage in ("many", float("nan"), None):
        feedback = ch10.check_conv_macs(lambda *args, g=garbage, **kwargs: g)
        assert not feedback, str(feedback)
    assert "raised keyerror" in message(ch10.check_conv_macs(lambda *args, **kwargs: {}["x"]))
    feedback = ch10.check_conv_macs(lambda *args, **kwargs: 7)
    assert not feedback and "not the multiply-accumulates" in message(feedback)


def test_conv_macs_accepts_whole_floats():
    feedback = ch10.check_conv_macs(lambda *args, **kwargs: float(solution_conv_macs(*args, **kwargs)))
    assert feedback, str(feedback)


# ----------------------------------------------------------------------------------- scan handle


def solution_scan_handle(inputs, outputs):
    from fvcore.nn.jit_handles import get_shape

    b, d, L = get_shape(inputs[0])   # u: (batch, d_inner, length)
    N = get_shape(inputs[2])[1]      # A: (d_inner, d_state)
    return 9 * b * L * d * N + 6 * b * L * d


def scan_with(flops):
    """A handle that reads the shapes right and returns flops(b, L, d, N, d_of_A)."""
    def handle(inputs, outputs):
        from fvcore.nn.jit_handles import get_shape

        b, d, L = get_shape(inputs[0])
        A = get_shape(inputs[2])
        return flops(b, L, d, A[1], A[0])
    return handle


def test_scan_handle_accepts_solution():
    feedback = ch10.check_scan_handle(solution_scan_handle)
    assert feedback, str(feedback)


def test_scan_expected_is_selective_scan_cost():
    for d_model, batch, length, d_state in ch10.SCAN_CASES:
        d = 2 * d_model
        expected = selective_scan_cost(batch, length, d, d_state).flops
        assert ch10.scan_flops_expected(batch, length, d, d_state) == expected


def test_scan_traced_counts_the_handle():
    assert ch10.scan_flops_traced(solution_scan_handle, 16, 1, 10, 16) == selective_scan_cost(1, 10, 32, 16).flops


def test_scan_handle_placeholder_is_not_attempted():
    def placeholder(inputs, outputs):
        raise NotImplementedError

    assert "not attempted" in message(ch10.check_scan_handle(placeholder))
    assert "not attempted" in message(ch10.check_scan_handle(None))


def test_scan_handle_macs_only_is_named():
    feedback = ch10.check_scan_handle(scan_with(lambda b, L, d, N, dA: 3 * b * L * d * N + b * L * d))
    assert not feedback and "macs only" in message(feedback)


def test_scan_handle_without_per_channel_term_is_named():
    feedback = ch10.check_scan_handle(scan_with(lambda b, L, d, N, dA: 9 * b * L * d * N))
    assert not feedback and "per-channel term 6 b l d" in message(feedback)


def test_scan_handle_d_model_is_named():
    feedback = ch10.check_scan_handle(scan_with(lambda b, L, d, N, dA: 9 * b * L * (d // 2) * N + 6 * b * L * (d // 2)))
    assert not feedback and "used d_model" in message(feedback)


def test_scan_handle_wrong_axis_of_A_is_named():
    feedback = ch10.check_scan_handle(scan_with(lambda b, L, d, N, dA: 9 * b * L * d * dA + 6 * b * L * d))
    assert not feedback and "wrong axis of a" in message(feedback)


def test_scan_handle_swapped_length_and_channels_counts_the_same():
    # the count is a product, so reading u as (b, L, d) gives the same number: not a mistake to name
    def swapped(inputs, outputs):
        from fvcore.nn.jit_handles import get_shape

        b, L, d = get_shape(inputs[0])
        return 9 * b * L * d * get_shape(inputs[2])[1] + 6 * b * L * d

    assert ch10.check_scan_handle(swapped)


def test_scan_handle_errors_and_garbage_get_feedback():
    def crashing(inputs, outputs):
        return inputs[0].shape[0]  # a torch._C.Value has no .shape

    feedback = ch10.check_scan_handle(crashing)
    assert not feedback and "raised attributeerror" in message(feedback), str(feedback)
    for garbage, words in ((None, "returned none"), ("many", "whole number"), (float("nan"), "whole number"),
                           (-5, "negative"), ({"scan": 1}, "one number")):
        feedback = ch10.check_scan_handle(lambda inputs, outputs, g=garbage: g)
        assert not feedback and words in message(feedback), (garbage, str(feedback))
    feedback = ch10.check_scan_handle(lambda inputs, outputs: 1)
    assert not feedback and "not the flops" in message(feedback)
    assert "expected a function" in message(ch10.check_scan_handle(42))
