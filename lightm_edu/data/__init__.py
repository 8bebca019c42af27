"""Data for the book's two segmentation tasks: find the cases, check them, split them, transform them.

    TASKS, SegmentationTask            the chest X-ray (2D) and hippocampus MRI (3D) tasks  (tasks.py)
    data_root(), sample_dir()          where the data is: LIGHTM_EDU_DATA, or the built-in sample
    find_cases, check_cases, DataError list image/mask pairs; check every file          (cases.py)
    make_split, save_split, load_split train / val / test ids, reproducible              (splits.py)
    train_transforms, eval_transforms, make_dataset
                                       MONAI pipelines and datasets                     (transforms.py)

Chapter 7 uses all of them, in this order::

    task = TASKS["hippocampus"]
    cases = find_cases(data_root() / task.folder)      # or find_cases(sample_dir())
    check_cases(cases, task)
    split = make_split([c["case_id"] for c in cases], seed=0)
    train = make_dataset([c for c in cases if c["case_id"] in split["train"]], train_transforms(task))

Importing this package imports neither MONAI nor torch; the transforms do, on first use.
"""

from __future__ import annotations

import importlib

from .cases import check_cases, find_cases
from .splits import load_split, make_split, save_split
from .tasks import TASKS, DataError, SegmentationTask, data_root, sample_dir

_LAZY = {name: "lightm_edu.data.transforms" for name in ("train_transforms", "eval_transforms", "make_dataset")}

__all__ = sorted(["TASKS", "SegmentationTask", "DataError", "data_root", "sample_dir", "find_cases",
                  "check_cases", "make_split", "save_split", "load_split", *_LAZY])


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lightm_edu.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
