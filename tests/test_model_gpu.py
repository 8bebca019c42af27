"""GPU tests of the Mamba block and LightM-UNet: the "parallel" backend against "mamba_ssm".

Skipped without CUDA (and the mamba_ssm comparisons without mamba_ssm); run them on a GPU machine:
``python -m pytest tests/test_model_gpu.py -v``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lightm_edu.mamba import Mamba
from lightm_edu.model import LightMUNet

needs_mamba_ssm = pytest.mark.skipif(importlib.util.find_spec("mamba_ssm") is None,
                                     reason="needs the mamba_ssm package")
needs_causal_conv1d = pytest.mark.skipif(importlib.util.find_spec("causal_conv1d") is None,
                                         reason="needs the causal_conv1d package (mamba_ssm's fused path)")
pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
              pytest.mark.gpu, needs_mamba_ssm]


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(autouse=True)
def exact_float32():
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


@pytest.mark.parametrize("fast_path", [False, pytest.param(True, marks=needs_causal_conv1d)])
def test_mamba_block_parallel_matches_mamba_ssm(fast_path):
    torch.manual_seed(0)
    block = Mamba(64, use_fast_path=fast_path).cuda()
    x = torch.randn(2, 4096, 64, device="cuda", requires_grad=True)
    results = {}
    for backend in ("parallel", "mamba_ssm"):
        block.scan_backend = backend
        block.zero_grad()
        x.grad = None
        out = block(x)
        out.square().mean().backward()
        results[backend] = (out.detach(), x.grad.clone(), {k: p.grad.clone() for k, p in block.named_parameters()})
    (out_p, xg_p, pg_p), (out_m, xg_m, pg_m) = results["parallel"], results["mamba_ssm"]
    assert relative_error(out_p, out_m) < 1e-4
    assert relative_error(xg_p, xg_m) < 1e-3
    for key in pg_p:
        assert relative_error(pg_p[key], pg_m[key]) < 1e-3, key


@pytest.mark.parametrize("spatial_dims,shape", [(2, (2, 1, 64, 64)), (3, (1, 1, 32, 32, 32))])
def test_lightmunet_parallel_matches_mamba_ssm(spatial_dims, shape):
    torch.manual_seed(0)
    model = LightMUNet(spatial_dims, 1, 3).cuda().eval()
    x = torch.randn(shape, device="cuda")
    outputs = {}
    for backend in ("parallel", "mamba_ssm"):
        for module in model.modules():
            if isinstance(module, Mamba):
                module.scan_backend = backend
        with torch.no_grad():
            outputs[backend] = model(x)
    assert relative_error(outputs["parallel"], outputs["mamba_ssm"]) < 1e-3


def test_official_logits_on_the_mamba_ssm_backend(lightmunet_fixture):
    case = lightmunet_fixture["nets"]["3d_in1_out3"]
    model = LightMUNet.from_official_state_dict(case["state_dict"], **case["config"],
                                                scan_backend="mamba_ssm").cuda().eval()
    with torch.no_grad():
        out = model(case["x"].cuda()).cpu()
    assert relative_error(out, case["out"]) < 1e-4
