"""Helpers the book's chapters share: show package source code, and place figures.

    show_source(obj)    display the source of a package function or class, as it is in the package
    glue(name, fig)     hand a figure to the book (which places it with a caption), or show it here
    fast_mode(FAST)     whether a chapter runs its short version (a few minutes on a 2-core CPU)
    pick_device()       the GPU when there is one, else the CPU
    repository_file(p)  a committed file of the book's repository (checkpoint, config, result):
                        from the clone the chapter runs in, else downloaded and checksum-verified

In the built book (the build sets ``LIGHTM_EDU_BOOK_BUILD=1``) figures are stored with
``myst_nb.glue`` and placed by ``{glue:figure}`` directives with their captions; anywhere else
(Colab, a local notebook) they are simply displayed where they are made.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

__all__ = ["show_source", "glue", "in_book_build", "fast_mode", "pick_device", "repository_file",
           "REPOSITORY_URL", "repository_checksums"]

#: Where committed files are fetched from when the chapter does not run inside a clone (e.g. Colab).
REPOSITORY_URL = "https://github.com/lightm-edu/lightm_edu/raw/main/"


def in_book_build() -> bool:
    """True while the book is being built (``LIGHTM_EDU_BOOK_BUILD`` is set to a non-empty value
    other than "0")."""
    return os.environ.get("LIGHTM_EDU_BOOK_BUILD", "") not in ("", "0")


def show_source(obj) -> None:
    """Display the source code of ``obj`` with syntax highlighting, so the book cannot drift from
    the package."""
    from IPython.display import Code, display

    display(Code(inspect.getsource(obj), language="python"))


def glue(name: str, obj) -> None:
    """Give ``obj`` (e.g. a matplotlib figure) to the book under ``name``, or display it."""
    if in_book_build():
        from myst_nb import glue as myst_glue

        myst_glue(name, obj, display=False)
    else:
        from IPython.display import display

        display(obj)


def fast_mode(requested: bool | None = None) -> bool:
    """Whether a chapter should run its short version.

    In order: ``requested`` (a chapter's papermill ``parameters`` cell sets ``FAST``), then the
    environment variable ``LIGHTM_EDU_FAST`` ("1"/"0"), then: short on a CPU, full on a GPU.
    """
    if requested is not None:
        return bool(requested)
    value = os.environ.get("LIGHTM_EDU_FAST", "").strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    if value:
        raise ValueError(f"LIGHTM_EDU_FAST={value!r}: use 1 (short runs) or 0 (full runs).")
    import torch

    return not torch.cuda.is_available()


def pick_device():
    """``torch.device("cuda")`` when a GPU is present, else ``torch.device("cpu")``."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def repository_checksums() -> dict:
    """{path relative to the repository root: sha256} of the committed files the chapters use
    (``repository_files.sha256`` in the package, in ``sha256sum`` format)."""
    manifest = Path(__file__).with_name("repository_files.sha256")
    entries = {}
    for line in manifest.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name.lstrip("*")] = digest
    return entries


def repository_file(relative: str, cache_dir="lightm_edu_files") -> Path:
    """A committed file of the book's repository (``checkpoints/...``, ``configs/...``,
    ``results/...``).

    Found by walking up from the current folder (a chapter run inside a clone); otherwise
    downloaded once into ``cache_dir`` from :data:`REPOSITORY_URL` and used only if its sha256
    equals the one recorded in the package (:func:`repository_checksums`).
    """
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / relative).is_file():
            return folder / relative
    checksums = repository_checksums()
    if relative not in checksums:
        raise FileNotFoundError(f"{relative} is not in this folder or above it, and it is not one of the "
                                f"repository files with a recorded checksum ({', '.join(sorted(checksums))}).")
    from .download import download

    # download() writes to a .part file and renames it only after the checksum matched.
    return download(REPOSITORY_URL + relative, Path(cache_dir).resolve() / relative, sha256=checksums[relative],
                    progress=False)
