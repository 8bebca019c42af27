"""The two segmentation tasks of the book: what is on disk, and how it becomes a training sample.

    task            a SegmentationTask: one data set and how to read and prepare it
    layout          how a data set folder is organised: "png" (images/ + masks/, 2D) or
                    "decathlon" (imagesTr/ + labelsTr/, NIfTI, as in the Medical Segmentation
                    Decathlon)
    label_values    the raw values stored in the mask files, in the order of the classes:
                    label_values[k] is stored for class k (e.g. 255 on disk -> class 1, "lung")
    class index     0 .. n_classes - 1, what the network predicts and the loss compares against
    image_size      2D only: the (h, w) every image is resized to (None: keep the size on disk)
    patch_size      the spatial size of one training sample: (h, w) or (d, h, w) voxels
    intensity       how image values are normalised: "scale_0_255" (x / 255 -> [0, 1]) or
                    "zscore_nonzero" ((x - mean) / std over nonzero voxels, as nnU-Net does for MRI)

Chapter 7 uses both tasks. :data:`TASKS` maps a short name to its task; the data itself is found
under the folder named by the environment variable ``LIGHTM_EDU_DATA`` (:func:`data_root`), or
in the built-in sample (:func:`sample_dir`, hippocampus only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SegmentationTask", "TASKS", "data_root", "sample_dir", "DataError", "DATA_ENV"]

DATA_ENV = "LIGHTM_EDU_DATA"
_SAMPLE_ROOT = Path(__file__).resolve().parent / "sample"


class DataError(ValueError):
    """A data set on disk is not what a task expects (message: which files, what is wrong, the fix).

    ``problems`` holds one line per problem, when there are several.
    """

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


@dataclass(frozen=True)
class SegmentationTask:
    """One segmentation data set and how to turn its files into training samples.

    Attributes:
        name: short name, the key in :data:`TASKS`.
        folder: folder name of the data set under ``LIGHTM_EDU_DATA``.
        layout: "png" (images/ + masks/) or "decathlon" (imagesTr/ + labelsTr/, .nii.gz).
        spatial_dims: 2 (images (h, w)) or 3 (volumes (d, h, w)).
        in_channels: image channels after loading (1: grayscale / single MRI sequence).
        class_names: one name per class index, background first.
        label_values: raw mask value of each class, in the order of ``class_names``.
        patch_size: spatial size of one training sample (divisible by 8: LightM-UNet pools 3 times).
        image_size: 2D: (h, w) that every image is resized to; None: no resizing.
        intensity: "scale_0_255" or "zscore_nonzero" (see the module glossary).
        spacing_mm: voxel spacing of the data on disk (informational; no resampling is done).
        description, license, citation: what the data is, its license, whom to cite.
    """

    name: str
    folder: str
    layout: str
    spatial_dims: int
    in_channels: int
    class_names: tuple[str, ...]
    label_values: tuple[int, ...]
    patch_size: tuple[int, ...]
    intensity: str
    description: str
    license: str
    citation: str
    image_size: tuple[int, ...] | None = None
    spacing_mm: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.layout not in ("png", "decathlon"):
            raise ValueError(f"task {self.name!r}: layout must be 'png' or 'decathlon', got {self.layout!r}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"task {self.name!r}: spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.class_names) != len(self.label_values):
            raise ValueError(f"task {self.name!r}: {len(self.class_names)} class names but "
                             f"{len(self.label_values)} label values; give one raw value per class")
        if len(set(self.label_values)) != len(self.label_values):
            raise ValueError(f"task {self.name!r}: label_values {self.label_values} repeat a value")
        for field in ("patch_size", "image_size"):
            size = getattr(self, field)
            if size is not None and len(size) != self.spatial_dims:
                raise ValueError(f"task {self.name!r}: {field} {size} must have {self.spatial_dims} entries")
        if self.intensity not in ("scale_0_255", "zscore_nonzero"):
            raise ValueError(f"task {self.name!r}: intensity must be 'scale_0_255' or 'zscore_nonzero', "
                             f"got {self.intensity!r}")

    @property
    def n_classes(self) -> int:
        """Number of classes, background included (the network's output channels)."""
        return len(self.class_names)


TASKS: dict[str, SegmentationTask] = {
    "cxr_lung": SegmentationTask(
        name="cxr_lung",
        folder="cxr-lung-covid19radiography-viralpneumonia",
        layout="png",
        spatial_dims=2,
        in_channels=1,
        class_names=("background", "lung"),
        label_values=(0, 255),
        patch_size=(256, 256),
        image_size=(256, 256),
        intensity="scale_0_255",
        description=("2D chest X-ray lung segmentation: 256x256 8-bit grayscale radiographs (paediatric "
                     "viral pneumonia class of the COVID-19 Radiography Database) with binary lung masks "
                     "(255 = lung, both lungs together)."),
        license=("Radiographs CC BY 4.0 (Kermany et al.); the lung masks carry no stated license. Use for "
                 "teaching and research with citation; do not redistribute."),
        citation=("M.E.H. Chowdhury et al., 'Can AI help in screening Viral and COVID-19 pneumonia?', IEEE "
                  "Access 8 (2020) 132665-132676, doi:10.1109/ACCESS.2020.3010287; T. Rahman et al., "
                  "'Exploring the effect of image enhancement techniques on COVID-19 detection using chest "
                  "X-ray images', Computers in Biology and Medicine 132 (2021) 104319, "
                  "doi:10.1016/j.compbiomed.2021.104319; D. Kermany, K. Zhang, M. Goldbaum, Mendeley Data v2 "
                  "(2018), doi:10.17632/rscbjbr9sj.2."),
    ),
    "hippocampus": SegmentationTask(
        name="hippocampus",
        folder="msd-task04-hippocampus",
        layout="decathlon",
        spatial_dims=3,
        in_channels=1,
        class_names=("background", "anterior", "posterior"),
        label_values=(0, 1, 2),
        # Cases are 31-43 x 40-59 x 24-47 voxels: this patch covers most of a case; smaller cases
        # are padded, larger ones cropped (foreground-oversampled) during training.
        patch_size=(32, 48, 32),
        intensity="zscore_nonzero",
        spacing_mm=(1.0, 1.0, 1.0),
        description=("3D MRI hippocampus segmentation (Medical Segmentation Decathlon, Task04): volumes "
                     "cropped around one hippocampus, 1 mm voxels, labels 1 = anterior (head), "
                     "2 = posterior (body and tail)."),
        license="CC BY-SA 4.0",
        citation=("A.L. Simpson et al., 'A large annotated medical image dataset for the development and "
                  "evaluation of segmentation algorithms', arXiv:1902.09063 (2019); M. Antonelli et al., "
                  "'The Medical Segmentation Decathlon', Nature Communications 13, 4128 (2022), "
                  "doi:10.1038/s41467-022-30695-9."),
    ),
}

_FOLDERS = ", ".join(f"{task.folder}/" for task in TASKS.values())


def data_root(required: bool = True) -> Path | None:
    """The folder that holds the data sets, named by the environment variable ``LIGHTM_EDU_DATA``.

    It is read only: nothing in this package writes into it.

    Args:
        required: when the variable is unset, raise (True) or return None (False).

    Raises:
        DataError: the variable is unset (and ``required``).
        FileNotFoundError: it names something that is not an existing folder.
    """
    value = os.environ.get(DATA_ENV, "").strip()
    if not value:
        if not required:
            return None
        raise DataError(
            f"{DATA_ENV} is not set: it must name the folder that holds the data sets ({_FOLDERS}). "
            f"Set it before starting Python (export {DATA_ENV}=/path/to/data) or in a notebook "
            f"(os.environ['{DATA_ENV}'] = '/path/to/data'); without the data, use the built-in "
            "hippocampus sample: lightm_edu.data.sample_dir().")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{DATA_ENV}={value} is not an existing folder: point {DATA_ENV} at the folder that holds "
            f"the data sets ({_FOLDERS}).")
    return root


def sample_dir(task_name: str = "hippocampus") -> Path:
    """The built-in sample of a task: a few unmodified cases shipped with the package.

    Only the hippocampus task has one (6 cases, CC BY-SA 4.0; see README.md in that folder). The
    chest X-ray masks carry no license that allows redistribution, so they are not shipped.
    """
    if task_name not in TASKS:
        raise ValueError(f"unknown task {task_name!r}: choose one of {sorted(TASKS)}")
    folder = _SAMPLE_ROOT / TASKS[task_name].folder
    if not folder.is_dir():
        raise FileNotFoundError(
            f"there is no built-in sample for task {task_name!r} (its license does not allow shipping "
            f"the files): set {DATA_ENV} to the folder that holds {TASKS[task_name].folder}/.")
    return folder
