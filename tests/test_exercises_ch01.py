"""The checkers of chapter 1 accept the reference solutions and name the typical mistakes."""

import math

import pytest
import torch

from lightm_edu.exercises import ch01
from lightm_edu.ssm import causal_convolution, ssm_kernel


def text(feedback) -> str:
    return str(feedback).lower()


# ------------------------------------------------------------------------------------ exercise 1


def zoh_solution(A, B, delta):
    dA = delta * A
    A_bar = torch.exp(dA)
    safe = torch.where(dA == 0, torch.ones_like(dA), dA)
    phi = torch.where(dA == 0, torch.ones_like(dA), torch.expm1(safe) / safe)
    return A_bar, delta * phi * B


def test_zoh_reference_solution_passes():
    feedback = ch01.check_zoh_diagonal(zoh_solution)
    assert feedback, str(feedback)
    assert "correct" in text(feedback)


def test_zoh_placeholder_is_not_attempted():
    def placeholder(A, B, delta):
        raise NotImplementedError  # your code here

    feedback = ch01.check_zoh_diagonal(placeholder)
    assert not feedback and "not attempted" in text(feedback)
    assert "test case" not in text(feedback)  # nothing was tested yet
    assert not ch01.check_zoh_diagonal(...)


def test_zoh_naive_formula_reports_nan_at_zero():
    def naive(A, B, delta):
        return torch.exp(delta * A), (torch.exp(delta * A) - 1) / A * B

    feedback = ch01.check_zoh_diagonal(naive)
    assert not feedback
    assert "nan" in text(feedback) and "a = 0" in text(feedback) and "expm1" in text(feedback)
    assert "test case 2" in text(feedback)


def test_zoh_mamba_rule_is_named():
    feedback = ch01.check_zoh_diagonal(lambda A, B, delta: (torch.exp(delta * A), delta * B))
    assert not feedback and "mamba" in text(feedback)


def test_zoh_euler_A_bar_is_named():
    feedback = ch01.check_zoh_diagonal(lambda A, B, delta: (1 + delta * A, zoh_solution(A, B, delta)[1]))
    assert not feedback and "euler" in text(feedback)


def test_zoh_extra_and_missing_delta_are_named():
    extra = ch01.check_zoh_diagonal(lambda A, B, d: (zoh_solution(A, B, d)[0], d * zoh_solution(A, B, d)[1]))
    missing = ch01.check_zoh_diagonal(lambda A, B, d: (zoh_solution(A, B, d)[0], zoh_solution(A, B, d)[1] / d))
    assert not extra and "too many" in text(extra)
    assert not missing and "missing a factor of delta" in text(missing)


def test_zoh_wrong_return_type_and_exception():
    single = ch01.check_zoh_diagonal(lambda A, B, delta: torch.exp(delta * A))
    assert not single and "pair" in text(single)

    def broken(A, B, delta):
        return A @ torch.ones(7)

    raised = ch01.check_zoh_diagonal(broken)
    assert not raised and "raised runtimeerror" in text(raised)


def test_zoh_wrong_shape_is_reported():
    feedback = ch01.check_zoh_diagonal(lambda A, B, d: (torch.exp(d * A).sum(-1), zoh_solution(A, B, d)[1]))
    assert not feedback and "shape" in text(feedback)


# ------------------------------------------------------------------------------------ exercise 2


def kernel_solution(A_bar, B_bar, C, length):
    taps, v = [], B_bar
    for _ in range(length):
        taps.append(C @ v)
        v = A_bar @ v
    return torch.stack(taps)


def test_kernel_reference_solution_passes():
    feedback = ch01.check_kernel_taps(kernel_solution)
    assert feedback, str(feedback)


def test_kernel_off_by_one_is_named():
    feedback = ch01.check_kernel_taps(lambda A_bar, B_bar, C, length: kernel_solution(A_bar, A_bar @ B_bar, C, length))
    assert not feedback and "shifted by one" in text(feedback) and "k_0 = c b_bar" in text(feedback)


def test_kernel_elementwise_power_is_named():
    def elementwise(A_bar, B_bar, C, length):
        return torch.stack([C @ (A_bar ** k) @ B_bar for k in range(length)])

    feedback = ch01.check_kernel_taps(elementwise)
    assert not feedback and "element-wise power" in text(feedback) and "matrix_power" in text(feedback)


def test_kernel_transposed_and_reversed_are_named():
    transposed = ch01.check_kernel_taps(lambda A_bar, B_bar, C, n: kernel_solution(A_bar.T, B_bar, C, n))
    reversed_ = ch01.check_kernel_taps(lambda A_bar, B_bar, C, n: kernel_solution(A_bar, B_bar, C, n).flip(0))
    assert not transposed and "transpose" in text(transposed)
    assert not reversed_ and "reversed" in text(reversed_)


def test_kernel_wrong_length_is_reported():
    feedback = ch01.check_kernel_taps(lambda A_bar, B_bar, C, n: kernel_solution(A_bar, B_bar, C, n + 1))
    assert not feedback and "taps, expected" in text(feedback)


def test_kernel_placeholder_and_none():
    def placeholder(A_bar, B_bar, C, length):
        raise NotImplementedError  # your code here

    assert "not attempted" in text(ch01.check_kernel_taps(placeholder))

    def no_return(A_bar, B_bar, C, length):
        kernel_solution(A_bar, B_bar, C, length)

    feedback = ch01.check_kernel_taps(no_return)
    assert not feedback and "return" in text(feedback)


# ------------------------------------------------------------------------------------ exercise 3

SLOW, FAST, HALF = math.exp(-0.01), math.exp(-0.16), math.log(2) / 0.01


def test_mode_decay_reference_passes():
    assert ch01.check_mode_decay(SLOW, FAST, HALF)
    assert ch01.check_mode_decay(torch.tensor(SLOW), torch.tensor(FAST), 70)  # a whole number of steps
    assert ch01.check_mode_decay(0.99005, 0.85214, 69)  # five significant digits


def test_mode_decay_not_attempted_and_partial():
    assert "not attempted" in text(ch01.check_mode_decay(..., ..., ...))
    partial = ch01.check_mode_decay(SLOW, FAST, ...)
    assert not partial and "half_life_steps" in text(partial)


def test_mode_decay_swapped_is_named():
    feedback = ch01.check_mode_decay(FAST, SLOW, HALF)
    assert not feedback and "swapped" in text(feedback)


def test_mode_decay_euler_is_named():
    feedback = ch01.check_mode_decay(1 - 0.01, 1 - 0.16, HALF)
    assert not feedback and "euler" in text(feedback)


def test_mode_decay_growth_is_named():
    feedback = ch01.check_mode_decay(math.exp(0.01), math.exp(0.16), HALF)
    assert not feedback and "larger than 1" in text(feedback)


def test_mode_decay_off_by_one_mode():
    feedback = ch01.check_mode_decay(SLOW, math.exp(-0.15), HALF)
    assert not feedback and "-16" in text(feedback)


def test_mode_decay_half_life_mistakes():
    time_constant = ch01.check_mode_decay(SLOW, FAST, 100)
    fastest = ch01.check_mode_decay(SLOW, FAST, HALF / 16)
    assert not time_constant and "1/e" in text(time_constant)
    assert not fastest and "fastest" in text(fastest)


def test_mode_decay_non_number():
    feedback = ch01.check_mode_decay("0.99", FAST, HALF)
    assert not feedback and "should be a number" in text(feedback)


# ------------------------------------------------------------------------------------ exercise 4


def convolution_solution(A_bar, B_bar, C, D, u):
    return causal_convolution(u, ssm_kernel(A_bar, B_bar, C, length=u.shape[-1]), D)


def test_convolution_reference_passes():
    feedback = ch01.check_lti_by_convolution(convolution_solution)
    assert feedback, str(feedback)


def test_convolution_forgot_D_is_named():
    feedback = ch01.check_lti_by_convolution(
        lambda A_bar, B_bar, C, D, u: causal_convolution(u, ssm_kernel(A_bar, B_bar, C, u.shape[-1])))
    assert not feedback and "d u" in text(feedback)


def test_convolution_delay_is_named():
    def delayed(A_bar, B_bar, C, D, u):
        y = convolution_solution(A_bar, B_bar, C, D, u)
        return torch.nn.functional.pad(y[..., :-1], (1, 0))

    feedback = ch01.check_lti_by_convolution(delayed)
    assert not feedback and "delayed by one step" in text(feedback)


def test_convolution_short_kernel_reports_the_exception():
    feedback = ch01.check_lti_by_convolution(
        lambda A_bar, B_bar, C, D, u: causal_convolution(u, ssm_kernel(A_bar, B_bar, C, 10), D))
    assert not feedback and "raised valueerror" in text(feedback) and "kernel has 10 taps" in text(feedback)


def test_convolution_wrong_shape_is_reported():
    feedback = ch01.check_lti_by_convolution(
        lambda A_bar, B_bar, C, D, u: convolution_solution(A_bar, B_bar, C, D, u).reshape(-1))
    assert not feedback and "shape" in text(feedback) and "test case 2" in text(feedback)


@pytest.mark.parametrize("checker", [ch01.check_zoh_diagonal, ch01.check_kernel_taps,
                                     ch01.check_lti_by_convolution])
def test_function_checkers_reject_a_non_function(checker):
    feedback = checker(3.0)
    assert not feedback and "expected a function" in text(feedback)


def test_feedback_renders_as_html():
    html = ch01.check_zoh_diagonal(lambda A, B, delta: (torch.exp(delta * A), delta * B))._repr_html_()
    assert "<b" in html and "Mamba" in html
