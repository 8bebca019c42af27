"""Timing and memory of selective-scan backends, measured side by side.

Used by ``benchmarks/scan.py`` (the full table, each run in its own process) and by chapter 3
(a short live table). Every backend computes the same complete selective scan: softplus of delta,
``exp(delta A)``, ``delta B u``, the scan, ``<h, C>``, ``D u`` and the ``SiLU(z)`` gate.

    sequential, parallel, mamba_ssm   lightm_edu's backends (``lightm_edu.selective_scan``)
    parallel_saved                    "parallel" with ``save_states=True`` (keeps the states for the
                                      backward pass instead of recomputing them: faster, more memory)
    pscan                             mambapy's Blelloch scan (optional: ``pip install mambapy``)
"""

from __future__ import annotations

import importlib.util
import time

__all__ = ["make_inputs", "pscan_selective_scan", "measure", "available", "time_forward", "BATCH", "D_INNER",
           "D_STATE", "LENGTHS"]

BATCH, D_INNER, D_STATE = 2, 64, 16
LENGTHS = (1024, 4096, 16384, 65536)  # the lengths of the full benchmark


def make_inputs(length, device, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).to(device).requires_grad_()

    A = (-torch.rand(D_INNER, D_STATE, generator=g) * D_STATE - 0.5).to(device).requires_grad_()
    return dict(u=randn(BATCH, D_INNER, length), delta=randn(BATCH, D_INNER, length, scale=0.5, shift=-2.0),
                A=A, B=randn(BATCH, D_STATE, length), C=randn(BATCH, D_STATE, length),
                D=randn(D_INNER), z=randn(BATCH, D_INNER, length), delta_bias=randn(D_INNER, scale=0.1))


def pscan_selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True):
    """The same selective scan computed with mambapy's pscan (layout (b, l, d, n))."""
    import torch.nn.functional as F
    from mambapy.pscan import pscan

    dt = delta + delta_bias[:, None]
    dt = F.softplus(dt) if delta_softplus else dt
    dt = dt.transpose(1, 2)  # (b, l, d)
    dA = (dt.unsqueeze(-1) * A).exp()  # (b, l, d, n)
    Bu = dt.unsqueeze(-1) * B.transpose(1, 2).unsqueeze(2) * u.transpose(1, 2).unsqueeze(-1)  # (b, l, d, n)
    hs = pscan(dA, Bu)  # (b, l, d, n)
    y = (hs @ C.transpose(1, 2).unsqueeze(-1)).squeeze(-1).transpose(1, 2)  # (b, d, l)
    return (y + D[:, None] * u) * F.silu(z)


def available(name: str, device: str = "cpu") -> bool:
    """Whether backend ``name`` can be measured on ``device`` here."""
    if name == "pscan":
        return importlib.util.find_spec("mambapy") is not None
    if name == "mamba_ssm":
        return device == "cuda" and importlib.util.find_spec("mamba_ssm") is not None
    return name in ("sequential", "parallel", "parallel_saved")


def get_fn(name):
    if name == "pscan":
        return pscan_selective_scan
    from lightm_edu import selective_scan

    if name == "parallel_saved":
        from lightm_edu.scan.parallel import selective_scan_parallel

        return lambda **kw: selective_scan_parallel(**kw, delta_softplus=True, save_states=True)
    return lambda **kw: selective_scan(**kw, delta_softplus=True, backend=name)


def _rss_mib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def measure(name: str, length: int, device: str = "cpu", repeats: int = 3, budget_s: float = 3.0) -> dict:
    """Best-of forward and forward+backward seconds, and the peak extra memory of one
    forward+backward in MiB (CUDA: allocator peak; CPU: the process's peak resident memory, which
    is only meaningful in a fresh process).

    Returns:
        {"fwd": seconds, "fwd_bwd": seconds, "peak_mib": MiB}
    """
    import torch

    fn = get_fn(name)
    inputs = make_inputs(length, device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            fn(**inputs)
        sync()

    def forward_backward():
        fn(**inputs).sum().backward()
        sync()
        for t in inputs.values():
            t.grad = None

    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_mib("VmRSS")

    results = []
    for step in (forward_backward, forward):
        times, spent = [], 0.0
        while len(times) < repeats + 1 and (spent < budget_s or len(times) < 2):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
            spent += times[-1]
            if step is forward_backward and len(times) == 1:  # peak memory of one fwd+bwd
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" \
                    else _rss_mib("VmHWM") - base
        results.append(min(times[1:]))  # the first run is a warm-up
    return {"fwd_bwd": results[0], "fwd": results[1], "peak_mib": peak}




def time_forward(model, x, repeats: int = 3, budget_s: float = 10.0) -> float:
    """Best-of wall time in seconds of ``model(x)`` without gradients, after one warm-up run
    (fewer repeats once ``budget_s`` is spent)."""
    import torch

    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    times, spent = [], 0.0
    with torch.no_grad():
        while len(times) < repeats + 1 and (spent < budget_s or len(times) < 2):
            sync()
            start = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - start)
            spent += times[-1]
    return min(times[1:])
