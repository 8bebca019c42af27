"""Input checks shared by every selective-scan backend.

Shapes follow ``mamba_ssm.selective_scan_fn``:
u, delta, z (b, d, l); A (d, n) real; B, C (b, n, l); D, delta_bias (d,).
"""

from __future__ import annotations

import torch
from torch import Tensor

_SHAPES = "u, delta, z: (batch, d, length); A: (d, n); B, C: (batch, n, length); D, delta_bias: (d,)"


def _fail(message: str) -> None:
    raise ValueError(f"{message}\nExpected shapes: {_SHAPES}.")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def validate_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None):
    """Check shapes, dtypes and devices; raise ``ValueError`` naming the argument at fault.

    Returns:
        (batch, d, length, n)
    """
    required = {"u": u, "delta": delta, "A": A, "B": B, "C": C}
    for name, t in required.items():
        if t is None:
            _fail(f"selective_scan: `{name}` is required but was None.")
        if not isinstance(t, Tensor):
            _fail(f"selective_scan: `{name}` must be a torch.Tensor, got {type(t).__name__}.")
    optional = {"D": D, "z": z, "delta_bias": delta_bias}
    for name, t in optional.items():
        if t is not None and not isinstance(t, Tensor):
            _fail(f"selective_scan: `{name}` must be a torch.Tensor or None, got {type(t).__name__}.")

    if u.ndim != 3:
        _fail(f"selective_scan: `u` must have 3 dimensions (batch, d, length), got shape {tuple(u.shape)}.")
    b, d, length = u.shape
    if A.is_complex():
        _fail("selective_scan: complex `A` is not supported; this implementation covers the real A "
              "that Mamba uses (A = -exp(A_log)).")
    if A.ndim != 2 or A.shape[0] != d:
        _fail(f"selective_scan: `A` must have shape (d, n) = ({d}, n), got {tuple(A.shape)}.")
    n = A.shape[1]

    def expect(name, t, shape):
        if t is not None and tuple(t.shape) != shape:
            _fail(f"selective_scan: `{name}` must have shape {shape}, got {tuple(t.shape)}.")

    expect("delta", delta, (b, d, length))
    expect("z", z, (b, d, length))
    expect("B", B, (b, n, length))
    expect("C", C, (b, n, length))
    expect("D", D, (d,))
    expect("delta_bias", delta_bias, (d,))

    everything = {**required, **{k: v for k, v in optional.items() if v is not None}}
    for name, t in everything.items():
        if not t.is_floating_point():
            _fail(f"selective_scan: `{name}` must be a floating-point tensor, got {_dtype_name(t.dtype)}.")
        if t.device != u.device:
            _fail(f"selective_scan: `{name}` is on {t.device} but `u` is on {u.device}; "
                  "move every input to the same device.")
    # Like mamba_ssm: u, delta and z share one dtype (fp32, fp16 or bf16); the parameters A, D,
    # delta_bias and the projections B, C may be that dtype or float32.
    for name in ("delta", "z"):
        t = everything.get(name)
        if t is not None and t.dtype != u.dtype:
            _fail(f"selective_scan: `{name}` has dtype {_dtype_name(t.dtype)} but `u` has "
                  f"{_dtype_name(u.dtype)}; u, delta and z must share a dtype (cast with .to(u.dtype)).")
    for name in ("A", "B", "C", "D", "delta_bias"):
        t = everything.get(name)
        if t is not None and t.dtype not in (u.dtype, torch.float32):
            _fail(f"selective_scan: `{name}` has dtype {_dtype_name(t.dtype)}; it must be float32 or "
                  f"the dtype of `u` ({_dtype_name(u.dtype)}).")
    return b, d, length, n


def compute_dtype(*tensors) -> torch.dtype:
    """float64 if any input is float64, else float32: half-precision inputs are computed in float32,
    as the CUDA kernel does."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32
