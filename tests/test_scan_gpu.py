"""GPU tests: the parallel backend on CUDA, and against the mamba_ssm CUDA kernel.

Skipped without CUDA (and the mamba_ssm comparisons without mamba_ssm); run them on a GPU machine:
``python -m pytest tests/test_scan_gpu.py -v``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lightm_edu.scan import resolve_backend, selective_scan

from .conftest import SCAN_ARGS, random_scan_inputs
from .test_scan import assert_same, run_with_grads

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_mamba_ssm = pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None,
                                     reason="needs the mamba_ssm package")
pytestmark = [needs_cuda, pytest.mark.gpu]


@pytest.fixture(autouse=True)
def exact_float32():
    # TF32 matmuls would blur float32 comparisons; the scan itself has no matmul, but be explicit.
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def scan(backend):
    return lambda **kw: selective_scan(**kw, backend=backend)


def to_cuda(inputs):
    return {k: (None if v is None else v.cuda()) for k, v in inputs.items()}


def test_parallel_on_cuda_matches_sequential_on_cpu_float64():
    inputs = random_scan_inputs(batch=2, d=4, length=300, n=5, dtype=torch.float64)
    expected = run_with_grads(scan("sequential"), inputs)
    out, last, grads = run_with_grads(scan("parallel"), to_cuda(inputs))
    assert_same((out.cpu(), last.cpu(), {k: v.cpu() for k, v in grads.items()}), expected,
                rtol=1e-9, atol=1e-9)


@needs_mamba_ssm
def test_mamba_ssm_reproduces_its_fixture(scan_fixture):
    inputs = to_cuda(scan_fixture["inputs"])
    out, last, grads = run_with_grads(scan("mamba_ssm"), inputs, out_weight=scan_fixture["out_grad_weight"].cuda())
    torch.testing.assert_close(out.cpu(), scan_fixture["out"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(last.cpu(), scan_fixture["last_state"], rtol=1e-4, atol=1e-5)


@needs_mamba_ssm
def test_auto_picks_mamba_ssm_for_cuda_tensors():
    assert resolve_backend("auto", "cuda") == "mamba_ssm"
    assert resolve_backend("auto", "cpu") == "parallel"


@needs_mamba_ssm
@pytest.mark.parametrize("with_D,with_z,with_bias", [(True, True, True), (False, False, False)])
def test_parallel_matches_mamba_ssm_small(with_D, with_z, with_bias):
    inputs = to_cuda(random_scan_inputs(batch=2, d=8, length=77, n=4, dtype=torch.float32,
                                        with_D=with_D, with_z=with_z, with_bias=with_bias))
    assert_same(run_with_grads(scan("parallel"), inputs), run_with_grads(scan("mamba_ssm"), inputs),
                rtol=1e-4, atol=1e-4)


@needs_mamba_ssm
def test_parallel_matches_mamba_ssm_realistic_size():
    """Batch 2, d 64, N 16, L 65,536: outputs and all eight gradients, forward and backward."""
    inputs = to_cuda(random_scan_inputs(batch=2, d=64, length=65536, n=16, dtype=torch.float32, seed=1))
    weight = torch.randn(2, 64, 65536, device="cuda", generator=torch.Generator("cuda").manual_seed(2))
    out_p, last_p, grads_p = run_with_grads(scan("parallel"), inputs, out_weight=weight)
    out_m, last_m, grads_m = run_with_grads(scan("mamba_ssm"), inputs, out_weight=weight)

    def close(a, b, what):
        # Both accumulate 65,536 float32 steps in different orders: compare relative to the scale.
        scale = b.abs().max().item()
        err = (a - b).abs().max().item()
        assert err <= 2e-4 * scale + 1e-6, f"{what}: max error {err:.3g} vs scale {scale:.3g}"

    close(out_p, out_m, "out")
    close(last_p, last_m, "last state")
    assert set(grads_p) == set(SCAN_ARGS)
    for name in SCAN_ARGS:
        close(grads_p[name], grads_m[name], f"gradient of {name}")
