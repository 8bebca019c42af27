"""lightm_edu.data: finding and checking cases, splits, transforms, datasets, the built-in sample.

Synthetic data sets are written into tmp_path with Pillow and nibabel; the real data sets are read
(never written) through LIGHTM_EDU_DATA when it is set, and those tests are skipped otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest
from PIL import Image

from lightm_edu.data import (TASKS, DataError, SegmentationTask, check_cases, data_root, find_cases, load_split,
                             make_split, sample_dir, save_split)

CXR, HIPPO = TASKS["cxr_lung"], TASKS["hippocampus"]
SAMPLE_IDS = ["hippocampus_003", "hippocampus_004", "hippocampus_007", "hippocampus_008", "hippocampus_011",
              "hippocampus_014"]


def real_folder(task: SegmentationTask) -> Path:
    root = os.environ.get("LIGHTM_EDU_DATA")
    if not root:
        pytest.skip("real data not available: set LIGHTM_EDU_DATA to the folder that holds the data sets")
    folder = Path(root) / task.folder
    if not folder.is_dir():
        pytest.skip(f"LIGHTM_EDU_DATA has no {task.folder}/ folder")
    return folder


# --- synthetic data sets -----------------------------------------------------------------------------

def write_png(path: Path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def write_nifti(path: Path, array, dtype=np.float32, affine=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.asarray(array, dtype=dtype), np.eye(4) if affine is None else affine), path)


def xray_pair(shape=(256, 256), seed=0):
    """A random 8-bit image and a 0/255 mask with a lung-like rectangle."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[shape[0] // 4: shape[0] // 2, shape[1] // 8: shape[1] // 3] = 255  # not symmetric: shows transposes
    return image, mask


def mri_pair(shape=(20, 30, 18), seed=0):
    """A random positive volume with a zero border, and a label with classes 1 and 2."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    image[2:-2, 2:-2, 2:-2] = rng.uniform(100, 3000, [s - 4 for s in shape])
    label = np.zeros(shape, np.uint8)
    label[5:10, 5:15, 5:12] = 1
    label[10:15, 15:25, 5:12] = 2
    return image, label


@pytest.fixture
def png_set(tmp_path):
    folder = tmp_path / "xray"
    for i, case_id in enumerate(["b_02", "a_01", "c_03"]):
        image, mask = xray_pair(seed=i)
        write_png(folder / "images" / f"{case_id}.png", image)
        write_png(folder / "masks" / f"{case_id}.png", mask)
    return folder


@pytest.fixture
def nifti_set(tmp_path):
    folder = tmp_path / "mri"
    for i, case_id in enumerate(["case_2", "case_1"]):
        image, label = mri_pair(seed=i)
        write_nifti(folder / "imagesTr" / f"{case_id}.nii.gz", image)
        write_nifti(folder / "labelsTr" / f"{case_id}.nii.gz", label, np.uint8)
    return folder


# --- import cost, tasks, data_root -------------------------------------------------------------------

def test_import_of_data_package_does_not_import_monai_or_torch():
    code = "import sys, lightm_edu.data; print('monai' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_tasks_describe_both_data_sets():
    assert (CXR.folder, CXR.layout, CXR.spatial_dims, CXR.label_values) == (
        "cxr-lung-covid19radiography-viralpneumonia", "png", 2, (0, 255))
    assert (HIPPO.folder, HIPPO.layout, HIPPO.spatial_dims, HIPPO.label_values) == (
        "msd-task04-hippocampus", "decathlon", 3, (0, 1, 2))
    assert CXR.class_names == ("background", "lung") and HIPPO.n_classes == 3
    for task in TASKS.values():
        assert all(p % 8 == 0 for p in task.patch_size) and task.in_channels == 1
        assert task.license and task.citation and task.description


def test_task_with_one_value_per_class_missing_is_refused():
    with pytest.raises(ValueError, match="2 class names but 3 label values"):
        SegmentationTask(name="x", folder="x", layout="png", spatial_dims=2, in_channels=1,
                         class_names=("bg", "fg"), label_values=(0, 1, 2), patch_size=(8, 8),
                         intensity="scale_0_255", description="", license="", citation="")


def test_data_root_unset_names_the_variable_and_how_to_set_it(monkeypatch):
    monkeypatch.delenv("LIGHTM_EDU_DATA", raising=False)
    with pytest.raises(DataError, match=r"LIGHTM_EDU_DATA is not set.*export LIGHTM_EDU_DATA="):
        data_root()
    assert data_root(required=False) is None


def test_data_root_pointing_nowhere_names_the_path(monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTM_EDU_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"LIGHTM_EDU_DATA=.*nowhere is not an existing folder"):
        data_root()
    monkeypatch.setenv("LIGHTM_EDU_DATA", str(tmp_path))
    assert data_root() == tmp_path


# --- find_cases ---------------------------------------------------------------------------------------

def test_find_cases_detects_png_layout_sorted_and_ignores_hidden_files(png_set):
    (png_set / "images" / ".DS_Store").write_bytes(b"x")
    (png_set / "masks" / "._a_01.png").write_bytes(b"x")
    cases = find_cases(png_set)
    assert [c["case_id"] for c in cases] == ["a_01", "b_02", "c_03"]
    assert cases[0] == {"case_id": "a_01", "image": str(png_set / "images" / "a_01.png"),
                        "label": str(png_set / "masks" / "a_01.png")}
    assert find_cases(str(png_set), layout="png") == cases


def test_find_cases_detects_decathlon_layout(nifti_set):
    cases = find_cases(nifti_set)
    assert [c["case_id"] for c in cases] == ["case_1", "case_2"]
    assert cases[1]["label"] == str(nifti_set / "labelsTr" / "case_2.nii.gz")


def test_find_cases_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data set folder .*absent does not exist"):
        find_cases(tmp_path / "absent")


def test_find_cases_unknown_layout_says_which_subfolders_are_expected(tmp_path):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(DataError, match=r"no recognised data set layout.*images/ \+ masks/.*imagesTr/ \+ labelsTr/"
                                        r".*found pictures/"):
        find_cases(tmp_path)


def test_find_cases_lists_images_without_masks_and_masks_without_images(png_set):
    (png_set / "masks" / "a_01.png").unlink()
    write_png(png_set / "masks" / "z_99.png", np.zeros((4, 4)))
    with pytest.raises(DataError) as caught:
        find_cases(png_set)
    message = str(caught.value)
    assert "1 image(s) in images/ have no mask in masks/: a_01.png" in message
    assert "1 mask(s) in masks/ have no image in images/: z_99.png" in message
    assert "Add the missing files" in message
    assert caught.value.problems == ["images/a_01.png: no mask masks/a_01.png",
                                     "masks/z_99.png: no image images/z_99.png"]


def test_find_cases_names_files_of_another_type(nifti_set):
    (nifti_set / "imagesTr" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"not \.nii\.gz files: notes\.txt\. Move them out"):
        find_cases(nifti_set)


# --- check_cases --------------------------------------------------------------------------------------

def test_check_cases_accepts_good_synthetic_sets(png_set, nifti_set):
    assert check_cases(find_cases(png_set), CXR) is None
    assert check_cases(find_cases(nifti_set), HIPPO) is None


def test_check_cases_lists_every_problem_by_file_name(png_set):
    (png_set / "images" / "a_01.png").write_bytes(np.random.default_rng(0).bytes(300))  # corrupt
    write_png(png_set / "masks" / "b_02.png", np.zeros((128, 256)))                       # size mismatch
    mask = xray_pair()[1]
    mask[0, 0] = 128
    write_png(png_set / "masks" / "c_03.png", mask)                                       # unexpected value
    with pytest.raises(DataError) as caught:
        check_cases(find_cases(png_set), CXR)
    message, problems = str(caught.value), caught.value.problems
    assert len(problems) == 3 and message.startswith("3 problem(s) in 3 case(s)")
    assert "images/a_01.png: cannot be read" in message
    assert "images/b_02.png and masks/b_02.png: image size (256, 256) differs from mask size (128, 256)" in message
    assert "masks/c_03.png: mask values 128 are not among the task's label values (0, 255)" in message
    assert "Replace the broken files" in message


def test_check_cases_names_wrong_channel_count_and_bit_depth(png_set):
    write_png(png_set / "images" / "a_01.png", np.zeros((256, 256, 3)))
    Image.fromarray(np.zeros((256, 256), np.uint16)).save(png_set / "images" / "b_02.png")
    with pytest.raises(DataError) as caught:
        check_cases(find_cases(png_set), CXR)
    assert caught.value.problems == ["images/a_01.png: 3 channels, expected 1",
                                     "images/b_02.png: uint16 pixels, expected 8-bit (the task scales 0..255 to 0..1)"]


def test_check_cases_names_corrupt_nifti_shape_mismatch_and_unexpected_label(nifti_set):
    (nifti_set / "imagesTr" / "case_1.nii.gz").write_bytes(np.random.default_rng(1).bytes(400))
    write_nifti(nifti_set / "labelsTr" / "case_2.nii.gz", np.full((20, 30, 17), 3), np.uint8)
    with pytest.raises(DataError) as caught:
        check_cases(find_cases(nifti_set), HIPPO)
    message = str(caught.value)
    assert "imagesTr/case_1.nii.gz: cannot be read" in message
    assert "image size (20, 30, 18) differs from mask size (20, 30, 17)" in message
    assert "labelsTr/case_2.nii.gz: mask values 3 are not among the task's label values (0, 1, 2)" in message


def test_check_cases_names_mask_not_aligned_with_its_image(nifti_set):
    shifted = np.eye(4)
    shifted[0, 3] = 5.0  # same grid size, moved by 5 mm
    write_nifti(nifti_set / "labelsTr" / "case_1.nii.gz", mri_pair(seed=1)[1], np.uint8, affine=shifted)
    with pytest.raises(DataError, match=r"imagesTr/case_1\.nii\.gz and labelsTr/case_1\.nii\.gz: different affines"):
        check_cases(find_cases(nifti_set), HIPPO)


def test_check_cases_refuses_cases_of_another_task(png_set):
    with pytest.raises(DataError, match=r"task 'hippocampus' reads \.nii\.gz files .* 6 path\(s\) are not: a_01\.png"):
        check_cases(find_cases(png_set), HIPPO)


def test_check_cases_shallow_only_checks_existence(png_set):
    cases = find_cases(png_set)
    (png_set / "images" / "a_01.png").write_bytes(b"not a png")
    check_cases(cases, CXR, deep=False)  # a broken but existing file passes the shallow check
    (png_set / "masks" / "b_02.png").unlink()
    with pytest.raises(DataError, match=r"masks/b_02\.png: file does not exist"):
        check_cases(cases, CXR, deep=False)


# --- the built-in sample and the real data ------------------------------------------------------------

def test_sample_is_six_unmodified_cases_with_license_readme_and_checksums():
    folder = sample_dir()
    cases = find_cases(folder)
    assert [c["case_id"] for c in cases] == SAMPLE_IDS
    check_cases(cases, HIPPO)
    manifest = dict(reversed(line.split("  ")) for line in (folder / "MANIFEST.sha256").read_text().splitlines())
    assert len(manifest) == 12
    for name, digest in manifest.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    readme = (folder / "README.md").read_text()
    assert "CC BY-SA 4.0" in readme and "unmodified" in readme and "Simpson" in readme
    assert "ShareAlike 4.0" in (folder / "LICENSE-CC-BY-SA-4.0.txt").read_text()


def test_sample_files_are_byte_identical_to_the_data_set():
    real = real_folder(HIPPO)
    for case in find_cases(sample_dir()):
        for key, sub in (("image", "imagesTr"), ("label", "labelsTr")):
            assert Path(case[key]).read_bytes() == (real / sub / Path(case[key]).name).read_bytes()


def test_no_sample_for_chest_xrays_says_why():
    with pytest.raises(FileNotFoundError, match="no built-in sample for task 'cxr_lung'.*license"):
        sample_dir("cxr_lung")
    with pytest.raises(ValueError, match="unknown task 'liver'"):
        sample_dir("liver")


@pytest.mark.parametrize("task, n_cases, n_checked", [(CXR, 1045, 30), (HIPPO, 200, 10)], ids=["cxr", "hippo"])
def test_real_data_sets_have_all_cases_and_a_subset_passes_the_deep_check(task, n_cases, n_checked):
    cases = find_cases(real_folder(task))
    assert len(cases) == n_cases
    check_cases(cases[:: n_cases // n_checked], task)


# --- splits -------------------------------------------------------------------------------------------

IDS = [f"case_{i:03d}" for i in range(50)]


def test_split_is_disjoint_covers_all_and_has_the_asked_sizes():
    split = make_split(IDS, n_test=10, val_fraction=0.1, seed=3)
    parts = [split["train"], split["val"], split["test"]]
    assert sorted(sum(parts, [])) == IDS
    assert split["counts"] == {"train": 35, "val": 5, "test": 10} and split["seed"] == 3
    default = make_split(IDS)
    assert (len(default["test"]), len(default["val"])) == (10, 5)


def test_split_is_deterministic_per_seed_and_independent_of_input_order():
    shuffled = IDS[:]
    random.Random(99).shuffle(shuffled)
    assert make_split(IDS, seed=1) == make_split(shuffled, seed=1)
    assert make_split(IDS, seed=1)["test"] != make_split(IDS, seed=2)["test"]
    expected = sorted(IDS)
    random.Random(1).shuffle(expected)  # the documented recipe: sorted ids, Random(seed).shuffle, test first
    assert make_split(IDS, n_test=5, n_val=5, seed=1)["test"] == sorted(expected[:5])


def test_split_test_set_does_not_depend_on_the_val_size():
    assert make_split(IDS, n_test=10, n_val=0)["test"] == make_split(IDS, n_test=10, n_val=20)["test"]


@pytest.mark.parametrize("kwargs, match", [
    ({"n_test": 5, "test_fraction": 0.1}, "give n_test or test_fraction, not both"),
    ({"n_test": 30, "n_val": 20}, "leave no training case out of 50"),
    ({"val_fraction": 1.5}, r"val_fraction must be in \[0, 1\)"),
    ({"n_val": -1}, "n_val must be a whole number >= 0"),
])
def test_split_refuses_impossible_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_split(IDS, **kwargs)


def test_split_refuses_repeated_ids():
    with pytest.raises(DataError, match=r"appear more than once: \['case_000'\]"):
        make_split(IDS + ["case_000"])


def test_split_save_load_round_trip_leaves_no_temporary_file(tmp_path):
    split = make_split(IDS, seed=7)
    path = save_split(split, tmp_path / "out" / "split.json")
    assert load_split(path, case_ids=IDS) == split
    assert json.loads(path.read_text())["test"] == split["test"]
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]


def test_save_split_refuses_to_write_into_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTM_EDU_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="inside LIGHTM_EDU_DATA, which is read only"):
        save_split(make_split(IDS), tmp_path / "splits" / "split.json")


@pytest.mark.parametrize("content, match", [
    ("{not json", "not a valid JSON split file"),
    (json.dumps({"train": ["a"], "val": []}), "the split has no 'test' list"),
    (json.dumps({"train": ["a", "b"], "val": ["b"], "test": []}), r"1 case\(s\) are in both 'train' and 'val': \['b'\]"),
    (json.dumps({"train": ["a", 3], "val": [], "test": []}), "'train' must be a list of case id strings"),
])
def test_load_split_names_what_is_wrong_with_the_file(tmp_path, content, match):
    path = tmp_path / "split.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        load_split(path)


def test_load_split_checks_ids_against_the_data_set(tmp_path):
    path = save_split({"train": ["a", "b"], "val": ["c"], "test": ["x"]}, tmp_path / "split.json")
    with pytest.raises(DataError, match=r"1 case\(s\) of the split are not in the data set: \['x'\]"):
        load_split(path, case_ids=["a", "b", "c"])
    with pytest.raises(DataError, match=r"1 case\(s\) of the data set are in no part of the split: \['d'\]"):
        load_split(path, case_ids=["a", "b", "c", "x", "d"])
    with pytest.raises(FileNotFoundError, match="does not exist: make one with make_split"):
        load_split(tmp_path / "missing.json")


# --- transforms and datasets --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def transforms_module():
    from lightm_edu.data import transforms

    return transforms


def test_eval_2d_keeps_values_orientation_and_maps_255_to_class_1(transforms_module, png_set):
    case = find_cases(png_set)[0]
    sample = transforms_module.eval_transforms(CXR)(case)
    image, mask = (np.asarray(Image.open(case[k])) for k in ("image", "label"))  # (h, w) as on disk
    assert sample["image"].shape == (1, 256, 256) and sample["image"].dtype.is_floating_point
    assert str(sample["image"].dtype) == "torch.float32" and str(sample["label"].dtype) == "torch.int64"
    np.testing.assert_allclose(sample["image"][0].numpy(), image / 255.0, atol=1e-6)
    np.testing.assert_array_equal(sample["label"][0].numpy(), mask // 255)


def test_train_2d_resizes_other_sizes_and_crops_patches(transforms_module, tmp_path):
    image, mask = xray_pair(shape=(200, 300))
    write_png(tmp_path / "images" / "x.png", image)
    write_png(tmp_path / "masks" / "x.png", mask)
    case = find_cases(tmp_path)[0]
    whole = transforms_module.train_transforms(CXR, augment=False)(case)
    assert whole["image"].shape == whole["label"].shape == (1, 256, 256)
    assert set(whole["label"].unique().tolist()) == {0, 1}
    patch = transforms_module.train_transforms(CXR, patch_size=(128, 64))(case)
    assert patch["image"].shape == patch["label"].shape == (1, 128, 64)
    assert set(patch["label"].unique().tolist()) <= {0, 1} and str(patch["label"].dtype) == "torch.int64"


def test_eval_3d_pads_to_multiple_of_8_and_zscores_nonzero_voxels(transforms_module, nifti_set):
    case = find_cases(nifti_set)[0]
    sample = transforms_module.eval_transforms(HIPPO)(case)
    image = nibabel.load(case["image"]).get_fdata()
    label = np.asarray(nibabel.load(case["label"]).dataobj)
    assert sample["image"].shape == sample["label"].shape == (1, 24, 32, 24)  # (20, 30, 18) padded at the end
    nonzero = image != 0
    expected = np.where(nonzero, (image - image[nonzero].mean()) / image[nonzero].std(), 0)
    np.testing.assert_allclose(sample["image"][0, :20, :30, :18].numpy(), expected, atol=1e-4)
    np.testing.assert_array_equal(sample["label"][0, :20, :30, :18].numpy(), label)
    assert sample["image"][0, 20:].abs().sum() == 0 and sample["label"][0, :, 30:].sum() == 0
    assert list(sample["image"].meta["spatial_shape"]) == [20, 30, 18]


def test_train_3d_pads_small_cases_and_crops_patches(transforms_module, nifti_set):
    case = find_cases(nifti_set)[0]
    sample = transforms_module.train_transforms(HIPPO)(case)  # (20, 30, 18) < patch: padded
    assert sample["image"].shape == sample["label"].shape == (1, 32, 48, 32)
    assert str(sample["image"].dtype) == "torch.float32" and str(sample["label"].dtype) == "torch.int64"
    assert set(sample["label"].unique().tolist()) <= {0, 1, 2}
    small = transforms_module.train_transforms(HIPPO, patch_size=(16, 16, 8), augment=False)(case)
    assert small["image"].shape == (1, 16, 16, 8)


def test_train_transforms_repeat_exactly_for_the_same_random_state(transforms_module, nifti_set):
    case = find_cases(nifti_set)[0]
    pipeline = transforms_module.train_transforms(HIPPO, patch_size=(16, 16, 8))
    first = pipeline.set_random_state(seed=5)(case)
    second = pipeline.set_random_state(seed=5)(case)
    assert (first["image"] == second["image"]).all() and (first["label"] == second["label"]).all()


def test_train_3d_on_a_real_case_of_the_sample(transforms_module):
    case = find_cases(sample_dir())[0]
    sample = transforms_module.train_transforms(HIPPO)(case)
    assert sample["image"].shape == sample["label"].shape == (1, 32, 48, 32)
    assert set(sample["label"].unique().tolist()) <= {0, 1, 2} and sample["label"].max() > 0
    assert abs(float(sample["image"].mean())) < 3  # z-scored, not raw intensities in the thousands


def test_patch_size_not_divisible_by_8_is_refused(transforms_module):
    with pytest.raises(ValueError, match=r"must be divisible by 8 on every axis.*\(32, 48, 32\)"):
        transforms_module.train_transforms(HIPPO, patch_size=(30, 48, 32))


def test_dataset_errors_name_the_file(transforms_module, png_set, nifti_set):
    (png_set / "images" / "a_01.png").write_bytes(np.random.default_rng(0).bytes(300))
    mask = xray_pair()[1]
    mask[0, 0] = 128
    write_png(png_set / "masks" / "b_02.png", mask)
    dataset = transforms_module.make_dataset(find_cases(png_set), transforms_module.eval_transforms(CXR))
    with pytest.raises(DataError, match=r"case 'a_01' .* could not be loaded: image file .*a_01\.png cannot be"):
        dataset[0]
    with pytest.raises(DataError, match=r"case 'b_02'.*masks/b_02\.png: mask values 128 are not among"):
        dataset[1]
    (nifti_set / "labelsTr" / "case_1.nii.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataError, match=r"case 'case_1' .* label file .*case_1\.nii\.gz cannot be read"):
        transforms_module.make_dataset(find_cases(nifti_set), transforms_module.train_transforms(HIPPO), cache=True)


def test_cached_dataset_gives_random_patches_of_the_sample(transforms_module):
    from monai.data import DataLoader

    dataset = transforms_module.make_dataset(find_cases(sample_dir())[:2], transforms_module.train_transforms(HIPPO),
                                             cache=True)
    batch = next(iter(DataLoader(dataset, batch_size=2, num_workers=0)))
    assert batch["image"].shape == (2, 1, 32, 48, 32) and batch["label"].shape == (2, 1, 32, 48, 32)
