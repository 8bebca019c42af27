"""lightm_edu: state-space models, Mamba and LightM-UNet, built from first principles.

The public API is imported lazily, so ``import lightm_edu`` is cheap (it does not import torch);
the first use of a name below imports the module that defines it.

    selective_scan, set_scan_backend, get_scan_backend, scan_backend, available_backends,
    BackendUnavailableError                                       (lightm_edu.scan, chapters 2-3)
    discretize_zoh, discretize_bilinear, discretize_mamba, ssm_recurrence, ssm_kernel,
    causal_convolution, s4d_real_init                             (lightm_edu.ssm, chapter 1)
    Mamba                                                         (lightm_edu.mamba, chapter 4)
    RVMLayer, ResidualMambaBlock, ResidualUpBlock                 (lightm_edu.layers, chapters 5-6)
    LightMUNet, pad_to_multiple, crop_to_size                     (lightm_edu.model, chapter 6)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "selective_scan": "lightm_edu.scan",
    "set_scan_backend": "lightm_edu.scan",
    "get_scan_backend": "lightm_edu.scan",
    "scan_backend": "lightm_edu.scan",
    "available_backends": "lightm_edu.scan",
    "BackendUnavailableError": "lightm_edu.scan",
    "mass_spring_damper": "lightm_edu.ssm",
    "discretize_zoh": "lightm_edu.ssm",
    "discretize_bilinear": "lightm_edu.ssm",
    "discretize_mamba": "lightm_edu.ssm",
    "ssm_recurrence": "lightm_edu.ssm",
    "ssm_kernel": "lightm_edu.ssm",
    "causal_convolution": "lightm_edu.ssm",
    "s4d_real_init": "lightm_edu.ssm",
    "Mamba": "lightm_edu.mamba",
    "RVMLayer": "lightm_edu.layers",
    "ResidualMambaBlock": "lightm_edu.layers",
    "ResidualUpBlock": "lightm_edu.layers",
    "LightMUNet": "lightm_edu.model",
    "pad_to_multiple": "lightm_edu.model",
    "crop_to_size": "lightm_edu.model",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lightm_edu' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: the next access is a plain attribute lookup
    return value


def __dir__():
    return __all__
