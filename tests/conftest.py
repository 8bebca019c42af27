"""Shared test helpers: random selective-scan problems and the reference fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
SCAN_ARGS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def random_scan_inputs(batch=2, d=4, length=16, n=3, dtype=torch.float64, device="cpu", seed=0,
                       with_D=True, with_z=True, with_bias=True, positive_delta=False):
    """A random selective-scan problem in the ranges Mamba uses (A < 0, moderate delta).

    ``delta`` is raw (meant for softplus) unless ``positive_delta``: without the softplus a negative
    step makes exp(delta A) > 1 and the state grows without bound.
    """
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(device, dtype)

    inputs = {
        "u": r(batch, d, length),
        "delta": (r(batch, d, length).abs() * 0.3 + 0.05) if positive_delta else r(batch, d, length, scale=0.5, shift=-1.0),
        "A": (-torch.rand(d, n, generator=g, dtype=torch.float64) * n - 0.1).to(device, dtype),
        "B": r(batch, n, length),
        "C": r(batch, n, length),
        "D": r(d) if with_D else None,
        "z": r(batch, d, length) if with_z else None,
        "delta_bias": r(d, scale=0.1) if with_bias else None,
    }
    return inputs


def with_grad(inputs):
    return {k: (None if v is None else v.clone().requires_grad_()) for k, v in inputs.items()}


@pytest.fixture(scope="session")
def scan_fixture():
    return torch.load(FIXTURES / "selective_scan_fn.pt", weights_only=True)


def pytest_configure(config):
    # Keep CPU timings and results reproducible across machines with different core counts.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
