"""Figures generated from model objects, so that a drawing cannot disagree with the code.

    describe_architecture(model, input_size=None)   one dict per part of a LightMUNet: stem, each
                                                    encoder and decoder stage, head (channels,
                                                    spatial size, RVM layers, parameters)
    draw_architecture(model, input_size=None, ax=None)   the U-shaped diagram of those parts

Chapter 6 uses them. Everything shown is read from the modules of the model (their channels, how
many :class:`~lightm_edu.layers.RVMLayer` they hold, whether they pool), not typed in by hand.
"""

from __future__ import annotations

__all__ = ["describe_architecture", "draw_architecture"]


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
