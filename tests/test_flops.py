"""Parameter, MAC and FLOP counting: hand-computed layers, the scan on every CPU backend, the
analytic LightM-UNet count against the measured one, thop's undercount, latency and memory."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from torch import nn

from lightm_edu.flops import (Cost, count_flops, fused_reference_path, lightmunet_cost, lightmunet_params,
                              measure_speed, selective_scan_cost, thop_blind_spots, thop_count)
from lightm_edu.mamba import Mamba
from lightm_edu.model import LightMUNet

needs_thop = pytest.mark.skipif(importlib.util.find_spec("thop") is None, reason="needs the thop package")


# ------------------------------------------------------------------------ small known layers

def test_linear_macs_and_bias_by_hand():
    count = count_flops(nn.Linear(5, 7), torch.randn(3, 4, 5))
    # 3*4 rows, 7 outputs, 5 multiply-adds each; the bias adds 1 per output
    assert count.by_operator["linear"] == Cost(3 * 4 * 7 * 5, 3 * 4 * 7)
    assert count.flops == 2 * 3 * 4 * 7 * 5 + 3 * 4 * 7


def test_conv2d_macs_by_hand():
    count = count_flops(nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.randn(2, 3, 6, 5))
    assert count.macs == 2 * 4 * 6 * 5 * (3 * 3 * 3)
    assert count.by_operator["conv"].elementwise == 0


def test_depthwise_conv3d_with_bias_by_hand():
    count = count_flops(nn.Conv3d(4, 4, 3, padding=1, groups=4), torch.randn(1, 4, 4, 4, 4))
    # one 27-tap filter per channel; the bias adds 1 per output element
    assert count.by_operator["conv"] == Cost(4 * 64 * 27, 4 * 64)


def test_elementwise_convention_one_flop_per_output_element():
    class AddRelu(nn.Module):
        def forward(self, x):
            return torch.relu(x + 1)

    count = count_flops(AddRelu(), torch.randn(2, 3, 5))
    assert count.macs == 0 and count.flops == 2 * 30
    assert count.unsupported == {}


def test_uncounted_operators_are_reported_not_hidden():
    class Sorts(nn.Module):
        def forward(self, x):
            return torch.sort(x, dim=-1).values

    assert "aten::sort" in count_flops(Sorts(), torch.randn(4, 8)).unsupported


# ----------------------------------------------------------- operators of the peer models

def test_transposed_conv_macs_by_hand():
    # the peers upsample with transposed convolutions: every input element is scattered to
    # out_channels * prod(kernel) outputs, one MAC each; the bias adds 1 per output element
    count = count_flops(nn.ConvTranspose2d(3, 4, 2, stride=2), torch.randn(2, 3, 5, 6))
    assert count.by_operator["conv"] == Cost(2 * 3 * 5 * 6 * 4 * 2 * 2, 2 * 4 * 10 * 12)


def test_instance_norm_counts_as_a_norm():
    count = count_flops(nn.InstanceNorm3d(4, affine=True), torch.randn(2, 4, 3, 3, 3))
    assert count.by_operator["instance_norm"] == Cost(0, 5 * 2 * 4 * 27)
    assert set(count.by_kind()) == {"norms"}


def test_einsum_counts_multiply_accumulates():
    class Attention(nn.Module):
        def forward(self, q, k):
            return torch.einsum("bhxd,bhyd->bhxy", q, k).softmax(dim=-1)

    q, k = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8)
    count = count_flops(Attention(), q, k)
    assert count.by_operator["einsum"] == Cost(2 * 3 * 5 * 7 * 8, 0)
    assert count.by_operator["softmax"] == Cost(0, 5 * 2 * 3 * 5 * 7)
    assert count.unsupported == {}


def test_leaky_relu_and_copies_are_supported():
    class Peerish(nn.Module):
        def forward(self, x):
            x = nn.functional.interpolate(nn.functional.leaky_relu(x, 0.01), scale_factor=2.0, mode="nearest")
            return nn.functional.pad(x, (1, 1)).clone()

    count = count_flops(Peerish(), torch.randn(1, 2, 3, 3))
    assert count.unsupported == {}
    assert count.flops == 2 * 9  # LeakyReLU; nearest upsampling, padding and clone move data only


# ------------------------------------------------------------------------------- the scan

def test_scan_cost_is_nine_flops_per_state_element_plus_channel_terms():
    b, length, d, n = 2, 10, 6, 4
    cost = selective_scan_cost(b, length, d, n)
    assert cost.flops == 9 * b * length * d * n + 6 * b * length * d
    assert cost.macs == 3 * b * length * d * n + b * length * d


@pytest.mark.parametrize("backend", ["sequential", "parallel"])
def test_scan_counted_on_each_cpu_backend(backend):
    torch.manual_seed(0)
    block = Mamba(16, scan_backend=backend)  # d_inner 32, d_state 16
    count = count_flops(block, torch.randn(2, 12, 16))
    assert count.unsupported == {}
    assert count.by_operator["scan"] == selective_scan_cost(2, 12, 32, 16)


def test_sequential_and_parallel_backends_give_the_same_count():
    x = torch.randn(1, 4, 16, 16)
    counts = [count_flops(LightMUNet(2, 4, 2, init_filters=8, scan_backend=backend), x)
              for backend in ("sequential", "parallel")]
    assert counts[0].by_stage_and_kind == counts[1].by_stage_and_kind
    assert counts[0].by_kind()["scan"].macs > 0


def test_mamba_block_count_by_hand():
    b, length, c = 2, 12, 16
    d, r, n, k = 32, 1, 16, 4
    count = count_flops(Mamba(c), torch.randn(b, length, c))
    tokens = b * length
    expected_macs = (tokens * c * 2 * d  # in_proj
                     + b * d * k * (length + k - 1)  # conv1d: L + k - 1 outputs, L kept
                     + tokens * d * (r + 2 * n) + tokens * r * d + tokens * d * c  # x_proj, Delta, out_proj
                     + selective_scan_cost(b, length, d, n).macs)
    assert count.macs == expected_macs


class MambaInnerFn(torch.autograd.Function):
    """Stands in for mamba_ssm's fused Function (same name and tensor arguments) to test the handle."""

    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, x_proj_w, dt_w, out_w, A, D, delta_bias):
        return xz.new_zeros(xz.shape[0], xz.shape[2], out_w.shape[0])


def test_fused_mamba_kernel_handle_counts_everything_inside():
    class FusedMamba(Mamba):
        def forward(self, xz):  # as Mamba._fused calls mamba_ssm's kernel
            return MambaInnerFn.apply(xz, self.conv1d.weight, self.conv1d.bias, self.x_proj.weight,
                                      self.dt_proj.weight, self.out_proj.weight, -self.A_log.exp(), self.D,
                                      self.dt_proj.bias)

    b, length = 2, 12
    count = count_flops(FusedMamba(16), torch.randn(b, 64, length))
    unfused = count_flops(Mamba(16), torch.randn(b, length, 16))
    # all but in_proj (outside the kernel); the fused kernel computes exactly L conv outputs
    conv_extra = b * 32 * 4 * 3
    in_proj = b * length * 16 * 64
    assert count.by_operator["scan"] == unfused.by_operator["scan"]
    assert set(count.by_kind()) == {"causal conv", "Mamba projections", "scan", "elementwise"}
    assert count.macs == unfused.macs - in_proj - conv_extra
    assert count.by_kind()["causal conv"].macs == b * 32 * 4 * length


# ---------------------------------------------------------------- analytic against measured

@pytest.mark.parametrize("spatial_dims,in_channels,out_channels,size,config", [
    (2, 1, 2, (16, 24), {}),
    (2, 3, 2, (32, 16), {}),
    (3, 1, 3, (8, 8, 16), {}),
    (3, 2, 3, (16, 8, 8), {}),
    (2, 1, 4, (8, 12), dict(blocks_down=(1, 1, 2), blocks_up=(2, 1), d_state=4, d_conv=3, expand=3)),
])
def test_analytic_count_equals_measured(spatial_dims, in_channels, out_channels, size, config):
    torch.manual_seed(0)
    model = LightMUNet(spatial_dims, in_channels, out_channels, init_filters=8, **config)
    measured = count_flops(model, torch.randn(2, in_channels, *size))
    analytic, params = lightmunet_cost(spatial_dims, in_channels, out_channels, size, batch=2,
                                       init_filters=8, **config)
    assert measured.unsupported == {}
    assert measured.by_stage_and_kind == analytic.by_stage_and_kind
    assert measured.params == analytic.params == sum(params.values())


@pytest.mark.parametrize("args,expected", [((2, 3, 2), 5_011_765), ((3, 1, 3), 5_015_766),
                                           ((2, 1, 2), 5_011_683)])
def test_parameter_counts_equal_the_official_code(args, expected):
    assert lightmunet_params(*args) == expected
    assert sum(p.numel() for p in LightMUNet(*args).parameters()) == expected


def test_parameters_per_stage_match_the_model():
    model = LightMUNet(3, 1, 3)
    _, params = lightmunet_cost(3, 1, 3, None)
    assert params["stem"] == sum(p.numel() for p in model.stem.parameters())
    for i, stage in enumerate(model.encoder):
        assert params[f"encoder.{i}"] == sum(p.numel() for p in stage.parameters())
    assert params["head"] == sum(p.numel() for p in model.head.parameters())


def hand_scan_flops(spatial, batch, widths=(32, 64, 128, 256), blocks=(1, 2, 2, 4)):
    """The scan FLOPs of the official model, layer by layer: 9 b L d N + 6 b L d per RVM layer."""
    total, level = 0, 0
    for i, (width, n_blocks) in enumerate(zip(widths, blocks)):
        if i > 0:  # the downsampling RVM layer runs at the higher resolution with C/2 channels
            length = math.prod(s // 2 ** level for s in spatial)
            total += 9 * batch * length * width * 16 + 6 * batch * length * width
            level += 1
        length = math.prod(s // 2 ** level for s in spatial)
        total += 2 * n_blocks * (9 * batch * length * 2 * width * 16 + 6 * batch * length * 2 * width)
    return total


@pytest.mark.parametrize("spatial_dims,in_channels,size,batch", [(2, 3, (512, 512), 1), (3, 1, (128,) * 3, 2)])
def test_paper_sizes_analytic_scan(spatial_dims, in_channels, size, batch):
    count, _ = lightmunet_cost(spatial_dims, in_channels, 2, size, batch=batch)
    assert count.by_kind()["scan"].flops == hand_scan_flops(size, batch)
    # the count is per input: doubling the batch doubles everything but A = -exp(A_log)
    double, _ = lightmunet_cost(spatial_dims, in_channels, 2, size, batch=2 * batch)
    assert double.macs == 2 * count.macs


def test_analytic_count_rejects_bad_inputs():
    with pytest.raises(ValueError, match="not divisible by 8"):
        lightmunet_cost(2, 1, 2, (20, 16))
    with pytest.raises(ValueError, match="official layout"):
        lightmunet_cost(2, 1, 2, (16, 16), mixer="attention")
    with pytest.raises(ValueError, match="spatial_dims is 3"):
        lightmunet_cost(3, 1, 2, (16, 16))


# ------------------------------------------------------------------------ thop's undercount

def test_fused_reference_path_equals_mamba_ssm(mamba_fixture):
    case = mamba_fixture["blocks"]["d32_L300"]
    block = Mamba(**case["config"], scan_backend="parallel")
    block.load_state_dict(case["state_dict"])
    with torch.no_grad():
        out = block.forward_fused_reference(case["x"])
    torch.testing.assert_close(out, case["out"], rtol=1e-4, atol=1e-5 * case["out"].abs().max().item())


def test_fused_reference_path_equals_normal_path_in_the_model():
    torch.manual_seed(0)
    model = LightMUNet(2, 1, 2, init_filters=8).double().eval()
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        normal = model(x)
        with fused_reference_path(model):
            fused = model(x)
        again = model(x)
    torch.testing.assert_close(fused, normal)
    assert "forward" not in vars(model.encoder[0].blocks[0].rvm1.mixer)  # restored
    torch.testing.assert_close(again, normal)


@needs_thop
def test_thop_undercounts_the_fused_model_and_we_can_say_why():
    model = LightMUNet(2, 3, 2)  # the full-size official model; parameters do not depend on the input size
    x = torch.randn(1, 3, 8, 8)
    total = sum(p.numel() for p in model.parameters())
    fused = thop_count(model, x, fused=True)
    missed = thop_blind_spots(model, x, fused=True)
    assert fused["params"] + sum(v["params"] for v in missed.values()) == total == 5_011_765
    assert fused["params"] < total / 5  # the paper's "1.09M" kind of figure, not 5.0M
    direct = missed["module never called (weights used directly)"]["names"]
    assert "encoder.3.blocks.0.rvm1.mixer.in_proj.weight" in direct
    assert "encoder.3.blocks.0.rvm1.mixer.x_proj.weight" in direct
    assert "encoder.0.blocks.0.norm1.weight" in missed["GroupNorm (no thop rule)"]["names"]
    assert "encoder.0.blocks.0.rvm1.mixer.A_log" in missed["held by a module without a thop rule"]["names"]
    # without the fused path thop sees the projections, but still not GroupNorm, A_log, D, dt_proj
    unfused = thop_count(model, x, fused=False)
    assert fused["params"] < unfused["params"] < total
    # and it never sees the scan: its MACs stay below the honest count without the scan
    honest = count_flops(model, x)
    assert unfused["macs"] < honest.macs - honest.by_kind()["scan"].macs
    assert fused["macs"] < unfused["macs"]


# ------------------------------------------------------------------------ latency and memory

@pytest.mark.parametrize("train", [False, True])
def test_measure_speed_on_cpu(train):
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))  # logits (b, 2, h, w)
    result = measure_speed(model, torch.randn(2, 1, 16, 16), train=train, repeats=3, warmup=1)
    assert len(result["all_seconds"]) == 3 and result["seconds"] > 0
    assert result["peak_bytes"] > 0 and result["device"] == "cpu" and result["train"] is train


def test_cpu_peak_memory_sees_the_output_tensor():
    model = nn.Linear(256, 1024)
    result = measure_speed(model, torch.randn(512, 256), repeats=1, warmup=1)
    assert result["peak_bytes"] >= 512 * 1024 * 4  # the (512, 1024) float32 output at least
