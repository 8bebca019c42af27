"""The checkers of chapter 4 accept the reference solutions and name the typical mistakes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightm_edu import Mamba, selective_scan
from lightm_edu.exercises import ch04


def message(feedback) -> str:
    return str(feedback).lower()


# ----------------------------------------------------------------------------------- parameter count


def solution_count(d_model, d_state, d_conv, expand):
    d_inner = int(expand * d_model)
    dt_rank = math.ceil(d_model / 16)
    return (d_model * 2 * d_inner                      # in_proj.weight
            + d_inner * d_conv + d_inner               # conv1d.weight, conv1d.bias
            + d_inner * (dt_rank + 2 * d_state)        # x_proj.weight
            + dt_rank * d_inner + d_inner              # dt_proj.weight, dt_proj.bias
            + d_inner * d_model                        # out_proj.weight
            + d_inner * d_state + d_inner)             # A_log, D


def test_count_accepts_solution():
    feedback = ch04.check_parameter_count(solution_count)
    assert feedback and "9,920" in message(feedback)


def test_count_solution_matches_the_default_formula():
    for d in (32, 64, 128, 256):
        assert solution_count(d, 16, 4, 2) == 6 * d * d + 4 * d * math.ceil(d / 16) + 110 * d


def test_count_accepts_a_one_element_tensor():
    assert ch04.check_parameter_count(lambda *args: torch.tensor(solution_count(*args)))


def test_count_placeholder_is_not_attempted():
    def placeholder(d_model, d_state, d_conv, expand):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch04.check_parameter_count(placeholder))
    assert "not attempted" in message(ch04.check_parameter_count(...))


def test_count_defaults_formula_is_named():
    feedback = ch04.check_parameter_count(lambda d, n, k, e: 6 * d * d + 4 * d * math.ceil(d / 16) + 110 * d)
    assert not feedback and "holds only for" in message(feedback)


@pytest.mark.parametrize("name,size", [
    ("A_log", lambda d, n, k, e: int(e * d) * n),
    ("conv1d.weight", lambda d, n, k, e: int(e * d) * k),
    ("out_proj.weight", lambda d, n, k, e: int(e * d) * d),
    ("dt_proj.weight", lambda d, n, k, e: int(e * d) * math.ceil(d / 16)),
])
def test_count_missing_term_is_named(name, size):
    feedback = ch04.check_parameter_count(lambda *args: solution_count(*args) - size(*args))
    assert not feedback and f"left out `{name.lower()}`" in message(feedback)


def test_count_missing_vector_names_the_three_candidates():
    # D, conv1d.bias and dt_proj.bias have d_inner values each: the checker names all three.
    feedback = ch04.check_parameter_count(lambda d, n, k, e: solution_count(d, n, k, e) - int(e * d))
    assert not feedback and "one of the vectors" in message(feedback)
    assert all(name in message(feedback) for name in ("conv1d.bias", "dt_proj.bias", "d)"))


def test_count_missing_two_vectors_is_named():
    feedback = ch04.check_parameter_count(lambda d, n, k, e: solution_count(d, n, k, e) - 2 * int(e * d))
    assert not feedback and "left out two of the vectors" in message(feedback)


def test_count_a_log_per_channel_is_named():
    def a_log_once(d, n, k, e):
        return solution_count(d, n, k, e) - int(e * d) * n + n

    feedback = ch04.check_parameter_count(a_log_once)
    assert not feedback and "(d_inner, d_state)" in message(feedback)


def test_count_extra_in_proj_bias_is_named():
    feedback = ch04.check_parameter_count(lambda d, n, k, e: solution_count(d, n, k, e) + 2 * int(e * d))
    assert not feedback and "in_proj has none" in message(feedback)


def test_count_floor_dt_rank_is_named():
    def floor_rank(d, n, k, e):
        return solution_count(d, n, k, e) + 2 * int(e * d) * (d // 16 - math.ceil(d / 16))

    feedback = ch04.check_parameter_count(floor_rank)
    assert not feedback and "dt_rank" in message(feedback) and "rounded down" in message(feedback)


def test_count_full_convolution_is_named():
    def full_conv(d, n, k, e):
        di = int(e * d)
        return solution_count(d, n, k, e) + di * (di - 1) * k

    feedback = ch04.check_parameter_count(full_conv)
    assert not feedback and "depthwise" in message(feedback)


def test_count_unknown_error_gives_the_list_of_tensors():
    feedback = ch04.check_parameter_count(lambda *args: solution_count(*args) + 7)
    assert not feedback and "nine tensors" in message(feedback) and "9,927" in message(feedback)


def test_count_not_a_number_is_named():
    feedback = ch04.check_parameter_count(lambda *args: str(solution_count(*args)))
    assert not feedback and "should return a number" in message(feedback)


def test_count_exception_names_the_configuration():
    def fails(d_model, d_state, d_conv, expand):
        if d_conv == 3:
            raise ValueError("boom")
        return solution_count(d_model, d_state, d_conv, expand)

    feedback = ch04.check_parameter_count(fails)
    assert not feedback and "valueerror" in message(feedback) and "d_conv=3" in message(feedback)


def test_count_checker_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    ch04.check_parameter_count(solution_count)
    assert torch.equal(before, torch.random.get_rng_state())


# ----------------------------------------------------------------------------------- causal conv


def solution_conv(x, weight, bias):
    d_conv = weight.shape[-1]
    return F.conv1d(F.pad(x, (d_conv - 1, 0)), weight, bias, groups=x.shape[1])


def solution_conv_loop(x, weight, bias):
    d_conv, length = weight.shape[-1], x.shape[-1]
    padded = F.pad(x, (d_conv - 1, 0))  # (b, d, l + d_conv - 1)
    out = bias[:, None].expand(x.shape[0], -1, length).clone()
    for k in range(d_conv):
        out = out + weight[:, 0, k, None] * padded[..., k:k + length]
    return out


@pytest.mark.parametrize("solution", [solution_conv, solution_conv_loop])
def test_conv_accepts_solutions(solution):
    feedback = ch04.check_causal_conv(solution)
    assert feedback and "x_proj receives" in message(feedback)


def test_conv_reference_is_mambas_conv_path():
    # The checker's reference equals what Mamba.forward feeds to x_proj (after SiLU).
    torch.manual_seed(0)
    block = Mamba(8, expand=1)
    seen = []
    block.x_proj.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0]))
    with torch.no_grad():
        block.in_proj.weight.zero_()
        block.in_proj.weight[:8].copy_(torch.eye(8))
        u = torch.randn(2, 10, 8)
        block(u)
        reference = ch04._conv_reference(block, u.transpose(1, 2))
    torch.testing.assert_close(F.silu(reference).transpose(1, 2), seen[0])


def test_conv_placeholder_is_not_attempted():
    def placeholder(x, weight, bias):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch04.check_causal_conv(placeholder))


def test_conv_not_cut_is_named():
    feedback = ch04.check_causal_conv(
        lambda x, w, b: F.conv1d(x, w, b, padding=w.shape[-1] - 1, groups=x.shape[1]))
    assert not feedback and "l + d_conv - 1" in message(feedback) and "first l" in message(feedback)


def test_conv_wrong_end_is_named():
    feedback = ch04.check_causal_conv(
        lambda x, w, b: F.conv1d(x, w, b, padding=w.shape[-1] - 1, groups=x.shape[1])[..., w.shape[-1] - 1:])
    assert not feedback and "last* l" in message(feedback) and "future" in message(feedback)


def test_conv_same_padding_is_named():
    feedback = ch04.check_causal_conv(lambda x, w, b: F.conv1d(x, w, b, padding="same", groups=x.shape[1]))
    assert not feedback and "same" in message(feedback)


def test_conv_no_padding_is_named():
    feedback = ch04.check_causal_conv(lambda x, w, b: F.conv1d(x, w, b, groups=x.shape[1]))
    assert not feedback and "without padding" in message(feedback)


def test_conv_missing_bias_is_named():
    feedback = ch04.check_causal_conv(lambda x, w, b: solution_conv(x, w, None))
    assert not feedback and "bias is missing" in message(feedback)


def test_conv_reversed_kernel_is_named():
    feedback = ch04.check_causal_conv(lambda x, w, b: solution_conv(x, w.flip(-1), b))
    assert not feedback and "reversed" in message(feedback)


def test_conv_extra_silu_is_named():
    feedback = ch04.check_causal_conv(lambda x, w, b: F.silu(solution_conv(x, w, b)))
    assert not feedback and "silu" in message(feedback)


def test_conv_hard_coded_width_is_named():
    feedback = ch04.check_causal_conv(lambda x, w, b: F.conv1d(F.pad(x, (3, 0)), w, b, groups=x.shape[1]))
    assert not feedback and "weight.shape[-1]" in message(feedback)


def test_conv_non_causal_values_are_named():
    def peeks_ahead(x, w, b):
        out = solution_conv(x, w, b)
        return out + 0.5 * F.pad(x[..., 1:], (0, 1))  # adds the next token

    feedback = ch04.check_causal_conv(peeks_ahead)
    assert not feedback and "not causal" in message(feedback)


def test_conv_exception_names_the_case():
    feedback = ch04.check_causal_conv(lambda x, w, b: x @ w)
    assert not feedback and "raised" in message(feedback) and "d_conv = 4" in message(feedback)


# ----------------------------------------------------------------------------------- inverse softplus


def solution_inverse_softplus(dt):
    return dt + torch.log(-torch.expm1(-dt))


def test_inverse_softplus_accepts_solution():
    feedback = ch04.check_inverse_softplus(solution_inverse_softplus)
    assert feedback and "accurate too" in message(feedback)


def test_inverse_softplus_accepts_naive_formula_with_a_precision_note():
    feedback = ch04.check_inverse_softplus(lambda dt: torch.log(torch.exp(dt) - 1))
    assert feedback and "expm1" in message(feedback)


def test_inverse_softplus_placeholder_is_not_attempted():
    def placeholder(dt):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch04.check_inverse_softplus(placeholder))


@pytest.mark.parametrize("wrong_fn,words", [
    (torch.log, "small-dt approximation"),
    (F.softplus, "inverse"),
    (torch.expm1, "logarithm is missing"),
    (lambda dt: torch.log(-torch.expm1(-dt)), "`dt +`"),
    (lambda dt: -solution_inverse_softplus(dt), "sign"),
])
def test_inverse_softplus_mistakes_are_named(wrong_fn, words):
    feedback = ch04.check_inverse_softplus(wrong_fn)
    assert not feedback and words.lower() in message(feedback)


def test_inverse_softplus_other_error_names_the_step_size():
    feedback = ch04.check_inverse_softplus(lambda dt: solution_inverse_softplus(dt) + 0.01 * dt)
    assert not feedback and "for dt =" in message(feedback)


def test_inverse_softplus_not_a_tensor_is_named():
    feedback = ch04.check_inverse_softplus(lambda dt: [math.log(math.expm1(v)) for v in dt.tolist()])
    assert not feedback and "tensor" in message(feedback)


def test_inverse_softplus_matches_the_package_initialisation():
    torch.manual_seed(0)
    block = Mamba(64)
    bias = block.dt_proj.bias.detach()
    torch.testing.assert_close(solution_inverse_softplus(F.softplus(bias)), bias, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------- forward pass


def solution_forward(block, u):
    length = u.shape[1]
    xz = block.in_proj(u).transpose(1, 2)
    x, z = xz.chunk(2, dim=1)
    x = F.silu(block.conv1d(x)[..., :length])
    dt, B, C = torch.split(block.x_proj(x.transpose(1, 2)), [block.dt_rank, block.d_state, block.d_state], dim=-1)
    dt = (dt @ block.dt_proj.weight.t()).transpose(1, 2)
    A = -torch.exp(block.A_log)
    y = selective_scan(x, dt, A, B.transpose(1, 2), C.transpose(1, 2), D=block.D, z=z,
                       delta_bias=block.dt_proj.bias, delta_softplus=True)
    return block.out_proj(y.transpose(1, 2))


def test_forward_accepts_solution():
    assert ch04.check_block_forward(solution_forward)


def test_forward_variant_without_mistake_is_the_block():
    torch.manual_seed(0)
    block = Mamba(16, scan_backend="sequential")
    u = torch.randn(2, 9, 16)
    with torch.no_grad():
        torch.testing.assert_close(ch04._forward_variant(block, u), block(u))


def test_forward_placeholder_is_not_attempted():
    def placeholder(block, u):
        raise NotImplementedError  # your code here

    assert "not attempted" in message(ch04.check_block_forward(placeholder))


def test_forward_calling_the_block_is_named_and_restored():
    feedback = ch04.check_block_forward(lambda block, u: block(u))
    assert not feedback and "calls the block itself" in message(feedback)
    assert ch04.check_block_forward(solution_forward)  # the block's forward works again afterwards


@pytest.mark.parametrize("mistake", list(ch04._FORWARD_MISTAKES))
def test_forward_mistakes_are_named(mistake):
    feedback = ch04.check_block_forward(lambda block, u: ch04._forward_variant(block, u, mistake))
    assert not feedback and ch04._FORWARD_MISTAKES[mistake].lower() in message(feedback)


def test_forward_missing_out_proj_is_named():
    def no_out_proj(block, u):
        out = solution_forward(block, u)
        return (out @ torch.linalg.pinv(block.out_proj.weight).t()).transpose(1, 2)  # (b, d_inner, l)

    feedback = ch04.check_block_forward(no_out_proj)
    assert not feedback and "out_proj" in message(feedback)


def test_forward_positive_a_is_named():
    def positive_a(block, u):
        with torch.no_grad():
            block.A_log.neg_()  # A = -exp(-A_log): wrong values, still finite
        try:
            return solution_forward(block, u) * 1e30 * 1e30
        finally:
            with torch.no_grad():
                block.A_log.neg_()

    feedback = ch04.check_block_forward(positive_a)
    assert not feedback and "inf or nan" in message(feedback)


def test_forward_exception_is_reported():
    feedback = ch04.check_block_forward(lambda block, u: block.no_such_layer(u))
    assert not feedback and "attributeerror" in message(feedback)
