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


def fixture_path(name: str) -> Path:
    """A reference fixture: from tests/fixtures, else from the folder named by LIGHTM_EDU_FIXTURES
    (the large ones are not committed). Skips the test, saying how to fix it, when absent."""
    for folder in (FIXTURES, os.environ.get("LIGHTM_EDU_FIXTURES")):
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    pytest.skip(f"reference fixture {name} not found: set LIGHTM_EDU_FIXTURES to the folder that holds it")


@pytest.fixture(scope="session")
def scan_fixture():
    return torch.load(fixture_path("selective_scan_fn.pt"), weights_only=True)


@pytest.fixture(scope="session")
def mamba_fixture():
    return torch.load(fixture_path("mamba_block.pt"), weights_only=True)


@pytest.fixture(scope="session")
def lightmunet_fixture():
    return torch.load(fixture_path("lightmunet_tiny.pt"), weights_only=True)


@pytest.fixture(scope="session")
def official_keys():
    """{config header: {official key: shape string}} from official_state_dict_keys.txt."""
    tables, current = {}, None
    for line in fixture_path("official_state_dict_keys.txt").read_text().splitlines():
        if line.startswith("#"):
            current = tables.setdefault(line[1:].strip(), {})
        elif line.strip():
            key, shape = line.split("\t")
            current[key] = shape
    return tables


def pytest_configure(config):
    # Keep CPU timings and results reproducible across machines with different core counts.
    torch.set_num_threads(min(2, os.cpu_count() or 1))
