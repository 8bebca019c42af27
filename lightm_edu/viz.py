"""Figures generated from model objects and from images, so that a drawing cannot disagree with
the code or the data.

Glossary:
    slice           a 2D cut (rows, cols) of a volume (D, H, W) at one index along one axis
    axis names      what the three array axes are called; DHW_AXIS_NAMES ("axial", "coronal",
                    "sagittal") for arrays (D, H, W), RAS_AXIS_NAMES for nibabel/MONAI arrays (x, y, z)
    window          (low, high): intensities shown from black (low) to white (high); the *level* is
                    its centre and the *width* is high - low
    label           ground-truth class indices, same spatial shape as the image (0 = background)
    prediction      predicted class indices (the argmax over the model's output channels)
    Dice            per class c: 2 |G_c & P_c| / (|G_c| + |P_c|); "n/a" where c is in neither

Architecture (chapter 6):
    describe_architecture(model, input_size=None)   one dict per part of a LightMUNet: stem, each
                                                    encoder and decoder stage, head (channels,
                                                    spatial size, RVM layers, parameters)
    draw_architecture(model, input_size=None, ax=None)   the U-shaped diagram of those parts

Everything shown is read from the modules of the model (their channels, how many
:class:`~lightm_edu.layers.RVMLayer` they hold, whether they pool), not typed in by hand.

Images and volumes (chapter 7):
    overlay(image, mask=None, ax=None, ...)          one 2D slice with translucent class colours
    overlay_montage(image, label=None, prediction=None, n_slices=6, axis=0, ...)   evenly spaced
                                                    slices, ground truth and prediction, a legend
    SliceViewer(image, label=None, prediction=None, class_names=None, spacing=None)   an
                                                    ipywidgets viewer: slice, axis, window, opacity,
                                                    class toggles, Dice of the current slice
    CLASS_COLOURS                                   the fixed (colour-blind safe) palette: the k-th
                                                    foreground class (class k for labels 0..K) is
                                                    drawn in CLASS_COLOURS[(k - 1) % 7]

matplotlib and ipywidgets are imported inside the functions that use them, so importing this
module stays cheap.
"""

from __future__ import annotations

import numpy as np

__all__ = ["describe_architecture", "draw_architecture", "overlay", "overlay_montage", "SliceViewer",
           "CLASS_COLOURS", "DHW_AXIS_NAMES", "RAS_AXIS_NAMES"]


def _count_rvm(module) -> int:
    from .layers import RVMLayer

    return sum(isinstance(m, RVMLayer) for m in module.modules())


def _count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _format_size(size, level: int) -> str:
    """'128x128' for a known size, else '1/4 res.' (level = number of poolings so far)."""
    if size is not None:
        return "x".join(str(s) for s in size)
    return "full res." if level == 0 else f"1/{2 ** level} res."


def describe_architecture(model, input_size=None) -> list[dict]:
    """The parts of a :class:`~lightm_edu.model.LightMUNet`, in the order the data visits them.

    Args:
        model: a LightMUNet.
        input_size: spatial size of the input, e.g. (256, 256) or (64, 64, 64); None to describe
            resolutions relative to the input.
    Returns:
        a list of dicts with keys ``part`` ("stem", "encoder", "decoder", "head"), ``index``
        (stage number, or None), ``in_channels``, ``out_channels``, ``level`` (poolings applied to
        the output: its resolution is the input's / 2**level), ``size`` (the output's spatial size,
        or None), ``rvm_layers``, ``blocks`` (residual blocks of a stage), ``downsample`` (an
        encoder stage that starts with an RVM layer and max-pooling) and ``params``.
    """
    if input_size is not None:
        input_size = tuple(int(s) for s in input_size)
        if len(input_size) != model.spatial_dims:
            raise ValueError(f"input_size {input_size} has {len(input_size)} axes but the model is "
                             f"{model.spatial_dims}D.")
        bad = [s for s in input_size if s % model.size_multiple]
        if bad:
            raise ValueError(f"input_size {input_size} is not divisible by {model.size_multiple}; "
                             "pad it first (lightm_edu.model.pad_to_multiple).")

    def size_at(level):
        return None if input_size is None else tuple(s // 2 ** level for s in input_size)

    parts = [dict(part="stem", index=None, in_channels=model.stem.depthwise.in_channels,
                  out_channels=model.stem.pointwise.out_channels, level=0, size=size_at(0),
                  rvm_layers=0, blocks=0, downsample=False, params=_count_params(model.stem))]
    level, channels = 0, parts[0]["out_channels"]
    for i, stage in enumerate(model.encoder):
        downsample = stage.downsample is not None
        in_channels = channels
        if downsample:
            level += 1
            channels = stage.downsample.out_channels
        elif len(stage.blocks):
            channels = stage.blocks[0].norm1.num_channels
        parts.append(dict(part="encoder", index=i, in_channels=in_channels, out_channels=channels,
                          level=level, size=size_at(level), rvm_layers=_count_rvm(stage),
                          blocks=len(stage.blocks), downsample=downsample, params=_count_params(stage)))
    for i, stage in enumerate(model.decoder):
        level -= 1
        parts.append(dict(part="decoder", index=i, in_channels=stage.reduce.in_channels,
                          out_channels=stage.reduce.out_channels, level=level, size=size_at(level),
                          rvm_layers=_count_rvm(stage), blocks=len(stage.blocks), downsample=False,
                          params=_count_params(stage)))
    parts.append(dict(part="head", index=None, in_channels=model.head.norm.num_channels,
                      out_channels=model.head.conv.pointwise.out_channels, level=level, size=size_at(level),
                      rvm_layers=0, blocks=0, downsample=False, params=_count_params(model.head)))
    return parts


_COLOURS = {"stem": ("#eeeeee", "#555555"), "encoder": ("#d9f0d3", "#1b7837"),
            "decoder": ("#d1e5f0", "#2166ac"), "head": ("#eeeeee", "#555555")}


def _label(part) -> str:
    size = _format_size(part["size"], part["level"])
    params = f"{part['params']:,} params"
    if part["part"] == "stem":
        return f"stem: {part['in_channels']} -> {part['out_channels']} ch\n{size}\ndepthwise-separable conv\n{params}"
    if part["part"] == "head":
        return f"head: {part['in_channels']} ch -> {part['out_channels']} classes\n{size}\nGN, ReLU, 1x1 convs\n{params}"
    if part["part"] == "encoder":
        lines = [f"encoder stage {part['index']}", f"{part['out_channels']} ch, {size}"]
        if part["downsample"]:
            lines.append(f"RVM {part['in_channels']}->{part['out_channels']}, max-pool")
        lines.append(f"{part['blocks']} res. Mamba block{'s' * (part['blocks'] != 1)}")
        lines += [f"{part['rvm_layers']} RVM layer{'s' * (part['rvm_layers'] != 1)}", params]
        return "\n".join(lines)
    return "\n".join([f"decoder stage {part['index']}", f"{part['out_channels']} ch, {size}",
                      f"1x1 conv {part['in_channels']}->{part['out_channels']}, x2 up",
                      f"+ skip, {part['blocks']} res. up block{'s' * (part['blocks'] != 1)}", params])


def draw_architecture(model, input_size=None, ax=None):
    """Draw a LightMUNet as a U: encoder stages down the left, the deepest stage at the bottom,
    decoder stages up the right.

    Each box is made from :func:`describe_architecture`: channels, spatial size, RVM layers and
    parameters per stage. Dashed arrows are the skip connections, which the decoder *adds* (the
    circled +).

    Args:
        model: a LightMUNet.
        input_size: spatial size of the input, e.g. (256, 256); None for relative resolutions.
        ax: matplotlib Axes to draw into; a new figure is made when None.
    Returns:
        the Axes (``ax.figure`` is the figure).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, FancyBboxPatch

    parts = describe_architecture(model, input_size)
    encoder = [p for p in parts if p["part"] == "encoder"]
    decoder = [p for p in parts if p["part"] == "decoder"]
    stem, head = parts[0], parts[-1]
    depth = len(encoder) - 1  # the level of the deepest stage
    box_w, box_h, gap, dy = 2.9, 1.55, 1.35, 1.95
    x_left, x_right = 0.0, box_w + gap  # centres of the encoder and decoder columns
    left, right = -box_w / 2 - 0.05, x_right + box_w / 2 + 0.05
    bottom, top = -depth * dy - box_h / 2 - 0.05, dy + box_h / 2 + 0.5
    if ax is None:
        _, ax = plt.subplots(figsize=(right - left, top - bottom + 0.45))

    def box(x, y, part):
        face, edge = _COLOURS[part["part"]]
        ax.add_patch(FancyBboxPatch((x - box_w / 2, y - box_h / 2), box_w, box_h,
                                    boxstyle="round,pad=0.02,rounding_size=0.08", fc=face, ec=edge, lw=1.3))
        ax.text(x, y, _label(part), ha="center", va="center", fontsize=10, linespacing=1.2)

    def arrow(start, end, color="#333333", ls="-"):
        ax.annotate("", xy=end, xytext=start,
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=1.2, ls=ls, shrinkA=0, shrinkB=0))

    def note(x, y, text, **kwargs):
        ax.text(x, y, text, fontsize=9.5, color="#444444", va="center", **kwargs)

    # Stages above the bottom: encoder level k at (x_left, -k dy), decoder level k at (x_right, -k dy);
    # the deepest encoder stage sits in the middle, below both columns.
    def encoder_xy(k):
        return ((x_left + x_right) / 2, -k * dy) if k == depth else (x_left, -k * dy)

    stem_xy = (x_left, dy)
    box(*stem_xy, stem)
    arrow((stem_xy[0], top - 0.02), (stem_xy[0], stem_xy[1] + box_h / 2))
    note(stem_xy[0] + 0.1, top - 0.2, f"input: {stem['in_channels']} ch, {_format_size(stem['size'], 0)}")
    arrow((stem_xy[0], stem_xy[1] - box_h / 2), (x_left, encoder_xy(0)[1] + box_h / 2))
    for k, part in enumerate(encoder):
        x, y = encoder_xy(k)
        box(x, y, part)
        if k:  # the arrow from the stage above
            x0, y0 = encoder_xy(k - 1)
            arrow((x0 + (0.5 if k == depth else 0), y0 - box_h / 2), (x - (0.5 if k == depth else 0), y + box_h / 2))

    previous = encoder_xy(depth)
    for part in decoder:
        k = part["level"]
        x, y = x_right, -k * dy
        box(x, y, part)
        from_bottom = previous == encoder_xy(depth)
        arrow((previous[0] + (0.5 if from_bottom else 0), previous[1] + box_h / 2),
              (x - (0.5 if from_bottom else 0), y - box_h / 2))
        # The skip from the encoder stage at the same level, added through the circled +.
        radius = 0.17
        plus_x = x - box_w / 2 - 0.12 - radius
        start = x_left + box_w / 2
        arrow((start, y), (plus_x - radius, y), color="#777777", ls="--")
        note((start + plus_x - radius) / 2, y + 0.15, "skip", ha="center")
        ax.add_patch(Circle((plus_x, y), radius, fc="white", ec="#2166ac", lw=1.2))
        ax.text(plus_x, y, "+", ha="center", va="center", fontsize=13, color="#2166ac")
        arrow((plus_x + radius, y), (x - box_w / 2, y), color="#2166ac")
        previous = (x, y)

    head_xy = (x_right, dy)
    box(*head_xy, head)
    arrow((previous[0], previous[1] + box_h / 2), (head_xy[0], head_xy[1] - box_h / 2))
    arrow((head_xy[0], head_xy[1] + box_h / 2), (head_xy[0], top - 0.02))
    note(head_xy[0] - 0.1, top - 0.2,
         f"logits: {head['out_channels']} ch, {_format_size(head['size'], head['level'])}", ha="right")

    total_rvm = sum(p["rvm_layers"] for p in parts)
    per_stage = " + ".join(str(p["rvm_layers"]) for p in encoder)
    ax.set_title(f"LightMUNet, {model.spatial_dims}D, {model.in_channels} -> {model.out_channels} channels:\n"
                 f"{total_rvm} RVM layers ({per_stage}), {_count_params(model):,} parameters", fontsize=12)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_aspect("equal")
    ax.axis("off")
    return ax


# =================================================================================================
# Images and volumes (chapter 7): static overlays for the book, and an ipywidgets slice viewer.
#
# An image is (H, W) or (D, H, W), optionally with a leading channel of 1 ((1, H, W), (1, D, H, W));
# numpy arrays and torch tensors are accepted. Masks (label, prediction) hold class indices (0 is
# background) with the image's spatial shape. Inside, a 2D image is kept as a volume of depth 1,
# (1, H, W), so that one code path serves both. (An RGB image (H, W, 3) would be read as a volume:
# convert it to grey first.)
# =================================================================================================

CLASS_COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
"""Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), one per
foreground class in the order of their label values; black is left out (it vanishes on MRI)."""

DHW_AXIS_NAMES = ("axial", "coronal", "sagittal")
"""Names of array axes 0, 1, 2 for a volume stored as (D, H, W) with axial slices along D."""

RAS_AXIS_NAMES = ("sagittal", "coronal", "axial")
"""Names of array axes 0, 1, 2 for a volume as nibabel or MONAI load a RAS NIfTI file: (x, y, z)."""

_PERCENTILES = (1.0, 99.0)  # default window: these percentiles of the whole image


def _to_numpy(x, name: str) -> np.ndarray:
    """A numpy array from a numpy array, a torch tensor (any device, any dtype) or a nested list."""
    if x is not None and hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu()
        x = x.float() if str(x.dtype) in ("torch.bfloat16", "torch.float16") else x
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype != bool and (not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr)):
        raise TypeError(f"{name} must be a numpy array or torch tensor of real numbers, but it is a "
                        f"{type(x).__name__} with dtype {arr.dtype}; convert it first, e.g. "
                        f"np.asarray({name}, dtype=np.float32).")
    return arr


def _as_volume(image, name: str = "image"):
    """(volume (D, H, W) float32, is_3d, original shape); a 2D image becomes (1, H, W)."""
    arr = _to_numpy(image, name)
    shape = tuple(arr.shape)
    if arr.ndim in (3, 4) and shape[0] == 1:  # a leading channel of 1
        arr = arr[0]
    elif arr.ndim == 4:
        raise ValueError(f"{name} has shape {shape}: {shape[0]} channels, but the viewers show one; "
                         f"pass the channel you want to see, {name}[c].")
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} has {arr.ndim} axes (shape {shape}); expected a 2D image (H, W), a 3D "
                         "volume (D, H, W), or either with a leading channel of 1. Drop a batch axis with "
                         f"{name}[0].")
    if 0 in arr.shape:
        raise ValueError(f"{name} has shape {shape}, with an empty axis; there is nothing to show.")
    is_3d = arr.ndim == 3
    volume = arr.astype(np.float32) if is_3d else arr.astype(np.float32)[None]
    return volume, is_3d, shape


def _as_mask(mask, image_shape, spatial_shape, name: str):
    """Class indices (D, H, W) int64 (a 2D mask becomes (1, H, W)), checked against the image."""
    arr = _to_numpy(mask, name)
    shape, n = tuple(arr.shape), len(spatial_shape)
    if arr.ndim == n + 1 and shape[0] == 1:
        arr = arr[0]
    elif arr.ndim == n + 1 and shape[1:] == tuple(spatial_shape):
        raise ValueError(f"{name} has shape {shape} and the image has shape {image_shape}: the leading axis of "
                         f"{shape[0]} looks like one channel per class (one-hot, probabilities or logits); the "
                         f"viewers need class indices: pass {name}.argmax(0).")
    if tuple(arr.shape) != tuple(spatial_shape):
        raise ValueError(f"{name} has shape {shape} but the image has shape {image_shape}: they must cover the same "
                         f"pixels (spatial shape {tuple(spatial_shape)}); resample or crop one to the other's grid.")
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    elif np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            raise ValueError(f"{name} holds non-integer values (e.g. {arr[bad].flat[0].item()!r}) but must hold class "
                             "indices 0, 1, 2, ...: threshold probabilities (p > 0.5) or take the argmax over "
                             "the class channels first.")
    if arr.min() < 0:
        raise ValueError(f"{name} holds negative values (minimum {arr.min()}) but must hold class indices 0 "
                         "(background), 1, 2, ...")
    arr = arr.astype(np.int64)
    return arr if n == 3 else arr[None]


def _class_table(class_names, masks) -> dict:
    """{label value: name} for the foreground classes (value 0, background, is never drawn)."""
    from collections.abc import Mapping

    present = sorted(set().union(*(set(np.unique(m).tolist()) for m in masks if m is not None)) - {0})
    if class_names is None:
        return {v: f"class {v}" for v in present}
    if isinstance(class_names, Mapping):
        table = {int(v): str(n) for v, n in class_names.items() if int(v) != 0}
        given = f"the values {sorted(int(v) for v in class_names)}"
    elif isinstance(class_names, str):
        raise TypeError(f"class_names must be a list (one name per label value, background first) or a dict "
                        f"{{value: name}}, not the string {class_names!r}.")
    else:
        names = list(class_names)
        table = {v: str(n) for v, n in enumerate(names) if v != 0}
        given = f"{len(names)} names for the values 0..{len(names) - 1}"
    missing = [v for v in present if v not in table]
    if missing:
        raise ValueError(f"the masks hold class value(s) {missing} but class_names gives {given}: give one name per "
                         "label value, background first (e.g. ['background', 'anterior', 'posterior']), or a "
                         "dict {1: 'anterior', 2: 'posterior'}.")
    if len(set(table.values())) != len(table):
        raise ValueError(f"class_names {list(table.values())} repeats a name; each class needs its own name.")
    return dict(sorted(table.items()))


def _class_colours(classes: dict) -> dict:
    """{label value: colour}: the k-th foreground class gets CLASS_COLOURS[(k - 1) % 7]."""
    return {v: CLASS_COLOURS[i % len(CLASS_COLOURS)] for i, v in enumerate(classes)}


def _check_spacing(spacing, n: int) -> tuple:
    if spacing is None:
        return (1.0,) * n
    values = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
    if len(values) != n or not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing {spacing} must be {n} positive numbers, the pixel size along each image axis "
                         f"(e.g. {(1.0,) * n} for 1 mm pixels).")
    return values


def _check_window(window) -> tuple:
    try:
        low, high = (float(w) for w in window)
    except (TypeError, ValueError):
        raise ValueError(f"window {window!r} must be a pair (low, high) of intensities, e.g. (0, 1000).") from None
    if not low < high:
        raise ValueError(f"window {window!r} must be (low, high) with low < high; e.g. (0, 1000) shows 0 as "
                         "black and 1000 as white.")
    return low, high


def _check_opacity(opacity) -> float:
    opacity = float(opacity)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity {opacity} must lie in [0, 1] (0: overlay invisible, 1: opaque).")
    return opacity


def _default_window(volume: np.ndarray, percentiles=_PERCENTILES) -> tuple:
    """(low, high) = the 1st and 99th percentiles of the finite intensities (min and max when those
    coincide, e.g. for a mostly constant image)."""
    finite = volume[np.isfinite(volume)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = (float(p) for p in np.percentile(finite, percentiles))
    if not low < high:
        low, high = float(finite.min()), float(finite.max())
    if not low < high:
        high = low + 1.0
    return low, high


def _apply_window(image2d: np.ndarray, window: tuple) -> np.ndarray:
    """Intensities scaled to [0, 1]: low -> 0 (black), high -> 1 (white), clipped outside."""
    low, high = window
    return np.clip((image2d - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _overlay_rgba(mask2d: np.ndarray, colours: dict, opacity: float) -> np.ndarray:
    """(h, w, 4) RGBA image: the class colour with alpha = opacity where the mask holds a class of
    ``colours``, fully transparent elsewhere (so leaving a class out of ``colours`` hides it)."""
    from matplotlib.colors import to_rgb

    rgba = np.zeros(mask2d.shape + (4,), dtype=np.float32)
    for value, colour in colours.items():
        where = mask2d == value
        rgba[where, :3] = to_rgb(colour)
        rgba[where, 3] = opacity
    return rgba


def _slice_dice(label2d: np.ndarray, prediction2d: np.ndarray, values) -> dict:
    """{value: Dice of that class on this slice, or None when the class is in neither mask}, with
    MONAI's ``compute_dice`` on one-hot masks (1, K, h, w)."""
    values = list(values)
    if not values:
        return {}
    import torch
    from monai.metrics import compute_dice

    y = torch.from_numpy(np.stack([label2d == v for v in values])[None].astype(np.float32))  # (1, K, h, w)
    p = torch.from_numpy(np.stack([prediction2d == v for v in values])[None].astype(np.float32))
    dice = compute_dice(p, y, include_background=True, ignore_empty=False)[0]  # (K,)
    present = (y.sum(dim=(0, 2, 3)) + p.sum(dim=(0, 2, 3))) > 0  # (K,)
    return {v: (float(d) if ok else None) for v, d, ok in zip(values, dice.tolist(), present.tolist())}


def _format_dice(dice) -> str:
    return "n/a" if dice is None else f"{dice:.2f}"


def _slice_aspect(spacing3: tuple, axis: int) -> float:
    """Height / width of one displayed pixel: the spacings of the two axes that remain."""
    rows, cols = [a for a in range(3) if a != axis]
    return spacing3[rows] / spacing3[cols]


def _plain_axes(ax) -> None:
    """No ticks and no frame, but titles and axis labels still show."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _draw_slice(ax, display2d, aspect, fill=None, outlines=(), colours=None, opacity=0.4) -> None:
    """Draw a windowed slice (h, w) in grey, ``fill`` class indices (h, w) as translucent colours,
    and each ``(mask (h, w), linestyle)`` of ``outlines`` as class outlines; every class in its
    colour from ``colours`` (classes left out of ``colours`` are not drawn)."""
    colours = colours or {}
    h, w = display2d.shape
    ax.imshow(display2d, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect=aspect)
    if fill is not None:
        ax.imshow(_overlay_rgba(fill, colours, opacity), interpolation="nearest", aspect=aspect)
    for mask, linestyle in outlines:
        for value, colour in colours.items():
            where = mask == value
            if where.any():
                ax.contour(where.astype(np.float32), levels=[0.5], colors=[colour], linewidths=1.6,
                           linestyles=[linestyle])
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    _plain_axes(ax)


def _legend_handles(classes: dict, colours: dict, opacity: float, fill: bool, outlines=()) -> list:
    """One patch per class for fills (labelled by the class name) and one line per class and
    ``(word, linestyle)`` of ``outlines`` (labelled "name (word)")."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    for value, name in classes.items():
        if fill:
            handles.append(Patch(facecolor=colours[value], edgecolor=colours[value], alpha=max(opacity, 0.5),
                                 label=name))
        for word, linestyle in outlines:
            handles.append(Line2D([], [], color=colours[value], lw=1.6, ls=linestyle, label=f"{name} ({word})"))
    return handles


def _names(classes: dict) -> str:
    return ", ".join(classes.values()) if classes else "no classes"


def overlay(image, mask=None, ax=None, *, prediction=None, class_names=None, opacity=0.4, window=None,
            contour=False, spacing=None, title=None, legend=True):
    """Draw one 2D slice in grey with its classes in translucent colour (one fixed colour per class).

    Args:
        image: (H, W) or (1, H, W), numpy array or torch tensor.
        mask: class indices (H, W) or (1, H, W) drawn as translucent fills (outlines if
            ``contour``); None for the image alone.
        ax: matplotlib Axes to draw into; a new figure is made when None.
        prediction: class indices (H, W), drawn as outlines over the fills, e.g. to compare a
            prediction with the ground truth in ``mask``.
        class_names: one name per label value, background first (["background", "lung"]), or a
            dict {1: "lung"}; default "class 1", "class 2", ...
        opacity: alpha of the fills, in [0, 1].
        window: (low, high) intensities shown as black and white; default the 1st and 99th
            percentiles of the image.
        contour: draw ``mask`` as outlines instead of fills.
        spacing: pixel size (row, column), for the aspect ratio; default square pixels.
        title: the Axes title; default a sentence saying what is shown (usable as alt text).
        legend: add a legend naming each class colour.
    Returns:
        the Axes (``ax.figure`` is the figure).
    Raises:
        ValueError: a 3D image (pick a slice, or use :func:`overlay_montage`), or masks whose shape
            differs from the image's.
    """
    volume, is_3d, shape = _as_volume(image)
    if is_3d:
        raise ValueError(f"overlay draws one 2D slice but image has shape {shape}; pick a slice (e.g. image[k]) "
                         "or use overlay_montage or SliceViewer for a volume.")
    spatial = volume.shape[1:]
    masks = {key: None if m is None else _as_mask(m, shape, spatial, key)[0]
             for key, m in (("mask", mask), ("prediction", prediction))}
    classes = _class_table(class_names, masks.values())
    colours = _class_colours(classes)
    opacity = _check_opacity(opacity)
    window = _default_window(volume) if window is None else _check_window(window)
    aspect = _slice_aspect((1.0,) + _check_spacing(spacing, 2), 0)
    if ax is None:
        import matplotlib.pyplot as plt

        h, w = spatial[0] * aspect, spatial[1]
        _, ax = plt.subplots(figsize=(min(8.0, max(3.0, 4.5 * w / h)) + (2.2 if legend and classes else 0), 4.8),
                             layout="constrained")
    # (mask, linestyle, legend word) of the outlines: the mask when ``contour``, then the prediction.
    outlines = [(m, ls, word) for m, ls, word in ((masks["mask"] if contour else None, "solid", "outline"),
                                                 (masks["prediction"], "dashed" if contour else "solid",
                                                  "prediction"))
                if m is not None]
    _draw_slice(ax, _apply_window(volume[0], window), aspect, fill=None if contour else masks["mask"],
                outlines=[(m, ls) for m, ls, _ in outlines], colours=colours, opacity=opacity)
    if title is None:
        parts = [f"{spatial[0]}x{spatial[1]} image"]
        if masks["mask"] is not None:
            parts.append(f"classes {'outlined' if contour else 'in colour'}: {_names(classes)}")
        if masks["prediction"] is not None:
            parts.append(f"prediction outlined{' (dashed)' if contour else ''}")
        title = "; ".join(parts)
    ax.set_title(title, fontsize=10)
    if legend and classes and (masks["mask"] is not None or masks["prediction"] is not None):
        handles = _legend_handles(classes, colours, opacity, fill=masks["mask"] is not None and not contour,
                                  outlines=[(word, ls) for _, ls, word in outlines])
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
    return ax


def _montage_slices(volume, masks, axis: int, n_slices: int) -> list:
    """Evenly spaced indices along ``axis``: across the slices that hold a class when there are
    masks with classes, else across the whole axis."""
    depth = volume.shape[axis]
    low, high = 0, depth - 1
    others = tuple(a for a in range(3) if a != axis)
    foreground = [np.nonzero((m > 0).any(axis=others))[0] for m in masks if m is not None]
    foreground = np.concatenate(foreground) if foreground else np.array([], dtype=int)
    if foreground.size:
        low, high = int(foreground.min()), int(foreground.max())
    count = min(n_slices, high - low + 1)
    return sorted(set(np.linspace(low, high, count).round().astype(int).tolist()))


def overlay_montage(image, label=None, prediction=None, n_slices=6, axis=0, class_names=None, *, slices=None,
                    spacing=None, window=None, opacity=0.4, prediction_style="row", axis_names=DHW_AXIS_NAMES,
                    show_dice=True, title=None):
    """A static figure of evenly spaced slices with translucent class colours, for pages where
    widgets do not run (the rendered book).

    Slices are chosen evenly across the slices that hold a class in ``label`` or ``prediction``
    (across the whole axis when there is none); a 2D image is shown as it is (``n_slices``,
    ``axis`` and ``slices`` do not apply). With both masks, ``prediction_style="row"`` puts the
    ground truth (top row) above the prediction (bottom row), both filled, with the Dice of each
    class under each prediction slice; ``"contour"`` draws the prediction as outlines over the
    filled ground truth, in one row.

    Args:
        image: (H, W) or (D, H, W), optionally with a leading channel of 1; numpy or torch.
        label, prediction: class indices with the image's spatial shape, or None.
        n_slices: how many slices to show (fewer when the range holds fewer).
        axis: the array axis to slice along (0, 1 or 2); it is named by ``axis_names``.
        class_names: one name per label value, background first, or a dict {value: name}.
        slices: explicit slice indices, instead of ``n_slices`` evenly spaced ones.
        spacing: voxel size per array axis, e.g. (1.0, 1.0, 1.0) mm, for the aspect ratio.
        window: (low, high) intensities shown black and white; default 1st and 99th percentiles.
        opacity: alpha of the filled classes, in [0, 1].
        prediction_style: "row" or "contour" (see above).
        axis_names: names of array axes 0, 1, 2 (:data:`DHW_AXIS_NAMES`, :data:`RAS_AXIS_NAMES`).
        show_dice: write the Dice per class (n/a: class in neither mask) under each prediction.
        title: first line of the figure title; the second says what the rows hold.
    Returns:
        the matplotlib Figure.
    Raises:
        ValueError: wrong number of dimensions, masks whose shape differs from the image's, an
            axis or slice out of range, or an unknown ``prediction_style``.
    """
    import matplotlib.pyplot as plt

    volume, is_3d, shape = _as_volume(image)
    spatial = volume.shape if is_3d else volume.shape[1:]
    label_v = None if label is None else _as_mask(label, shape, spatial, "label")
    prediction_v = None if prediction is None else _as_mask(prediction, shape, spatial, "prediction")
    classes = _class_table(class_names, (label_v, prediction_v))
    colours = _class_colours(classes)
    opacity = _check_opacity(opacity)
    window = _default_window(volume) if window is None else _check_window(window)
    if prediction_style not in ("row", "contour"):
        raise ValueError(f"prediction_style {prediction_style!r} is not one of 'row' (ground truth and prediction "
                         "in two rows) and 'contour' (prediction outlined over the ground truth).")
    if is_3d:
        if axis not in (0, 1, 2):
            raise ValueError(f"axis {axis!r} must be 0, 1 or 2 (the array axis to slice along) for a volume of "
                             f"shape {shape}.")
        if len(axis_names) != 3:
            raise ValueError(f"axis_names {axis_names!r} must name the 3 array axes, e.g. {DHW_AXIS_NAMES}.")
        spacing3 = _check_spacing(spacing, 3)
        if slices is None:
            if int(n_slices) < 1:
                raise ValueError(f"n_slices {n_slices} must be at least 1.")
            slices = _montage_slices(volume, (label_v, prediction_v), axis, int(n_slices))
        slices = [int(k) for k in slices]
        bad = [k for k in slices if not 0 <= k < volume.shape[axis]]
        if bad or not slices:
            raise ValueError(f"slices {bad or slices} are not in 0..{volume.shape[axis] - 1}, the {axis_names[axis]} "
                             f"range of a volume of shape {shape}.")
        axis_name = axis_names[axis]
    else:
        spacing3, slices, axis, axis_name = (1.0,) + _check_spacing(spacing, 2), [0], 0, None

    both = label_v is not None and prediction_v is not None
    rows = []  # (row name, fill mask, outline mask)
    if both and prediction_style == "row":
        rows = [("ground truth", label_v, None), ("prediction", prediction_v, None)]
    elif both:
        rows = [("ground truth + prediction", label_v, prediction_v)]
    elif label_v is not None:
        rows = [("ground truth", label_v, None)]
    elif prediction_v is not None:
        rows = [("prediction", prediction_v, None)]
    else:
        rows = [("image", None, None)]
    # A 2D image with two rows is laid out side by side instead.
    panels = [(r, c, row, k) for r, row in enumerate(rows) for c, k in enumerate(slices)]
    if not is_3d and len(rows) > 1:
        panels = [(0, r, row, 0) for r, row in enumerate(rows)]
    n_rows = 1 + max(p[0] for p in panels)
    n_cols = 1 + max(p[1] for p in panels)

    aspect = _slice_aspect(spacing3, axis)
    h, w = (volume.shape[a] for a in range(3) if a != axis)
    ratio = w / (h * aspect)  # width / height of one panel
    panel_w = min(3.0, max(1.2, 2.4 * ratio), 9.5 / n_cols)  # the whole figure at most about 10 inches wide
    panel_h = panel_w / ratio
    dice_lines = len(classes) if (show_dice and both and prediction_style == "row") else 0
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False, layout="constrained",
                             figsize=(max(5.0, n_cols * (panel_w + 0.1) + 0.5),
                                      n_rows * (panel_h + 0.35) + (0.15 * (dice_lines + 1) if dice_lines else 0)
                                      + 0.7 + (0.35 if classes else 0)))
    for r, c, (row_name, fill, outline), k in panels:
        ax = axes[r][c]
        take = (lambda m: None if m is None else np.take(m, k, axis=axis))
        _draw_slice(ax, _apply_window(np.take(volume, k, axis=axis), window), aspect, fill=take(fill),
                    outlines=[] if outline is None else [(take(outline), "solid")], colours=colours,
                    opacity=opacity)
        if is_3d:
            ax.set_title(f"{axis_name} {k}", fontsize=10)
        elif len(rows) > 1:
            ax.set_title(row_name, fontsize=10)
        if c == 0 and is_3d:
            ax.set_ylabel(row_name, fontsize=10)
        if dice_lines and row_name == "prediction":
            dice = _slice_dice(take(label_v), take(prediction_v), classes)
            ax.set_xlabel("Dice\n" + "\n".join(f"{classes[v]} {_format_dice(d)}" for v, d in dice.items()),
                          fontsize=8.5)

    size = "x".join(str(s) for s in spatial)
    if title is None:
        title = (f"{len(slices)} {axis_name} slices ({', '.join(map(str, slices))}) of a {size} volume" if is_3d
                 else f"A {size} image")
    what = {"ground truth": "with the ground truth in colour",
            "prediction": "with the prediction in colour",
            "image": "without masks",
            "ground truth + prediction": "with the ground truth in colour and the prediction outlined"}
    if both and prediction_style == "row":
        second = ("ground truth (top row) and prediction (bottom row, Dice per class below)" if is_3d
                  else "ground truth (left) and prediction (right)")
    else:
        second = what[rows[0][0]]
    fig.suptitle(f"{title}:\n{second}", fontsize=11)
    handles = _legend_handles(classes, colours, opacity, fill=True,
                              outlines=[("prediction", "solid")] if both and prediction_style == "contour" else [])
    if handles and (label_v is not None or prediction_v is not None):
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4), fontsize=9,
                   frameon=False)
    return fig


class SliceViewer:
    """An interactive viewer for a 2D image or a 3D volume, with its ground truth and prediction.

    Controls: slice slider and axis buttons (3D only), a window range slider, overlay opacity, one
    checkbox per class. With both ``label`` and ``prediction``, the two are shown side by side with
    the Dice of each class on the current slice ("n/a" where the class is in neither).

    The state lives in plain methods (``set_axis``, ``set_slice``, ``set_window``,
    ``set_opacity``, ``toggle_class``, ``current_slice``, ``slice_dice``, ``render``); the widgets
    only call them, so everything can be tested, and scripted, without a browser. The picture is a
    PNG of :meth:`render` in an ``ipywidgets.Image``, which needs no interactive matplotlib backend.

    Args:
        image: (H, W) or (D, H, W), optionally with a leading channel of 1; numpy or torch.
        label, prediction: class indices with the image's spatial shape (a leading channel of 1
            is allowed), or None.
        class_names: one name per label value, background first (["background", "anterior",
            "posterior"]), or a dict {1: "anterior", 2: "posterior"}; default "class 1", ...
        spacing: voxel size per array axis, e.g. (1.0, 1.0, 1.0) mm, for the aspect ratio.
        axis_names: names of array axes 0, 1, 2 (:data:`DHW_AXIS_NAMES` for (D, H, W),
            :data:`RAS_AXIS_NAMES` for nibabel or MONAI arrays (x, y, z)).
        window: (low, high) intensities shown black and white; default the 1st and 99th
            percentiles of the whole image.
        opacity: alpha of the class colours, in [0, 1].

    Attributes:
        axis (int), slice_index (int), window ((low, high)), opacity (float), visible
        ({class name: bool}), classes ({label value: name}), colours ({label value: colour}),
        and the widgets axis_buttons, slice_slider, window_slider, opacity_slider,
        class_checkboxes ({class name: Checkbox}), dice_html, image_widget.

    Example::

        viewer = SliceViewer(image, label, prediction, class_names=["background", "anterior", "posterior"])
        viewer.display()           # in a notebook; or make `viewer` the last expression of a cell
    """

    def __init__(self, image, label=None, prediction=None, class_names=None, spacing=None, *,
                 axis_names=DHW_AXIS_NAMES, window=None, opacity=0.4):
        self.volume, self.is_3d, self.image_shape = _as_volume(image)  # (D, H, W); 2D as (1, H, W)
        spatial = self.volume.shape if self.is_3d else self.volume.shape[1:]
        self.label = None if label is None else _as_mask(label, self.image_shape, spatial, "label")
        self.prediction = (None if prediction is None
                           else _as_mask(prediction, self.image_shape, spatial, "prediction"))
        self.classes = _class_table(class_names, (self.label, self.prediction))  # {value: name}
        self.colours = _class_colours(self.classes)  # {value: colour}
        self.visible = {name: True for name in self.classes.values()}
        self.spacing = (_check_spacing(spacing, 3) if self.is_3d else (1.0,) + _check_spacing(spacing, 2))
        if self.is_3d and len(axis_names) != 3:
            raise ValueError(f"axis_names {axis_names!r} must name the 3 array axes, e.g. {DHW_AXIS_NAMES}.")
        self.axis_names = tuple(axis_names) if self.is_3d else ("image",)
        self.axis = 0
        self.slice_index = self.volume.shape[0] // 2
        self.window = _default_window(self.volume) if window is None else _check_window(window)
        self.opacity = _check_opacity(opacity)
        self._syncing = False  # True while the viewer itself updates widgets: their callbacks then do nothing
        self._build_widgets()
        self._refresh()

    # ---- state -------------------------------------------------------------------------------------

    @property
    def axis_name(self) -> str:
        return self.axis_names[self.axis]

    @property
    def n_slices(self) -> int:
        """Number of slices along the current axis (1 for a 2D image)."""
        return self.volume.shape[self.axis]

    def set_axis(self, axis) -> None:
        """Slice along another axis, given by name ("axial") or array index (0, 1, 2). The slice
        index is kept, clamped to the new axis's range."""
        if not self.is_3d:
            raise ValueError("a 2D image has no axis to choose; set_axis applies to 3D volumes only.")
        if isinstance(axis, str):
            if axis not in self.axis_names:
                raise ValueError(f"axis {axis!r} is not one of {self.axis_names} (or 0, 1, 2).")
            axis = self.axis_names.index(axis)
        if axis not in (0, 1, 2):
            raise ValueError(f"axis {axis!r} must be one of {self.axis_names} or 0, 1, 2.")
        self.axis = int(axis)
        self.slice_index = min(self.slice_index, self.n_slices - 1)
        self._refresh()

    def set_slice(self, index) -> None:
        """Show slice ``index`` (0 .. n_slices - 1) along the current axis."""
        index = int(index)
        if not 0 <= index < self.n_slices:
            raise ValueError(f"slice {index} is outside 0..{self.n_slices - 1}, the {self.axis_name} range of the "
                             f"image of shape {self.image_shape}.")
        self.slice_index = index
        self._refresh()

    def set_window(self, low, high) -> None:
        """Show intensity ``low`` as black and ``high`` as white (linear in between, clipped)."""
        self.window = _check_window((low, high))
        self._refresh()

    def set_opacity(self, opacity) -> None:
        """Alpha of the class colours, in [0, 1]."""
        self.opacity = _check_opacity(opacity)
        self._refresh()

    def toggle_class(self, name, visible=None) -> None:
        """Show or hide the overlay of one class, given by name or label value; ``visible=None``
        flips it. (The Dice is computed for every class, shown or not.)"""
        if not isinstance(name, str) and name in self.classes:
            name = self.classes[name]
        if name not in self.visible:
            raise ValueError(f"class {name!r} is not one of {list(self.visible)} (or their label values "
                             f"{list(self.classes)}).")
        self.visible[name] = (not self.visible[name]) if visible is None else bool(visible)
        self._refresh()

    def _take(self, volume):
        return np.take(volume, self.slice_index, axis=self.axis)  # (rows, cols)

    def current_slice(self) -> dict:
        """The arrays of the current slice, each (rows, cols) or (rows, cols, 4):

        ``image`` (raw intensities), ``display`` (windowed to [0, 1]), and where given ``label``
        and ``prediction`` (class indices) with ``label_overlay`` and ``prediction_overlay``
        (RGBA; alpha = opacity on the pixels of shown classes, 0 elsewhere).
        """
        image = self._take(self.volume)
        out = {"image": image, "display": _apply_window(image, self.window)}
        shown = {v: c for v, c in self.colours.items() if self.visible[self.classes[v]]}
        for key, volume in (("label", self.label), ("prediction", self.prediction)):
            if volume is not None:
                out[key] = self._take(volume)
                out[f"{key}_overlay"] = _overlay_rgba(out[key], shown, self.opacity)
        return out

    def slice_dice(self) -> dict:
        """{class name: Dice of label and prediction on the current slice}, None (shown "n/a")
        where the class is in neither."""
        if self.label is None or self.prediction is None:
            raise ValueError("slice_dice needs both a label and a prediction; pass both to SliceViewer.")
        dice = _slice_dice(self._take(self.label), self._take(self.prediction), self.classes)
        return {self.classes[v]: d for v, d in dice.items()}

    def describe(self) -> str:
        """One sentence saying what the picture shows (its title, usable as alt text)."""
        rows, cols = (self.volume.shape[a] for a in range(3) if a != self.axis)
        where = (f"{self.axis_name.capitalize()} slice {self.slice_index} (of 0-{self.n_slices - 1})"
                 if self.is_3d else "Image")
        low, high = self.window
        return f"{where} ({rows}x{cols} pixels), window {low:.4g} to {high:.4g}"

    def render(self):
        """The current view as a matplotlib Figure: the ground truth and the prediction side by
        side (whichever are given; the image alone without masks), in the fixed class colours, with
        a legend of the shown classes. The figure is closed in pyplot at once, so that renders do
        not pile up; a notebook still shows it when it is a cell's value."""
        import matplotlib.pyplot as plt

        current = self.current_slice()
        panels = [(title, key) for title, key in (("ground truth", "label"), ("prediction", "prediction"))
                  if key in current] or [("image", None)]
        rows, cols = current["image"].shape
        aspect = _slice_aspect(self.spacing, self.axis)
        ratio = cols / (rows * aspect)  # width / height of one panel
        panel_h = max(2.0, min(4.0, 5.5 / ratio))
        panel_w = max(2.0, panel_h * ratio)
        fig = plt.figure(figsize=(max(4.5, len(panels) * (panel_w + 0.2) + 0.3), panel_h + 1.6), layout="constrained")
        plt.close(fig)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        dice = self.slice_dice() if len(panels) == 2 else None
        for ax, (title, key) in zip(axes, panels):
            ax.imshow(current["display"], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect=aspect)
            if key is not None:
                ax.imshow(current[f"{key}_overlay"], interpolation="nearest", aspect=aspect)
            _plain_axes(ax)
            if key == "prediction" and dice is not None:
                title += "\nDice: " + ", ".join(f"{name} {_format_dice(d)}" for name, d in dice.items())
            ax.set_title(title, fontsize=10)
        fig.suptitle(self.describe(), fontsize=11)
        shown = {v: n for v, n in self.classes.items() if self.visible[n]}
        if panels[0][1] is not None and shown:
            fig.legend(handles=_legend_handles(shown, self.colours, self.opacity, fill=True),
                       loc="outside lower center", ncol=min(len(shown), 4), fontsize=9, frameon=False)
        return fig

    # ---- widgets -----------------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        try:
            import ipywidgets as widgets
        except ImportError as error:
            raise ImportError("SliceViewer needs ipywidgets: pip install ipywidgets (or use overlay_montage for a "
                              "static figure).") from error
        def layout():  # the axis and slice controls are hidden for a 2D image
            return widgets.Layout() if self.is_3d else widgets.Layout(display="none")

        self.axis_buttons = widgets.ToggleButtons(options=list(self.axis_names), value=self.axis_name,
                                                  description="axis", layout=layout())
        self.slice_slider = widgets.IntSlider(value=self.slice_index, min=0, max=self.n_slices - 1,
                                              description="slice", continuous_update=True,
                                              layout=layout())
        finite = self.volume[np.isfinite(self.volume)]
        low = min(float(finite.min()) if finite.size else 0.0, self.window[0])
        high = max(float(finite.max()) if finite.size else 1.0, self.window[1])
        self.window_slider = widgets.FloatRangeSlider(value=self.window, min=low, max=high,
                                                      step=(high - low) / 500, description="window",
                                                      readout_format=".4g", continuous_update=False)
        self.opacity_slider = widgets.FloatSlider(value=self.opacity, min=0.0, max=1.0, step=0.05,
                                                  description="opacity")
        self.class_checkboxes = {name: widgets.Checkbox(value=True, description=name, indent=False)
                                 for name in self.visible}
        self.dice_html = widgets.HTML()
        self.image_widget = widgets.Image(format="png")

        self.axis_buttons.observe(self._on_axis, names="value")
        self.slice_slider.observe(self._on_slice, names="value")
        self.window_slider.observe(self._on_window, names="value")
        self.opacity_slider.observe(self._on_opacity, names="value")
        for name, box in self.class_checkboxes.items():
            box.observe(lambda change, name=name: self._on_class(name, change), names="value")

        controls = [self.axis_buttons, self.slice_slider, self.window_slider, self.opacity_slider]
        if self.class_checkboxes:
            controls.append(widgets.HBox([widgets.Label("classes")] + list(self.class_checkboxes.values())))
        controls.append(self.dice_html)
        self._widget = widgets.VBox([widgets.VBox(controls), self.image_widget])

    @property
    def widget(self):
        """The ipywidgets container (controls above the picture)."""
        return self._widget

    def display(self) -> None:
        """Show the viewer in a notebook."""
        from IPython.display import display

        display(self._widget)

    def _ipython_display_(self):
        self.display()

    # Widget callbacks: each calls the state method, which then brings every widget up to date.
    def _on_axis(self, change):
        if not self._syncing:
            self.set_axis(change["new"])

    def _on_slice(self, change):
        if not self._syncing:
            self.set_slice(change["new"])

    def _on_window(self, change):
        if not self._syncing:
            self.set_window(*change["new"])

    def _on_opacity(self, change):
        if not self._syncing:
            self.set_opacity(change["new"])

    def _on_class(self, name, change):
        if not self._syncing:
            self.toggle_class(name, change["new"])

    def _refresh(self) -> None:
        """Bring the widgets, the Dice line and the picture up to date with the state."""
        import io

        self._syncing = True
        try:
            self.axis_buttons.value = self.axis_name
            self.slice_slider.max = self.n_slices - 1
            self.slice_slider.value = self.slice_index
            # A window beyond the slider's range widens the range, rather than being clipped by it.
            self.window_slider.min = min(self.window_slider.min, self.window[0])
            self.window_slider.max = max(self.window_slider.max, self.window[1])
            self.window_slider.value = self.window
            self.opacity_slider.value = self.opacity
            for name, box in self.class_checkboxes.items():
                box.value = self.visible[name]
        finally:
            self._syncing = False
        if self.label is not None and self.prediction is not None:
            where = f"{self.axis_name} slice {self.slice_index}" if self.is_3d else "this image"
            dice = self.slice_dice()
            self.dice_html.value = (f"<b>Dice on {where}:</b> " + (", ".join(
                f"{name} {_format_dice(d)}" for name, d in dice.items()) or "no classes"))
        buffer = io.BytesIO()
        self.render().savefig(buffer, format="png", dpi=90)
        self.image_widget.value = buffer.getvalue()
