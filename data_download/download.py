"""Download the paper's data sets and lay them out the way lightm_edu reads them.

    python data_download/download.py --list                      what can be fetched, from where
    python data_download/download.py NAME --root DIR [--size N]  fetch, check, unpack, convert

The same as ``lightm-edu download`` (see ``lightm_edu.cli``), for a clone without the command
installed. NAME is one of montgomery, shenzhen, lits, hippocampus. The data set lands in
DIR/<folder>/ (with README.md and MANIFEST.sha256), the downloaded archives in DIR/downloads/. An
interrupted download resumes when run again. Point LIGHTM_EDU_DATA at DIR to use the result.

Exit status: 0 done, 1 failed (the message says why and what to do), 2 wrong arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from lightm_edu import cli
except ImportError:  # run from a clone without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from lightm_edu import cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_download_arguments(parser)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
