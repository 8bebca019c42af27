"""The layers of LightM-UNet: the Residual Vision Mamba (RVM) layer and the blocks built on it.

Chapters 5 and 6 explain them. Each class says which module of the official code it reproduces
(``MrBlankness/LightM-UNet``, ``LightMUNet.py``); :mod:`lightm_edu.model` maps the names.

Glossary (code name -> the paper):

    RVMLayer             Residual Vision Mamba layer:  y = Mixer(LN(x)) + s * x ;  out = Linear(LN(y))
    adjustment_factor    the learnable scalar s that scales the residual (official: skip_scale)
    ResidualMambaBlock   encoder block: x + RVM(ReLU(GN(RVM(ReLU(GN(x))))))  (official: ResMambaBlock)
    ResidualUpBlock      decoder block: ReLU(GN(DWConv(ReLU(GN(x))) + s' x))   (official: ResUpBlock)
    DepthwiseSeparableConv  depthwise k^d convolution, then pointwise 1x1     (official: get_dwconv_layer)

Token mixers (the ``mixer`` argument, for the paper's ablations):
    "mamba"      mamba_ssm-compatible Mamba block over the flattened tokens (the official model)
    "paper"      an interpretation of the paper's VSS figure (see :class:`VSSMixer`)
    "dwconv"     depthwise k^d convolution over the feature map (no sequence model)
    "attention"  multi-head self-attention over all tokens (quadratic in their number)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .mamba import Mamba, init_dt_projection
from .scan import get_scan_backend, resolve_backend, selective_scan

MIXERS = ("mamba", "paper", "dwconv", "attention")
GROUPS = 8  # GroupNorm groups, as the official code


def conv_nd(spatial_dims: int):
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def check_spatial_dims(spatial_dims) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims!r}.")


def flatten_tokens(x: torch.Tensor) -> torch.Tensor:
    """(b, c, *spatial) -> (b, l, c) with l = prod(spatial), row-major (the last axis fastest)."""
    return x.flatten(2).transpose(1, 2)


def unflatten_tokens(tokens: torch.Tensor, spatial: tuple) -> torch.Tensor:
    """(b, l, c) -> (b, c, *spatial), the inverse of :func:`flatten_tokens`."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *spatial)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k^d convolution (one filter per channel) then a pointwise 1x1 convolution.

    Official ``get_dwconv_layer``. (b, in, *s) -> (b, out, *s); "same" padding.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 bias: bool = False):
        super().__init__()
        conv = conv_nd(spatial_dims)
        self.depthwise = conv(in_channels, in_channels, kernel_size, padding=kernel_size // 2,
                              groups=in_channels, bias=bias)
        self.pointwise = conv(in_channels, out_channels, 1, bias=bias)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class DWConvMixer(nn.Module):
    """Token mixer for the ablation "dwconv": a depthwise k^d convolution on the feature map."""

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = conv_nd(spatial_dims)(channels, channels, kernel_size, padding=kernel_size // 2,
                                          groups=channels)

    def forward(self, tokens, spatial):
        return flatten_tokens(self.conv(unflatten_tokens(tokens, spatial)))


class AttentionMixer(nn.Module):
    """Token mixer for the ablation "attention": multi-head self-attention over all l tokens.

    Memory and time grow as l^2: use it on small inputs only.
    """

    def __init__(self, channels: int, head_channels: int = 32):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, tokens, spatial):
        b, length, c = tokens.shape
        q, k, v = self.qkv(tokens).view(b, length, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v)  # (b, heads, l, c / heads)
        return self.out(mixed.transpose(1, 2).reshape(b, length, c))


class VSSMixer(nn.Module):
    """Token mixer "paper": our reading of the VSS module drawn in the LightM-UNet paper (Fig. 2).

    The figure shows Linear -> DWConv -> SiLU -> SSM -> LayerNorm, multiplied by a Linear -> SiLU
    branch, then Linear. The official code does not use it (it uses :class:`Mamba`), so details
    the figure leaves open are our choices: the depthwise convolution is k^d on the feature map
    (as in VMamba), the SSM is Mamba's selective scan in one direction, sizes as in Mamba.
    """

    def __init__(self, spatial_dims: int, channels: int, d_state: int = 16, expand: int = 2,
                 kernel_size: int = 3, scan_backend: str | None = None):
        super().__init__()
        self.d_inner, self.d_state = expand * channels, d_state
        self.dt_rank = math.ceil(channels / 16)
        self.scan_backend = scan_backend
        self.in_proj = nn.Linear(channels, 2 * self.d_inner, bias=False)
        self.dwconv = conv_nd(spatial_dims)(self.d_inner, self.d_inner, kernel_size,
                                            padding=kernel_size // 2, groups=self.d_inner)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        init_dt_projection(self.dt_proj, self.dt_rank, 0.001, 0.1, "random", 1.0, 1e-4)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1))
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.out_norm = nn.LayerNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, channels, bias=False)

    def forward(self, tokens, spatial):
        x, z = self.in_proj(tokens).chunk(2, dim=-1)  # (b, l, d_inner) each
        x = F.silu(flatten_tokens(self.dwconv(unflatten_tokens(x, spatial))))  # (b, l, d_inner)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        backend = resolve_backend(self.scan_backend or get_scan_backend(), tokens.device.type)
        y = selective_scan(x.transpose(1, 2), (dt @ self.dt_proj.weight.t()).transpose(1, 2),
                           -torch.exp(self.A_log.float()), B.transpose(1, 2).contiguous(),
                           C.transpose(1, 2).contiguous(), D=self.D.float(),
                           delta_bias=self.dt_proj.bias.float(), delta_softplus=True, backend=backend)
        y = self.out_norm(y.transpose(1, 2)) * F.silu(z)  # (b, l, d_inner)
        return self.out_proj(y)


class MambaMixer(Mamba):
    """The official token mixer: a :class:`Mamba` block over the flattened tokens."""

    def forward(self, tokens, spatial=None):
        return super().forward(tokens)


def make_mixer(mixer: str, spatial_dims: int, channels: int, d_state: int, d_conv: int, expand: int,
               scan_backend: str | None) -> nn.Module:
    if mixer == "mamba":
        return MambaMixer(channels, d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend)
    if mixer == "paper":
        return VSSMixer(spatial_dims, channels, d_state=d_state, expand=expand, scan_backend=scan_backend)
    if mixer == "dwconv":
        return DWConvMixer(spatial_dims, channels)
    if mixer == "attention":
        return AttentionMixer(channels)
    raise ValueError(f"Unknown token mixer {mixer!r}; choose one of {', '.join(MIXERS)}.")


class RVMLayer(nn.Module):
    """Residual Vision Mamba layer (official ``MambaLayer``).

    Feature map (b, c_in, *s) -> tokens (b, l, c_in) -> ``y = Mixer(LN(x)) + s x`` ->
    ``Linear(LN(y))`` -> (b, c_out, *s). The same LayerNorm is used twice (shared weights), as in
    the official code; ``s`` is the adjustment factor (init 1). Half-precision input is computed in
    float32, as the official code does.

    Args:
        spatial_dims: 2 or 3.  in_channels, out_channels: c_in, c_out.
        d_state, d_conv, expand: of the Mamba mixer.
        mixer: "mamba" (official), "paper", "dwconv" or "attention" (see the module docstring).
        adjustment_factor: learn the residual scale s (official); False fixes s = 1.
        residual: keep the residual path s x (official); False drops it.
        scan_backend: selective-scan backend for the Mamba mixer (None: the global choice).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2, mixer: str = "mamba", adjustment_factor: bool = True,
                 residual: bool = True, scan_backend: str | None = None):
        super().__init__()
        check_spatial_dims(spatial_dims)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.residual = residual
        self.norm = nn.LayerNorm(in_channels)
        self.mixer = make_mixer(mixer, spatial_dims, in_channels, d_state, d_conv, expand, scan_backend)
        self.projection = nn.Linear(in_channels, out_channels)
        if residual and adjustment_factor:
            self.adjustment_factor = nn.Parameter(torch.ones(1))
        elif residual:  # s fixed at 1: a plain residual connection
            self.register_buffer("adjustment_factor", torch.ones(1), persistent=False)
        else:
            self.adjustment_factor = None

    def forward(self, x):
        if x.dtype == torch.float16:
            x = x.float()
        spatial = tuple(x.shape[2:])
        tokens = flatten_tokens(x)  # (b, l, c_in)
        mixed = self.mixer(self.norm(tokens), spatial)  # (b, l, c_in)
        if self.residual:
            mixed = mixed + self.adjustment_factor * tokens
        out = self.projection(self.norm(mixed))  # (b, l, c_out)
        return unflatten_tokens(out, spatial)  # (b, c_out, *s)


class ResidualMambaBlock(nn.Module):
    """Encoder block (official ``ResMambaBlock``): ``x + RVM(ReLU(GN(RVM(ReLU(GN(x))))))``."""

    def __init__(self, spatial_dims: int, channels: int, **rvm_options):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, channels)
        self.rvm1 = RVMLayer(spatial_dims, channels, channels, **rvm_options)
        self.norm2 = nn.GroupNorm(GROUPS, channels)
        self.rvm2 = RVMLayer(spatial_dims, channels, channels, **rvm_options)

    def forward(self, x):
        h = self.rvm1(F.relu(self.norm1(x)))
        h = self.rvm2(F.relu(self.norm2(h)))
        return x + h


class ResidualUpBlock(nn.Module):
    """Decoder block (official ``ResUpBlock``): ``ReLU(GN(DWConv(ReLU(GN(x))) + s' x))``."""

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 3):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, channels)
        self.conv = DepthwiseSeparableConv(spatial_dims, channels, channels, kernel_size)
        self.adjustment_factor = nn.Parameter(torch.ones(1))
        self.norm2 = nn.GroupNorm(GROUPS, channels)

    def forward(self, x):
        h = self.conv(F.relu(self.norm1(x))) + self.adjustment_factor * x
        return F.relu(self.norm2(h))
