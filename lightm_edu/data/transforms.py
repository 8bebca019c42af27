"""From a case on disk to a training sample: MONAI dictionary transforms, and the dataset.

    sample      {"image": float32 (c, h, w) or (c, d, h, w), "label": int64 (1, h, w) or (1, d, h, w)}
                as MONAI MetaTensors (tensors that remember their file name and affine); the
                label holds class indices 0 .. n_classes - 1
    patch       a crop of ``patch_size`` voxels: what one training step sees of a case
    pos / neg   RandCropByPosNegLabeld centres 2 of 3 patches on a foreground voxel (pos=2) and
                1 on a background voxel (neg=1): foreground oversampling, as nnU-Net does

Chapter 7 walks the pipeline step by step:

    LoadImaged           PNG via Pillow (grayscale), NIfTI via nibabel       -> (h, w) / (d, h, w)
    EnsureChannelFirstd                                                     -> (1, h, w) / (1, d, h, w)
    MaskValuesToClassesd raw mask values -> class indices (255 -> 1); error on any other value
    intensity            x / 255 (chest X-ray) or z-score over nonzero voxels (MRI)
    Resized              2D, only when the image is not already ``task.image_size``
    training             SpatialPadd to at least the patch, RandCropByPosNegLabeld to the patch,
                         augmentation (rotate, zoom, noise, intensity scale and shift, flips)
    evaluation           DivisiblePadd(k=8) at the end of each axis: LightM-UNet pools three times
    CastToTyped          image float32, label int64

Use :class:`monai.data.DataLoader` (not torch's) with several workers: it seeds the random
transforms of each worker differently.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from monai.data import CacheDataset, Dataset, NibabelReader, PILReader
from monai.transforms import (CastToTyped, Compose, DivisiblePadd, EnsureChannelFirstd, LoadImaged, MapTransform,
                              NormalizeIntensityd, RandCropByPosNegLabeld, RandFlipd, RandGaussianNoised,
                              Randomizable, RandRotated, RandScaleIntensityd, RandShiftIntensityd, RandZoomd,
                              Resized, ScaleIntensityRanged, SpatialPadd)

from .cases import _format_values, _read_nifti, _read_png, show_progress
from .tasks import DataError, SegmentationTask

__all__ = ["train_transforms", "eval_transforms", "make_dataset", "MaskValuesToClassesd", "KEYS"]

KEYS = ("image", "label")


def _single_channel(image):
    """Pillow converter: colour or alpha PNGs become 8-bit grayscale; grayscale ones stay as they are."""
    return image.convert("L") if len(image.getbands()) > 1 else image


class MaskValuesToClassesd(MapTransform):
    """Map raw mask values to class indices: ``label_values[k] -> k`` (e.g. 0 -> 0, 255 -> 1).

    Unlike MONAI's ``MapLabelValued``, which leaves unknown values as they are, any value not in
    ``label_values`` raises :class:`DataError` naming the file and the values.
    """

    def __init__(self, keys, label_values, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.label_values = tuple(label_values)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            present = torch.unique(mask).tolist()
            unexpected = [v for v in present if v not in self.label_values]
            if unexpected:
                source = getattr(mask, "meta", {}).get("filename_or_obj", f"the {key!r} array")
                raise DataError(f"{source}: mask values {_format_values(unexpected)} are not among the task's "
                                f"label values {self.label_values}; fix the mask file, or the task's "
                                "label_values if the values are right")
            classes = mask.clone()  # a clone keeps the MetaTensor's file name and affine
            for index, value in enumerate(self.label_values):
                if index != value:
                    classes[mask == value] = index
            d[key] = classes
        return d


class _RandPosNegCropd(Randomizable, MapTransform):
    """RandCropByPosNegLabeld with one sample, returning a dict (MONAI's returns a list of dicts)."""

    def __init__(self, keys, spatial_size, pos: float = 2.0, neg: float = 1.0):
        MapTransform.__init__(self, keys)
        self.crop = RandCropByPosNegLabeld(keys, label_key="label", spatial_size=spatial_size, pos=pos, neg=neg,
                                           num_samples=1)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.crop.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:  # the inner crop draws its own centre
        pass

    def __call__(self, data):
        return self.crop(data)[0]


def _check_task(task) -> SegmentationTask:
    if not isinstance(task, SegmentationTask):
        raise TypeError(f"task must be a SegmentationTask (e.g. lightm_edu.data.TASKS['hippocampus']), "
                        f"got {type(task).__name__}")
    return task


def _check_patch(task: SegmentationTask, patch_size) -> tuple[int, ...]:
    patch = tuple(task.patch_size if patch_size is None else patch_size)
    if len(patch) != task.spatial_dims or not all(isinstance(p, int) and p > 0 for p in patch):
        raise ValueError(f"patch_size must be {task.spatial_dims} positive ints for task {task.name!r}, "
                         f"got {patch_size!r}")
    if any(p % 8 for p in patch):
        raise ValueError(f"patch_size {patch} must be divisible by 8 on every axis (LightM-UNet pools three "
                         f"times), e.g. {tuple(8 * math.ceil(p / 8) for p in patch)}")
    if task.image_size is not None and any(p > s for p, s in zip(patch, task.image_size)):
        raise ValueError(f"patch_size {patch} is larger than the image size {task.image_size} of task "
                         f"{task.name!r}")
    return patch


def _load_and_normalise(task: SegmentationTask, with_label: bool = True) -> list:
    """The steps shared by training and evaluation: load, channel first, classes, intensity, size."""
    keys = list(KEYS) if with_label else ["image"]
    if task.layout == "png":
        # reverse_indexing=False keeps NumPy's (row, column) order: plt.imshow shows the image upright.
        reader = PILReader(converter=_single_channel, reverse_indexing=False)
        steps = [LoadImaged(keys, reader=reader, image_only=True),
                 EnsureChannelFirstd(keys, channel_dim="no_channel")]                  # (1, h, w)
    else:
        steps = [LoadImaged(keys, reader=NibabelReader(), image_only=True),
                 EnsureChannelFirstd(keys)]                     # (c, d, h, w): NIfTI channels come last
    if with_label:
        steps.append(MaskValuesToClassesd("label", task.label_values))
    if task.intensity == "scale_0_255":
        steps.append(ScaleIntensityRanged("image", a_min=0, a_max=255, b_min=0.0, b_max=1.0, clip=True))
    else:
        steps.append(NormalizeIntensityd("image", nonzero=True, channel_wise=True))
    if task.image_size is not None:  # a no-op for images already of that size
        steps.append(Resized(keys, spatial_size=task.image_size, mode=("bilinear", "nearest")[:len(keys)],
                             anti_aliasing=(True, False)[:len(keys)]))
    return steps


def _augmentation(task: SegmentationTask) -> list:
    """nnU-Net-style augmentation with modest probabilities (image: bilinear, label: nearest)."""
    keys = list(KEYS)
    angle = math.radians(15)
    steps = [
        RandRotated(keys, range_x=angle, range_y=angle if task.spatial_dims == 3 else 0.0,
                    range_z=angle if task.spatial_dims == 3 else 0.0, prob=0.2, mode=("bilinear", "nearest"),
                    padding_mode="zeros"),
        RandZoomd(keys, min_zoom=0.85, max_zoom=1.25, prob=0.2,
                  mode=("trilinear" if task.spatial_dims == 3 else "bilinear", "nearest"), padding_mode="constant"),
        RandGaussianNoised("image", prob=0.1, mean=0.0, std=0.1),
        RandScaleIntensityd("image", factors=0.25, prob=0.15),   # x * (1 + f), f in [-0.25, 0.25]
        RandShiftIntensityd("image", offsets=0.1, prob=0.15),    # x + o, o in [-0.1, 0.1]
    ]
    # Mirror every axis of a volume; only left-right for a radiograph (an upside-down chest X-ray
    # does not occur). Arrays are (c, h, w) / (c, d, h, w): spatial axis -1 is left-right.
    axes = range(task.spatial_dims) if task.spatial_dims == 3 else [task.spatial_dims - 1]
    steps += [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in axes]
    return steps


def train_transforms(task: SegmentationTask, patch_size=None, augment: bool = True) -> Compose:
    """Training pipeline: a case dict of paths -> one random patch {"image", "label"}.

    Args:
        task: a :class:`SegmentationTask` (from :data:`TASKS`).
        patch_size: spatial size of the patch, divisible by 8; default ``task.patch_size``.
            Cases smaller than the patch are zero-padded first.
        augment: add nnU-Net-style augmentation (rotation +-15 deg, zoom 0.85-1.25, Gaussian noise,
            intensity scale and shift, flips).

    Returns:
        A Compose producing image float32 (in_channels, *patch) and label int64 (1, *patch).
    """
    task = _check_task(task)
    patch = _check_patch(task, patch_size)
    keys = list(KEYS)
    steps = _load_and_normalise(task)
    steps.append(SpatialPadd(keys, spatial_size=patch, mode="constant"))
    if task.image_size is None or patch != tuple(task.image_size):
        steps.append(_RandPosNegCropd(keys, spatial_size=patch, pos=2.0, neg=1.0))
    if augment:
        steps += _augmentation(task)
    steps.append(CastToTyped(keys, dtype=(torch.float32, torch.long)))
    return Compose(steps)


def eval_transforms(task: SegmentationTask, with_label: bool = True) -> Compose:
    """Evaluation pipeline: a case dict of paths -> the whole case {"image", "label"}.

    Each axis is zero-padded at its end to a multiple of 8, so a prediction is cropped back to the
    case with ``prediction[..., :d, :h, :w]``. The size before padding: 3D, the size on disk,
    ``sample["image"].meta["spatial_shape"]``; 2D, ``task.image_size`` (images are resized to it
    first; MONAI's PNG reader records ``spatial_shape`` as (w, h) of the file).

    With ``with_label=False`` (prediction) only the image is loaded.

    Returns:
        A Compose producing image float32 (in_channels, *size) and label int64 (1, *size).
    """
    task = _check_task(task)
    keys = list(KEYS) if with_label else ["image"]
    steps = _load_and_normalise(task, with_label)
    steps.append(DivisiblePadd(keys, k=8, mode="constant", method="end"))
    steps.append(CastToTyped(keys, dtype=(torch.float32, torch.long)[:len(keys)]))
    return Compose(steps)


# --- the dataset -------------------------------------------------------------------------------------

def _diagnose(case: dict) -> str:
    """Why a case could not be loaded: first a problem found by reading its files directly."""
    for key in KEYS:
        path = str(case[key])
        if not Path(path).is_file():
            return f"{key} file {path} does not exist"
        read = _read_png if path.lower().endswith(".png") else _read_nifti
        try:
            read(path)
        except Exception as error:
            return f"{key} file {path} cannot be read ({type(error).__name__}: {error}); replace it with a fresh copy"
    return ""


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _load_error(case: dict, error: BaseException) -> DataError:
    found = _diagnose(case)
    if not found:
        cause = _root_cause(error)
        found = f"{type(cause).__name__}: {cause}"
    return DataError(f"case {case.get('case_id', '?')!r} (image {case['image']}, label {case['label']}) could not "
                     f"be loaded: {found}")


class _CaseErrors:
    """Mixin: an exception while loading or transforming a case names the case's files."""

    def _transform(self, index: int):
        try:
            return super()._transform(index)
        except Exception as error:
            raise _load_error(self.data[index], error) from None  # the message says it all


class CaseDataset(_CaseErrors, Dataset):
    """monai.data.Dataset whose loading errors name the case's image and label files."""


class CaseCacheDataset(_CaseErrors, CacheDataset):
    """monai.data.CacheDataset (deterministic steps cached in memory) whose errors name the files."""

    def _load_cache_item(self, idx: int):
        try:
            return super()._load_cache_item(idx)
        except Exception as error:
            raise _load_error(self.data[idx], error) from None


def make_dataset(cases: list[dict], transforms, cache: bool = False) -> Dataset:
    """A MONAI dataset of cases: ``dataset[i]`` is ``transforms(cases[i])``.

    Args:
        cases: from :func:`find_cases` (or one part of a split).
        transforms: from :func:`train_transforms` or :func:`eval_transforms`.
        cache: keep the result of the deterministic steps (loading, normalisation, padding) of
            every case in memory (``CacheDataset``; loads all cases now); random steps still run
            at every access.

    Raises:
        DataError (when loading): names the case, its image and label paths, and what is wrong.
    """
    cases = list(cases)
    for index, case in enumerate(cases):
        if not isinstance(case, dict) or not {"image", "label"} <= set(case):
            raise TypeError(f"case {index} must be a dict with 'image' and 'label' paths (as find_cases "
                            f"returns), got {case!r}")
    if not callable(transforms):
        raise TypeError(f"transforms must be callable (train_transforms(task) or eval_transforms(task)), "
                        f"got {type(transforms).__name__}")
    if cache:
        return CaseCacheDataset(cases, transforms, cache_rate=1.0, num_workers=1, progress=show_progress())
    return CaseDataset(cases, transforms)
