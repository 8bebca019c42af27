"""Verify the data sets under LIGHTM_EDU_DATA against their MANIFEST.sha256 files (read-only).

    python data_download/verify_checksums.py [DATASET ...]

Exit status 0 when every listed file exists and matches; 1 otherwise, with one line per problem.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path


def sha256(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def verify(folder: Path) -> list[str]:
    """Problems found in one data set folder (empty when all is well)."""
    manifest = folder / "MANIFEST.sha256"
    if not manifest.is_file():
        return [f"{folder.name}: no MANIFEST.sha256; is this a data set folder?"]
    problems = []
    for number, line in enumerate(manifest.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        expected, _, name = line.partition("  ")
        name = name.lstrip("*")
        target = (folder / name).resolve()
        if folder.resolve() not in target.parents:  # a manifest must not point outside its folder
            problems.append(f"{folder.name}: line {number} names a path outside the folder: {name!r}")
        elif not target.is_file():
            problems.append(f"{folder.name}: missing file {name}")
        elif sha256(target) != expected:
            problems.append(f"{folder.name}: checksum mismatch for {name} (file altered or truncated; "
                            "fetch a fresh copy)")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="*", help="data set folder names (default: all)")
    args = parser.parse_args()
    root = os.environ.get("LIGHTM_EDU_DATA")
    if not root:
        print("LIGHTM_EDU_DATA is not set: point it at the folder that holds the data sets, e.g. "
              "export LIGHTM_EDU_DATA=/path/to/data", file=sys.stderr)
        return 1
    root_path = Path(root)
    if not root_path.is_dir():
        print(f"LIGHTM_EDU_DATA={root} is not a folder.", file=sys.stderr)
        return 1
    names = args.datasets or sorted(p.name for p in root_path.iterdir() if (p / "MANIFEST.sha256").is_file())
    if not names:
        print(f"No data set folders (with MANIFEST.sha256) under {root}.", file=sys.stderr)
        return 1
    failed = False
    for name in names:
        problems = verify(root_path / name)
        failed |= bool(problems)
        print(f"{name}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        for problem in problems:
            print(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
