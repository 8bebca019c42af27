"""LightM-UNet (Liao et al., 2024), as the official code computes it, with readable names.

Chapter 6 explains it. The network is MONAI's SegResNet with its convolutions replaced by RVM
layers:

    stem      depthwise-separable 3^d conv, in_channels -> F                 (official: convInit)
    encoder   4 stages, widths F, 2F, 4F, 8F. Stage i > 0 first applies an RVM layer C/2 -> C at
              the higher resolution, then max-pools by 2; then blocks_down[i] residual Mamba
              blocks. The output of every stage is kept as a skip.          (official: down_layers)
    decoder   3 stages: 1x1 conv halving the channels, x2 linear upsampling, + skip (added, not
              concatenated), then blocks_up[i] residual up blocks.         (official: up_samples,
                                                                             up_layers)
    head      GroupNorm, ReLU, depthwise-separable 1x1 conv with bias -> logits (official: conv_final)

Three poolings: every spatial size must be divisible by 8 (:func:`pad_to_multiple` and
:meth:`LightMUNet.forward_padded` handle other sizes).

Official checkpoint names map to ours one to one (:meth:`LightMUNet.official_key_map`):

    convInit.0.conv / convInit.1.conv           stem.depthwise / stem.pointwise
    down_layers.i.0.0                           encoder.i.downsample            (RVM layer, i > 0)
    down_layers.i.j   (j >= 1)                  encoder.i.blocks.(j-1)
      .norm1 .conv1 .norm2 .conv2                 .norm1 .rvm1 .norm2 .rvm2
    RVM layer: .norm .mamba .proj .skip_scale   .norm .mixer .projection .adjustment_factor
    up_samples.i.0.conv                         decoder.i.reduce
    up_layers.i.j                               decoder.i.blocks.j
      .conv.0.conv .conv.1.conv .skip_scale       .conv.depthwise .conv.pointwise .adjustment_factor
    conv_final.0 / conv_final.2.0.conv / .2.1.conv   head.norm / head.conv.depthwise / .pointwise
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (GROUPS, DepthwiseSeparableConv, ResidualMambaBlock, ResidualUpBlock, RVMLayer,
                     check_spatial_dims, conv_nd)

__all__ = ["LightMUNet", "pad_to_multiple", "crop_to_size"]


class EncoderStage(nn.Module):
    """Optional RVM layer C/2 -> C and 2x max-pooling, then residual Mamba blocks at C channels."""

    def __init__(self, spatial_dims: int, channels: int, n_blocks: int, downsample: bool, **rvm_options):
        super().__init__()
        self.downsample = RVMLayer(spatial_dims, channels // 2, channels, **rvm_options) if downsample else None
        self.pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims](2) if downsample else None
        self.blocks = nn.ModuleList(ResidualMambaBlock(spatial_dims, channels, **rvm_options)
                                    for _ in range(n_blocks))

    def forward(self, x):
        if self.downsample is not None:
            x = self.pool(self.downsample(x))  # the RVM layer runs at the higher resolution
        for block in self.blocks:
            x = block(x)
        return x


class DecoderStage(nn.Module):
    """1x1 conv C -> C/2, x2 upsampling, add the skip, then residual up blocks."""

    def __init__(self, spatial_dims: int, in_channels: int, n_blocks: int):
        super().__init__()
        channels = in_channels // 2
        self.reduce = conv_nd(spatial_dims)(in_channels, channels, 1, bias=False)
        self.upsample = nn.Upsample(scale_factor=2, mode={2: "bilinear", 3: "trilinear"}[spatial_dims],
                                    align_corners=False)
        self.blocks = nn.ModuleList(ResidualUpBlock(spatial_dims, channels) for _ in range(n_blocks))

    def forward(self, x, skip):
        x = self.upsample(self.reduce(x)) + skip
        for block in self.blocks:
            x = block(x)
        return x


class SegmentationHead(nn.Module):
    """GroupNorm, ReLU, depthwise-separable 1x1 conv with bias: features -> logits."""

    def __init__(self, spatial_dims: int, channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(GROUPS, channels)
        self.conv = DepthwiseSeparableConv(spatial_dims, channels, out_channels, kernel_size=1, bias=True)

    def forward(self, x):
        return self.conv(F.relu(self.norm(x)))


class LightMUNet(nn.Module):
    """LightM-UNet for 2D (b, c, h, w) or 3D (b, c, d, h, w) inputs; returns logits.

    Args:
        spatial_dims: 2 or 3.  in_channels, out_channels: image channels and classes.
        init_filters: F, the width of the first stage (32 in the paper).
        blocks_down: residual Mamba blocks per encoder stage.  blocks_up: up blocks per decoder stage.
        d_state, d_conv, expand: of every Mamba block.
        mixer, adjustment_factor, residual: ablation variants of the RVM layers
            (see :class:`lightm_edu.layers.RVMLayer`); the defaults are the official model.
        scan_backend: selective-scan backend of every Mamba block (None: the global choice).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, init_filters: int = 32,
                 blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, mixer: str = "mamba", adjustment_factor: bool = True,
                 residual: bool = True, scan_backend: str | None = None):
        super().__init__()
        check_spatial_dims(spatial_dims)
        if init_filters % GROUPS:
            raise ValueError(f"init_filters must be a multiple of {GROUPS} (GroupNorm groups), got {init_filters}.")
        if len(blocks_up) != len(blocks_down) - 1:
            raise ValueError(f"blocks_up needs one entry per decoder stage, len(blocks_down) - 1 = "
                             f"{len(blocks_down) - 1}; got {len(blocks_up)}.")
        self.config = dict(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                           init_filters=init_filters, blocks_down=tuple(blocks_down), blocks_up=tuple(blocks_up),
                           d_state=d_state, d_conv=d_conv, expand=expand, mixer=mixer,
                           adjustment_factor=adjustment_factor, residual=residual)
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.size_multiple = 2 ** (len(blocks_down) - 1)
        rvm_options = dict(d_state=d_state, d_conv=d_conv, expand=expand, mixer=mixer,
                           adjustment_factor=adjustment_factor, residual=residual, scan_backend=scan_backend)
        self.stem = DepthwiseSeparableConv(spatial_dims, in_channels, init_filters, kernel_size=3)
        self.encoder = nn.ModuleList(
            EncoderStage(spatial_dims, init_filters * 2 ** i, n, downsample=i > 0, **rvm_options)
            for i, n in enumerate(blocks_down))
        n_up = len(blocks_up)
        self.decoder = nn.ModuleList(DecoderStage(spatial_dims, init_filters * 2 ** (n_up - i), n)
                                     for i, n in enumerate(blocks_up))
        self.head = SegmentationHead(spatial_dims, init_filters, out_channels)

    # ------------------------------------------------------------------------------ forward

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError naming the problem when x cannot go through the network."""
        axes = "(batch, channels, height, width)" if self.spatial_dims == 2 else "(batch, channels, depth, height, width)"
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"LightMUNet(spatial_dims={self.spatial_dims}) expects input of shape {axes}, "
                             f"got {x.ndim} dimensions {tuple(x.shape)}.")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"LightMUNet was built with in_channels={self.in_channels} but the input has "
                             f"{x.shape[1]} channels (shape {tuple(x.shape)}). Build the model with "
                             f"in_channels={x.shape[1]}, or convert the input.")
        bad = [s for s in x.shape[2:] if s % self.size_multiple]
        if bad:
            raise ValueError(f"Spatial size {tuple(x.shape[2:])} is not divisible by {self.size_multiple} "
                             f"({len(self.encoder) - 1} poolings by 2). Pad it with "
                             f"lightm_edu.model.pad_to_multiple(x, {self.size_multiple}) and crop the output "
                             "back, or call model.forward_padded(x), which does both.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (b, in_channels, *s) with every size in s divisible by 8 -> logits (b, out_channels, *s)."""
        self.check_input(x)
        x = self.stem(x)  # (b, F, *s)
        skips = []
        for stage in self.encoder:
            x = stage(x)  # (b, F 2^i, *s / 2^i)
            skips.append(x)
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            x = stage(x, skip)  # (b, C/2, *2 s)
        return self.head(x)  # (b, out_channels, *s)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Like forward, for any spatial size: pad up to a multiple of 8, run, crop back."""
        padded, size = pad_to_multiple(x, self.size_multiple)
        return crop_to_size(self(padded), size)

    # ------------------------------------------------------------------- official checkpoints

    def official_key_map(self) -> dict[str, str]:
        """Our state_dict key -> the official code's key, for every entry of our state_dict."""
        return {key: _to_official(key) for key in self.state_dict()}

    def to_official_state_dict(self) -> dict[str, torch.Tensor]:
        """This model's weights under the official code's names (loads into the official LightMUNet)."""
        self._require_official_layout()
        names = self.official_key_map()
        return {names[k]: v for k, v in self.state_dict().items()}

    @classmethod
    def from_official_state_dict(cls, state_dict: dict, **config) -> "LightMUNet":
        """Build a model with ``config`` (LightMUNet arguments) and load official weights into it.

        Raises ValueError listing missing, unexpected and mis-shaped keys when the checkpoint was
        made with another configuration.
        """
        model = cls(**config)
        model._require_official_layout()
        names = model.official_key_map()
        ours = model.state_dict()
        missing = sorted(set(names.values()) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(names.values()))
        mismatched = [f"{official}: checkpoint {tuple(state_dict[official].shape)}, model {tuple(ours[key].shape)}"
                      for key, official in names.items()
                      if official in state_dict and tuple(state_dict[official].shape) != tuple(ours[key].shape)]
        if missing or unexpected or mismatched:
            lines = [f"The state dict does not fit LightMUNet({_format_config(model.config)})."]
            for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                 ("shape mismatches", mismatched)):
                if items:
                    more = f" ... and {len(items) - 8} more" if len(items) > 8 else ""
                    lines.append(f"{len(items)} {title}: {', '.join(items[:8])}{more}")
            stem = state_dict.get("convInit.0.conv.weight")
            if stem is not None:
                lines.append(f"The checkpoint's stem suggests spatial_dims={stem.ndim - 2}, "
                             f"in_channels={stem.shape[0]}.")
            head = state_dict.get("conv_final.2.1.conv.weight")
            if head is not None:
                lines.append(f"Its head suggests out_channels={head.shape[0]}, init_filters={head.shape[1]}.")
            raise ValueError("\n".join(lines))
        model.load_state_dict({key: state_dict[official] for key, official in names.items()})
        return model

    def _require_official_layout(self) -> None:
        c = self.config
        if c["mixer"] != "mamba" or not c["adjustment_factor"] or not c["residual"]:
            raise ValueError("Only the official layout (mixer='mamba', adjustment_factor=True, residual=True) "
                             "has official checkpoint names.")


# Our key -> official key. Applied in order; the first matching prefix rule wins, then the
# renames inside RVM layers and blocks.
_PREFIX_RULES = [
    (r"^stem\.depthwise\.", "convInit.0.conv."),
    (r"^stem\.pointwise\.", "convInit.1.conv."),
    (r"^encoder\.(\d+)\.downsample\.", r"down_layers.\1.0.0."),
    (r"^encoder\.(\d+)\.blocks\.(\d+)\.", lambda m: f"down_layers.{m[1]}.{int(m[2]) + 1}."),
    (r"^decoder\.(\d+)\.reduce\.", r"up_samples.\1.0.conv."),
    (r"^decoder\.(\d+)\.blocks\.(\d+)\.", r"up_layers.\1.\2."),
    (r"^head\.norm\.", "conv_final.0."),
    (r"^head\.conv\.depthwise\.", "conv_final.2.0.conv."),
    (r"^head\.conv\.pointwise\.", "conv_final.2.1.conv."),
]
_INNER_RENAMES = [
    (r"\.rvm1\.", ".conv1."), (r"\.rvm2\.", ".conv2."),
    (r"(^|\.)mixer\.", r"\1mamba."), (r"(^|\.)projection\.", r"\1proj."),
    (r"(^|\.)adjustment_factor$", r"\1skip_scale"),
    (r"\.conv\.depthwise\.", ".conv.0.conv."), (r"\.conv\.pointwise\.", ".conv.1.conv."),
]


def _to_official(key: str) -> str:
    for pattern, replacement in _PREFIX_RULES:
        match = re.match(pattern, key)
        if match:
            head = replacement(match) if callable(replacement) else match.expand(replacement)
            rest = key[match.end():]
            break
    else:
        raise KeyError(f"No official name for {key!r}.")
    for pattern, replacement in _INNER_RENAMES:
        rest = re.sub(pattern, replacement, "." + rest)[1:]
    return head + rest


def _format_config(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items() if k in
                     ("spatial_dims", "in_channels", "out_channels", "init_filters", "blocks_down", "blocks_up"))


# ----------------------------------------------------------------------------- any input size

def pad_to_multiple(x: torch.Tensor, multiple: int = 8, mode: str = "constant"):
    """Pad the spatial sizes of x (b, c, *s) at the end up to multiples of ``multiple``.

    Returns:
        the padded tensor, and the original spatial size (for :func:`crop_to_size`).
    """
    size = tuple(x.shape[2:])
    extra = [(-s) % multiple for s in size]
    pad = []
    for e in reversed(extra):  # F.pad wants the last axis first
        pad += [0, e]
    return (F.pad(x, pad, mode=mode) if any(extra) else x), size


def crop_to_size(y: torch.Tensor, size: tuple) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: keep the first ``size`` positions of each spatial axis."""
    return y[(...,) + tuple(slice(0, s) for s in size)]
