"""Chapter 1's functions: discretisation rules, recurrence vs convolution, S4D-real init."""

import math

import pytest
import torch

from lightm_edu import ssm


def test_zoh_scalar_matches_closed_form():
    # x' = a x + b u with u held constant: x(dt) = e^{a dt} x0 + (e^{a dt} - 1)/a * b u.
    A, B, dt = torch.tensor([-0.7], dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64), 0.3
    A_bar, B_bar = ssm.discretize_zoh(A, B, dt)
    assert A_bar.item() == pytest.approx(math.exp(-0.7 * 0.3), rel=1e-12)
    assert B_bar.item() == pytest.approx((math.exp(-0.21) - 1) / -0.7 * 2.0, rel=1e-12)


def test_zoh_diagonal_equals_full_matrix():
    A = torch.tensor([-1.0, -2.5, -0.1], dtype=torch.float64)
    B = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    A_bar_d, B_bar_d = ssm.discretize_zoh(A, B, 0.2)
    A_bar_f, B_bar_f = ssm.discretize_zoh(torch.diag(A), B, 0.2)
    torch.testing.assert_close(torch.diag(A_bar_d), A_bar_f)
    torch.testing.assert_close(B_bar_d, B_bar_f)


def test_zoh_handles_zero_eigenvalue_as_the_limit_delta_B():
    # A free mass (singular A) and a zero diagonal entry: the integral of e^{As} is delta, not 0/0.
    A_bar, B_bar = ssm.discretize_zoh(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), 0.5)
    torch.testing.assert_close(B_bar, torch.full((2,), 0.5, dtype=torch.float64))
    A = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)  # double integrator
    A_bar, B_bar = ssm.discretize_zoh(A, torch.tensor([0.0, 1.0], dtype=torch.float64), 0.5)
    torch.testing.assert_close(B_bar, torch.tensor([0.125, 0.5], dtype=torch.float64))  # (dt^2/2, dt)


def test_bilinear_diagonal_equals_full_matrix_and_is_second_order():
    A = torch.tensor([-1.0, -3.0], dtype=torch.float64)
    B = torch.tensor([1.0, 0.5], dtype=torch.float64)
    Ad, Bd = ssm.discretize_bilinear(A, B, 0.1)
    Af, Bf = ssm.discretize_bilinear(torch.diag(A), B, 0.1)
    torch.testing.assert_close(torch.diag(Ad), Af)
    torch.testing.assert_close(Bd, Bf)
    # A_bar approximates exp(dt A) to second order: error ratio ~ 8 when dt halves.
    err = [abs(ssm.discretize_bilinear(A[:1], B[:1], dt)[0] - torch.exp(dt * A[:1])).item() for dt in (0.1, 0.05)]
    assert 7.0 < err[0] / err[1] < 9.0


def test_mamba_rule_is_zoh_for_A_and_first_order_for_B():
    A = ssm.s4d_real_init(1, 4, dtype=torch.float64)[0]
    B = torch.ones(4, dtype=torch.float64)
    for dt in (1e-2, 1e-3):
        A_m, B_m = ssm.discretize_mamba(A, B, dt)
        A_z, B_z = ssm.discretize_zoh(A, B, dt)
        torch.testing.assert_close(A_m, A_z)
        # delta B differs from ZOH's B_bar by O(delta^2 A): relative gap ~ delta |A| / 2.
        gap = ((B_m - B_z).abs() / B_z.abs()).max().item()
        assert gap == pytest.approx(dt * 4 / 2, rel=0.05)


def test_mamba_rule_rejects_full_matrix():
    with pytest.raises(ValueError, match="diagonal A"):
        ssm.discretize_mamba(torch.eye(2), torch.ones(2), 0.1)


@pytest.mark.parametrize("length", [1, 7, 64])
def test_recurrence_equals_convolution_full_matrix(length):
    A, B, C, D = ssm.mass_spring_damper()
    A_bar, B_bar = ssm.discretize_zoh(A, B, 0.1)
    u = torch.randn(3, length, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y_rec = ssm.ssm_recurrence(A_bar, B_bar, C, u, D=0.5)
    K = ssm.ssm_kernel(A_bar, B_bar, C, length)
    torch.testing.assert_close(ssm.causal_convolution(u, K, D=0.5), y_rec)


def test_recurrence_equals_convolution_diagonal():
    A = ssm.s4d_real_init(1, 8, dtype=torch.float64)[0]
    B = torch.linspace(-1, 1, 8, dtype=torch.float64)
    C = torch.linspace(0.5, 2, 8, dtype=torch.float64)
    A_bar, B_bar = ssm.discretize_zoh(A, B, 0.05)
    u = torch.randn(100, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    K = ssm.ssm_kernel(A_bar, B_bar, C, 100)
    torch.testing.assert_close(ssm.causal_convolution(u, K), ssm.ssm_recurrence(A_bar, B_bar, C, u))


def test_kernel_is_the_impulse_response():
    A, B, C, _ = ssm.mass_spring_damper()
    A_bar, B_bar = ssm.discretize_bilinear(A, B, 0.2)
    impulse = torch.zeros(30, dtype=torch.float64)
    impulse[0] = 1.0
    torch.testing.assert_close(ssm.ssm_recurrence(A_bar, B_bar, C, impulse), ssm.ssm_kernel(A_bar, B_bar, C, 30))


def test_recurrence_returns_states():
    A, B, C, _ = ssm.mass_spring_damper()
    A_bar, B_bar = ssm.discretize_zoh(A, B, 0.1)
    y, x = ssm.ssm_recurrence(A_bar, B_bar, C, torch.ones(5, dtype=torch.float64), return_states=True)
    assert x.shape == (5, 2)
    torch.testing.assert_close(y, x[:, 0])  # C = [1, 0] observes the position


def test_spring_discretised_tracks_exact_response():
    A, B, C, _ = ssm.mass_spring_damper()
    t_fine, y_fine = ssm.simulate_exact(A, B, C, lambda t: torch.ones_like(t), t_end=5.0, dt_fine=1e-3)
    A_bar, B_bar = ssm.discretize_zoh(A, B, 0.1)
    y = ssm.ssm_recurrence(A_bar, B_bar, C, torch.ones(50, dtype=torch.float64))
    # ZOH is exact for a held input: sample the fine solution at the coarse steps.
    torch.testing.assert_close(y, y_fine[99::100][:50], rtol=1e-6, atol=1e-9)
    # Static gain of the spring: once the oscillation has died out (e^{-c t / 2m} = e^{-8}), the
    # position under a unit force is u / k = 0.25.
    _, y_long = ssm.simulate_exact(A, B, C, lambda t: torch.ones_like(t), t_end=40.0, dt_fine=1e-2)
    assert y_long[-1].item() == pytest.approx(0.25, abs=1e-3)


def test_s4d_real_init():
    A = ssm.s4d_real_init(3, 4)
    assert A.shape == (3, 4)
    torch.testing.assert_close(A[2], torch.tensor([-1.0, -2.0, -3.0, -4.0]))
    with pytest.raises(ValueError, match="positive"):
        ssm.s4d_real_init(0, 4)


def test_kernel_rejects_short_kernel_and_bad_length():
    with pytest.raises(ValueError, match="kernel has 3 taps"):
        ssm.causal_convolution(torch.ones(5), torch.ones(3))
    with pytest.raises(ValueError, match="length must be at least 1"):
        ssm.ssm_kernel(torch.ones(2), torch.ones(2), torch.ones(2), 0)
    with pytest.raises(ValueError, match="mass must be positive"):
        ssm.mass_spring_damper(mass=0)
