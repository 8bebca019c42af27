"""Splitting case ids into train / validation / test sets, reproducibly, and saving the split.

    split       {"seed": int, "train": [ids], "val": [ids], "test": [ids],
                 "counts": {"train": n, "val": n, "test": n}}; the three lists are disjoint and
                 together hold every case id
    seed        the seed of ``random.Random``: the same ids and seed give the same split on every
                machine and Python version

Chapter 7 makes one split per data set and saves it as JSON next to the training outputs, so that
a test set stays the test set across runs. Splits are never written into ``LIGHTM_EDU_DATA``.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from .._atomic import atomic_output
from .tasks import DATA_ENV, DataError

__all__ = ["make_split", "save_split", "load_split", "SPLIT_PARTS"]

SPLIT_PARTS = ("train", "val", "test")


def _check_ids(case_ids, what: str) -> list[str]:
    if isinstance(case_ids, (str, bytes)) or not hasattr(case_ids, "__iter__"):
        raise TypeError(f"{what} must be a list of case id strings, got {type(case_ids).__name__}")
    ids = list(case_ids)
    wrong = [i for i in ids if not isinstance(i, str)]
    if wrong:
        raise TypeError(f"{what}: case ids must be strings, got {wrong[:5]!r}")
    seen, repeated = set(), set()
    for i in ids:
        (repeated if i in seen else seen).add(i)
    if repeated:
        raise DataError(f"{what}: case ids appear more than once: {sorted(repeated)[:20]}")
    return ids


def _count(n_total: int, count, fraction, part: str, default_fraction: float) -> int:
    if count is not None and fraction is not None:
        raise ValueError(f"give n_{part} or {part}_fraction, not both")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"n_{part} must be a whole number >= 0, got {count!r}")
        return count
    fraction = default_fraction if fraction is None else fraction
    if not 0 <= fraction < 1:
        raise ValueError(f"{part}_fraction must be in [0, 1), got {fraction!r}")
    return round(fraction * n_total)


def make_split(case_ids, n_test: int | None = None, n_val: int | None = None,
               test_fraction: float | None = None, val_fraction: float | None = None, seed: int = 0) -> dict:
    """Shuffle case ids with ``random.Random(seed)`` and cut them into test, val and train.

    Give each part's size as a count (``n_test``, ``n_val``) or a fraction of all cases
    (``test_fraction``, ``val_fraction``; rounded), not both; by default 20 % test and 10 % val.
    The ids are sorted before shuffling, so their input order does not matter, and the test set
    is drawn first, so it does not change when only the validation size changes.

    Returns:
        {"seed", "train", "val", "test", "counts"}; each list sorted.
    """
    ids = sorted(_check_ids(case_ids, "case_ids"))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    test = _count(len(ids), n_test, test_fraction, "test", 0.2)
    val = _count(len(ids), n_val, val_fraction, "val", 0.1)
    if test + val >= len(ids):
        raise ValueError(f"{test} test + {val} val cases leave no training case out of {len(ids)}: "
                         "ask for smaller test/val sets")
    random.Random(seed).shuffle(ids)
    split = {"seed": seed, "test": sorted(ids[:test]), "val": sorted(ids[test:test + val]),
             "train": sorted(ids[test + val:])}
    return _with_counts(split)


def _with_counts(split: dict) -> dict:
    out = {"seed": split.get("seed")}
    out.update({part: list(split[part]) for part in SPLIT_PARTS})
    out["counts"] = {part: len(split[part]) for part in SPLIT_PARTS}
    return out


def _validate(split, where: str, case_ids=None) -> dict:
    """The split with recomputed counts; DataError naming the problem otherwise."""
    if not isinstance(split, dict):
        raise DataError(f"{where}: a split must be a JSON object with keys {list(SPLIT_PARTS)}, "
                        f"got {type(split).__name__}")
    missing = [part for part in SPLIT_PARTS if part not in split]
    if missing:
        raise DataError(f"{where}: the split has no {', '.join(repr(m) for m in missing)} list; a split holds "
                        f"{list(SPLIT_PARTS)} (make one with make_split)")
    for part in SPLIT_PARTS:
        if not isinstance(split[part], list) or not all(isinstance(i, str) for i in split[part]):
            raise DataError(f"{where}: {part!r} must be a list of case id strings")
        _check_ids(split[part], f"{where}: {part!r}")
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(split[a]) & set(split[b]))
        if shared:
            raise DataError(f"{where}: {len(shared)} case(s) are in both {a!r} and {b!r}: {shared[:20]}; "
                            "the parts of a split must be disjoint (make a new one with make_split)")
    if case_ids is not None:
        known = set(_check_ids(case_ids, "case_ids"))
        in_split = set().union(*(split[part] for part in SPLIT_PARTS))
        if unknown := sorted(in_split - known):
            raise DataError(f"{where}: {len(unknown)} case(s) of the split are not in the data set: "
                            f"{unknown[:20]}; is it the split of another data set?")
        if left_out := sorted(known - in_split):
            raise DataError(f"{where}: {len(left_out)} case(s) of the data set are in no part of the split: "
                            f"{left_out[:20]}; make a new split with make_split, or pass only the case ids "
                            "the split is meant for")
    return _with_counts(split)


def save_split(split: dict, path) -> Path:
    """Write a split as JSON, atomically: a temporary file in the same folder, then ``os.replace``.

    Refuses to write inside ``LIGHTM_EDU_DATA`` (read only). Returns the path written.
    """
    path = Path(path).expanduser()
    split = _validate(split, "split to save")
    root = os.environ.get(DATA_ENV, "").strip()
    if root and Path(root).expanduser().resolve() in (path.resolve(), *path.resolve().parents):
        raise ValueError(f"{path} is inside {DATA_ENV}, which is read only: save the split elsewhere "
                         "(e.g. next to the training outputs)")
    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8") as f:
        json.dump(split, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return path


def load_split(path, case_ids=None) -> dict:
    """Read and validate a split saved by :func:`save_split`.

    Args:
        path: the JSON file.
        case_ids: the ids of the data set it is for; when given, every id of the split must be one
            of them and every one of them must be in the split.

    Raises:
        FileNotFoundError: no such file.
        DataError: not JSON, a part missing or not a list of strings, parts overlapping, ids repeated,
            ids unknown to or missing from ``case_ids``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist: make one with make_split and save_split")
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a valid JSON split file ({error}); make a new one with make_split and "
                        "save_split") from None
    return _validate(split, str(path), case_ids)
