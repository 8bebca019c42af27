"""Download the paper's data sets and lay them out the way lightm_edu reads them.

    python data_download/download.py --list                      what can be fetched, from where
    python data_download/download.py NAME --root DIR [--size N]  fetch, check, unpack, convert

NAME is one of montgomery, shenzhen, lits, hippocampus. The data set lands in DIR/<folder>/ (with
README.md and MANIFEST.sha256), the downloaded archives in DIR/downloads/. An interrupted
download resumes when run again. Point LIGHTM_EDU_DATA at DIR to use the result.

Exit status: 0 done, 1 failed (the message says why and what to do), 2 wrong arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from lightm_edu import download as dl
except ImportError:  # run from a clone without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lightm_edu import download as dl


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", choices=sorted(dl.DATASETS), metavar="NAME",
                        help=f"the data set to prepare: {', '.join(dl.DATASETS)}")
    parser.add_argument("--list", action="store_true", help="describe every data set (sources, checksums, "
                        "accounts, license, citation) and exit")
    parser.add_argument("--root", help="folder that receives <folder>/ and downloads/ (required with NAME)")
    parser.add_argument("--size", type=int, default=256, help="2D data sets: side of the square images and "
                        "masks (default 256; 0 keeps the size of the source)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")
    parser.add_argument("--delete-downloads", action="store_true", help="delete the archives once the data "
                        "set folder is complete")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)

    if args.list:
        print("\n\n".join(dl.describe(name) for name in dl.DATASETS))
        return 0
    if args.name is None:
        parser.error("give a data set NAME (or --list to see them)")
    if not args.root:
        parser.error("--root DIR is required: the folder that receives the data set")
    if args.size < 0:
        parser.error("--size must be a positive number of pixels, or 0 to keep the source size")
    try:
        folder = dl.prepare(args.name, args.root, image_size=args.size or None, progress=not args.no_progress,
                            timeout=args.timeout, keep_downloads=not args.delete_downloads)
    except (dl.DownloadError, dl.ArchiveError, dl.KaggleCredentialsError, dl.DatasetLayoutError,
            FileExistsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nInterrupted; run the same command again to resume the download.", file=sys.stderr)
        return 1
    print(f"{args.name}: ready in {folder} (export LIGHTM_EDU_DATA={Path(args.root).expanduser()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
