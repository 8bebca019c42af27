"""Chapter 2's exercise checkers: reference solutions pass, typical mistakes fail with a message that
names the mistake, and a checker never raises on a wrong, broken or missing answer."""

import math

import pytest
import torch

from lightm_edu import ssm
from lightm_edu.exercises import ch02


def messages(feedback):
    return str(feedback).lower()


# --------------------------------------------------------------------------- exercise 1: one step


def step_solution(x_prev, delta_t, A, B_t, u_t):
    A_bar = torch.exp(delta_t[..., None] * A)  # (b, d, n)
    Bu = delta_t[..., None] * B_t[:, None, :] * u_t[..., None]  # (b, d, n)
    return A_bar * x_prev + Bu


def test_step_solution_passes():
    feedback = ch02.check_selective_step(step_solution)
    assert feedback, str(feedback)
    assert "correct" in messages(feedback)


def test_step_placeholder_is_not_attempted():
    def placeholder(x_prev, delta_t, A, B_t, u_t):
        raise NotImplementedError  # your code here

    feedback = ch02.check_selective_step(placeholder)
    assert not feedback
    assert "not attempted" in messages(feedback)


def test_step_ellipsis_is_not_attempted():
    assert "not attempted" in messages(ch02.check_selective_step(...))


@pytest.mark.parametrize("wrong_step, words", [
    (lambda x, dt, A, B, u: dt[..., None] * B[:, None, :] * u[..., None], "decayed previous state"),
    (lambda x, dt, A, B, u: torch.exp(dt[..., None] * A) * x, "input term"),
    (lambda x, dt, A, B, u: A * x + dt[..., None] * B[:, None, :] * u[..., None], "a_bar = exp"),
    (lambda x, dt, A, B, u: (1 + dt[..., None] * A) * x + dt[..., None] * B[:, None, :] * u[..., None],
     "euler"),
    (lambda x, dt, A, B, u: torch.exp(dt[..., None] * A) * x + B[:, None, :] * u[..., None], "lacks delta_t"),
])
def test_step_typical_mistakes_are_named(wrong_step, words):
    feedback = ch02.check_selective_step(wrong_step)
    assert not feedback
    assert words in messages(feedback)


def test_step_wrong_broadcast_reports_the_shape():
    # B_t (b, n) broadcast against (b, d) without new axes: raises inside the learner's code.
    feedback = ch02.check_selective_step(lambda x, dt, A, B, u: torch.exp(dt[..., None] * A) * x + dt * B * u)
    assert not feedback
    assert "raised" in messages(feedback)
    assert "shapes here" in messages(feedback) and "unsqueeze" in messages(feedback)


def test_step_wrong_shape_is_reported():
    feedback = ch02.check_selective_step(lambda x, dt, A, B, u: step_solution(x, dt, A, B, u).sum(-1))
    assert not feedback
    assert "shape" in messages(feedback)


def test_step_returning_none_is_reported():
    feedback = ch02.check_selective_step(lambda *args: None)
    assert not feedback
    assert "return" in messages(feedback)


# --------------------------------------------------------------------------- exercise 2: the loop


def loop_solution(u, delta, A, B, C):
    b, d, length = u.shape
    x = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        x = torch.exp(delta[:, :, t, None] * A) * x + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        ys.append((x * C[:, None, :, t]).sum(-1))
    return torch.stack(ys, dim=-1)


def test_loop_solution_passes():
    feedback = ch02.check_selective_scan_loop(loop_solution)
    assert feedback, str(feedback)


def test_loop_placeholder_is_not_attempted():
    def placeholder(u, delta, A, B, C):
        raise NotImplementedError

    assert "not attempted" in messages(ch02.check_selective_scan_loop(placeholder))


def test_loop_returning_states_is_explained():
    def states(u, delta, A, B, C):
        b, d, length = u.shape
        x, xs = u.new_zeros(b, d, A.shape[1]), []
        for t in range(length):
            x = torch.exp(delta[:, :, t, None] * A) * x + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
            xs.append(x)
        return torch.stack(xs, dim=2)

    feedback = ch02.check_selective_scan_loop(states)
    assert not feedback
    assert "shape" in messages(feedback) and "states" in messages(feedback)


def test_loop_time_first_layout_is_explained():
    feedback = ch02.check_selective_scan_loop(lambda *args: loop_solution(*args).transpose(1, 2))
    assert not feedback
    assert "time last" in messages(feedback)


def test_loop_off_by_one_is_named():
    def off_by_one(u, delta, A, B, C):
        b, d, length = u.shape
        x, ys = u.new_zeros(b, d, A.shape[1]), []
        for t in range(length):
            ys.append((x * C[:, None, :, t]).sum(-1))  # read out before the update
            x = torch.exp(delta[:, :, t, None] * A) * x + (delta[:, :, t] * u[:, :, t])[..., None] * B[:, None, :, t]
        return torch.stack(ys, dim=-1)

    feedback = ch02.check_selective_scan_loop(off_by_one)
    assert not feedback
    assert "off by one" in messages(feedback)


def test_loop_softplus_is_named():
    feedback = ch02.check_selective_scan_loop(
        lambda u, delta, A, B, C: loop_solution(u, torch.nn.functional.softplus(delta), A, B, C))
    assert not feedback
    assert "softplus" in messages(feedback)


def test_loop_without_decay_is_named():
    feedback = ch02.check_selective_scan_loop(
        lambda u, delta, A, B, C: loop_solution(u, delta, torch.zeros_like(A), B, C))
    assert not feedback
    assert "never decays" in messages(feedback)


def test_loop_unrecognised_error_reports_position_and_values():
    feedback = ch02.check_selective_scan_loop(lambda *args: loop_solution(*args) * 1.5)
    assert not feedback
    assert "largest difference" in messages(feedback) and "index" in messages(feedback)


def test_loop_exception_is_reported_not_raised():
    def broken(u, delta, A, B, C):
        return u @ A  # shapes do not fit

    feedback = ch02.check_selective_scan_loop(broken)
    assert not feedback
    assert "raised" in messages(feedback)
    assert "shapes here" in messages(feedback)


# --------------------------------------------------------------------------- exercise 3: half-life


def half_life_solution(a, k):
    return math.log(2.0) / (k * abs(a))


def test_half_life_solution_passes():
    assert ch02.check_half_life_delta(half_life_solution)


def test_half_life_tensor_answer_passes():
    assert ch02.check_half_life_delta(lambda a, k: torch.tensor(math.log(2.0) / (k * -a)))


def test_half_life_placeholder_is_not_attempted():
    def placeholder(a, k):
        raise NotImplementedError

    assert "not attempted" in messages(ch02.check_half_life_delta(placeholder))


@pytest.mark.parametrize("wrong_answer, words", [
    (lambda a, k: math.log(2.0) / (k * a), "positive"),
    (lambda a, k: 0.5 / (k * abs(a)), "1/2 instead of ln 2"),
    (lambda a, k: math.log10(2.0) / (k * abs(a)), "log10"),
    (lambda a, k: math.log(2.0) / abs(a), "left out k"),
    (lambda a, k: math.log(2.0) / k, "left out a"),
    (lambda a, k: math.log(2.0) * k / abs(a), "instead of dividing"),
])
def test_half_life_typical_mistakes_are_named(wrong_answer, words):
    feedback = ch02.check_half_life_delta(wrong_answer)
    assert not feedback
    assert words in messages(feedback)


def test_half_life_reports_the_measured_fraction():
    feedback = ch02.check_half_life_delta(lambda a, k: 0.01)
    assert not feedback
    # a = -1, k = 10, delta = 0.01: the state keeps exp(-0.1) = 0.9048 of its value.
    assert "0.9048" in str(feedback)


def test_half_life_non_number_is_reported():
    feedback = ch02.check_half_life_delta(lambda a, k: "0.07")
    assert not feedback
    assert "expected a number" in messages(feedback)


def test_half_life_infinite_is_reported():
    assert "division by zero" in messages(ch02.check_half_life_delta(lambda a, k: float("inf")))


# --------------------------------------------------------------------------- exercise 4: LTI case


def lti_solution(u, delta, A, B, C):
    A_bar, B_bar = ssm.discretize_mamba(A, B, delta)
    return ssm.causal_convolution(u, ssm.ssm_kernel(A_bar, B_bar, C, u.shape[-1]))


def test_lti_solution_passes():
    assert ch02.check_lti_output(lti_solution)


def test_lti_placeholder_is_not_attempted():
    def placeholder(u, delta, A, B, C):
        raise NotImplementedError

    assert "not attempted" in messages(ch02.check_lti_output(placeholder))


def test_lti_with_zoh_is_named():
    def zoh(u, delta, A, B, C):
        A_bar, B_bar = ssm.discretize_zoh(A, B, delta)
        return ssm.causal_convolution(u, ssm.ssm_kernel(A_bar, B_bar, C, u.shape[-1]))

    feedback = ch02.check_lti_output(zoh)
    assert not feedback
    assert "discretize_mamba" in messages(feedback)


def test_lti_undiscretised_B_is_named():
    def raw_B(u, delta, A, B, C):
        A_bar, _ = ssm.discretize_mamba(A, B, delta)
        return ssm.causal_convolution(u, ssm.ssm_kernel(A_bar, B, C, u.shape[-1]))

    feedback = ch02.check_lti_output(raw_B)
    assert not feedback
    assert "b_bar = delta b" in messages(feedback)


def test_lti_shifted_kernel_is_named():
    def shifted(u, delta, A, B, C):
        y = lti_solution(u, delta, A, B, C)
        return torch.cat([y.new_zeros(1), y[:-1]])

    feedback = ch02.check_lti_output(shifted)
    assert not feedback
    assert "shifted by one step" in messages(feedback)


def test_lti_wrong_shape_is_reported():
    feedback = ch02.check_lti_output(lambda *args: lti_solution(*args)[None])
    assert not feedback
    assert "shape" in messages(feedback)
