"""Selective scan with named, explicit backends.

    "sequential"  the definition, a loop over time (reference; chapter 2)
    "parallel"    chunked scan in plain PyTorch with a hand-written backward (CPU and GPU; chapter 3)
    "mamba_ssm"   the CUDA kernel of the Mamba authors, when installed (chapter 3)
    "auto"        "mamba_ssm" for CUDA tensors when it is installed, otherwise "parallel"

Choose a backend with the ``backend=`` argument, the :func:`scan_backend` context manager,
:func:`set_scan_backend`, or the environment variable ``LIGHTM_EDU_SCAN_BACKEND`` (in that order of
precedence). An unavailable backend raises :class:`BackendUnavailableError`; nothing falls back
silently, and "auto" logs the backend it picks (logger ``lightm_edu.scan``, once per device type).
"""

from __future__ import annotations

import contextlib
import logging
import os

from .cuda import BackendUnavailableError, mamba_ssm_installed, selective_scan_mamba_ssm
from .parallel import selective_scan_parallel
from .sequential import selective_scan_sequential

__all__ = ["selective_scan", "set_scan_backend", "get_scan_backend", "scan_backend", "resolve_backend",
           "available_backends", "BackendUnavailableError", "BACKENDS", "ENV_VAR"]

BACKENDS = ("auto", "sequential", "parallel", "mamba_ssm")
ENV_VAR = "LIGHTM_EDU_SCAN_BACKEND"
_IMPLEMENTATIONS = {
    "sequential": selective_scan_sequential,
    "parallel": selective_scan_parallel,
    "mamba_ssm": selective_scan_mamba_ssm,
}
_logger = logging.getLogger(__name__)
_chosen: str | None = None  # set by set_scan_backend / scan_backend; None means "not set"
_auto_logged: set[str] = set()


def _check_name(name: str, where: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"Unknown scan backend {name!r} ({where}); choose one of {', '.join(BACKENDS)}.")
    return name


def set_scan_backend(name: str | None) -> None:
    """Set the backend that ``selective_scan`` uses when called without ``backend=``.

    ``None`` clears it (back to the environment variable, then "auto").
    """
    global _chosen
    _chosen = None if name is None else _check_name(name, "set_scan_backend")


def get_scan_backend() -> str:
    """The backend name in force when no ``backend=`` argument is given (may be "auto")."""
    if _chosen is not None:
        return _chosen
    env = os.environ.get(ENV_VAR)
    if env:
        return _check_name(env.strip(), f"environment variable {ENV_VAR}")
    return "auto"


@contextlib.contextmanager
def scan_backend(name: str):
    """Use backend ``name`` inside a ``with`` block, then restore the previous setting."""
    global _chosen
    previous = _chosen
    set_scan_backend(name)
    try:
        yield
    finally:
        _chosen = previous


def available_backends(device_type: str = "cpu") -> list[str]:
    """Backends that can run on tensors of ``device_type`` ("cpu" or "cuda") here."""
    names = ["sequential", "parallel"]
    if device_type == "cuda" and mamba_ssm_installed():
        names.append("mamba_ssm")
    return names


def resolve_backend(name: str, device_type: str) -> str:
    """Turn a backend name (possibly "auto") into the concrete backend for ``device_type``."""
    _check_name(name, "backend argument")
    if name != "auto":
        return name
    concrete = "mamba_ssm" if device_type == "cuda" and mamba_ssm_installed() else "parallel"
    if device_type not in _auto_logged:
        _auto_logged.add(device_type)
        _logger.info("selective_scan backend 'auto' chose %r for %s tensors", concrete, device_type)
    return concrete


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend: str | None = None):
    """The selective scan of Mamba, with the semantics of ``mamba_ssm.selective_scan_fn``.

    ``delta <- softplus(delta + delta_bias)`` (each part optional);
    ``x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t`` with ``x_{-1} = 0``;
    ``out_t = (<x_t, C_t> + D u_t) * SiLU(z_t)``.

    Args:
        u: input, (b, d, l).  delta: step sizes, (b, d, l).  A: real state matrix, (d, n).
        B, C: input-dependent projections, (b, n, l).  D: skip, (d,).  z: gate, (b, d, l).
        delta_bias: (d,).  delta_softplus: apply softplus to delta.
        return_last_state: also return x_{l-1}, (b, d, n).
        backend: "sequential", "parallel", "mamba_ssm" or "auto"; None uses :func:`get_scan_backend`.
    Returns:
        out (b, d, l) in the dtype of ``u``; and the last state if asked.
    """
    name = get_scan_backend() if backend is None else backend
    name = resolve_backend(name, u.device.type if hasattr(u, "device") else "cpu")
    return _IMPLEMENTATIONS[name](u, delta, A, B, C, D, z, delta_bias,
                                  delta_softplus=delta_softplus, return_last_state=return_last_state)
