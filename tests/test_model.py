"""LightM-UNet: official logits and parameter counts, the official state-dict mapping, variants,
shapes and error messages."""

from __future__ import annotations

import re

import pytest
import torch

from lightm_edu.layers import RVMLayer
from lightm_edu.model import LightMUNet, crop_to_size, pad_to_multiple


@pytest.mark.parametrize("name", ["2d_in1_out2", "3d_in1_out3", "2d_in3_out2"])
@pytest.mark.parametrize("backend", ["sequential", "parallel"])
def test_official_logits(lightmunet_fixture, name, backend):
    case = lightmunet_fixture["nets"][name]
    model = LightMUNet.from_official_state_dict(case["state_dict"], **case["config"], scan_backend=backend).eval()
    assert sum(p.numel() for p in model.parameters()) == case["n_params"]
    with torch.no_grad():
        out = model(case["x"])
    scale = case["out"].abs().max().item()
    torch.testing.assert_close(out, case["out"], rtol=1e-4, atol=2e-4 * scale)


def test_round_trip_to_official_names(lightmunet_fixture):
    case = lightmunet_fixture["nets"]["2d_in3_out2"]
    model = LightMUNet.from_official_state_dict(case["state_dict"], **case["config"])
    back = model.to_official_state_dict()
    assert back.keys() == case["state_dict"].keys()
    for key, value in case["state_dict"].items():
        assert torch.equal(back[key], value), key


@pytest.mark.parametrize("header_start,spatial_dims,in_channels,out_channels,count", [
    ("LightMUNet(spatial_dims=2", 2, 3, 2, 5_011_765),
    ("LightMUNet(spatial_dims=3", 3, 1, 3, 5_015_766),
])
def test_full_size_keys_shapes_and_counts(official_keys, header_start, spatial_dims, in_channels, out_channels, count):
    header = next(h for h in official_keys if h.startswith(header_start))
    assert header.endswith(f"{count} parameters")
    model = LightMUNet(spatial_dims, in_channels, out_channels)
    assert sum(p.numel() for p in model.parameters()) == count
    ours = model.state_dict()
    official = {model.official_key_map()[k]: str(tuple(v.shape)) for k, v in ours.items()}
    assert official == official_keys[header]


def test_parameter_count_2d_one_channel():
    assert sum(p.numel() for p in LightMUNet(2, 1, 2).parameters()) == 5_011_683


def test_twenty_one_rvm_layers():
    model = LightMUNet(2, 1, 2)
    assert sum(isinstance(m, RVMLayer) for m in model.modules()) == 21


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = LightMUNet(2, 1, 3, init_filters=8)
    model(torch.randn(2, 1, 16, 24)).square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


@pytest.mark.parametrize("spatial_dims,shape", [(2, (1, 2, 32, 48)), (3, (1, 2, 16, 8, 24))])
def test_output_shape(spatial_dims, shape):
    model = LightMUNet(spatial_dims, 2, 4, init_filters=8).eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (shape[0], 4, *shape[2:])


@pytest.mark.parametrize("options", [
    {"mixer": "dwconv"}, {"mixer": "attention"}, {"mixer": "paper"},
    {"adjustment_factor": False}, {"residual": False},
])
def test_variants_build_and_train_a_step(options):
    torch.manual_seed(0)
    model = LightMUNet(2, 1, 2, init_filters=8, **options)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, target = torch.randn(2, 1, 16, 16), torch.randint(0, 2, (2, 16, 16))
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_variant_parameters_differ_as_documented():
    base = LightMUNet(2, 1, 2, init_filters=8)
    fixed = LightMUNet(2, 1, 2, init_filters=8, adjustment_factor=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(base) - count(fixed) == 21  # one learnable scalar per RVM layer
    assert count(LightMUNet(2, 1, 2, init_filters=8, residual=False)) == count(fixed)


def test_rvm_layer_without_residual_is_mixer_only():
    torch.manual_seed(0)
    layer = RVMLayer(2, 8, 8, residual=False).eval()
    x = torch.randn(1, 8, 4, 4)
    tokens = x.flatten(2).transpose(1, 2)
    expected = layer.projection(layer.norm(layer.mixer(layer.norm(tokens))))
    torch.testing.assert_close(layer(x), expected.transpose(1, 2).reshape(1, 8, 4, 4))


def test_half_precision_input_is_computed_in_float32():
    layer = RVMLayer(2, 8, 8).eval()
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(layer(x.half()), layer(x.half().float()))


# ------------------------------------------------------------------------------ bad input

def test_spatial_dims_must_be_2_or_3():
    with pytest.raises(ValueError, match="spatial_dims must be 2 .* or 3 .*, got 1"):
        LightMUNet(1, 1, 2)


def test_wrong_channel_count_is_named():
    model = LightMUNet(2, 3, 2, init_filters=8)
    with pytest.raises(ValueError, match="in_channels=3 but the input has 1 channels"):
        model(torch.zeros(1, 1, 16, 16))


def test_wrong_number_of_dimensions_is_named():
    with pytest.raises(ValueError, match=r"expects input of shape \(batch, channels, depth, height, width\)"):
        LightMUNet(3, 1, 2, init_filters=8)(torch.zeros(1, 1, 16, 16))


def test_size_not_divisible_by_8_is_named_with_the_fix():
    model = LightMUNet(2, 1, 2, init_filters=8)
    with pytest.raises(ValueError, match=r"Spatial size \(30, 32\) is not divisible by 8.*forward_padded"):
        model(torch.zeros(1, 1, 30, 32))


def test_pad_and_crop_give_any_size_a_valid_shape():
    model = LightMUNet(2, 1, 2, init_filters=8).eval()
    x = torch.randn(1, 1, 30, 21)
    padded, size = pad_to_multiple(x, 8)
    assert padded.shape[2:] == (32, 24) and size == (30, 21)
    torch.testing.assert_close(crop_to_size(padded, size), x)
    with torch.no_grad():
        out = model.forward_padded(x)
        assert out.shape == (1, 2, 30, 21)
        torch.testing.assert_close(out, crop_to_size(model(padded), size))


def test_state_dict_from_another_configuration_is_explained(lightmunet_fixture):
    case = lightmunet_fixture["nets"]["2d_in3_out2"]  # made with in_channels=3
    config = {**case["config"], "in_channels": 1}
    with pytest.raises(ValueError) as error:
        LightMUNet.from_official_state_dict(case["state_dict"], **config)
    message = str(error.value)
    assert "shape mismatches: convInit.0.conv.weight: checkpoint (3, 1, 3, 3), model (1, 1, 3, 3)" in message
    assert "suggests spatial_dims=2, in_channels=3" in message
    with pytest.raises(ValueError, match=r"\d+ missing keys: .*down_layers\.3\.5"):
        LightMUNet.from_official_state_dict(case["state_dict"], **{**case["config"], "blocks_down": (1, 2, 2, 5)})


def test_variants_have_no_official_names():
    with pytest.raises(ValueError, match="Only the official layout"):
        LightMUNet(2, 1, 2, init_filters=8, mixer="dwconv").to_official_state_dict()


def test_unknown_mixer_is_named():
    with pytest.raises(ValueError, match=re.escape("Unknown token mixer 'ssm'; choose one of mamba, paper, dwconv, attention")):
        LightMUNet(2, 1, 2, init_filters=8, mixer="ssm")
