"""The Mamba block against the recorded outputs and gradients of mamba_ssm's Mamba."""

from __future__ import annotations

import math

import pytest
import torch

from lightm_edu.mamba import Mamba


@pytest.mark.parametrize("backend", ["sequential", "parallel"])
@pytest.mark.parametrize("name", ["d16_L64", "d32_L300"])
def test_mamba_block_matches_mamba_ssm(mamba_fixture, name, backend):
    case = mamba_fixture["blocks"][name]
    block = Mamba(**case["config"], scan_backend=backend)
    block.load_state_dict(case["state_dict"])  # strict: mamba_ssm's names, no renaming
    x = case["x"].clone().requires_grad_()
    out = block(x)
    (out * case["out_grad_weight"]).sum().backward()
    torch.testing.assert_close(out, case["out"], rtol=1e-4, atol=1e-5 * case["out"].abs().max().item())
    torch.testing.assert_close(x.grad, case["x_grad"], rtol=1e-4, atol=1e-5 * case["x_grad"].abs().max().item())
    assert set(dict(block.named_parameters())) == set(case["param_grads"])
    for key, param in block.named_parameters():
        expected = case["param_grads"][key]
        torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item(),
                                   msg=lambda m, key=key: f"gradient of {key}: {m}")


def test_state_dict_round_trips_with_mamba_ssm_names(mamba_fixture):
    case = mamba_fixture["blocks"]["d32_L300"]
    block = Mamba(**case["config"])
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in case["state_dict"].items()}


@pytest.mark.parametrize("d_model,expected", [(32, 9_920), (64, 32_640), (128, 116_480), (256, 437_760)])
def test_parameter_count_formula(d_model, expected):
    # 6 d^2 + 4 d dt_rank + 110 d with d_state 16, d_conv 4, expand 2 (the reference document).
    block = Mamba(d_model)
    assert sum(p.numel() for p in block.parameters()) == expected
    assert expected == 6 * d_model ** 2 + 4 * d_model * math.ceil(d_model / 16) + 110 * d_model


def test_initialisation_follows_mamba():
    torch.manual_seed(0)
    block = Mamba(64, dt_min=0.001, dt_max=0.1)
    torch.testing.assert_close(-torch.exp(block.A_log), -torch.arange(1, 17.0).repeat(128, 1))
    torch.testing.assert_close(block.D, torch.ones(128))
    dt = torch.nn.functional.softplus(block.dt_proj.bias)  # the initial step sizes
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    bound = block.dt_rank ** -0.5
    assert block.dt_proj.weight.abs().max() <= bound


def test_causal_in_the_sequence():
    # Changing a later token never changes an earlier output.
    torch.manual_seed(1)
    block = Mamba(16).eval()
    x = torch.randn(1, 20, 16)
    y = block(x)
    x2 = x.clone()
    x2[:, 12:] += torch.randn(1, 8, 16)
    y2 = block(x2)
    torch.testing.assert_close(y[:, :12], y2[:, :12])
    assert not torch.allclose(y[:, 12:], y2[:, 12:])


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r"shape \(batch, length, d_model=16\), got \(2, 16\)"):
        Mamba(16)(torch.zeros(2, 16))
    with pytest.raises(ValueError, match="d_model=16"):
        Mamba(16)(torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match="dt_init must be"):
        Mamba(16, dt_init="zeros")
