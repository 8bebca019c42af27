"""The peer models LightM-UNet is compared with, in one registry.

The LightM-UNet paper (Liao et al., 2024, arXiv 2403.05246, Tables 1-2) compares against nnU-Net,
SegResNet, UNETR, SwinUNETR and U-Mamba. This module builds each of them at the paper's settings so
that a comparison (parameters, FLOPs, speed, memory, Dice) can loop over one list:

    >>> from lightm_edu.baselines import PEERS, build_peer, describe_peer
    >>> for name in PEERS:
    ...     model = build_peer(name, spatial_dims=2, in_channels=3, out_channels=2, image_size=(512, 512))

Where MONAI has the network, the registry builds MONAI's class (MONAI 1.6.1 was used for the numbers
below); U-Mamba is re-implemented here with this package's :class:`~lightm_edu.mamba.Mamba` block, so
it runs on every selective-scan backend, CPU included.

The paper's settings (:data:`PAPER_SETTINGS`):

    2D   chest X-rays (Montgomery & Shenzhen): 3 input channels, 2 classes, 512 x 512
    3D   LiTS CT: 1 input channel, 3 classes (background, liver, tumour), 128 x 128 x 128

Parameters at those settings (exact ``sum(p.numel())``; :data:`PAPER_PARAMETERS`):

    name          2D            3D           what it is
    lightmunet     5,011,765     5,015,766   LightM-UNet, the official code's layout (lightm_edu.model)
    segresnet      6,299,106    18,796,035   MONAI SegResNet, LightM-UNet's widths and blocks
    dynunet       33,446,818    31,181,763   MONAI DynUNet with nnU-Net's default plans (nnU-Net-like)
    unet           1,625,737     4,807,482   MONAI UNet 16..256, 2 residual units (not in the paper)
    unetr         88,317,186    93,029,619   MONAI UNETR (ViT-B/16 encoder)
    swinunetr     25,139,324    62,186,757   MONAI SwinUNETR, feature size 48
    umamba_bot    47,515,532    42,121,199   U-Mamba Bot: residual nnU-Net + one Mamba layer at the bottleneck
    umamba_enc    47,675,020    42,751,727   U-Mamba Enc: a Mamba layer after encoder stages

U-Mamba versus LightM-UNet. The paper says LightM-UNet has "224x fewer parameters than U-Mamba" (2D).
With the 1.09M it reports for itself that would put U-Mamba near 244M. Built at nnU-Net's default
2D plan, U-Mamba Bot has 47.5M parameters: 9.5x LightM-UNet's real 5.01M (43.6x the reported
1.09M). Where they are (2D Bot): the residual encoder 16.4M (stem 0.03M), the decoder 28.6M (its
deepest stage alone, 1024 -> 512 channels with 3x3 convolutions, holds 12.3M), the 1x1 upsampling
convolutions 0.7M, the one Mamba layer (d_model 512) 1.7M. U-Mamba Enc's four Mamba layers add 1.86M
in all, so both variants are nnU-Net-sized convolutional networks with little Mamba in them. In 3D
(128^3) Bot has 42.1M and Enc 42.8M (8.4x and 8.5x LightM-UNet). We cannot reproduce the 224x: the
paper's own count of LightM-UNet is too low (see :mod:`lightm_edu.flops`), and its U-Mamba and nnU-Net
counts (about 244M and 126M by its ratios) are far above what these plans give (47.5M and 33.4M).

Glossary:

    plan          nnU-Net's per-data-set configuration: stages, widths, kernel sizes, strides
    stage         one resolution level of a UNet; stage 0 is full resolution
    total stride  product of the strides: every input size must be divisible by it
    deep supervision  extra segmentation outputs at lower resolutions during training (off here)
    patch tokens  U-Mamba's default: every voxel is a token with C features, L = prod(spatial)
    channel tokens  U-Mamba Enc's choice for tiny feature maps: every channel is a token whose
                  features are the prod(spatial) values of its map (L = C)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import check_spatial_dims, conv_nd, flatten_tokens, unflatten_tokens
from .mamba import Mamba

__all__ = ["PEERS", "MAMBA_MODELS", "PAPER_SETTINGS", "PAPER_PARAMETERS", "REFERENCE_PARAMETERS_M", "PeerSpec",
           "build_peer", "describe_peer", "peer_config", "size_multiple", "count_parameters",
           "UMamba", "UMambaLayer", "ResidualConvBlock", "nnunet_default_plan"]

MAMBA_MODELS = ("lightmunet", "umamba_bot", "umamba_enc")
"""The models with Mamba blocks: they take a ``scan_backend``."""

PAPER_SETTINGS = {
    2: dict(in_channels=3, out_channels=2, image_size=(512, 512)),
    3: dict(in_channels=1, out_channels=3, image_size=(128, 128, 128)),
}
"""The inputs of the paper's two comparisons: 2D chest X-rays and 3D LiTS CT patches."""


def count_parameters(model: nn.Module) -> int:
    """Number of parameters: ``sum(p.numel() for p in model.parameters())`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------- nnU-Net plans

def nnunet_default_plan(spatial_dims: int) -> dict:
    """nnU-Net-style plans for the paper's input sizes (512 x 512 in 2D, 128^3 in 3D).

    nnU-Net (Isensee et al., Nature Methods 2021; github.com/MIC-DKFZ/nnUNet) doubles the width at
    every stage from 32 and caps it at 512 (2D) or 320 (3D), uses 3^d kernels for isotropic data, a
    stride of 1 in the first stage and 2 after, and two convolutions per stage in both encoder and
    decoder. The plans used here (those of the reference measurements of the peers):

        2D 512 x 512:  7 stages, features 32, 64, 128, 256, 512, 512, 512, strides 1, 2, 2, 2, 2, 2, 2
                       (bottleneck 8 x 8)
        3D 128^3:      6 stages, features 32, 64, 128, 256, 320, 320,      strides 1, 2, 2, 2, 2, 2
                       (bottleneck 4^3)

    A real nnU-Net run plans from the data set's median shape and a GPU-memory target, so its plan
    may differ. In particular nnU-Net v2's planner pools an axis while it is at least 8 voxels long,
    which takes a 512 x 512 patch down to 4 x 4: 8 stages (one more 512-wide stage). DynUNet then
    has 46.3M parameters instead of 33.4M, U-Mamba Bot 64.8M instead of 47.5M (pass 8 entries in
    ``filters``/``features_per_stage``, ``strides`` and ``kernel_sizes`` to build those).

    Returns:
        dict with features_per_stage, strides, kernel_sizes (one int per stage) and
        n_conv_per_stage_encoder, n_conv_per_stage_decoder.
    """
    check_spatial_dims(spatial_dims)
    if spatial_dims == 2:
        features, n_stages = (32, 64, 128, 256, 512, 512, 512), 7
    else:
        features, n_stages = (32, 64, 128, 256, 320, 320), 6
    return dict(features_per_stage=features, strides=(1,) + (2,) * (n_stages - 1), kernel_sizes=(3,) * n_stages,
                n_conv_per_stage_encoder=(2,) * n_stages, n_conv_per_stage_decoder=(2,) * (n_stages - 1))


# ------------------------------------------------------------------------------------- U-Mamba

def _per_axis(value, spatial_dims: int) -> tuple:
    """An int or a per-axis sequence -> a tuple of spatial_dims ints."""
    if isinstance(value, int):
        return (value,) * spatial_dims
    value = tuple(int(v) for v in value)
    if len(value) != spatial_dims:
        raise ValueError(f"Expected an int or {spatial_dims} values (one per axis), got {value}.")
    return value


class ResidualConvBlock(nn.Module):
    """nnU-Net's residual block as U-Mamba uses it (official ``BasicResBlock`` and ``BasicBlockD``).

    ``LReLU(IN(conv(LReLU(IN(conv_s(x))))) + shortcut(x))`` with k^d convolutions (bias), instance
    norm (affine) and LeakyReLU(0.01). The first convolution has the stride. ``shortcut`` is a 1x1
    convolution with the same stride (bias, no norm) when ``projection`` is True (U-Mamba's first
    block of every stage, even where the shape does not change), else the identity.

    (b, in_channels, *s) -> (b, out_channels, *s / stride)
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size=3, stride=1,
                 projection: bool = False):
        super().__init__()
        conv = conv_nd(spatial_dims)
        norm = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims]
        kernel_size, stride = _per_axis(kernel_size, spatial_dims), _per_axis(stride, spatial_dims)
        padding = tuple(k // 2 for k in kernel_size)
        if not projection and (in_channels != out_channels or any(s != 1 for s in stride)):
            raise ValueError("A block without projection must keep the channels and use stride 1.")
        self.conv1 = conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.norm1 = norm(out_channels, eps=1e-5, affine=True)
        self.conv2 = conv(out_channels, out_channels, kernel_size, padding=padding)
        self.norm2 = norm(out_channels, eps=1e-5, affine=True)
        self.shortcut = conv(in_channels, out_channels, 1, stride=stride) if projection else nn.Identity()

    def forward(self, x):
        h = F.leaky_relu(self.norm1(self.conv1(x)), 0.01)
        h = self.norm2(self.conv2(h))
        return F.leaky_relu(h + self.shortcut(x), 0.01)


class UMambaLayer(nn.Module):
    """U-Mamba's Mamba layer (official ``MambaLayer``): ``Mamba(LN(tokens))``, no residual.

    Patch tokens (default): (b, C, *s) -> (b, L = prod(s), C) -> LayerNorm(C) -> Mamba(d_model = C)
    -> (b, C, *s). Channel tokens (``channel_tokens=True``, U-Mamba Enc on tiny feature maps):
    (b, C, *s) -> (b, C, prod(s)), LayerNorm and Mamba over d_model = prod(s), i.e. the C channels
    form the sequence. Half-precision input is computed in float32, as the official code does (the
    output stays float32). Unlike LightM-UNet's RVM layer there is no residual path, no adjustment
    factor and no output projection: the layer replaces the feature map by Mamba's output.

    Args:
        dim: d_model: the channels C (patch tokens) or prod(s) (channel tokens).
        channel_tokens: see above.  d_state, d_conv, expand: of the Mamba block.
        scan_backend: selective-scan backend (None: the global choice).
    """

    def __init__(self, dim: int, channel_tokens: bool = False, d_state: int = 16, d_conv: int = 4,
                 expand: int = 2, scan_backend: str | None = None):
        super().__init__()
        self.dim, self.channel_tokens = dim, channel_tokens
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(dim, d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend)

    def forward(self, x):
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        spatial = tuple(x.shape[2:])
        if self.channel_tokens:
            if math.prod(spatial) != self.dim:
                raise ValueError(f"This channel-token Mamba layer was built for feature maps of {self.dim} "
                                 f"voxels, got spatial size {spatial}: build the model with this image_size.")
            tokens = x.flatten(2)  # (b, C, prod(s)): channels are the sequence
            return self.mamba(self.norm(tokens)).reshape(x.shape)
        tokens = flatten_tokens(x)  # (b, L, C)
        return unflatten_tokens(self.mamba(self.norm(tokens)), spatial)  # (b, C, *s)


class UMambaUpsample(nn.Module):
    """Nearest-neighbour upsampling by the stage's stride, then a 1x1 convolution (bias) to the skip's
    width (official ``UpsampleLayer``). (b, c_in, *s) -> (b, c_out, *s * stride)"""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride):
        super().__init__()
        self.scale = tuple(float(s) for s in _per_axis(stride, spatial_dims))
        self.conv = conv_nd(spatial_dims)(in_channels, out_channels, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=self.scale, mode="nearest"))


class UMamba(nn.Module):
    """U-Mamba (Ma, Li & Wang, 2024, arXiv 2401.04722; code github.com/bowang-lab/U-Mamba, files
    ``umamba/nnunetv2/nets/UMambaBot_{2d,3d}.py`` and ``UMambaEnc_{2d,3d}.py``), re-implemented with
    this package's Mamba block.

    A residual nnU-Net UNet with Mamba layers (:class:`UMambaLayer`):

        stem      ResidualConvBlock(in -> F0, projection) + (n_blocks[0] - 1) blocks at F0
        encoder   stage s: ResidualConvBlock(F_{s-1} -> F_s, stride s, projection) + (n_blocks[s] - 1)
                  blocks; "enc": then a Mamba layer (see ``mamba_stages``). Every stage's output is a skip.
        bottleneck  "bot": one Mamba layer on the deepest skip (patch tokens, d_model = F_last)
        decoder   per stage: nearest upsampling + 1x1 conv to the skip's width, concatenate the skip,
                  ResidualConvBlock(2 F -> F, projection) + (n_dec[i] - 1) blocks; a 1x1 head per stage
        output    the head of the last (full-resolution) stage: logits (b, out_channels, *s)

    Block counts follow the official code: the plan's counts (2 everywhere for nnU-Net's default
    plan), then 1 block in the deeper half of the encoder (stages ceil(n/2) .. n-1) and in the
    decoder stages ceil(n/2) .. n-2 (counted from the deepest; i.e. the high-resolution end).

    Mamba layers ("enc"): after every encoder stage in 3D; in 2D after every other stage, counting
    back from the deepest (stages n-1, n-3, ...). A stage whose feature map has no more voxels than
    channels uses channel tokens (d_model = its voxel count), which is why "enc" needs ``image_size``.
    For the paper's 2D plan (512^2) that is stages 0, 2, 4 (patch tokens, L = 512^2, 128^2, 32^2) and
    6 (8 x 8 map, 512 channel tokens of 64 features); in 3D (128^3) stages 0-4 use patch tokens
    (L = 128^3 ... 8^3) and stage 5 (4^3 map) 320 channel tokens of 64 features.

    Differences from the official code, all optional to undo:
      - Deep supervision is off by default (``deep_supervision=True`` returns every head's logits,
        full resolution first, as the official code). The heads of the lower stages are built either
        way, as in the official code, so the parameter count is the same.
      - The official 2D networks do not concatenate the full-resolution skip (their last decoder stage
        sees only the upsampled features); the 3D ones do. ``concat_finest_skip=None`` keeps this
        difference (official); True/False forces one behaviour in both.
      - The Mamba block is :class:`lightm_edu.mamba.Mamba` (same arguments, defaults, initialisation
        and parameters as ``mamba_ssm.Mamba``) instead of ``mamba_ssm``'s, so any scan backend works.
      - Convolutions are initialised as nnU-Net's ``InitWeights_He(1e-2)``; no ``print`` calls and no
        ``compute_conv_feature_map_size`` (nnU-Net's memory estimate).

    Args:
        spatial_dims: 2 or 3.  in_channels, out_channels: image channels and classes.
        variant: "bot" (Mamba at the bottleneck) or "enc" (Mamba in the encoder).
        image_size: the training patch size; needed by "enc" (channel-token stages), checked if given.
        features_per_stage, strides, kernel_sizes: one entry per stage (int or per-axis tuple);
            None: :func:`nnunet_default_plan`.
        n_blocks_per_stage, n_conv_per_stage_decoder: residual blocks per encoder / decoder stage
            before the official halving rule; None: the plan's (2 each).
        mamba_stages: encoder stages followed by a Mamba layer ("enc" only); None: the official rule.
        deep_supervision, concat_finest_skip: see above.
        d_state, d_conv, expand: of every Mamba block.  scan_backend: selective-scan backend.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, variant: str = "bot",
                 image_size=None, features_per_stage=None, strides=None, kernel_sizes=None,
                 n_blocks_per_stage=None, n_conv_per_stage_decoder=None, mamba_stages=None,
                 deep_supervision: bool = False, concat_finest_skip: bool | None = None,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2, scan_backend: str | None = None):
        super().__init__()
        check_spatial_dims(spatial_dims)
        if variant not in ("bot", "enc"):
            raise ValueError(f"variant must be 'bot' (Mamba at the bottleneck) or 'enc' (Mamba in the "
                             f"encoder), got {variant!r}.")
        plan = nnunet_default_plan(spatial_dims)
        features = tuple(features_per_stage or plan["features_per_stage"])
        n = len(features)
        strides = [_per_axis(s, spatial_dims) for s in (strides or plan["strides"][:n])]
        kernels = [_per_axis(k, spatial_dims) for k in (kernel_sizes or plan["kernel_sizes"][:n])]
        blocks = list(n_blocks_per_stage or (2,) * n)
        dec_blocks = list(n_conv_per_stage_decoder or (2,) * (n - 1))
        if not (len(strides) == len(kernels) == len(blocks) == n and len(dec_blocks) == n - 1):
            raise ValueError(f"features_per_stage, strides, kernel_sizes and n_blocks_per_stage need one entry "
                             f"per stage ({n}), n_conv_per_stage_decoder one per decoder stage ({n - 1}).")
        for s in range(math.ceil(n / 2), n):  # official: the deeper half of the encoder has 1 block
            blocks[s] = 1
        for s in range(math.ceil((n - 1) / 2 + 0.5), n - 1):  # and so have the high-resolution decoder stages
            dec_blocks[s] = 1
        self.spatial_dims, self.in_channels, self.out_channels = spatial_dims, in_channels, out_channels
        self.variant, self.deep_supervision = variant, deep_supervision
        self.total_stride = tuple(math.prod(s[a] for s in strides) for a in range(spatial_dims))
        self.image_size = None if image_size is None else _per_axis(image_size, spatial_dims)
        if self.image_size is not None:
            _check_divisible("UMamba", self.image_size, self.total_stride)

        # Feature-map sizes per stage (needed for channel tokens) and where the Mamba layers go.
        if variant == "enc":
            if self.image_size is None:
                raise ValueError("U-Mamba Enc needs image_size (the training patch size): stages whose feature "
                                 "map has no more voxels than channels use the channels as tokens, with "
                                 "d_model = the number of voxels.")
            if mamba_stages is None:
                mamba_stages = range(n) if spatial_dims == 3 else range(n - 1, -1, -2)
            mamba_stages = sorted(set(int(s) for s in mamba_stages))
            if any(not 0 <= s < n for s in mamba_stages):
                raise ValueError(f"mamba_stages must be encoder stages 0..{n - 1}, got {mamba_stages}.")
        else:
            mamba_stages = []
        map_voxels, size = [], self.image_size
        for stride in strides:
            size = None if size is None else tuple(a // b for a, b in zip(size, stride))
            map_voxels.append(None if size is None else math.prod(size))
        self.channel_token_stages = [s for s in mamba_stages if map_voxels[s] <= features[s]]
        self.config = dict(variant=variant, image_size=self.image_size, features_per_stage=features,
                           strides=tuple(strides), kernel_sizes=tuple(kernels), encoder_blocks=tuple(blocks),
                           decoder_blocks=tuple(dec_blocks), mamba_stages=tuple(mamba_stages),
                           channel_token_stages=tuple(self.channel_token_stages),
                           deep_supervision=deep_supervision,
                           concat_finest_skip=(spatial_dims == 3) if concat_finest_skip is None else concat_finest_skip,
                           d_state=d_state, d_conv=d_conv, expand=expand)
        mamba_options = dict(d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend)

        def stage_blocks(c_in, c_out, kernel, stride, count):
            return nn.Sequential(ResidualConvBlock(spatial_dims, c_in, c_out, kernel, stride, projection=True),
                                 *(ResidualConvBlock(spatial_dims, c_out, c_out, kernel) for _ in range(count - 1)))

        self.stem = stage_blocks(in_channels, features[0], kernels[0], 1, blocks[0])
        self.encoder = nn.ModuleList(
            stage_blocks(features[s - 1] if s else features[0], features[s], kernels[s], strides[s], blocks[s])
            for s in range(n))
        self.encoder_mamba = nn.ModuleList(
            (UMambaLayer(map_voxels[s] if s in self.channel_token_stages else features[s],
                         channel_tokens=s in self.channel_token_stages, **mamba_options)
             if s in mamba_stages else nn.Identity()) for s in range(n))
        self.bottleneck_mamba = UMambaLayer(features[-1], **mamba_options) if variant == "bot" else None

        concat_finest = self.config["concat_finest_skip"]
        self.upsamples, self.decoder, self.heads = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in range(n - 1):  # i = 0 is the deepest decoder stage
            below, skip = features[n - 1 - i], features[n - 2 - i]
            concat = i < n - 2 or concat_finest
            self.upsamples.append(UMambaUpsample(spatial_dims, below, skip, strides[n - 1 - i]))
            self.decoder.append(stage_blocks(2 * skip if concat else skip, skip, kernels[n - 2 - i], 1, dec_blocks[i]))
            self.heads.append(conv_nd(spatial_dims)(skip, out_channels, 1))
        self._concat = [i < n - 2 or concat_finest for i in range(n - 1)]
        self.apply(_init_he)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError naming the problem when x cannot go through the network."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"UMamba expects input (batch, {self.in_channels}, *{self.spatial_dims} spatial sizes), "
                             f"got shape {tuple(x.shape)}.")
        _check_divisible("UMamba", tuple(x.shape[2:]), self.total_stride)
        if self.channel_token_stages and tuple(x.shape[2:]) != self.image_size:
            raise ValueError(f"This U-Mamba Enc uses channel tokens (stages {self.channel_token_stages}), whose "
                             f"Mamba width depends on the input size: it takes inputs of size {self.image_size} "
                             f"only, got {tuple(x.shape[2:])}.")

    def forward(self, x: torch.Tensor):
        """x (b, in_channels, *s) -> logits (b, out_channels, *s); with deep supervision a list of logits,
        full resolution first, then each lower decoder stage."""
        self.check_input(x)
        x = self.stem(x)  # (b, F0, *s)
        skips = []
        for stage, mamba in zip(self.encoder, self.encoder_mamba):
            x = mamba(stage(x))  # (b, F_s, *s / stride_0..s)
            skips.append(x)
        if self.bottleneck_mamba is not None:
            skips[-1] = self.bottleneck_mamba(skips[-1])
        x, outputs = skips[-1], []
        for i, (up, stage, head) in enumerate(zip(self.upsamples, self.decoder, self.heads)):
            x = up(x)  # (b, F_skip, *size of the skip)
            if self._concat[i]:
                x = torch.cat((x, skips[-(i + 2)]), dim=1)
            x = stage(x)
            if self.deep_supervision or i == len(self.decoder) - 1:
                outputs.append(head(x))
        return outputs[::-1] if self.deep_supervision else outputs[-1]


def _init_he(module: nn.Module) -> None:
    """nnU-Net's InitWeights_He(1e-2): Kaiming-normal conv weights (LeakyReLU slope 0.01), zero biases.
    Only 2D/3D convolutions, as the original (Mamba's Conv1d keeps its own initialisation)."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=1e-2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _check_divisible(what: str, size: tuple, multiple) -> None:
    multiple = _per_axis(multiple, len(size)) if isinstance(multiple, int) else tuple(multiple)
    bad = [s for s, m in zip(size, multiple) if s % m]
    if bad:
        raise ValueError(f"{what}: spatial size {tuple(size)} is not divisible by the network's total stride "
                         f"{multiple if len(set(multiple)) > 1 else multiple[0]}. Pad or crop the images to a "
                         "multiple of it (lightm_edu.model.pad_to_multiple pads).")


# ------------------------------------------------------------------------------------ registry

@dataclass(frozen=True)
class PeerSpec:
    """One registry entry.

    ``configs[spatial_dims]`` are the constructor arguments at the paper's settings (besides
    spatial_dims, in_channels, out_channels, image_size); ``build`` makes the model from
    (spatial_dims, in_channels, out_channels, image_size, **config); ``stride`` gives the total
    stride (int per axis tuple) of a config; ``needs_image_size``: the architecture depends on it.
    """

    name: str
    title: str
    builds: str
    paper: str
    code: str
    configs: dict
    build: Callable
    stride: Callable
    needs_image_size: bool = False
    in_lightm_unet_paper: bool = True
    notes: tuple = field(default_factory=tuple)


def _monai(name: str):
    import monai.networks.nets as nets

    return getattr(nets, name)


def _need_einops(model: str) -> None:
    import importlib.util

    if importlib.util.find_spec("einops") is None:
        raise ImportError(f"MONAI's {model} needs the package einops: pip install einops")


def _build_lightmunet(spatial_dims, in_channels, out_channels, image_size, **config):
    from .model import LightMUNet

    return LightMUNet(spatial_dims, in_channels, out_channels, **config)


def _build_segresnet(spatial_dims, in_channels, out_channels, image_size, **config):
    return _monai("SegResNet")(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **config)


def _build_dynunet(spatial_dims, in_channels, out_channels, image_size, **config):
    config = dict(config)
    config.setdefault("upsample_kernel_size", tuple(config["strides"])[1:])
    return _monai("DynUNet")(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **config)


def _build_unet(spatial_dims, in_channels, out_channels, image_size, **config):
    return _monai("UNet")(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **config)


def _build_unetr(spatial_dims, in_channels, out_channels, image_size, **config):
    _need_einops("UNETR")
    return _monai("UNETR")(in_channels=in_channels, out_channels=out_channels, img_size=image_size,
                           spatial_dims=spatial_dims, **config)


def _build_swinunetr(spatial_dims, in_channels, out_channels, image_size, **config):
    _need_einops("SwinUNETR")
    return _monai("SwinUNETR")(in_channels=in_channels, out_channels=out_channels, spatial_dims=spatial_dims,
                               **config)


def _build_umamba(variant):
    def build(spatial_dims, in_channels, out_channels, image_size, **config):
        return UMamba(spatial_dims, in_channels, out_channels, variant=variant, image_size=image_size, **config)
    return build


def _plan_stride(config) -> int:
    return math.prod(config["strides"])


def _umamba_configs():
    configs = {}
    for d in (2, 3):
        plan = nnunet_default_plan(d)
        configs[d] = dict(features_per_stage=plan["features_per_stage"], strides=plan["strides"],
                          kernel_sizes=plan["kernel_sizes"], n_blocks_per_stage=plan["n_conv_per_stage_encoder"],
                          n_conv_per_stage_decoder=plan["n_conv_per_stage_decoder"], deep_supervision=False,
                          d_state=16, d_conv=4, expand=2)
    return configs


def _dynunet_configs():
    configs = {}
    for d in (2, 3):
        plan = nnunet_default_plan(d)
        configs[d] = dict(kernel_size=plan["kernel_sizes"], strides=plan["strides"],
                          filters=plan["features_per_stage"], res_block=False, norm_name="instance",
                          deep_supervision=False)
    return configs


_NNUNET = "Isensee et al., nnU-Net, Nature Methods 18:203-211 (2021), doi:10.1038/s41592-020-01008-z"
_UMAMBA_PAPER = "Ma, Li & Wang, U-Mamba, arXiv:2401.04722 (2024)"
_UMAMBA_CODE = "github.com/bowang-lab/U-Mamba, umamba/nnunetv2/nets/UMamba{Bot,Enc}_{2d,3d}.py (re-implemented here)"

PEERS: dict[str, PeerSpec] = {spec.name: spec for spec in [
    PeerSpec(
        name="lightmunet", title="LightM-UNet", builds="lightm_edu.model.LightMUNet",
        paper="Liao et al., LightM-UNet, arXiv:2403.05246 (2024)",
        code="github.com/MrBlankness/LightM-UNet, lightm-unet/nnunetv2/nets/LightMUNet.py "
             "(re-implemented in lightm_edu.model)",
        configs={d: dict(init_filters=32, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), d_state=16, d_conv=4,
                         expand=2) for d in (2, 3)},
        build=_build_lightmunet, stride=lambda c: 2 ** (len(c["blocks_down"]) - 1),
        notes=("The model the others are compared with; the official code's layout (21 RVM layers).",
               "The paper reports 1.09M (2D) / 1.87M (LiTS) parameters; the code has 5.0M (see lightm_edu.flops).")),
    PeerSpec(
        name="segresnet", title="SegResNet", builds="monai.networks.nets.SegResNet",
        paper="Myronenko, 3D MRI brain tumor segmentation using autoencoder regularization, BrainLes 2018, "
              "arXiv:1810.11654",
        code="MONAI (Cardoso et al., arXiv:2211.02701), monai/networks/nets/segresnet.py",
        configs={d: dict(init_filters=32, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1)) for d in (2, 3)},
        build=_build_segresnet, stride=lambda c: 2 ** (len(c["blocks_down"]) - 1),
        notes=("The network LightM-UNet is derived from: the same widths (32..256), blocks and additive skips, "
               "with 3^d convolutions where LightM-UNet has RVM layers.",
               "MONAI defaults otherwise: GroupNorm(8), ReLU, no dropout, non-trainable upsampling.")),
    PeerSpec(
        name="dynunet", title="nnU-Net (MONAI DynUNet)", builds="monai.networks.nets.DynUNet",
        paper=_NNUNET, code="MONAI, monai/networks/nets/dynunet.py (nnU-Net's plain UNet as a MONAI class)",
        configs=_dynunet_configs(), build=_build_dynunet, stride=_plan_stride,
        notes=("nnU-Net's default plans for the paper's sizes (see nnunet_default_plan): two 3^d conv-norm-"
               "LeakyReLU layers per stage, strided convolutions down, transposed convolutions up "
               "(upsample_kernel_size = strides[1:]), deep supervision off.",
               "res_block=False (nnU-Net's plain UNet) with norm_name='instance' (InstanceNorm without affine "
               "parameters) gives the reference counts 33.45M / 31.18M. nnU-Net itself uses affine instance "
               "norm: norm_name=('INSTANCE', {'affine': True}) adds 14,080 (2D) / 7,680 (3D) parameters; "
               "res_block=True gives 34.15M / 31.41M (34.16M / 31.42M with affine norm).",
               "The paper's nnU-Net numbers come from nnU-Net itself, not from this MONAI version.")),
    PeerSpec(
        name="unet", title="UNet (MONAI, residual units)", builds="monai.networks.nets.UNet",
        paper="Kerfoot et al., Left-ventricle quantification using residual U-Net, STACOM 2018, "
              "doi:10.1007/978-3-030-12029-0_40 (after Ronneberger et al., U-Net, MICCAI 2015)",
        code="MONAI, monai/networks/nets/unet.py",
        configs={d: dict(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2) for d in (2, 3)},
        build=_build_unet, stride=lambda c: math.prod(c["strides"]), in_lightm_unet_paper=False,
        notes=("Not in the LightM-UNet paper: a small, fast classic baseline (MONAI's tutorial UNet).",)),
    PeerSpec(
        name="unetr", title="UNETR", builds="monai.networks.nets.UNETR",
        paper="Hatamizadeh et al., UNETR: Transformers for 3D medical image segmentation, WACV 2022, "
              "arXiv:2103.10504",
        code="MONAI, monai/networks/nets/unetr.py",
        configs={d: dict(feature_size=16, hidden_size=768, mlp_dim=3072, num_heads=12) for d in (2, 3)},
        build=_build_unetr, stride=lambda c: 16, needs_image_size=True,
        notes=("A ViT-B encoder on 16^d patches; its position embeddings are sized for image_size, so the "
               "model takes inputs of exactly that size.", "MONAI defaults otherwise; needs einops.")),
    PeerSpec(
        name="swinunetr", title="SwinUNETR", builds="monai.networks.nets.SwinUNETR",
        paper="Hatamizadeh et al., Swin UNETR, BrainLes 2021, arXiv:2201.01266",
        code="MONAI, monai/networks/nets/swin_unetr.py",
        configs={d: dict(feature_size=48) for d in (2, 3)},
        build=_build_swinunetr, stride=lambda c: 32,
        notes=("Feature size 48 (the Swin UNETR paper's setting); MONAI defaults otherwise: depths (2, 2, 2, 2), "
               "heads (3, 6, 12, 24), window 7, patch 2.", "Inputs must be divisible by 32; needs einops.")),
    PeerSpec(
        name="umamba_bot", title="U-Mamba Bot", builds="lightm_edu.baselines.UMamba(variant='bot')",
        paper=_UMAMBA_PAPER, code=_UMAMBA_CODE, configs=_umamba_configs(), build=_build_umamba("bot"),
        stride=_plan_stride,
        notes=("nnU-Net's default plan with U-Mamba's residual blocks (two per stage in the upper half), one "
               "Mamba layer (LayerNorm + Mamba over the flattened bottleneck, no residual) at the bottleneck.",
               "Deep supervision off for comparisons (the heads are still built, as in the official code).",
               "Runs on every scan backend of lightm_edu (the official code needs mamba_ssm and a GPU).")),
    PeerSpec(
        name="umamba_enc", title="U-Mamba Enc", builds="lightm_edu.baselines.UMamba(variant='enc')",
        paper=_UMAMBA_PAPER, code=_UMAMBA_CODE, configs=_umamba_configs(), build=_build_umamba("enc"),
        stride=_plan_stride, needs_image_size=True,
        notes=("As U-Mamba Bot, with a Mamba layer after encoder stages instead: every stage in 3D, every other "
               "stage from the deepest in 2D; tiny feature maps use channel tokens (so image_size is part of "
               "the architecture).", "Its full-resolution Mamba layer scans L = prod(image_size) tokens.")),
]}
"""name -> :class:`PeerSpec`, in the order of a comparison table (LightM-UNet first)."""

PAPER_PARAMETERS = {
    "lightmunet": (5_011_765, 5_015_766),
    "segresnet": (6_299_106, 18_796_035),
    "dynunet": (33_446_818, 31_181_763),
    "unet": (1_625_737, 4_807_482),
    "unetr": (88_317_186, 93_029_619),
    "swinunetr": (25_139_324, 62_186_757),
    "umamba_bot": (47_515_532, 42_121_199),
    "umamba_enc": (47_675_020, 42_751_727),
}
"""name -> (2D, 3D) parameters at :data:`PAPER_SETTINGS` (tests rebuild the models to check them)."""

REFERENCE_PARAMETERS_M = {
    "lightmunet": (5.01, 5.02), "segresnet": (6.30, 18.80), "dynunet": (33.45, 31.18), "unet": (1.63, 4.81),
    "swinunetr": (25.14, 62.19), "unetr": (88.32, 93.03),
}
"""Millions of parameters measured independently (official LightM-UNet code; MONAI 1.6.1 peers)."""


# --------------------------------------------------------------------------------- public API

def _spec(name: str) -> PeerSpec:
    if name not in PEERS:
        raise ValueError(f"Unknown peer model {name!r}; choose one of {', '.join(PEERS)}.")
    return PEERS[name]


def peer_config(name: str, spatial_dims: int, **overrides) -> dict:
    """The constructor arguments of a peer at the paper's settings, updated by ``overrides``.

    Raises ValueError for an unknown name, spatial_dims other than 2 or 3, or an override the
    model's configuration does not have (the message lists the ones it has). The Mamba models
    also accept ``scan_backend``.
    """
    spec = _spec(name)
    check_spatial_dims(spatial_dims)
    config = dict(spec.configs[spatial_dims])
    allowed = set(config) | ({"scan_backend"} if name in MAMBA_MODELS else set())
    if name == "umamba_enc":
        allowed |= {"mamba_stages", "concat_finest_skip"}
    if name == "umamba_bot":
        allowed |= {"concat_finest_skip"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"{name} has no setting {', '.join(map(repr, unknown))}; its settings are "
                         f"{', '.join(sorted(allowed))}.")
    config.update(overrides)
    return config


def size_multiple(name: str, spatial_dims: int, **overrides) -> tuple:
    """What every spatial size must be divisible by (the total stride), per axis."""
    stride = _spec(name).stride(peer_config(name, spatial_dims, **overrides))
    return _per_axis(stride, spatial_dims)


def build_peer(name: str, spatial_dims: int, in_channels: int, out_channels: int, image_size=None,
               **overrides) -> nn.Module:
    """Build a peer model at the paper's configuration (see :data:`PEERS`), or a modified one.

    Args:
        name: a key of :data:`PEERS`.  spatial_dims: 2 or 3.
        in_channels, out_channels: image channels and classes (the model outputs logits).
        image_size: the input size (int or one per axis). Required by "unetr" and "umamba_enc",
            whose architecture depends on it; checked against the total stride when given.
        overrides: constructor arguments replacing the paper's (e.g. ``feature_size=12`` for a small
            SwinUNETR, or ``features_per_stage``/``strides`` for a small U-Mamba).
    Returns:
        an ``nn.Module``: (b, in_channels, *image_size) -> (b, out_channels, *image_size)
    Raises:
        ValueError for an unknown name, bad spatial_dims, a missing or indivisible image_size.
    """
    spec = _spec(name)
    config = peer_config(name, spatial_dims, **overrides)
    if image_size is not None:
        image_size = _per_axis(image_size, spatial_dims)
        _check_divisible(spec.title, image_size, _per_axis(spec.stride(config), spatial_dims))
    elif spec.needs_image_size:
        raise ValueError(f"{spec.title} needs image_size (its architecture depends on the input size): "
                         f"e.g. build_peer({name!r}, {spatial_dims}, {in_channels}, {out_channels}, "
                         f"image_size={PAPER_SETTINGS[spatial_dims]['image_size']}).")
    return spec.build(spatial_dims, in_channels, out_channels, image_size, **config)


def describe_peer(name: str) -> dict:
    """Everything a comparison table needs to say about a peer, without building it.

    Returns:
        dict with name, title, builds (the class), paper and code (sources), configs ({2: ..., 3: ...}
        constructor arguments at the paper's settings), paper_settings, parameters ((2D, 3D) at those
        settings), reference_parameters_m (independent measurement in millions, or None),
        size_multiple ({2: ..., 3: ...}), needs_image_size, in_lightm_unet_paper, notes.
    """
    spec = _spec(name)
    return dict(name=spec.name, title=spec.title, builds=spec.builds, paper=spec.paper, code=spec.code,
                configs={d: dict(c) for d, c in spec.configs.items()}, paper_settings=PAPER_SETTINGS,
                parameters=PAPER_PARAMETERS[name], reference_parameters_m=REFERENCE_PARAMETERS_M.get(name),
                size_multiple={d: spec.stride(spec.configs[d]) for d in (2, 3)},
                needs_image_size=spec.needs_image_size, in_lightm_unet_paper=spec.in_lightm_unet_paper,
                notes=spec.notes)
