"""The architecture figure is generated from the model: stages, channels, sizes, RVM layers."""

from __future__ import annotations

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from lightm_edu.layers import RVMLayer  # noqa: E402
from lightm_edu.model import LightMUNet  # noqa: E402
from lightm_edu.viz import describe_architecture, draw_architecture  # noqa: E402


def texts(ax) -> str:
    return "\n".join([t.get_text() for t in ax.texts] + [ax.get_title()])


def test_describe_official_2d_model():
    model = LightMUNet(2, 1, 2)
    parts = describe_architecture(model, (256, 256))
    assert [p["part"] for p in parts] == ["stem"] + ["encoder"] * 4 + ["decoder"] * 3 + ["head"]
    encoder = [p for p in parts if p["part"] == "encoder"]
    assert [p["out_channels"] for p in encoder] == [32, 64, 128, 256]
    assert [p["size"] for p in encoder] == [(256, 256), (128, 128), (64, 64), (32, 32)]
    assert [p["rvm_layers"] for p in encoder] == [2, 5, 5, 9]
    assert [p["downsample"] for p in encoder] == [False, True, True, True]
    decoder = [p for p in parts if p["part"] == "decoder"]
    assert [(p["in_channels"], p["out_channels"], p["size"]) for p in decoder] == [
        (256, 128, (64, 64)), (128, 64, (128, 128)), (64, 32, (256, 256))]
    assert parts[-1]["out_channels"] == 2 and parts[-1]["size"] == (256, 256)
    assert sum(p["params"] for p in parts) == sum(p.numel() for p in model.parameters()) == 5_011_683
    assert sum(p["rvm_layers"] for p in parts) == sum(isinstance(m, RVMLayer) for m in model.modules()) == 21


def test_describe_without_input_size_gives_relative_levels():
    parts = describe_architecture(LightMUNet(3, 1, 3, init_filters=8))
    assert [p["level"] for p in parts] == [0, 0, 1, 2, 3, 2, 1, 0, 0]
    assert all(p["size"] is None for p in parts)


def test_describe_rejects_bad_input_sizes():
    model = LightMUNet(2, 1, 2, init_filters=8)
    with pytest.raises(ValueError, match="not divisible by 8"):
        describe_architecture(model, (30, 32))
    with pytest.raises(ValueError, match="3 axes but the model is 2D"):
        describe_architecture(model, (32, 32, 32))


def test_draw_official_model_shows_what_the_model_holds():
    ax = draw_architecture(LightMUNet(2, 1, 2), (256, 256))
    shown = texts(ax)
    assert "21 RVM layers (2 + 5 + 5 + 9)" in shown and "5,011,683 parameters" in shown
    for line in ("256 ch, 32x32", "RVM 128->256, max-pool", "4 res. Mamba blocks", "9 RVM layers",
                 "1x1 conv 256->128, x2 up", "head: 32 ch -> 2 classes"):
        assert line in shown, line
    assert shown.count("+") >= 3  # one circled + per skip connection
    plt.close(ax.figure)


def test_draw_other_configuration_into_given_axes():
    fig, ax = plt.subplots()
    model = LightMUNet(3, 2, 4, init_filters=8, blocks_down=(1, 1, 3), blocks_up=(2, 1))
    assert draw_architecture(model, ax=ax) is ax
    shown = texts(ax)
    assert "3D, 2 -> 4 channels" in shown and "12 RVM layers (2 + 3 + 7)" in shown
    assert "1/4 res." in shown and "2 res. up blocks" in shown
    plt.close(fig)
