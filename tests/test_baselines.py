"""Peer models: the registry, parameter counts at the paper's settings, output shapes on tiny inputs,
U-Mamba's structure and scan backends, and error messages."""

from __future__ import annotations

import contextlib
import importlib.util
import math

import pytest
import torch

from lightm_edu.baselines import (PAPER_PARAMETERS, PAPER_SETTINGS, PEERS, REFERENCE_PARAMETERS_M, UMamba,
                                  UMambaLayer, build_peer, count_parameters, describe_peer, size_multiple)

HAS_EINOPS = importlib.util.find_spec("einops") is not None
needs_einops = pytest.mark.skipif(not HAS_EINOPS, reason="MONAI's UNETR and SwinUNETR need einops")


def _marks(name):
    return [needs_einops] if name in ("unetr", "swinunetr") else []


def _build_at_paper_settings(name, spatial_dims):
    # Parameters do not need memory: build on the meta device (SwinUNETR calls .item() while
    # building, which meta tensors cannot do, so it is built on the CPU).
    device = contextlib.nullcontext() if name == "swinunetr" else torch.device("meta")
    with device:
        return build_peer(name, spatial_dims, **PAPER_SETTINGS[spatial_dims])


# ------------------------------------------------------------------------------------ registry

def test_registry_lists_lightmunet_and_every_peer_of_the_paper():
    assert list(PEERS) == ["lightmunet", "segresnet", "dynunet", "unet", "unetr", "swinunetr",
                           "umamba_bot", "umamba_enc"]
    assert set(PAPER_PARAMETERS) == set(PEERS)


@pytest.mark.parametrize("name", list(PEERS))
def test_describe_peer_states_configuration_and_source(name):
    info = describe_peer(name)
    assert info["name"] == name and info["title"]
    assert "arXiv" in info["paper"] or "doi" in info["paper"]
    assert info["code"]
    assert set(info["configs"]) == {2, 3}
    assert info["parameters"] == PAPER_PARAMETERS[name]
    assert info["notes"]


# ------------------------------------------------------------------------- parameters, paper settings

@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in PEERS])
def test_parameters_at_paper_settings(name, spatial_dims):
    model = _build_at_paper_settings(name, spatial_dims)
    count = count_parameters(model)
    assert count == PAPER_PARAMETERS[name][spatial_dims - 2]
    reference = REFERENCE_PARAMETERS_M.get(name)
    if reference is not None:  # the independently measured millions, to two decimals
        assert round(count / 1e6, 2) == reference[spatial_dims - 2]


def _monai_documented(name, spatial_dims):
    """The MONAI class built directly with the arguments the registry documents (not via build_peer)."""
    from monai.networks.nets import UNETR, DynUNet, SegResNet, SwinUNETR, UNet

    s = PAPER_SETTINGS[spatial_dims]
    cin, cout, size = s["in_channels"], s["out_channels"], s["image_size"]
    if name == "segresnet":
        return SegResNet(spatial_dims=spatial_dims, init_filters=32, in_channels=cin, out_channels=cout,
                         blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))
    if name == "dynunet":
        n = 7 if spatial_dims == 2 else 6
        filters = [32, 64, 128, 256, 512, 512, 512] if spatial_dims == 2 else [32, 64, 128, 256, 320, 320]
        strides = [1] + [2] * (n - 1)
        return DynUNet(spatial_dims, cin, cout, kernel_size=[3] * n, strides=strides,
                       upsample_kernel_size=strides[1:], filters=filters, res_block=False, norm_name="instance")
    if name == "unet":
        return UNet(spatial_dims, cin, cout, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    if name == "unetr":
        return UNETR(cin, cout, img_size=size, spatial_dims=spatial_dims)
    if name == "swinunetr":
        return SwinUNETR(in_channels=cin, out_channels=cout, feature_size=48, spatial_dims=spatial_dims)
    raise KeyError(name)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n))
                                  for n in ["segresnet", "dynunet", "unet", "unetr", "swinunetr"]])
def test_monai_peers_equal_the_library_class_with_documented_arguments(name, spatial_dims):
    device = contextlib.nullcontext() if name == "swinunetr" else torch.device("meta")
    with device:
        direct = _monai_documented(name, spatial_dims)
        ours = build_peer(name, spatial_dims, **PAPER_SETTINGS[spatial_dims])
    assert type(ours) is type(direct)
    assert count_parameters(ours) == count_parameters(direct)
    assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in direct.parameters()]


def test_dynunet_variants_that_do_not_match_the_reference():
    # The reference counts are those of the plain (res_block=False) DynUNet with affine-free instance
    # norm; nnU-Net's affine norm and the residual variant differ, by the amounts describe_peer states.
    with torch.device("meta"):
        affine = build_peer("dynunet", 2, **PAPER_SETTINGS[2], norm_name=("INSTANCE", {"affine": True}))
        residual = build_peer("dynunet", 2, **PAPER_SETTINGS[2], res_block=True)
        affine3 = build_peer("dynunet", 3, **PAPER_SETTINGS[3], norm_name=("INSTANCE", {"affine": True}))
    assert count_parameters(affine) - PAPER_PARAMETERS["dynunet"][0] == 14_080
    assert count_parameters(affine3) - PAPER_PARAMETERS["dynunet"][1] == 7_680
    assert round(count_parameters(residual) / 1e6, 2) == 34.15


# ------------------------------------------------------------------ U-Mamba, counted by hand

def _conv(k, d, cin, cout):
    return k ** d * cin * cout + cout  # weights + bias


def _res_block(d, cin, cout, projection):
    # conv-IN-LReLU-conv-IN (+ 1x1 conv on the shortcut) ; IN affine: 2 parameters per channel
    return _conv(3, d, cin, cout) + _conv(3, d, cout, cout) + 4 * cout + (_conv(1, d, cin, cout) if projection else 0)


def _mamba_layer(dim):
    dt_rank = math.ceil(dim / 16)
    return 6 * dim ** 2 + 4 * dim * dt_rank + 110 * dim + 2 * dim  # Mamba(d_state 16, d_conv 4, expand 2) + LayerNorm


def _umamba_by_hand(d, variant):
    s = PAPER_SETTINGS[d]
    cin, classes, size = s["in_channels"], s["out_channels"], s["image_size"][0]
    f = [32, 64, 128, 256, 512, 512, 512] if d == 2 else [32, 64, 128, 256, 320, 320]
    n = len(f)
    enc = [2 if i < math.ceil(n / 2) else 1 for i in range(n)]
    dec = [1 if i >= math.ceil((n - 1) / 2 + 0.5) else 2 for i in range(n - 1)]
    total = _res_block(d, cin, f[0], True) + (enc[0] - 1) * _res_block(d, f[0], f[0], False)
    for i in range(n):
        total += _res_block(d, f[i - 1] if i else f[0], f[i], True) + (enc[i] - 1) * _res_block(d, f[i], f[i], False)
    for i in range(n - 1):
        below, skip = f[n - 1 - i], f[n - 2 - i]
        concat = i < n - 2 or d == 3  # the official 2D code drops the full-resolution skip
        total += _conv(1, d, below, skip) + _conv(1, d, skip, classes)
        total += _res_block(d, 2 * skip if concat else skip, skip, True)
        total += (dec[i] - 1) * _res_block(d, skip, skip, False)
    if variant == "bot":
        return total + _mamba_layer(f[-1])
    stages = range(n) if d == 3 else range(n - 1, -1, -2)
    for i in stages:
        voxels = (size // 2 ** i) ** d
        total += _mamba_layer(voxels if voxels <= f[i] else f[i])
    return total


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("variant", ["bot", "enc"])
def test_umamba_count_by_hand(variant, spatial_dims):
    assert PAPER_PARAMETERS[f"umamba_{variant}"][spatial_dims - 2] == _umamba_by_hand(spatial_dims, variant)


def test_umamba_structure_at_paper_settings():
    with torch.device("meta"):
        bot2 = build_peer("umamba_bot", 2, **PAPER_SETTINGS[2])
        enc2 = build_peer("umamba_enc", 2, **PAPER_SETTINGS[2])
        enc3 = build_peer("umamba_enc", 3, **PAPER_SETTINGS[3])
    assert bot2.config["encoder_blocks"] == (2, 2, 2, 2, 1, 1, 1)
    assert bot2.config["decoder_blocks"] == (2, 2, 2, 2, 1, 1)
    assert sum(isinstance(m, UMambaLayer) for m in bot2.modules()) == 1
    assert bot2.bottleneck_mamba.dim == 512 and not bot2.config["concat_finest_skip"]
    assert enc2.config["mamba_stages"] == (0, 2, 4, 6) and enc2.config["channel_token_stages"] == (6,)
    assert enc2.encoder_mamba[6].dim == 64  # 8 x 8 map: 512 channel tokens of 64 features
    assert enc3.config["mamba_stages"] == (0, 1, 2, 3, 4, 5) and enc3.config["channel_token_stages"] == (5,)
    assert enc3.config["concat_finest_skip"]
    # LightM-UNet versus U-Mamba: about 9.5x fewer parameters in 2D, not 224x
    assert 9 < PAPER_PARAMETERS["umamba_bot"][0] / PAPER_PARAMETERS["lightmunet"][0] < 10


# ------------------------------------------------------------------- tiny models, forward passes

TINY = {  # overrides and input sizes (2D, 3D) that keep every forward pass fast on a CPU; the sizes
    # are twice the total stride where instance norm must see more than one voxel at the bottom
    "lightmunet": (dict(init_filters=8), (16, 16), (8, 8, 8)),
    "segresnet": (dict(init_filters=8), (16, 16), (8, 8, 8)),
    "dynunet": (dict(filters=(4, 8, 8, 8, 8, 8, 8)), (128, 128), (64, 64, 64)),
    "unet": (dict(channels=(4, 8, 8, 8, 8)), (32, 32), (32, 32, 32)),
    "unetr": (dict(feature_size=4, hidden_size=24, mlp_dim=48, num_heads=2), (32, 32), (16, 16, 32)),
    "swinunetr": (dict(feature_size=12), (64, 64), (32, 64, 64)),
    "umamba_bot": (dict(features_per_stage=(8, 16, 32), strides=(1, 2, 2), kernel_sizes=(3, 3, 3),
                        n_blocks_per_stage=(2, 2, 2), n_conv_per_stage_decoder=(2, 2)), (16, 16), (8, 8, 8)),
    "umamba_enc": (dict(features_per_stage=(8, 16, 32), strides=(1, 2, 2), kernel_sizes=(3, 3, 3),
                        n_blocks_per_stage=(2, 2, 2), n_conv_per_stage_decoder=(2, 2)), (16, 16), (8, 8, 8)),
}


def _tiny(name, spatial_dims, **extra):
    overrides, size2, size3 = TINY[name]
    if name == "dynunet" and spatial_dims == 3:
        overrides = dict(filters=(4, 8, 8, 8, 8, 8))
    size = size2 if spatial_dims == 2 else size3
    model = build_peer(name, spatial_dims, 2, 3, image_size=size, **{**overrides, **extra})
    return model, size


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in PEERS])
def test_every_peer_builds_and_keeps_the_shape(name, spatial_dims):
    torch.manual_seed(0)
    model, size = _tiny(name, spatial_dims)
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 2, *size))
    assert out.shape == (2, 3, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("variant", ["bot", "enc"])
def test_umamba_sequential_and_parallel_scans_agree(variant, spatial_dims):
    torch.manual_seed(0)
    model, size = _tiny(f"umamba_{variant}", spatial_dims, scan_backend="sequential")
    if variant == "enc":  # the tiny maps exercise both token kinds
        assert model.config["channel_token_stages"] == (2,)
    # float64, so that the comparison sees the scan algorithms, not float32 rounding amplified by norms
    x = torch.randn(2, 2, *size, dtype=torch.float64)
    model.double().eval()
    with torch.no_grad():
        sequential = model(x)
        for layer in model.modules():
            if isinstance(layer, UMambaLayer):
                layer.mamba.scan_backend = "parallel"
        parallel = model(x)
    torch.testing.assert_close(parallel, sequential, rtol=1e-9, atol=1e-9)


def test_umamba_deep_supervision_and_gradients():
    torch.manual_seed(0)
    model, size = _tiny("umamba_enc", 2, deep_supervision=True)
    outputs = model(torch.randn(2, 2, *size))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, 16, 16), (2, 3, 8, 8)]
    sum(o.square().mean() for o in outputs).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_umamba_finest_skip_choice():
    common = dict(features_per_stage=(8, 16), strides=(1, 2), kernel_sizes=(3, 3), n_blocks_per_stage=(1, 1),
                  n_conv_per_stage_decoder=(1,))
    official_2d = UMamba(2, 1, 2, **common)
    forced = UMamba(2, 1, 2, concat_finest_skip=True, **common)
    assert official_2d.decoder[-1][0].conv1.in_channels == 8
    assert forced.decoder[-1][0].conv1.in_channels == 16
    assert UMamba(3, 1, 2, **common).decoder[-1][0].conv1.in_channels == 16


def test_umamba_layer_channel_tokens():
    torch.manual_seed(0)
    layer = UMambaLayer(dim=4, channel_tokens=True, scan_backend="sequential")
    x = torch.randn(1, 6, 2, 2)
    assert layer(x).shape == x.shape
    with pytest.raises(ValueError, match="built for feature maps of 4 voxels"):
        layer(torch.randn(1, 6, 4, 4))


def test_umamba_half_precision_input_is_computed_in_float32():
    layer = UMambaLayer(dim=8, scan_backend="sequential")
    assert layer(torch.randn(1, 8, 4, 4).half()).dtype == torch.float32


# ------------------------------------------------------------------------------ error messages

def test_unknown_name():
    with pytest.raises(ValueError, match=r"Unknown peer model 'nnunet'; choose one of lightmunet, segresnet"):
        build_peer("nnunet", 2, 1, 2)
    with pytest.raises(ValueError, match="Unknown peer model"):
        describe_peer("vnet")


@pytest.mark.parametrize("name", list(PEERS))
def test_wrong_spatial_dims(name):
    with pytest.raises(ValueError, match="spatial_dims must be 2 .* or 3"):
        build_peer(name, 1, 1, 2, image_size=(64,))


@pytest.mark.parametrize("name,spatial_dims,size,stride", [
    ("lightmunet", 2, (100, 96), 8), ("segresnet", 3, (64, 64, 60), 8), ("dynunet", 2, (480, 512), 64),
    ("dynunet", 3, (96, 96, 80), 32), ("unet", 2, (40, 40), 16), ("swinunetr", 3, (96, 96, 80), 32),
    ("umamba_bot", 2, (500, 512), 64), ("umamba_enc", 3, (128, 128, 100), 32),
])
def test_image_size_not_divisible_by_total_stride(name, spatial_dims, size, stride):
    assert size_multiple(name, spatial_dims) == (stride,) * spatial_dims
    with pytest.raises(ValueError, match=rf"not divisible by the network's total stride {stride}\b"):
        build_peer(name, spatial_dims, 1, 2, image_size=size)


@needs_einops
def test_unetr_image_size_not_divisible_by_patch():
    with pytest.raises(ValueError, match="total stride 16"):
        build_peer("unetr", 2, 1, 2, image_size=(100, 100))


@pytest.mark.parametrize("name", ["unetr", "umamba_enc"])
def test_image_size_required(name):
    with pytest.raises(ValueError, match="needs image_size"):
        build_peer(name, 3, 1, 2)


def test_unknown_setting_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"segresnet has no setting 'features'; its settings are blocks_down"):
        build_peer("segresnet", 2, 1, 2, features=16)


def test_umamba_rejects_inputs_it_cannot_take():
    model, _ = _tiny("umamba_enc", 2)
    with pytest.raises(ValueError, match="not divisible by the network's total stride 4"):
        model(torch.randn(1, 2, 18, 16))
    with pytest.raises(ValueError, match="takes inputs of size \\(16, 16\\) only"):
        model(torch.randn(1, 2, 32, 32))
    with pytest.raises(ValueError, match="variant must be 'bot'"):
        UMamba(2, 1, 2, variant="decoder")
