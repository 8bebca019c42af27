"""The ``"parallel"`` backend: a chunked selective scan in plain PyTorch, with a hand-written backward.

Chapter 3 explains it. Two ideas keep it fast and lean:

* **Chunked scan** (:func:`lightm_edu.scan.linear.linear_scan_chunked_`): about 5 sqrt(l) tensor
  operations per sequence instead of l, each over many elements, so Python overhead vanishes.
* **Segments and recomputation**, as the CUDA kernel does: the sequence is processed in segments
  of at most ``segment`` steps. The (b, d, l, n) tensors of states exist for one segment at a time,
  the forward pass saves only the inputs and one (b, d, n) state per segment, and the backward pass
  recomputes a segment's states right before it needs them. Peak memory grows with the segment,
  not with l.

Backward pass. With ``h_t = a_t h_{t-1} + Delta_t B_t u_t``, ``a_t = exp(Delta_t A)``,
``y_t = <h_t, C_t>`` and ``g_t = dLoss/dh_t``:

    g_t = a_{t+1} g_{t+1} + dy_t C_t                    (the same scan, run backwards)
    dC_t = sum_d dy_t h_t ;  dB_t = sum_d g_t Delta_t u_t ;  du_t = Delta_t sum_n g_t B_t
    dDelta_t = sum_n g_t a_t h_{t-1} A + u_t sum_n g_t B_t ;  dA = sum_{b,t} g_t a_t h_{t-1} Delta_t

Layout inside a segment is time-major, (s, b, d, n), so each time step is one contiguous block.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F

from ._validate import compute_dtype, validate_scan_inputs
from .linear import linear_scan_chunked_

#: Elements of one (s, b, d, n) segment tensor, by device. The segment length is this budget
#: divided by b*d*n. CPU: 8 MiB in float32, small enough that every temporary is cheap - the C
#: allocator (glibc) hands blocks above 32 MiB straight to the operating system, so each new one
#: costs a round of page faults (10 ms for 32 MiB on a 2-core machine), more than the arithmetic
#: done on it. GPU: 512 MiB, so that typical sequences are one segment and few kernels launch.
SEGMENT_ELEMENTS = {"cpu": 2 ** 21, "cuda": 2 ** 27}

#: Steps per chunk on the GPU. Small chunks give a deep tree of large operations (GPUs like few,
#: big kernels); on the CPU sqrt(segment) balances the two loops instead.
GPU_CHUNK = 8


def default_segment(batch: int, d: int, n: int, device_type: str = "cpu") -> int:
    """Steps per segment so that one (s, b, d, n) tensor holds about ``SEGMENT_ELEMENTS`` values."""
    budget = SEGMENT_ELEMENTS.get(device_type, SEGMENT_ELEMENTS["cpu"])
    return max(1, budget // (batch * d * n))


def default_chunk_for(segment: int, device_type: str = "cpu") -> int:
    """Steps per chunk: about sqrt(segment) on the CPU, ``GPU_CHUNK`` on a GPU."""
    return GPU_CHUNK if device_type == "cuda" else max(1, round(segment ** 0.5))


class _Workspace(threading.local):
    """Scratch tensors reused from call to call, one set per thread, on the CPU only.

    A fresh multi-megabyte CPU tensor costs page faults on first touch, often more than the
    arithmetic done on it; GPUs need no such cache (PyTorch's CUDA allocator already keeps
    memory). At most five segment-sized tensors are kept: ``clear_workspace()`` frees them.
    """

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape, like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        if like.device.type != "cpu":
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != like.dtype:
            buffer = self.buffers[name] = torch.empty(numel, dtype=like.dtype)
        return buffer[:numel].view(shape)


_WORKSPACE = _Workspace()


def clear_workspace() -> None:
    """Free the scratch tensors that the parallel backend keeps for reuse in this thread."""
    _WORKSPACE.buffers.clear()


def _time_major(t):
    """(b, k, s) -> (s, b, k), contiguous."""
    return t.permute(2, 0, 1).contiguous()


def _segment_inputs(dt_tm, u_tm, A, B_tm):
    """Decays and inputs of one segment, time-major, in workspace tensors.

    Args:
        dt_tm, u_tm: (s, b, d).  A: (d, n).  B_tm: (s, b, n).
    Returns:
        a = exp(delta A) (s, b, d, n), x = delta B u (s, b, d, n).
    """
    shape = (*dt_tm.shape, A.shape[1])
    a = torch.mul(dt_tm.unsqueeze(-1), A, out=_WORKSPACE.get("a", shape, dt_tm))
    a.exp_()  # (s, b, d, n)
    x = torch.mul((dt_tm * u_tm).unsqueeze(-1), B_tm.unsqueeze(2),
                  out=_WORKSPACE.get("x", shape, dt_tm))  # (s, b, d, n)
    return a, x


def _segment_states(dt_tm, u_tm, A, B_tm, h0, chunk):
    """States h_t of one segment, starting from h0 (b, d, n) or zeros. Returns a, h (s, b, d, n)."""
    a, x = _segment_inputs(dt_tm, u_tm, A, B_tm)
    return a, linear_scan_chunked_(a, x, h0, chunk, decay=_WORKSPACE.get("decay", x.shape, x))


def _product(p, q):
    """p * q (broadcast to the segment shape) in the scratch tensor: for products that are only
    summed."""
    shape = torch.broadcast_shapes(p.shape, q.shape)
    return torch.mul(p, q, out=_WORKSPACE.get("product", shape, p))


# The contractions over n below are tiny matrix products repeated s*b times. A CPU does them
# fastest as multiply-and-sum; a GPU as one batched matmul, which reads the big tensor only once.

def _sum_n_times(h, v):
    """sum_n h[s, b, d, n] v[s, b, n] -> (s, b, d), e.g. y_t = <h_t, C_t>."""
    s, b, d, n = h.shape
    if h.is_cuda:
        return torch.bmm(h.view(s * b, d, n), v.reshape(s * b, n, 1)).view(s, b, d)
    return _product(h, v.unsqueeze(2)).sum(-1)


def _sum_n_times_A(g, A):
    """sum_n g[s, b, d, n] A[d, n] -> (s, b, d)."""
    s, b, d, n = g.shape
    if g.is_cuda:
        return torch.bmm(g.view(s * b, d, n).transpose(0, 1), A.unsqueeze(-1)).view(d, s, b).permute(1, 2, 0)
    return _product(g, A).sum(-1)


def _sum_sb_times(g, w):
    """sum_{s,b} g[s, b, d, n] w[s, b, d] -> (d, n), e.g. dA."""
    s, b, d, n = g.shape
    if g.is_cuda:
        return torch.bmm(g.view(s * b, d, n).permute(1, 2, 0), w.reshape(s * b, d).t().unsqueeze(-1)).squeeze(-1)
    return _product(g, w.unsqueeze(-1)).sum(dim=(0, 1))


def _contract_C(h, C):
    """y_t = <h_t, C_t>: h (s, b, d, n), C (b, n, s) -> y (b, d, s)."""
    return _sum_n_times(h, _time_major(C)).permute(1, 2, 0)


class _ChunkedSelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, segment, chunk, save_states):
        dt = delta if delta_bias is None else delta + delta_bias.unsqueeze(-1)  # (b, d, l)
        if delta_softplus:
            dt = F.softplus(dt)
        batch, d, length = u.shape
        y = torch.empty(batch, d, length, dtype=u.dtype, device=u.device)
        entering = []  # state entering each segment, (b, d, n) each
        kept = []  # with save_states: every segment's states, (s, b, d, n) each
        h = None
        for s0 in range(0, length, segment):
            s1 = min(length, s0 + segment)
            entering.append(h)
            _, states = _segment_states(_time_major(dt[..., s0:s1]), _time_major(u[..., s0:s1]), A,
                                        _time_major(B[..., s0:s1]), h, chunk)
            y[..., s0:s1] = _contract_C(states, C[..., s0:s1])
            h = states[-1].clone()  # (b, d, n)
            if save_states and any(ctx.needs_input_grad):  # (workspace tensors are reused: copy)
                kept.append(states.clone() if states.device.type == "cpu" else states)
        out = y if D is None else y + D.unsqueeze(-1) * u
        pre_gate = out
        if z is not None:
            out = out * F.silu(z)
        ctx.delta_softplus = delta_softplus
        ctx.segment, ctx.chunk = segment, chunk
        ctx.entering = entering
        ctx.kept = kept
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, pre_gate if z is not None else None)
        return out, h

    @staticmethod
    def backward(ctx, grad_out, grad_last):
        u, delta, A, B, C, D, z, delta_bias, pre_gate = ctx.saved_tensors
        segment, chunk = ctx.segment, ctx.chunk
        batch, d, length = u.shape

        grads = dict.fromkeys(("u", "delta", "A", "B", "C", "D", "z", "delta_bias"))
        dy = grad_out  # (b, d, l), gradient of the pre-gate output
        if z is not None:
            sig = torch.sigmoid(z)
            grads["z"] = grad_out * pre_gate * sig * (1 + z * (1 - sig))  # d SiLU(z) / dz
            dy = grad_out * z * sig  # grad_out * SiLU(z)
        if D is not None:
            grads["D"] = (dy * u).sum(dim=(0, 2))
        du = dy * D.unsqueeze(-1) if D is not None else torch.zeros_like(u)

        dt_raw = delta if delta_bias is None else delta + delta_bias.unsqueeze(-1)
        dt = F.softplus(dt_raw) if ctx.delta_softplus else dt_raw  # (b, d, l)
        ddt = torch.empty_like(dt)
        dA = torch.zeros_like(A)
        dB = torch.empty_like(B)
        dC = torch.empty_like(C)

        g_next = grad_last  # gradient entering from after the segment, (b, d, n) or None
        starts = list(range(0, length, segment))
        for index in range(len(starts) - 1, -1, -1):
            s0 = starts[index]
            s1 = min(length, s0 + segment)
            s = s1 - s0
            dt_tm = _time_major(dt[..., s0:s1])  # (s, b, d)
            u_tm = _time_major(u[..., s0:s1])  # (s, b, d)
            B_tm = _time_major(B[..., s0:s1])  # (s, b, n)
            h_in = ctx.entering[index]
            if ctx.kept:  # states saved by the forward pass: only the decays are recomputed
                h = ctx.kept.pop()
                a = torch.mul(dt_tm.unsqueeze(-1), A, out=_WORKSPACE.get("a", h.shape, h)).exp_()
            else:
                a, h = _segment_states(dt_tm, u_tm, A, B_tm, h_in, chunk)  # (s, b, d, n) each

            # dC_t = sum_d dy_t h_t
            dy_tm = _time_major(dy[..., s0:s1])  # (s, b, d)
            dC[..., s0:s1] = _product(h, dy_tm.unsqueeze(-1)).sum(2).permute(1, 2, 0)  # (b, n, s)

            # g_t = a_{t+1} g_{t+1} + dy_t C_t, scanned backwards. The decays a_{t+1} are `a`
            # shifted by one step, so the scan runs on a[1:] and the last step, which needs the
            # first decay of the next segment (none after the end), is done here.
            g = torch.mul(dy_tm.unsqueeze(-1), _time_major(C[..., s0:s1]).unsqueeze(2),
                          out=_WORKSPACE.get("g", h.shape, h))  # (s, b, d, n)
            if g_next is not None:
                if s1 < length:
                    a_after = (dt[:, :, s1].unsqueeze(-1) * A).exp_()  # (b, d, n)
                    g[-1].addcmul_(a_after, g_next)
                else:
                    g[-1].add_(g_next)  # the gradient of the returned last state
            linear_scan_chunked_(a[1:], g[:-1], g[-1], chunk, reverse=True,
                                 decay=_WORKSPACE.get("decay", h.shape, h))
            g_next = g[0].clone()

            # g_t a_t h_{t-1}, built in place in `a` (h_{-1} is the entering state).
            a.mul_(g)
            a[1:].mul_(h[:-1])
            if h_in is None:
                a[0].zero_()
            else:
                a[0].mul_(h_in)
            g_a_h = a  # (s, b, d, n)
            del h

            gB = _sum_n_times(g, B_tm)  # (s, b, d): sum_n g_t B_t
            dB[..., s0:s1] = _product(g, (dt_tm * u_tm).unsqueeze(-1)).sum(2).permute(1, 2, 0)  # (b, n, s)
            del g
            dA += _sum_sb_times(g_a_h, dt_tm)  # (d, n)
            ddt_tm = _sum_n_times_A(g_a_h, A) + u_tm * gB  # (s, b, d)
            del g_a_h
            ddt[..., s0:s1] = ddt_tm.permute(1, 2, 0)
            du[..., s0:s1] += (dt_tm * gB).permute(1, 2, 0)

        if ctx.delta_softplus:
            ddt = ddt * torch.sigmoid(dt_raw)  # softplus' = sigmoid
        grads["delta"] = ddt
        if delta_bias is not None:
            grads["delta_bias"] = ddt.sum(dim=(0, 2))
        grads.update(u=du, A=dA, B=dB, C=dC)
        return (grads["u"], grads["delta"], grads["A"], grads["B"], grads["C"], grads["D"],
                grads["z"], grads["delta_bias"], None, None, None, None)


def selective_scan_parallel(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                            delta_softplus=False, return_last_state=False,
                            segment: int | None = None, chunk: int | None = None,
                            save_states: bool = False):
    """Selective scan with the chunked algorithm; same arguments and results as
    ``mamba_ssm.selective_scan_fn``, plus three knobs: ``segment``, the steps per segment
    (default :func:`default_segment`); ``chunk``, the steps per chunk (default
    :func:`default_chunk_for`); and ``save_states``, which trades memory for speed: the forward
    pass keeps the (b, d, l, n) states for the backward pass instead of recomputing them (about a
    quarter less work in forward+backward, but memory that grows with l, like autograd on a loop).

    Returns:
        out (b, d, l) in the dtype of ``u``, and the last state (b, d, n) if ``return_last_state``.
    """
    validate_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    device_type = u.device.type
    if segment is None:
        segment = default_segment(u.shape[0], u.shape[1], A.shape[1], device_type)
    if segment < 1:
        raise ValueError(f"segment must be a positive number of steps, got {segment}.")
    out_dtype = u.dtype
    work = compute_dtype(u, delta, A, B, C, D, z, delta_bias)
    cast = [None if t is None else t.to(work) for t in (u, delta, A, B, C, D, z, delta_bias)]
    segment = min(segment, u.shape[-1])
    chunk = chunk if chunk is not None else default_chunk_for(segment, device_type)
    out, last = _ChunkedSelectiveScan.apply(*cast, delta_softplus, segment, chunk, save_states)
    out = out.to(out_dtype)
    return (out, last) if return_last_state else out
