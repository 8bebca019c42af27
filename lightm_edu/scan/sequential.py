"""The selective scan by its definition: one loop over time. The reference for every other backend.

Chapter 2 explains it line by line. Glossary (code name -> symbol in the Mamba paper):

    u           input x_t of the SSM, (b, d, l)
    delta       step size Delta_t, one per channel and time step, (b, d, l)
    A           state matrix A (diagonal, real, negative), (d, n)
    B, C        input and output projections B_t, C_t, shared by all d channels, (b, n, l)
    D           skip connection D, (d,)
    z           gate branch; the output is multiplied by SiLU(z), (b, d, l)
    delta_bias  bias added to delta before the softplus, (d,)
    x           hidden state h_t, (b, d, n)
    dA          A_bar_t = exp(Delta_t A), (b, d, l, n)
    dBu         B_bar_t u_t = Delta_t B_t u_t, (b, d, l, n)

    x_t = A_bar_t * x_{t-1} + B_bar_t u_t          (x_{-1} = 0)
    y_t = <x_t, C_t> + D u_t ;  out_t = y_t * SiLU(z_t)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import compute_dtype, validate_scan_inputs


def discretize_selective(delta, A, B, u):
    """Mamba's discretisation of a selective SSM, for all time steps at once.

    ``A_bar = exp(delta A)`` (zero-order hold) and ``B_bar u = delta B u`` (Euler).

    Args:
        delta: (b, d, l).  A: (d, n).  B: (b, n, l).  u: (b, d, l).
    Returns:
        dA (b, d, l, n), dBu (b, d, l, n).
    """
    dA = torch.exp(delta.unsqueeze(-1) * A.unsqueeze(1))  # (b, d, l, n)
    dBu = (delta * u).unsqueeze(-1) * B.transpose(1, 2).unsqueeze(1)  # (b, d, l, n)
    return dA, dBu


def selective_scan_sequential(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                              delta_softplus=False, return_last_state=False):
    """Selective scan as a loop over time steps, differentiated by autograd.

    Same arguments and results as ``mamba_ssm.selective_scan_fn``; computed in float32 (float64
    if any input is float64) and returned in the dtype of ``u``.

    Returns:
        out (b, d, l), and the last state (b, d, n) if ``return_last_state``.
    """
    validate_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    out_dtype = u.dtype
    work = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    u, delta, A, B, C = (t.to(work) for t in (u, delta, A, B, C))

    if delta_bias is not None:
        delta = delta + delta_bias.to(work).unsqueeze(-1)  # (b, d, l)
    if delta_softplus:
        delta = F.softplus(delta)
    dA, dBu = discretize_selective(delta, A, B, u)  # (b, d, l, n) each

    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])  # (b, d, n)
    states = []
    # Iterate with unbind, never dA[:, :, t]: indexing one step inside an autograd loop makes the
    # backward pass write a full-size zero tensor per step, i.e. O(l^2) (chapter 3 measures it).
    for dA_t, dBu_t in zip(dA.unbind(2), dBu.unbind(2)):
        x = dA_t * x + dBu_t  # (b, d, n)
        states.append(x)
    # The read-out <x_t, C_t> needs no loop: one contraction over all time steps at once.
    y = torch.einsum("bdln,bnl->bdl", torch.stack(states, dim=2), C)  # (b, d, l)

    out = y if D is None else y + D.to(work).unsqueeze(-1) * u
    if z is not None:
        out = out * F.silu(z.to(work))
    out = out.to(out_dtype)
    return (out, x) if return_last_state else out
