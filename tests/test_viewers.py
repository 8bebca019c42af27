"""The image and volume viewers: the slice viewer's state follows its widgets, the rendered arrays
follow the state, the Dice per slice matches a hand count, and the static figures show the slices,
classes and colours they say they show. Headless: matplotlib's Agg backend, no browser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
pytest.importorskip("ipywidgets")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from lightm_edu.viz import (CLASS_COLOURS, RAS_AXIS_NAMES, SliceViewer, overlay,  # noqa: E402
                            overlay_montage)

NAMES = ["background", "anterior", "posterior"]


@pytest.fixture
def case():
    """A (4, 5, 6) volume with intensities 0..119 and hand-made masks.

    slice 0: nothing; slice 1: class 1 in the label on 4 pixels, in the prediction on 3 of them and
    2 more (Dice 2*3 / (4 + 5) = 2/3), class 2 in neither (n/a); slice 2: class 2 in the label
    only (Dice 0), class 1 in both on the same 2 pixels (Dice 1); slice 3: class 2 in both, 1 pixel
    shared out of 2 + 1 (Dice 2*1 / (2 + 1) = 2/3).
    """
    image = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    label = np.zeros((4, 5, 6), dtype=np.int64)
    prediction = np.zeros_like(label)
    label[1, 1:3, 1:3] = 1
    prediction[1, 1:3, 1] = 1
    prediction[1, 1, 2] = 1
    prediction[1, 4, 4:6] = 1
    label[2, 0, 0:3] = 2
    label[2, 4, 0:2] = 1
    prediction[2, 4, 0:2] = 1
    label[3, 2, 2:4] = 2
    prediction[3, 2, 3] = 2
    return image, label, prediction


def alpha(rgba):
    return rgba[..., 3]


# ---- the slice viewer: widgets -> state -> arrays ----------------------------------------------------

def test_slice_slider_sets_slice_and_rendered_image(case):
    image, label, _ = case
    viewer = SliceViewer(image, label, class_names=NAMES)
    assert viewer.slice_index == 2  # the middle slice to start with
    before = bytes(viewer.image_widget.value)
    viewer.slice_slider.value = 1
    assert viewer.slice_index == 1
    np.testing.assert_array_equal(viewer.current_slice()["image"], image[1])
    np.testing.assert_array_equal(viewer.current_slice()["label"], label[1])
    assert bytes(viewer.image_widget.value) != before  # the picture was redrawn
    fig = viewer.render()
    low, high = viewer.window
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), np.clip((image[1] - low) / (high - low), 0, 1),
                               rtol=1e-6)
    assert "Axial slice 1 (of 0-3)" in fig.get_suptitle()


def test_axis_change_keeps_slice_index_clamped_to_the_new_axis():
    image = np.random.default_rng(0).normal(size=(6, 5, 3)).astype(np.float32)
    viewer = SliceViewer(image)
    viewer.slice_slider.value = 5
    viewer.axis_buttons.value = "sagittal"  # axis 2 has only 3 slices
    assert (viewer.axis, viewer.slice_index) == (2, 2)
    assert (viewer.slice_slider.max, viewer.slice_slider.value) == (2, 2)
    np.testing.assert_array_equal(viewer.current_slice()["image"], image[:, :, 2])
    viewer.set_axis("coronal")  # 5 slices: index 2 is kept
    assert (viewer.axis, viewer.slice_index, viewer.slice_slider.max) == (1, 2, 4)
    assert viewer.axis_buttons.value == "coronal"
    np.testing.assert_array_equal(viewer.current_slice()["image"], image[:, 2, :])
    viewer.set_axis(0)
    assert viewer.slice_slider.max == 5 and viewer.slice_slider.value == 2


def test_window_slider_maps_low_to_black_and_high_to_white(case):
    image = case[0]
    viewer = SliceViewer(image)
    viewer.slice_slider.value = 0  # intensities 0..29
    viewer.window_slider.value = (10.0, 20.0)
    assert viewer.window == (10.0, 20.0)
    display = viewer.current_slice()["display"]
    assert display[0, 5] == 0.0 and display[2, 3] == 0.5 and display[4, 5] == 1.0  # 5, 15, 29
    assert viewer.render().axes[0].images[0].get_array()[2, 3] == 0.5
    viewer.set_window(-100, 500)  # beyond the slider's range: the range widens
    assert viewer.window_slider.value == (-100.0, 500.0)


def test_default_window_is_the_1st_and_99th_percentile(case):
    image = case[0]
    viewer = SliceViewer(image)
    np.testing.assert_allclose(viewer.window, np.percentile(image, [1, 99]))
    assert viewer.window_slider.value == pytest.approx(viewer.window)


def test_class_checkbox_hides_only_that_class_overlay(case):
    image, label, prediction = case
    viewer = SliceViewer(image, label, prediction, class_names=NAMES)
    viewer.slice_slider.value = 2  # class 1 and class 2 both in the label
    shown = alpha(viewer.current_slice()["label_overlay"])
    assert np.all(shown[label[2] == 2] == 0.4) and np.all(shown[label[2] == 1] == 0.4)
    viewer.class_checkboxes["posterior"].value = False
    assert viewer.visible == {"anterior": True, "posterior": False}
    current = viewer.current_slice()
    assert np.all(alpha(current["label_overlay"])[label[2] == 2] == 0)
    assert np.all(alpha(current["label_overlay"])[label[2] == 1] == 0.4)
    assert np.all(alpha(current["label_overlay"])[label[2] == 0] == 0)
    fig = viewer.render()
    np.testing.assert_array_equal(fig.axes[0].images[1].get_array(), current["label_overlay"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["anterior"]
    viewer.toggle_class(2)  # by label value: shown again, and the checkbox follows
    assert viewer.class_checkboxes["posterior"].value is True
    assert np.all(alpha(viewer.current_slice()["label_overlay"])[label[2] == 2] == 0.4)


def test_overlay_uses_the_fixed_class_colours_and_opacity_slider(case):
    image, label, _ = case
    viewer = SliceViewer(image, label, class_names=NAMES)
    viewer.opacity_slider.value = 0.7
    assert viewer.opacity == 0.7
    viewer.set_slice(2)
    rgba = viewer.current_slice()["label_overlay"]
    np.testing.assert_allclose(rgba[4, 0], (*to_rgb(CLASS_COLOURS[0]), 0.7), rtol=1e-6)  # class 1
    np.testing.assert_allclose(rgba[0, 0], (*to_rgb(CLASS_COLOURS[1]), 0.7), rtol=1e-6)  # class 2


def test_slice_dice_matches_a_hand_count(case):
    viewer = SliceViewer(*case, class_names=NAMES)
    expected = {0: {"anterior": None, "posterior": None},
                1: {"anterior": 2 * 3 / (4 + 5), "posterior": None},
                2: {"anterior": 1.0, "posterior": 0.0},
                3: {"anterior": None, "posterior": 2 * 1 / (2 + 1)}}
    for index, dice in expected.items():
        viewer.slice_slider.value = index
        assert viewer.slice_dice() == pytest.approx(dice)
    viewer.slice_slider.value = 1
    assert viewer.dice_html.value.endswith("anterior 0.67, posterior n/a")
    fig = viewer.render()
    assert [ax.get_title() for ax in fig.axes] == ["ground truth", "prediction\nDice: anterior 0.67, posterior n/a"]


def test_dice_is_computed_along_other_axes_too(case):
    image, label, prediction = case
    viewer = SliceViewer(image, label, prediction, class_names=NAMES)
    viewer.set_axis("coronal")
    viewer.set_slice(4)  # row 4: class 1 on label[2, 4, 0:2] = prediction[2, 4, 0:2] and prediction[1, 4, 4:6]
    assert viewer.slice_dice() == pytest.approx({"anterior": 2 * 2 / (2 + 4), "posterior": None})


def test_2d_image_hides_axis_and_slice_controls():
    image = torch.arange(30.0).reshape(1, 5, 6)  # a 2D image with a channel of 1, as a tensor
    label = torch.zeros(5, 6, dtype=torch.int64)
    label[1:3, 1:3] = 1
    viewer = SliceViewer(image, label, prediction=label.float(), class_names={1: "lung"})
    assert viewer.axis_buttons.layout.display == "none" and viewer.slice_slider.layout.display == "none"
    current = viewer.current_slice()
    np.testing.assert_array_equal(current["image"], image[0].numpy())
    assert current["label"].shape == (5, 6)
    assert viewer.slice_dice() == {"lung": 1.0}
    assert viewer.dice_html.value.endswith("Dice on this image:</b> lung 1.00")
    assert viewer.render().get_suptitle().startswith("Image (5x6 pixels)")
    with pytest.raises(ValueError, match="2D image has no axis"):
        viewer.set_axis("coronal")


def test_torch_volume_with_channel_and_spacing_sets_aspect(case):
    image, label, _ = case
    viewer = SliceViewer(torch.from_numpy(image)[None], torch.from_numpy(label)[None], spacing=(3.0, 1.0, 1.0))
    assert viewer.classes == {1: "class 1", 2: "class 2"}
    assert viewer.render().axes[0].get_aspect() == 1.0
    viewer.set_axis("coronal")  # rows are along axis 0 (3 mm), columns along axis 2 (1 mm)
    assert viewer.render().axes[0].get_aspect() == 3.0


def test_widget_holds_the_controls_and_the_picture(case):
    import ipywidgets

    viewer = SliceViewer(*case, class_names=NAMES)
    assert isinstance(viewer.widget, ipywidgets.VBox)
    controls, picture = viewer.widget.children
    assert picture is viewer.image_widget and bytes(picture.value).startswith(b"\x89PNG")
    assert viewer.slice_slider in controls.children and viewer.dice_html in controls.children
    assert sorted(viewer.class_checkboxes) == ["anterior", "posterior"]


# ---- the static figures -------------------------------------------------------------------------------

def test_montage_slices_are_evenly_spaced_over_the_labelled_range():
    image = np.zeros((20, 8, 8), dtype=np.float32)
    label = np.zeros((20, 8, 8), dtype=np.int64)
    label[4:15, 2:5, 2:5] = 1  # labelled slices 4..14
    fig = overlay_montage(image, label, n_slices=6)
    assert [ax.get_title() for ax in fig.axes] == [f"axial {k}" for k in (4, 6, 8, 10, 12, 14)]
    assert fig.get_suptitle().startswith("6 axial slices (4, 6, 8, 10, 12, 14) of a 20x8x8 volume")
    plt.close(fig)
    fig = overlay_montage(image, n_slices=3, axis=2)  # no masks: the whole axis
    assert [ax.get_title() for ax in fig.axes] == ["sagittal 0", "sagittal 4", "sagittal 7"]
    plt.close(fig)


def test_montage_shows_ground_truth_above_prediction_with_dice(case):
    image, label, prediction = case
    fig = overlay_montage(image, label, prediction, n_slices=3, class_names=NAMES, slices=[1, 2, 3])
    axes = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["ground truth", "prediction"]
    np.testing.assert_array_equal(alpha(axes[0, 0].images[1].get_array()) > 0, label[1] > 0)
    np.testing.assert_array_equal(alpha(axes[1, 0].images[1].get_array()) > 0, prediction[1] > 0)
    assert axes[1, 0].get_xlabel() == "Dice\nanterior 0.67\nposterior n/a"
    assert axes[1, 1].get_xlabel() == "Dice\nanterior 1.00\nposterior 0.00"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["anterior", "posterior"]
    assert "ground truth (top row) and prediction (bottom row" in fig.get_suptitle()
    plt.close(fig)


def test_montage_contour_style_outlines_the_prediction_in_one_row(case):
    image, label, prediction = case
    fig = overlay_montage(image, label, prediction, slices=[1, 3], class_names=NAMES, prediction_style="contour")
    assert len(fig.axes) == 2 and all(len(ax.images) == 2 for ax in fig.axes)
    assert len(fig.axes[0].collections) == 1 and len(fig.axes[1].collections) == 1  # one outlined class each
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "anterior", "anterior (prediction)", "posterior", "posterior (prediction)"]
    plt.close(fig)


def test_montage_of_a_2d_image_puts_label_and_prediction_side_by_side():
    image = np.random.default_rng(1).random((16, 12))
    label = (image > 0.5).astype(np.int64)
    fig = overlay_montage(image, label, label, class_names=["background", "lung"])
    assert [ax.get_title() for ax in fig.axes] == ["ground truth", "prediction"]
    assert fig.axes[1].get_xlabel() == "Dice\nlung 1.00"
    plt.close(fig)


def test_overlay_draws_one_slice_into_given_axes(case):
    image, label, prediction = case
    fig, ax = plt.subplots()
    assert overlay(image[2], label[2], ax=ax, prediction=prediction[2], class_names=NAMES) is ax
    np.testing.assert_array_equal(alpha(ax.images[1].get_array()) > 0, label[2] > 0)
    assert len(ax.collections) == 1  # the prediction outline of class 1 (class 2 is not predicted here)
    assert ax.get_title() == "5x6 image; classes in colour: anterior, posterior; prediction outlined"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "anterior", "anterior (prediction)", "posterior", "posterior (prediction)"]
    plt.close(fig)


def test_overlay_contour_outlines_mask_solid_and_prediction_dashed(case):
    image, label, prediction = case
    ax = overlay(image[1], label[1], prediction=prediction[1], contour=True, class_names=NAMES)
    assert len(ax.images) == 1  # the grey image only: no fill
    assert [c.get_linestyle()[0][1] is None for c in ax.collections] == [True, False]  # solid, then dashed
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["anterior (outline)", "anterior (prediction)"]
    assert ax.get_title().endswith("classes outlined: anterior, posterior; prediction outlined (dashed)")
    plt.close(ax.figure)


# ---- errors name the problem and the fix ------------------------------------------------------------

def test_shape_mismatch_names_both_shapes(case):
    image = case[0]
    bad = np.zeros((4, 5, 7), dtype=np.int64)
    message = r"label has shape \(4, 5, 7\) but the image has shape \(4, 5, 6\)"
    with pytest.raises(ValueError, match=message):
        SliceViewer(image, bad)
    with pytest.raises(ValueError, match=message):
        overlay_montage(image, bad)
    with pytest.raises(ValueError, match=r"prediction has shape \(5, 7\) but the image has shape \(5, 6\)"):
        SliceViewer(image[0], prediction=bad[0])
    with pytest.raises(ValueError, match=r"mask has shape \(4, 5, 7\) but the image has shape \(5, 6\)"):
        overlay(image[0], bad)


def test_wrong_number_of_dimensions_is_rejected(case):
    image = case[0]
    with pytest.raises(ValueError, match=r"image has 5 axes \(shape \(1, 1, 4, 5, 6\)\).*image\[0\]"):
        SliceViewer(image[None, None])
    with pytest.raises(ValueError, match=r"image has 1 axes \(shape \(7,\)\)"):
        overlay_montage(np.zeros(7))
    with pytest.raises(ValueError, match=r"2 channels.*image\[c\]"):
        SliceViewer(np.stack([image, image]))
    with pytest.raises(ValueError, match=r"overlay draws one 2D slice but image has shape \(4, 5, 6\)"):
        overlay(image, None)


def test_bad_masks_are_rejected_with_the_fix(case):
    image, label, _ = case
    one_hot = np.stack([label == k for k in range(3)])
    with pytest.raises(ValueError, match=r"one channel per class.*label\.argmax\(0\)"):
        SliceViewer(image, one_hot)
    with pytest.raises(ValueError, match=r"non-integer values \(e\.g\. 0\.25\).*threshold"):
        SliceViewer(image, np.full(image.shape, 0.25))
    with pytest.raises(ValueError, match="negative values"):
        SliceViewer(image, -label)
    with pytest.raises(ValueError, match=r"class value\(s\) \[2\] but class_names gives 2 names.*background first"):
        SliceViewer(image, label, class_names=["anterior", "posterior"])
    with pytest.raises(ValueError, match="repeats a name"):
        SliceViewer(image, label, class_names={1: "a", 2: "a"})
    with pytest.raises(TypeError, match="not the string"):
        overlay_montage(image, label, class_names="anterior")


def test_bad_settings_are_rejected(case):
    image, label, _ = case
    viewer = SliceViewer(image, label)
    with pytest.raises(ValueError, match=r"low < high"):
        viewer.set_window(5, 5)
    with pytest.raises(ValueError, match=r"slice 4 is outside 0\.\.3"):
        viewer.set_slice(4)
    with pytest.raises(ValueError, match="'top' is not one of"):
        viewer.set_axis("top")
    with pytest.raises(ValueError, match=r"opacity 1\.5 must lie in \[0, 1\]"):
        viewer.set_opacity(1.5)
    with pytest.raises(ValueError, match="'lung' is not one of"):
        viewer.toggle_class("lung")
    with pytest.raises(ValueError, match="needs both a label and a prediction"):
        viewer.slice_dice()
    with pytest.raises(ValueError, match="spacing .* must be 3 positive numbers"):
        SliceViewer(image, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"axis 3 must be 0, 1 or 2"):
        overlay_montage(image, axis=3)
    with pytest.raises(ValueError, match=r"slices \[9\] are not in 0\.\.3"):
        overlay_montage(image, slices=[0, 9])
    with pytest.raises(ValueError, match="prediction_style 'fill' is not one of"):
        overlay_montage(image, label, label, prediction_style="fill")


def test_importing_viz_does_not_import_matplotlib_or_ipywidgets():
    code = "import sys, lightm_edu.viz; print(any(m in sys.modules for m in ('matplotlib', 'ipywidgets')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parents[1])
    assert result.stdout.strip() == "False"


# ---- one real case, when the data folder is available ---------------------------------------------------

def test_real_hippocampus_volume():
    root = os.environ.get("LIGHTM_EDU_DATA")
    folder = Path(root or "") / "msd-task04-hippocampus"
    if not root or not (folder / "imagesTr" / "hippocampus_003.nii.gz").is_file():
        pytest.skip("set LIGHTM_EDU_DATA to the data folder (with msd-task04-hippocampus/) to run this test")
    nibabel = pytest.importorskip("nibabel")
    image = np.asarray(nibabel.load(folder / "imagesTr" / "hippocampus_003.nii.gz").dataobj, dtype=np.float32)
    label = np.asarray(nibabel.load(folder / "labelsTr" / "hippocampus_003.nii.gz").dataobj).astype(np.int64)
    viewer = SliceViewer(image, label, label, class_names=NAMES, axis_names=RAS_AXIS_NAMES)
    viewer.axis_buttons.value = "axial"  # array axis 2 of (x, y, z)
    assert viewer.axis == 2 and viewer.slice_index == image.shape[0] // 2
    assert all(d in (None, 1.0) for d in viewer.slice_dice().values())
    labelled = np.nonzero(label.any(axis=(0, 1)))[0]
    fig = overlay_montage(image, label, n_slices=4, axis=2, class_names=NAMES, axis_names=RAS_AXIS_NAMES)
    shown = [int(ax.get_title().split()[1]) for ax in fig.axes]
    assert shown[0] == labelled.min() and shown[-1] == labelled.max() and len(shown) == 4
    plt.close(fig)
