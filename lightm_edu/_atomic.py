"""One way to write a file so that no half-written file is ever left under its final name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds, delete
    it when the block fails. ``suffix`` ends the temporary name (e.g. ".nii.gz" for writers that
    choose the format from the name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        # mkstemp makes the file private (0600); give it the permissions an ordinary new file gets.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
