"""The first-order linear recurrence ``h_t = a_t * h_{t-1} + x_t`` and three ways to compute it.

Chapter 3 builds the parallel selective scan from these pieces. Every tensor is *time-major*: time
is dimension 0, shape (l, ...), and everything after it is independent, elementwise work.

    a   decay a_t (for the selective scan: A_bar_t = exp(Delta_t A)), (l, ...)
    x   input x_t (for the selective scan: B_bar_t u_t), (l, ...)
    h   state h_t, (l, ...)

Why it parallelises: a pair (a, x) is the affine map h -> a h + x, and composing two such maps
gives another one,

    (a1, x1) then (a2, x2)  =  (a2 a1, a2 x1 + x2),

an *associative* operator (:func:`combine`). Any bracketing gives the same answer, so the l steps
can be combined as a tree (log-depth, :func:`linear_scan_log_depth`) or in chunks
(:func:`linear_scan_chunked_`), instead of one after another (:func:`linear_scan_sequential`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["combine", "linear_scan_sequential", "linear_scan_log_depth", "linear_scan_chunked_",
           "default_chunk"]


def combine(left: tuple[Tensor, Tensor], right: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Compose two affine steps: apply ``left = (a1, x1)`` first, then ``right = (a2, x2)``.

    ``(a1, x1) . (a2, x2) = (a2 * a1, a2 * x1 + x2)``. Associative, with identity ``(1, 0)``.
    """
    a1, x1 = left
    a2, x2 = right
    return a2 * a1, a2 * x1 + x2


def linear_scan_sequential(a: Tensor, x: Tensor, h0: Tensor | None = None) -> Tensor:
    """``h_t = a_t h_{t-1} + x_t`` one step at a time (l steps, each O(1) depth).

    Args:
        a, x: (l, ...).  h0: state before the first step, (...); zeros when None.
    Returns:
        h (l, ...).
    """
    h = torch.zeros_like(x[0]) if h0 is None else h0
    states = []
    for a_t, x_t in zip(a.unbind(0), x.unbind(0)):
        h = a_t * h + x_t  # (...)
        states.append(h)
    return torch.stack(states, dim=0)  # (l, ...)


def linear_scan_log_depth(a: Tensor, x: Tensor, rounds: int | None = None) -> Tensor:
    """Hillis-Steele inclusive scan with :func:`combine`: ceil(log2 l) rounds, each fully parallel.

    Round k combines every position t with position t - 2^k. After the last round, position t holds
    the composition of steps 0..t, whose ``x`` part is ``h_t`` (with ``h_{-1} = 0``). Work is
    O(l log l) instead of O(l): more arithmetic, far fewer dependent steps. Differentiable.

    Args:
        a, x: (l, ...).
        rounds: stop after this many rounds (to look at the partial prefixes); None runs them all.
    Returns:
        h (l, ...), or the partial result after ``rounds`` rounds.
    """
    length = x.shape[0]
    offset, done = 1, 0
    while offset < length and (rounds is None or done < rounds):
        done += 1
        # Positions t >= offset take (a, x) at t - offset as their left neighbour; the first
        # `offset` positions already hold complete prefixes and stay as they are.
        a_new, x_new = combine((a[:-offset], x[:-offset]), (a[offset:], x[offset:]))
        a = torch.cat([a[:offset], a_new], dim=0)
        x = torch.cat([x[:offset], x_new], dim=0)
        offset *= 2
    return x


def _steps_(a: Tensor, x: Tensor, steps, h: Tensor | None):
    """Plain in-place steps ``x_t <- a_t h + x_t; h <- x_t`` over the time indices ``steps``."""
    if len(steps) == 0:
        return h
    low = min(steps)
    # Views of just the steps needed, made by one call instead of an indexing per step.
    a_steps, x_steps = a[low:max(steps) + 1].unbind(0), x[low:max(steps) + 1].unbind(0)
    for t in steps:
        if h is not None:
            x_steps[t - low].addcmul_(a_steps[t - low], h)
        h = x_steps[t - low]
    return h


def default_chunk(length: int) -> int:
    """Chunk size that balances the two sequential loops of the chunked scan: about sqrt(l)."""
    return max(1, int(math.isqrt(max(length, 1))))


@torch.no_grad()
def linear_scan_chunked_(a: Tensor, x: Tensor, h0: Tensor | None = None, chunk: int | None = None,
                         reverse: bool = False, decay: Tensor | None = None) -> Tensor:
    """Chunked scan, computed in place in ``x`` (no autograd; the selective scan's backward calls
    it too). Returns ``x``, now holding ``h``.

    With ``reverse=True`` it computes ``h_t = a_t h_{t+1} + x_t`` from the end backwards, with
    ``h0`` the state after the last step: the recurrence of the backward pass.

    The l steps are cut into c chunks of ``chunk`` steps. Three passes:

    1. inside every chunk, at once for all chunks: the scan started from a zero state, and the
       running product of the decays (``chunk`` steps, each over c chunks in parallel);
    2. across chunks: the true state entering each chunk. The chunks' total decays and final local
       states form a linear recurrence of length c, solved by this same function (recursively, so
       a small ``chunk`` gives a tree of depth log_chunk(l): few, large operations, as a GPU likes);
    3. everywhere at once, by linearity: ``h_t = local_t + (a_first ... a_t) * h_entering``.

    Steps left over when ``chunk`` does not divide l, and sequences no longer than ``chunk``, run
    one step at a time. With chunk ~ sqrt(l) (the CPU default) that is about 3 sqrt(l) small
    operations instead of l.

    Args:
        a, x: (l, ...), contiguous; ``x`` is overwritten.  h0: (...) or None (zeros).
        chunk: steps per chunk (default :func:`default_chunk`).
        decay: optional scratch tensor with as many elements as ``x`` (saves an allocation).
    Returns:
        x, holding h (l, ...).
    """
    length = x.shape[0]
    chunk = default_chunk(length) if chunk is None else max(1, chunk)
    if length <= chunk or chunk == 1:
        order = range(length - 1, -1, -1) if reverse else range(length)
        _steps_(a, x, order, h0)
        return x
    n_chunks = length // chunk
    body_len = n_chunks * chunk
    # Chunks cover [0, body_len); the leftover tail runs step by step: after the chunks going
    # forward, before them (it is at the end of the sequence) going backward.
    tail = range(length - 1, body_len - 1, -1) if reverse else range(body_len, length)
    h = h0
    if reverse:
        h = _steps_(a, x, tail, h)
    rest = x.shape[1:]
    xc = x[:body_len].view(n_chunks, chunk, *rest)  # (c, chunk, ...)
    ac = a[:body_len].view(n_chunks, chunk, *rest)  # (c, chunk, ...)
    first, last, step = (chunk - 1, 0, -1) if reverse else (0, chunk - 1, 1)
    # Pass 1: local scans from a zero state, and running products of the decays.
    # (c, chunk, ...): product of a from the chunk's start to t
    decay = torch.empty_like(ac) if decay is None else decay.view(-1)[:ac.numel()].view(ac.shape)
    decay[:, first] = ac[:, first]
    xs, as_, ds = xc.unbind(1), ac.unbind(1), decay.unbind(1)  # views of each step, (c, ...) each
    for t in range(first + step, last + step, step):
        xs[t].addcmul_(as_[t], xs[t - step])
        torch.mul(ds[t - step], as_[t], out=ds[t])
    # Pass 2: the state after each chunk, H_c = decay_c H_{c-1} + local_c, is itself a scan.
    # (clone, not contiguous(): the recursion writes into its x, which must not alias xc.)
    exits = linear_scan_chunked_(decay[:, last].contiguous(), xc[:, last].clone(), h,
                                 chunk, reverse)  # (c, ...)
    # Pass 3: chunk c starts from the state after its predecessor in processing order (the first
    # one from h0, or from nothing when h0 is None).
    if reverse:
        later, entering = slice(None, -1), exits[1:]
        if h is not None:
            xc[-1].addcmul_(decay[-1], h)
    else:
        later, entering = slice(1, None), exits[:-1]
        if h is not None:
            xc[0].addcmul_(decay[0], h)
    xc[later].addcmul_(decay[later], entering.unsqueeze(1))
    h = exits[0] if reverse else exits[-1]
    if not reverse:
        _steps_(a, x, tail, h)
    return x
