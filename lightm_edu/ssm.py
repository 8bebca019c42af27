"""Linear time-invariant state-space models: continuous systems, discretisation, recurrence, kernel.

Chapter 1 of the book explains every function here. Each function implements one equation and is
named after it, so the chapter can show the formula and then call the function.

Glossary (code name -> symbol in the S4/Mamba papers):

    A        state matrix A, (n, n), or its diagonal (n,) / (d, n) for diagonal SSMs
    B        input matrix B, (n,) for one input channel
    C        output matrix C, (n,)
    D        feed-through (skip) scalar D
    delta    step size Delta (the sampling period of the discretisation)
    A_bar    discrete state matrix  A-bar, (n, n) or diagonal (n,)
    B_bar    discrete input matrix  B-bar, (n,)
    x        hidden state x_t, (..., n)
    u        input sequence u_t, (..., l)
    y        output sequence y_t, (..., l)
    K        convolution kernel K-bar = (C B_bar, C A_bar B_bar, ..., C A_bar^{l-1} B_bar), (l,)

Continuous system:  x'(t) = A x(t) + B u(t),   y(t) = C x(t) + D u(t).
Discrete system:    x_t = A_bar x_{t-1} + B_bar u_t,   y_t = C x_t + D u_t,   x_{-1} = 0.

Functions accept a full matrix ``A`` of shape (n, n) or a diagonal given as a vector of shape (n,);
diagonal systems (the case Mamba uses) never build an (n, n) matrix.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "mass_spring_damper",
    "discretize_zoh",
    "discretize_bilinear",
    "discretize_mamba",
    "ssm_recurrence",
    "ssm_kernel",
    "causal_convolution",
    "s4d_real_init",
    "simulate_exact",
]


def _is_diagonal(A: Tensor) -> bool:
    """True when ``A`` is given as its diagonal (a vector, or a batch of diagonals)."""
    return A.ndim == 1 or (A.ndim >= 2 and A.shape[-1] != A.shape[-2])


def _check_square_or_diagonal(A: Tensor) -> None:
    if A.ndim == 0:
        raise ValueError("A must be a matrix of shape (n, n) or a diagonal of shape (n,); got a scalar.")
    if A.ndim > 2:
        raise ValueError(
            f"A must be a matrix of shape (n, n) or a diagonal of shape (n,); got shape {tuple(A.shape)}."
        )


def mass_spring_damper(mass: float = 1.0, stiffness: float = 4.0, damping: float = 0.4):
    """A mass on a spring with a damper, pushed by a force u(t): the physical example of chapter 1.

    State x = (position p, velocity v). Newton: m v' = -k p - c v + u, so
    ``A = [[0, 1], [-k/m, -c/m]]``, ``B = [0, 1/m]``, ``C = [1, 0]`` (we observe the position), ``D = 0``.

    Returns:
        A (2, 2), B (2,), C (2,), D (scalar tensor), all float64.
    """
    if mass <= 0:
        raise ValueError(f"mass must be positive, got {mass}.")
    A = torch.tensor([[0.0, 1.0], [-stiffness / mass, -damping / mass]], dtype=torch.float64)
    B = torch.tensor([0.0, 1.0 / mass], dtype=torch.float64)
    C = torch.tensor([1.0, 0.0], dtype=torch.float64)
    D = torch.tensor(0.0, dtype=torch.float64)
    return A, B, C, D


def discretize_zoh(A: Tensor, B: Tensor, delta: float | Tensor):
    """Zero-order hold: ``A_bar = exp(delta A)``, ``B_bar = A^{-1} (exp(delta A) - I) B``.

    Exact when the input is held constant over each step of length ``delta``.

    Args:
        A: (n, n) matrix or (..., n) diagonal.
        B: (n,) or (..., n), matching ``A``.
        delta: step size, a float or a tensor broadcastable to the diagonal's batch shape.
    Returns:
        A_bar (same shape as ``A``), B_bar (same shape as ``B``).
    """
    _check_square_or_diagonal(A)
    delta = torch.as_tensor(delta, dtype=A.dtype, device=A.device)
    if _is_diagonal(A):
        dA = delta * A  # (..., n)
        A_bar = torch.exp(dA)
        # (exp(dA) - 1) / A, written as delta * expm1(dA)/dA so that A -> 0 stays finite (limit: delta).
        safe = torch.where(dA == 0, torch.ones_like(dA), dA)
        phi = torch.where(dA == 0, torch.ones_like(dA), torch.expm1(safe) / safe)
        return A_bar, delta * phi * B
    n = A.shape[-1]
    # Van Loan's block trick computes exp(delta A) and the integral in one matrix exponential, and
    # works for singular A (the spring's A is invertible, a free mass's is not).
    M = torch.zeros(n + 1, n + 1, dtype=A.dtype, device=A.device)
    M[:n, :n] = A
    M[:n, n] = B
    E = torch.linalg.matrix_exp(delta * M)  # (n+1, n+1)
    return E[:n, :n], E[:n, n]


def discretize_bilinear(A: Tensor, B: Tensor, delta: float | Tensor):
    """Bilinear (Tustin) rule used by S4: ``A_bar = (I - delta/2 A)^{-1} (I + delta/2 A)``,
    ``B_bar = (I - delta/2 A)^{-1} delta B``.

    Args and returns as :func:`discretize_zoh`.
    """
    _check_square_or_diagonal(A)
    delta = torch.as_tensor(delta, dtype=A.dtype, device=A.device)
    if _is_diagonal(A):
        denom = 1.0 - delta / 2.0 * A  # (..., n)
        return (1.0 + delta / 2.0 * A) / denom, delta * B / denom
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    left = eye - delta / 2.0 * A  # (n, n)
    A_bar = torch.linalg.solve(left, eye + delta / 2.0 * A)
    B_bar = torch.linalg.solve(left, (delta * B).unsqueeze(-1)).squeeze(-1)
    return A_bar, B_bar


def discretize_mamba(A: Tensor, B: Tensor, delta: float | Tensor):
    """The simplified rule in Mamba's code: ``A_bar = exp(delta A)`` (zero-order hold) but
    ``B_bar = delta B`` (Euler), which is the first-order term of ZOH's ``B_bar`` for small delta.

    Only for diagonal ``A`` (Mamba's case). Args and returns as :func:`discretize_zoh`.
    """
    if not _is_diagonal(A):
        raise ValueError(
            "discretize_mamba expects a diagonal A of shape (n,) or (d, n), as Mamba uses; "
            f"got a full matrix of shape {tuple(A.shape)}. Use discretize_zoh for full matrices."
        )
    delta = torch.as_tensor(delta, dtype=A.dtype, device=A.device)
    return torch.exp(delta * A), delta * B


def _apply_A(A_bar: Tensor, x: Tensor) -> Tensor:
    """A_bar x for a full matrix (n, n) or a diagonal (n,); x is (..., n)."""
    if _is_diagonal(A_bar):
        return A_bar * x
    return x @ A_bar.transpose(-1, -2)


def ssm_recurrence(A_bar: Tensor, B_bar: Tensor, C: Tensor, u: Tensor, D: float | Tensor = 0.0,
                   return_states: bool = False):
    """Run the discrete LTI system step by step: ``x_t = A_bar x_{t-1} + B_bar u_t``, ``y_t = C x_t + D u_t``.

    Args:
        A_bar: (n, n) or diagonal (n,).
        B_bar: (n,).  C: (n,).
        u: input sequence (..., l); leading dimensions are independent sequences.
        D: skip scalar.
        return_states: also return every state x_t.
    Returns:
        y (..., l), and if asked the states (..., l, n).
    """
    n = B_bar.shape[-1]
    x = u.new_zeros(*u.shape[:-1], n)  # (..., n)
    ys, xs = [], []
    # unbind + stack (not u[..., t] in the loop) keeps the backward pass linear in l: see chapter 3.
    for u_t in u.unbind(-1):  # u_t: (...)
        x = _apply_A(A_bar, x) + B_bar * u_t.unsqueeze(-1)  # (..., n)
        ys.append((x * C).sum(-1) + D * u_t)  # (...)
        if return_states:
            xs.append(x)
    y = torch.stack(ys, dim=-1)  # (..., l)
    if return_states:
        return y, torch.stack(xs, dim=-2)  # (..., l, n)
    return y


def ssm_kernel(A_bar: Tensor, B_bar: Tensor, C: Tensor, length: int) -> Tensor:
    """The convolution kernel ``K_k = C A_bar^k B_bar`` for k = 0 .. length-1.

    Unrolling the recurrence gives ``y_t = sum_k K_k u_{t-k} + D u_t``: an LTI SSM is a causal convolution.

    Returns:
        K of shape (length,).
    """
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}.")
    if _is_diagonal(A_bar):
        powers = A_bar.unsqueeze(0) ** torch.arange(length, dtype=A_bar.dtype,
                                                    device=A_bar.device).unsqueeze(-1)  # (l, n)
        return (powers * B_bar * C).sum(-1)  # (l,)
    K, v = [], B_bar  # v = A_bar^k B_bar, (n,)
    for _ in range(length):
        K.append((C * v).sum(-1))
        v = A_bar @ v
    return torch.stack(K)


def causal_convolution(u: Tensor, K: Tensor, D: float | Tensor = 0.0) -> Tensor:
    """``y_t = sum_{k<=t} K_k u_{t-k} + D u_t``, computed with the FFT in O(l log l).

    Args:
        u: (..., l).  K: (l,) (a longer kernel is cut to l).
    Returns:
        y (..., l).
    """
    length = u.shape[-1]
    if K.shape[-1] < length:
        raise ValueError(f"the kernel has {K.shape[-1]} taps but the input has length {length}; "
                         "compute the kernel with ssm_kernel(..., length=u.shape[-1]).")
    K = K[..., :length]
    n_fft = 2 * length  # zero padding turns the FFT's circular convolution into a linear one
    y = torch.fft.irfft(torch.fft.rfft(u, n=n_fft) * torch.fft.rfft(K, n=n_fft), n=n_fft)[..., :length]
    return y + D * u


def s4d_real_init(d: int, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """S4D-Real initialisation, as in Mamba: ``A[i, j] = -(j + 1)`` for every channel i.

    Mamba stores ``A_log = log(-A)`` = log(1..n) and uses ``A = -exp(A_log)``, which keeps A negative
    (a stable, decaying system) whatever the optimiser does to ``A_log``.

    Returns:
        A of shape (d, n).
    """
    if d < 1 or n < 1:
        raise ValueError(f"d and n must be positive, got d={d}, n={n}.")
    return -torch.arange(1, n + 1, dtype=dtype).repeat(d, 1)


def simulate_exact(A: Tensor, B: Tensor, C: Tensor, u_of_t, t_end: float, dt_fine: float = 1e-3):
    """A near-exact continuous-time reference: ZOH with a very fine step and a smooth input.

    Args:
        u_of_t: callable mapping a time tensor to the input value.
    Returns:
        t (m,), y (m,), float64.
    """
    steps = int(math.ceil(t_end / dt_fine))
    t = torch.arange(steps, dtype=torch.float64) * dt_fine
    A_bar, B_bar = discretize_zoh(A.double(), B.double(), dt_fine)
    return t, ssm_recurrence(A_bar, B_bar, C.double(), u_of_t(t))
