"""The ``"mamba_ssm"`` backend: the hardware-aware CUDA kernel of the Mamba authors.

It fuses discretisation, scan and output in one kernel that keeps the (d, n) state in on-chip
memory and never writes the (b, d, l, n) states to GPU memory; the backward pass recomputes them.
Chapter 3 compares it with the pure-PyTorch backends. Needs an NVIDIA GPU and the optional
``mamba-ssm`` package (``pip install mamba-ssm --no-build-isolation`` on a CUDA machine).
"""

from __future__ import annotations

import importlib.util

from ._validate import validate_scan_inputs

INSTALL_HINT = (
    "The 'mamba_ssm' backend needs the mamba-ssm package and an NVIDIA GPU. On a CUDA machine "
    "(Colab with a GPU runtime included) run: pip install mamba-ssm --no-build-isolation. "
    "Otherwise choose backend='parallel' (pure PyTorch, CPU or GPU)."
)


class BackendUnavailableError(RuntimeError):
    """A scan backend was asked for but cannot run here; the message says how to fix it."""


def mamba_ssm_installed() -> bool:
    """True when ``mamba_ssm`` is importable (checked without importing it, which is slow)."""
    return importlib.util.find_spec("mamba_ssm") is not None


def _load_kernel():
    if not mamba_ssm_installed():
        raise BackendUnavailableError(INSTALL_HINT)
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as error:  # a broken build (ABI mismatch, no CUDA) fails here
        raise BackendUnavailableError(
            f"mamba_ssm is installed but its CUDA kernel failed to import ({error!r}). It must be "
            f"built for this torch and CUDA version. {INSTALL_HINT}"
        ) from error
    return selective_scan_fn


def selective_scan_mamba_ssm(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    """Call ``mamba_ssm.selective_scan_fn`` after the same input checks as the other backends."""
    validate_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if u.device.type != "cuda":
        missing = "" if mamba_ssm_installed() else f" Note also: {INSTALL_HINT}"
        raise BackendUnavailableError(
            f"The 'mamba_ssm' backend runs on CUDA tensors only, but the inputs are on {u.device}. "
            f"Move them with .cuda() or choose backend='parallel'.{missing}"
        )
    kernel = _load_kernel()
    # The kernel wants unit stride along the sequence; contiguous() is free when it already is.
    args = [None if t is None else t.contiguous() for t in (u, delta, A, B, C, D, z, delta_bias)]
    return kernel(*args, delta_softplus=delta_softplus, return_last_state=return_last_state)
