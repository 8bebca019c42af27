"""Fetch the paper's data sets, check them, and lay them out the way lightm_edu reads them.

    source        one file to fetch: URL, file name, published checksum (or None), account needed
    dataset       a registry entry (:data:`DATASETS`): its sources, license, citation, and how
                  prepare() turns the downloaded archives into the project layout
    .part         a download in progress: ``<file>.part`` next to the final name; it is renamed to
                  the final name only after the whole file has arrived and its checksum matched
    resume        an interrupted download goes on from the end of its .part file with an HTTP
                  ``Range: bytes=<size>-`` request (answer 206); a server that ignores it (answer
                  200) sends the whole file again, which then replaces the .part file
    sha256 / md5  checksums; a file with a published checksum is used only once it matches
    layout "png"        <folder>/images/<case>.png (8-bit grey) + <folder>/masks/<case>.png
                        (0 = background, 255 = lung), same file name (2D chest X-rays)
    layout "decathlon"  <folder>/imagesTr/<case>.nii.gz + <folder>/labelsTr/<case>.nii.gz
                        (the Medical Segmentation Decathlon layout, 3D)

    DATASETS                              name -> Dataset (montgomery, shenzhen, lits, hippocampus)
    describe(name)                        sources, checksums, account, license and citation, as text
    download(url, target_path, sha256=None, resume=True, progress=True, timeout=60.0)
                                          one file: streamed, resumable, checked, renamed when complete
    extract(archive, target_dir)          .tar/.tar.gz/.tgz/.zip with path-traversal protection
    prepare(name, root)                   download + check + extract + convert into root/<folder>
    kaggle_credentials()                  (username, key) of the Kaggle API token, or instructions

Chapter 7 uses them to fetch the real data of the paper (Montgomery + Shenzhen chest X-rays,
LiTS); the shared data sets under ``LIGHTM_EDU_DATA`` need no download.

Downloads use the standard library (urllib) rather than pooch because resuming needs HTTP Range
requests, which pooch does not make. Archives are unpacked with tarfile's ``filter="data"`` (no
absolute paths, no ``..``, no links or devices pointing outside) and with every zip member name
checked before anything is written.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import socket
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Source", "Dataset", "DATASETS", "describe", "download", "extract", "prepare", "kaggle_credentials",
    "file_sha256", "DownloadError", "ChecksumError", "ArchiveError", "KaggleCredentialsError",
    "DatasetLayoutError",
]

_CHUNK = 1 << 20  # bytes read and written at a time
_USER_AGENT = "lightm_edu-download/0.1 (Python urllib)"
_NO_CHECKSUM = ("no published checksum; the file's sha256 is printed after download so you can pin it")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

class DownloadError(RuntimeError):
    """A file could not be downloaded (the message names the URL, the target and the way out)."""


class ChecksumError(DownloadError):
    """A downloaded or already present file does not match its published checksum."""


class ArchiveError(ValueError):
    """An archive is damaged, of an unknown kind, or holds a member that would land outside."""


class KaggleCredentialsError(RuntimeError):
    """A Kaggle source was asked for, but no Kaggle API token is configured (message: how to)."""


class DatasetLayoutError(ValueError):
    """The unpacked archives are not laid out as expected (message: which files, what is wrong)."""


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """One file that a data set is made from.

    Attributes:
        role: what the file holds for prepare(): "archive" (everything), "images" or "masks".
        url: where to download it.
        file_name: the name it is saved under (in ``<root>/downloads/``).
        sha256, md5: the published checksum (hex), or None where none is published.
        checksum_source: who publishes the checksum (empty when there is none).
        account: None (anyone may download) or "kaggle" (needs a Kaggle API token).
        page: the human-readable page of the source (manual download, terms).
        approx_size: rough size to expect, for disk planning only (never checked).
    """

    role: str
    url: str
    file_name: str
    sha256: str | None = None
    md5: str | None = None
    checksum_source: str = ""
    account: str | None = None
    page: str = ""
    approx_size: str = ""

    @property
    def checksum_text(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256} ({self.checksum_source})"
        if self.md5:
            return f"md5 {self.md5} ({self.checksum_source})"
        return _NO_CHECKSUM


@dataclass(frozen=True)
class Dataset:
    """A data set of the paper: where it comes from and what prepare() makes of it.

    Attributes:
        name: key in :data:`DATASETS` (what the command line takes).
        title: full name.
        folder: the folder prepare() creates under its ``root`` (the data set folder to read).
        layout: "png" (2D: images/ + masks/) or "decathlon" (3D: imagesTr/ + labelsTr/).
        sources: the files to download.
        converter: which conversion prepare() applies ("montgomery", "shenzhen", "decathlon").
        cases: what the prepared folder holds.
        labels: what the mask values mean.
        preparation: what prepare() does, in words.
        license: the terms, as published (check them before redistributing anything).
        citation: the papers to cite.
    """

    name: str
    title: str
    folder: str
    layout: str
    sources: tuple[Source, ...]
    converter: str
    cases: str
    labels: str
    preparation: str
    license: str
    citation: tuple[str, ...]

    @property
    def accounts(self) -> tuple[str, ...]:
        """The accounts needed to download every source (empty: none)."""
        return tuple(sorted({s.account for s in self.sources if s.account}))


_NLM_PAGE = "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets"
_NLM_TERMS = ("No license file. The U.S. National Library of Medicine makes the set publicly available "
              "for research and teaching (de-identified, exempt from IRB review) and asks users to cite "
              "the papers below; check the NLM page before redistributing.")
_CITE_NLM = (
    "S. Jaeger, S. Candemir, S. Antani, Y.-X. J. Wang, P.-X. Lu, G. Thoma, \"Two public chest X-ray "
    "datasets for computer-aided screening of pulmonary diseases\", Quant. Imaging Med. Surg. 4(6): "
    "475-477 (2014), doi:10.3978/j.issn.2223-4292.2014.11.20",
    "S. Candemir, S. Jaeger, K. Palaniappan, et al., \"Lung segmentation in chest radiographs using "
    "anatomical atlases with nonrigid registration\", IEEE Trans. Med. Imaging 33(2): 577-590 (2014), "
    "doi:10.1109/TMI.2013.2290491",
    "S. Jaeger, A. Karargyris, S. Candemir, et al., \"Automatic tuberculosis screening using chest "
    "radiographs\", IEEE Trans. Med. Imaging 33(2): 233-245 (2014), doi:10.1109/TMI.2013.2284099",
)
_CITE_MSD = (
    "A. L. Simpson et al., \"A large annotated medical image dataset for the development and evaluation "
    "of segmentation algorithms\", arXiv:1902.09063 (2019)",
    "M. Antonelli et al., \"The Medical Segmentation Decathlon\", Nature Communications 13, 4128 (2022), "
    "doi:10.1038/s41467-022-30695-9",
)
_MSD_MIRROR = "https://msd-for-monai.s3-us-west-2.amazonaws.com/"
_MSD_CHECKSUM = "published by MONAI for this mirror (monai.apps.DecathlonDataset)"
_MSD_LICENSE = ("CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/), as stated by the Medical "
                "Segmentation Decathlon and in the archive's dataset.json; attribution: the citations; "
                "share-alike applies to redistributed or adapted data.")
_MSD_PREPARATION = (
    "Unpacks the Decathlon tarball and moves imagesTr/, labelsTr/, imagesTs/ (test images, no labels) "
    "and dataset.json into the data set folder, byte for byte (no conversion). Removes the macOS "
    "'._*' resource-fork files that the tarball carries (they are not NIfTI files; their number is "
    "written to the README). Checks that every training image has a label of the same name and that "
    "their number matches numTraining in dataset.json.")
_CXR_PREPARATION = (
    "Converts every image to 8-bit grey (16-bit images are stretched linearly from their own minimum "
    "and maximum to 0-255; colour images use PIL's luminance) and resizes it to image_size x image_size "
    "(Lanczos; the aspect ratio is not kept, as in the shared chest X-ray set). Masks are binarised "
    "(a pixel is lung when it is above half the mask's maximum), {masks}, resized on the same grid "
    "(bilinear, then >= 128) and stored as 0/255. provenance.csv records each source file, its sha256 "
    "and its original size, so predictions can be mapped back.")

DATASETS: dict[str, Dataset] = {
    "montgomery": Dataset(
        name="montgomery",
        title="Montgomery County chest X-ray set (NLM), with manual left/right lung masks",
        folder="cxr-lung-montgomery",
        layout="png",
        sources=(Source(
            role="archive",
            url="https://openi.nlm.nih.gov/imgs/collections/NLM-MontgomeryCXRSet.zip",
            file_name="NLM-MontgomeryCXRSet.zip",
            page=_NLM_PAGE + " (the same files, one by one: https://data.lhncbc.nlm.nih.gov/public/"
                 "Tuberculosis-Chest-X-ray-Datasets/Montgomery-County-CXR-Set/MontgomerySet/index.html)",
            approx_size="about 0.6 GB",
        ),),
        converter="montgomery",
        cases="138 posterior-anterior chest X-rays (80 normal, 58 tuberculosis; the file name ends in "
              "_0 or _1), MCUCXR_<NNNN>_<0|1>.png in images/ and masks/",
        labels="0 = background, 255 = lung (left and right together)",
        preparation=_CXR_PREPARATION.format(masks="the left and right lung masks (ManualMask/leftMask, "
                                                  "ManualMask/rightMask) are combined into one"),
        license=_NLM_TERMS,
        citation=_CITE_NLM,
    ),
    "shenzhen": Dataset(
        name="shenzhen",
        title="Shenzhen Hospital chest X-ray set (NLM), with the lung masks of Stirenko et al. (Kaggle)",
        folder="cxr-lung-shenzhen",
        layout="png",
        sources=(
            Source(
                role="images",
                url="https://openi.nlm.nih.gov/imgs/collections/ChinaSet_AllFiles.zip",
                file_name="ChinaSet_AllFiles.zip",
                page=_NLM_PAGE + " (the same files, one by one: https://data.lhncbc.nlm.nih.gov/public/"
                     "Tuberculosis-Chest-X-ray-Datasets/Shenzhen-Hospital-CXR-Set/index.html)",
                approx_size="about 3.8 GB",
            ),
            Source(
                role="masks",
                url="https://www.kaggle.com/api/v1/datasets/download/yoctoman/shcxr-lung-mask",
                file_name="shcxr-lung-mask.zip",
                account="kaggle",
                page="https://www.kaggle.com/datasets/yoctoman/shcxr-lung-mask",
            ),
        ),
        converter="shenzhen",
        cases="the 566 of the 662 X-rays (326 normal, 336 tuberculosis) that have a lung mask, "
              "CHNCXR_<NNNN>_<0|1>.png in images/ and masks/; the others are listed in "
              "images_without_mask.txt",
        labels="0 = background, 255 = lung (left and right together)",
        preparation=_CXR_PREPARATION.format(masks="the lung mask CHNCXR_<NNNN>_<k>_mask.png is matched "
                                                  "to the image of the same number")
                    + " Images without a mask are not converted; their names go to images_without_mask.txt.",
        license=_NLM_TERMS + " The lung masks (made at the Igor Sikorsky Kyiv Polytechnic Institute) are "
                "published separately, listed as CC BY-NC-SA 4.0 (non-commercial, share-alike): confirm "
                "on their Kaggle page.",
        citation=_CITE_NLM + (
            "S. Stirenko, Y. Kochura, O. Alienin, et al., \"Chest X-ray analysis of tuberculosis by deep "
            "learning with segmentation and augmentation\", IEEE ELNANO 2018, 422-428, "
            "doi:10.1109/ELNANO.2018.8477564 (the lung masks)",),
    ),
    "lits": Dataset(
        name="lits",
        title="LiTS liver and liver-tumour CT, as Task03_Liver of the Medical Segmentation Decathlon",
        folder="msd-task03-liver",
        layout="decathlon",
        sources=(Source(
            role="archive",
            url=_MSD_MIRROR + "Task03_Liver.tar",
            file_name="Task03_Liver.tar",
            md5="a90ec6c4aa7f6a3d087205e23d4e6397",
            checksum_source=_MSD_CHECKSUM,
            page="http://medicaldecathlon.com/ (original: Google Drive links on that page)",
            approx_size="tens of GB once unpacked; check the free disk space first",
        ),),
        converter="decathlon",
        cases="131 labelled contrast-enhanced abdominal CT volumes (imagesTr/, labelsTr/; the LiTS "
              "training set) and 70 unlabelled test volumes (imagesTs/)",
        labels="0 = background, 1 = liver, 2 = tumour",
        preparation=_MSD_PREPARATION,
        license=_MSD_LICENSE,
        citation=(
            "P. Bilic et al., \"The Liver Tumor Segmentation Benchmark (LiTS)\", Medical Image Analysis 84, "
            "102680 (2023), doi:10.1016/j.media.2022.102680",) + _CITE_MSD,
    ),
    "hippocampus": Dataset(
        name="hippocampus",
        title="Hippocampus MRI, Task04_Hippocampus of the Medical Segmentation Decathlon (all cases)",
        folder="msd-task04-hippocampus-full",
        layout="decathlon",
        sources=(Source(
            role="archive",
            url=_MSD_MIRROR + "Task04_Hippocampus.tar",
            file_name="Task04_Hippocampus.tar",
            md5="9d24dba78a72977dbd1d2e110310f31b",
            checksum_source=_MSD_CHECKSUM,
            page="http://medicaldecathlon.com/ (original: Google Drive links on that page)",
            approx_size="a few tens of MB",
        ),),
        converter="decathlon",
        cases="260 labelled T1-weighted MRI crops around the hippocampus (imagesTr/, labelsTr/) and the "
              "unlabelled test crops (imagesTs/). A different folder name from the shared 200-case split "
              "(msd-task04-hippocampus), which is a subset of these",
        labels="0 = background, 1 = anterior hippocampus, 2 = posterior hippocampus",
        preparation=_MSD_PREPARATION,
        license=_MSD_LICENSE,
        citation=_CITE_MSD,
    ),
}


def _dataset(name) -> Dataset:
    if isinstance(name, Dataset):
        return name
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)} "
                         "(python data_download/download.py --list describes them).")
    return DATASETS[name]


def describe(name) -> str:
    """Everything known about one data set (a name in :data:`DATASETS` or a Dataset), as text."""
    ds = _dataset(name)
    lines = [f"{ds.name}: {ds.title}",
             f"  folder:    {ds.folder}/  (layout {ds.layout!r})",
             f"  cases:     {ds.cases}",
             f"  labels:    {ds.labels}",
             f"  account:   {', '.join(ds.accounts) + ' (API token, see below)' if ds.accounts else 'none needed'}"]
    for source in ds.sources:
        lines += [f"  source ({source.role}): {source.url}",
                  f"      file:     {source.file_name}" + (f"  ({source.approx_size})" if source.approx_size else ""),
                  f"      checksum: {source.checksum_text}",
                  f"      account:  {source.account or 'none'}"]
        if source.page:
            lines.append(f"      page:     {source.page}")
    lines += [f"  prepare:   {ds.preparation}", f"  license:   {ds.license}", "  cite:"]
    lines += [f"    - {c}" for c in ds.citation]
    if ds.accounts:
        lines.append("  Kaggle token: " + _KAGGLE_HOWTO.replace("\n", "\n    "))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Kaggle
# --------------------------------------------------------------------------------------------

_KAGGLE_HOWTO = """Kaggle needs a free account and an API token; nothing is downloaded without it.
  1. Sign in at https://www.kaggle.com, open https://www.kaggle.com/settings and, under "API",
     create a token: Kaggle gives you a file kaggle.json that holds your "username" and "key".
  2. Either save it as ~/.kaggle/kaggle.json (on Linux/macOS: chmod 600 ~/.kaggle/kaggle.json),
     or as kaggle.json in the folder named by the environment variable KAGGLE_CONFIG_DIR,
     or set the environment variables KAGGLE_USERNAME and KAGGLE_KEY to those two values.
  3. Run the command again."""


def kaggle_credentials() -> tuple[str, str]:
    """The (username, key) of the Kaggle API token.

    Looked up, in order: the environment variables KAGGLE_USERNAME and KAGGLE_KEY; the file
    kaggle.json in the folder named by KAGGLE_CONFIG_DIR; ~/.kaggle/kaggle.json.

    Raises:
        KaggleCredentialsError: none found, only one of the two variables set, or a kaggle.json
            that is not {"username": ..., "key": ...}; the message says how to supply a token.
    """
    user, key = os.environ.get("KAGGLE_USERNAME", "").strip(), os.environ.get("KAGGLE_KEY", "").strip()
    if user and key:
        return user, key
    if user or key:
        missing = "KAGGLE_KEY" if user else "KAGGLE_USERNAME"
        raise KaggleCredentialsError(f"KAGGLE_USERNAME and KAGGLE_KEY must be set together; {missing} is "
                                     f"missing.\n{_KAGGLE_HOWTO}")
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR")
    path = (Path(config_dir) if config_dir else Path.home() / ".kaggle") / "kaggle.json"
    if not path.is_file():
        raise KaggleCredentialsError(f"No Kaggle API token found: KAGGLE_USERNAME/KAGGLE_KEY are not set "
                                     f"and {path} does not exist.\n{_KAGGLE_HOWTO}")
    try:
        token = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise KaggleCredentialsError(f"{path} could not be read as JSON ({err}); replace it with the "
                                     f"kaggle.json that Kaggle gives you.\n{_KAGGLE_HOWTO}") from None
    if not (isinstance(token, dict) and isinstance(token.get("username"), str) and token["username"]
            and isinstance(token.get("key"), str) and token["key"]):
        raise KaggleCredentialsError(f"{path} must hold {{\"username\": ..., \"key\": ...}}; replace it with "
                                     f"the kaggle.json that Kaggle gives you.\n{_KAGGLE_HOWTO}")
    return token["username"], token["key"]


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------

def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def file_sha256(path, *, md5: bool = False) -> str | tuple[str, str]:
    """The sha256 (hex) of a file, read in 1 MiB blocks; with ``md5=True``, (sha256, md5)."""
    digests = [hashlib.sha256()] + ([hashlib.md5()] if md5 else [])
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            for d in digests:
                d.update(block)
    return (digests[0].hexdigest(), digests[1].hexdigest()) if md5 else digests[0].hexdigest()


def _checked_hex(value, length: int, what: str) -> str | None:
    if value is None:
        return None
    value = str(value).strip().lower()
    if not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
        raise ValueError(f"{what} must be {length} hexadecimal digits, got {value!r}")
    return value


def _expected_text(sha256, md5) -> str:
    if sha256:
        return f"sha256 {sha256}"
    if md5:
        return f"md5 {md5}"
    return "none published (any complete file is accepted; its sha256 is printed)"


def _manual_steps(url: str, target: Path, sha256, md5) -> str:
    return (f"  URL:      {url}\n"
            f"  save as:  {target}\n"
            f"  expected: {_expected_text(sha256, md5)}\n"
            f"To download it by hand, open the URL in a browser (or: curl -L -o \"{target}\" \"{url}\"), "
            f"save the file under the name above and run again: a file already there is checked and used "
            f"without downloading.")


def _looks_like_html(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1024).lstrip().lower()
    except OSError:
        return False
    return head.startswith((b"<!doctype html", b"<html", b"<?xml")) or b"<html" in head


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) from 'bytes 100-199/1000' or 'bytes */1000' (None where unknown)."""
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _open(url: str, offset: int, timeout: float, auth):
    """urlopen with a Range header from ``offset`` (if > 0) and, for ``auth``, Basic authorisation.

    The Authorization header is 'unredirected': it goes to the first host only, never to the
    storage host that a redirect leads to; the Range header follows redirects.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        request.add_unredirected_header("Authorization", f"Basic {token}")
    return urllib.request.urlopen(request, timeout=timeout)


_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError, OSError)


def download(url: str, target_path, sha256: str | None = None, resume: bool = True, progress: bool = True,
             timeout: float = 60.0, *, md5: str | None = None, auth: tuple[str, str] | None = None) -> Path:
    """Download ``url`` to ``target_path``, resumably, and check it before it gets its final name.

    The bytes go to ``target_path + ".part"``; when the whole file has arrived and its checksum
    matches, the .part file is renamed to ``target_path`` (os.replace), so the final name never holds
    a partial or unchecked file. When a .part file exists (an earlier, interrupted run) and
    ``resume`` is true, only the missing bytes are asked for (``Range: bytes=<size>-``); a server
    that ignores the request and answers 200 sends the whole file, which replaces the .part file.

    Args:
        url: http(s) URL.
        target_path: final file name (str or Path); its folder is created.
        sha256: expected sha256 (hex), or None when none is published: then the sha256 of the
            downloaded file is printed, so it can be pinned.
        resume: go on from an existing .part file (False: start over).
        progress: show a tqdm progress bar (bytes).
        timeout: seconds to wait for the connection and for each block of data.
        md5: expected md5 (hex), for sources that publish only an md5; checked like sha256.
        auth: (username, key) for HTTP Basic authorisation (Kaggle's API), sent to ``url``'s host
            only, not to hosts it redirects to.

    Returns:
        ``Path(target_path)``. A file already there is not downloaded again: it is returned when its
        checksum matches (or when no checksum is given).

    Raises:
        ChecksumError: the downloaded file, or the one already there, does not match (the message
            gives the URL, the expected and actual checksums, the target, and how to download by
            hand). A downloaded file that does not match is deleted.
        DownloadError: the server or the network failed (HTTP error, no connection, timeout, or the
            connection closed early: the .part file is kept, and running again resumes it).
        ValueError: a URL that is not http(s), or a checksum that is not hexadecimal.
    """
    if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {url!r}")
    sha256 = _checked_hex(sha256, 64, "sha256")
    md5 = _checked_hex(md5, 32, "md5")
    target = Path(target_path)
    part = target.with_name(target.name + ".part")
    manual = _manual_steps(url, target, sha256, md5)

    if target.is_file():  # only ever written complete (renamed from .part), so complete unless altered
        actual_sha, actual_md5 = file_sha256(target, md5=True)
        if sha256 is None and md5 is None:
            _say(f"{target} is already there (no published checksum to compare; its sha256 is {actual_sha}); "
                 "not downloading it again.")
            return target
        if sha256 in (None, actual_sha) and md5 in (None, actual_md5):
            _say(f"{target} is already there and matches its checksum; not downloading it again.")
            return target
        raise ChecksumError(
            f"{target} is already there but does not match its published checksum: expected "
            f"{_expected_text(sha256, md5)}, found sha256 {actual_sha} (md5 {actual_md5}). It may be "
            f"truncated, altered or another version. Delete it to download it again.\n{manual}")

    target.parent.mkdir(parents=True, exist_ok=True)
    if part.exists() and not resume:
        part.unlink()
    offset = part.stat().st_size if part.is_file() else 0

    response, complete = None, False
    while True:  # loops again only with offset > 0, after setting offset = 0: at most twice
        try:
            response = _open(url, offset, timeout, auth)
        except urllib.error.HTTPError as err:
            if err.code == 416 and offset:  # nothing left to send: the .part may already be complete
                _, total = _content_range(err.headers.get("Content-Range"))
                err.close()
                if total == offset:
                    complete = True
                    break
                part.unlink()
                offset = 0
                continue
            hint = {401: " (the source needs a login: check the account token)",
                    403: " (access refused: the source may need a login or have moved)",
                    404: " (not found: the file may have moved; see the source's page)"}.get(err.code, "")
            raise DownloadError(f"Download failed: HTTP {err.code} {err.reason}{hint}.\n{manual}") from None
        except _NETWORK_ERRORS as err:
            raise DownloadError(f"Download failed: {err} (no connection, or the server did not answer "
                                f"within {timeout:g} s).\n{manual}") from None
        if offset and response.status == 206:
            start, _ = _content_range(response.headers.get("Content-Range"))
            if start == offset:
                break
            response.close()  # an answer for other bytes than asked: start over
            part.unlink()
            offset = 0
            continue
        if offset:
            _say(f"The server of {url} does not resume downloads (it answered {response.status} to a Range "
                 f"request): downloading the whole file again.")
            offset = 0
        break

    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    if offset or complete:  # the bytes already on disk count towards the checksum
        with open(part, "rb") as f:
            while block := f.read(_CHUNK):
                for d in digests.values():
                    d.update(block)

    if not complete:
        from tqdm.auto import tqdm

        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if length is not None:
            free = shutil.disk_usage(target.parent).free
            if free < length:
                response.close()
                raise DownloadError(f"Not enough disk space for {target.name}: {length / 2**30:.2f} GiB still to "
                                    f"download, {free / 2**30:.2f} GiB free in {target.parent}. Free some space "
                                    f"or choose another folder.\n{manual}")
        received = 0
        with response, open(part, "ab" if offset else "wb") as out, tqdm(
                total=None if length is None else offset + length, initial=offset, unit="B", unit_scale=True,
                unit_divisor=1024, desc=target.name, disable=not progress, leave=False) as bar:
            while True:
                try:
                    block = response.read(_CHUNK)
                except _NETWORK_ERRORS as err:
                    out.flush()
                    raise DownloadError(
                        f"Download interrupted after {offset + received} bytes: {err}. The partial file is kept "
                        f"as {part}; run again to resume it.\n{manual}") from None
                if not block:
                    break
                out.write(block)
                for d in digests.values():
                    d.update(block)
                received += len(block)
                bar.update(len(block))
        if length is not None and received < length:
            raise DownloadError(
                f"Download interrupted: the connection closed after {offset + received} of {offset + length} "
                f"bytes. The partial file is kept as {part}; run again to resume it.\n{manual}")

    actual_sha, actual_md5 = digests["sha256"].hexdigest(), digests["md5"].hexdigest()
    if (sha256 and actual_sha != sha256) or (md5 and actual_md5 != md5):
        html = _looks_like_html(part)
        part.unlink()
        raise ChecksumError(
            f"Checksum mismatch for {url}: expected {_expected_text(sha256, md5)}, got sha256 {actual_sha} "
            f"(md5 {actual_md5}). The downloaded file was deleted; {target} was not written."
            + (" The server sent a web page instead of the file: the URL may have moved or need a login."
               if html else " Run again to download it afresh.") + f"\n{manual}")
    if sha256 is None and md5 is None:
        _say(f"{target.name}: {_NO_CHECKSUM.split(';')[0]}; its sha256 is {actual_sha} (pin it with "
             f"sha256=\"{actual_sha}\").")
    os.replace(part, target)
    return target


# --------------------------------------------------------------------------------------------
# Extracting
# --------------------------------------------------------------------------------------------

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


def _archive_kind(archive: Path) -> str:
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    raise ArchiveError(f"{archive}: unknown archive type (expected a name ending in .zip, "
                       f"{', '.join(_TAR_SUFFIXES)}); rename it if it is one of those.")


def _unsafe_zip_member(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member must not be extracted, or None when it is safe."""
    name = info.filename.replace("\\", "/")
    if not name or "\x00" in name:
        return "empty name or NUL character"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in name.split("/"):
        return "'..' in the path (would land outside the target folder)"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symbolic link"
    return None


def _extract_zip(archive: Path, into: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        unsafe = [(m.filename, why) for m in members if (why := _unsafe_zip_member(m))]
        if unsafe:
            listed = "; ".join(f"{name!r}: {why}" for name, why in unsafe[:5])
            raise ArchiveError(f"{archive}: refusing to extract: {len(unsafe)} unsafe member(s): {listed}"
                               f"{' ...' if len(unsafe) > 5 else ''}. Nothing was extracted; do not use this "
                               "file (download it again from the original source).")
        root = into.resolve()
        for member in members:
            destination = (into / member.filename.replace("\\", "/")).resolve()
            if destination != root and root not in destination.parents:  # belt and braces
                raise ArchiveError(f"{archive}: member {member.filename!r} would land outside the target folder.")
            zf.extract(member, into)


def _extract_tar(archive: Path, into: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        raise RuntimeError("This Python's tarfile has no extraction filters (added in 3.12 and in 3.8.17, "
                           "3.9.17, 3.10.12, 3.11.4): upgrade Python to extract tar archives safely.")
    def refuse_absolute_then_data_filter(member: tarfile.TarInfo, dest_path: str):
        # the "data" filter would quietly make '/x' relative; an archive holding one is refused, as for zip
        if member.name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member.name):
            raise tarfile.AbsolutePathError(member)
        return tarfile.data_filter(member, dest_path)

    with tarfile.open(archive, "r:*") as tf:
        tf.extractall(into, filter=refuse_absolute_then_data_filter)


def extract(archive, target_dir) -> Path:
    """Unpack ``archive`` into the new folder ``target_dir``, with path-traversal protection.

    .tar, .tar.gz/.tgz (and .tar.bz2/.tar.xz) are unpacked with tarfile's ``filter="data"``
    (refuses absolute paths, '..', links pointing outside, devices; drops unsafe permission bits).
    For .zip every member name is checked first (no absolute path, no '..', no symbolic link):
    one unsafe member and nothing is extracted. Everything is unpacked into a temporary folder
    next to ``target_dir`` (same parent) and renamed to ``target_dir`` only when complete; on any
    error the temporary folder is removed.

    Args:
        archive: the archive file (its kind is read from the name).
        target_dir: the folder to create; it must not exist yet (or be empty).

    Returns:
        ``Path(target_dir)``.

    Raises:
        FileNotFoundError: no such archive.
        FileExistsError: ``target_dir`` exists and is not empty.
        ArchiveError: unknown kind, damaged or truncated archive, or an unsafe member (the message
            names the file and what to do).
    """
    archive, target = Path(archive), Path(target_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist: download it first (prepare() does).")
    kind = _archive_kind(archive)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists and is not empty: remove it or extract elsewhere.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        try:
            (_extract_zip if kind == "zip" else _extract_tar)(archive, tmp)
        except ArchiveError:
            raise
        except tarfile.FilterError as err:
            raise ArchiveError(f"{archive}: refusing to extract an unsafe member: {err}. Nothing was kept; "
                               "do not use this file (download it again from the original source).") from None
        except (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, NotImplementedError,
                OSError) as err:
            if isinstance(err, OSError) and err.errno is not None:
                raise  # a file-system problem (disk full, permissions), not a damaged archive
            page = (" It is a web page, not an archive: the URL may have moved or need a login."
                    if _looks_like_html(archive) else "")
            raise ArchiveError(f"{archive} is damaged, truncated or not a {kind} archive ({type(err).__name__}: "
                               f"{err}).{page} Delete it and download it again.") from None
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --------------------------------------------------------------------------------------------
# Converting into the project layout
# --------------------------------------------------------------------------------------------

def _is_junk(path: Path) -> bool:
    """macOS archive debris: __MACOSX/ folders, '._' resource forks, .DS_Store."""
    return "__MACOSX" in path.parts or path.name.startswith("._") or path.name == ".DS_Store"


def _files_matching(folder: Path, pattern: str) -> list[Path]:
    regex = re.compile(pattern)
    return sorted(p for p in folder.rglob("*") if p.is_file() and not _is_junk(p) and regex.fullmatch(p.name))


def _by_name(paths, archive_name: str, what: str) -> dict[str, Path]:
    """{file name: path}; two different files of the same name are an error."""
    found: dict[str, Path] = {}
    for path in paths:
        if path.name in found and file_sha256(path) != file_sha256(found[path.name]):
            raise DatasetLayoutError(f"{archive_name}: two different {what} named {path.name}: "
                                     f"{found[path.name]} and {path}; cannot tell which one to use.")
        found.setdefault(path.name, path)
    return found


def _gray8(image):
    """(h, w) uint8 from a PIL image: 8-bit grey as is; 16/32-bit grey stretched linearly from its
    own [min, max] to [0, 255]; colour or palette images through PIL's luminance ("L")."""
    import numpy as np

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)  # (h, w)
        low, high = values.min(), values.max()
        if high <= low:
            return np.zeros(values.shape, dtype=np.uint8)
        return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


def _binary(image):
    """(h, w) bool: the pixels above half of the mask's maximum (works for 0/1, 0/255 and 16-bit masks)."""
    import numpy as np

    values = np.asarray(image) if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F", "1") \
        else np.asarray(image.convert("L"))
    top = float(values.max()) if values.size else 0.0
    return values > top / 2 if top > 0 else np.zeros(values.shape, dtype=bool)


def _resized(gray, mask, size: int | None):
    """(image, mask) as PIL images of size x size: Lanczos for the image; the 0/255 mask bilinear
    on the same grid, then thresholded at 128 (back to 0/255). None keeps the original size."""
    import numpy as np
    from PIL import Image

    image_out = Image.fromarray(gray)  # (h, w) uint8 -> mode "L"
    mask_out = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))
    if size is not None:
        image_out = image_out.resize((size, size), Image.Resampling.LANCZOS)
        mask_out = mask_out.resize((size, size), Image.Resampling.BILINEAR)
        mask_out = Image.fromarray(np.where(np.asarray(mask_out) >= 128, 255, 0).astype(np.uint8))
    return image_out, mask_out


def _check_same_shape(image_path: Path, image_size, mask_path: Path, mask_size) -> None:
    """A mask must cover the same frame as its image: same size, or the same aspect ratio (1 %)."""
    (w, h), (mw, mh) = image_size, mask_size
    if (w, h) != (mw, mh) and abs(w / h - mw / mh) > 0.01 * (w / h):
        raise DatasetLayoutError(f"{mask_path.name} is {mw}x{mh} but its image {image_path.name} is {w}x{h} "
                                 "(another aspect ratio): the mask does not belong to that image.")


def _convert_cxr(pairs, staging: Path, image_size, progress: bool, label: str) -> list[dict]:
    """Write images/<name>.png and masks/<name>.png for [(name, image path, [mask paths])]."""
    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    (staging / "images").mkdir(parents=True)
    (staging / "masks").mkdir()
    rows = []
    for name, image_path, mask_paths in tqdm(pairs, desc=f"converting {label}", disable=not progress, leave=False):
        with Image.open(image_path) as image:
            original = image.size  # (w, h)
            mode = image.mode
            gray = _gray8(image)  # (h, w) uint8
        lung = None
        for mask_path in mask_paths:
            with Image.open(mask_path) as mask_image:
                _check_same_shape(image_path, original, mask_path, mask_image.size)
                part = _binary(mask_image)  # (mh, mw) bool
            if part.shape != gray.shape:  # same aspect ratio, other scale: bring it onto the image grid
                part = _binary(Image.fromarray(part.astype("uint8") * 255).resize(original, Image.Resampling.BILINEAR))
            lung = part if lung is None else (lung | part)
        image_out, mask_out = _resized(gray, lung, image_size)
        image_out.save(staging / "images" / name)
        mask_out.save(staging / "masks" / name)
        rows.append({"file": name, "source_image": image_path.name,
                     "source_masks": " ".join(p.parent.name + "/" + p.name for p in mask_paths),
                     "source_image_sha256": file_sha256(image_path), "original_width": original[0],
                     "original_height": original[1], "original_mode": mode,
                     "lung_fraction": f"{(np.asarray(mask_out) == 255).mean():.4f}"})
    with open(staging / "provenance.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _convert_montgomery(ds: Dataset, unpacked: dict[str, Path], staging: Path, image_size, progress) -> dict:
    folder, archive = unpacked["archive"], ds.sources[0].file_name
    pattern = r"MCUCXR_\d{4}_[01]\.png"
    images = _by_name([p for p in _files_matching(folder, pattern) if p.parent.name == "CXR_png"], archive, "images")
    left = _by_name([p for p in _files_matching(folder, pattern) if p.parent.name == "leftMask"], archive, "left masks")
    right = _by_name([p for p in _files_matching(folder, pattern) if p.parent.name == "rightMask"], archive,
                     "right masks")
    if not images:
        raise DatasetLayoutError(f"{archive}: no images MCUCXR_<NNNN>_<0|1>.png in a CXR_png/ folder; is this "
                                 "the Montgomery archive? Delete it and download it again.")
    problems = [f"{n}: no ManualMask/leftMask/{n}" for n in sorted(set(images) - set(left))]
    problems += [f"{n}: no ManualMask/rightMask/{n}" for n in sorted(set(images) - set(right))]
    problems += [f"mask {n} has no image CXR_png/{n}" for n in sorted((set(left) | set(right)) - set(images))]
    if problems:
        raise DatasetLayoutError(f"{archive}: every image needs a left and a right lung mask of the same name: "
                                 + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))
    pairs = [(n, images[n], [left[n], right[n]]) for n in sorted(images)]
    rows = _convert_cxr(pairs, staging, image_size, progress, ds.name)
    return {"cases": len(rows), "notes": []}


def _convert_shenzhen(ds: Dataset, unpacked: dict[str, Path], staging: Path, image_size, progress) -> dict:
    image_archive = next(s.file_name for s in ds.sources if s.role == "images")
    mask_archive = next(s.file_name for s in ds.sources if s.role == "masks")
    images = _by_name(_files_matching(unpacked["images"], r"CHNCXR_\d{4}_[01]\.png"), image_archive, "images")
    masks = _by_name(_files_matching(unpacked["masks"], r"CHNCXR_\d{4}_[01]_mask\.png"), mask_archive, "masks")
    if not images:
        raise DatasetLayoutError(f"{image_archive}: no images CHNCXR_<NNNN>_<0|1>.png; is this the Shenzhen "
                                 "archive? Delete it and download it again.")
    if not masks:
        raise DatasetLayoutError(f"{mask_archive}: no masks CHNCXR_<NNNN>_<0|1>_mask.png; is this the Shenzhen "
                                 "lung-mask archive? Delete it and download it again.")
    by_image = {m.replace("_mask.png", ".png"): m for m in masks}
    if orphans := sorted(set(by_image) - set(images)):
        raise DatasetLayoutError(f"{mask_archive}: {len(orphans)} mask(s) without an image in {image_archive}: "
                                 + ", ".join(by_image[o] for o in orphans[:10]) + (" ..." if len(orphans) > 10 else ""))
    pairs = [(n, images[n], [masks[by_image[n]]]) for n in sorted(by_image)]
    rows = _convert_cxr(pairs, staging, image_size, progress, ds.name)
    without = sorted(set(images) - set(by_image))
    (staging / "images_without_mask.txt").write_text("".join(f"{n}\n" for n in without), encoding="utf-8")
    return {"cases": len(rows), "notes": [f"{len(without)} of the {len(images)} images have no lung mask and were "
                                          "not converted; they are listed in images_without_mask.txt."]}


def _convert_decathlon(ds: Dataset, unpacked: dict[str, Path], staging: Path, image_size, progress) -> dict:
    folder, archive = unpacked["archive"], ds.sources[0].file_name
    found = [p for p in folder.rglob("dataset.json") if not _is_junk(p)]
    if len(found) != 1:
        raise DatasetLayoutError(f"{archive}: expected one Task*/dataset.json in the archive, found {len(found)}; "
                                 "is this a Medical Segmentation Decathlon tarball? Delete it and download it again.")
    task = found[0].parent
    junk = [p for p in task.rglob("*") if p.is_file() and _is_junk(p)]
    for path in junk:
        path.unlink()
    for sub in ("imagesTr", "labelsTr"):
        if not (task / sub).is_dir():
            raise DatasetLayoutError(f"{archive}: {task.name}/{sub}/ is missing; delete the archive and download "
                                     "it again.")
    images = {p.name for p in (task / "imagesTr").iterdir()}
    labels = {p.name for p in (task / "labelsTr").iterdir()}
    problems = [f"imagesTr/{n} has no label" for n in sorted(images - labels)]
    problems += [f"labelsTr/{n} has no image" for n in sorted(labels - images)]
    problems += [f"{sub}/{n} is not a .nii.gz file" for sub, names in (("imagesTr", images), ("labelsTr", labels))
                 for n in sorted(names) if not n.endswith(".nii.gz")]
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        for path in sorted((task / sub).glob("*.nii.gz")) if (task / sub).is_dir() else []:
            with open(path, "rb") as f:
                if f.read(2) != b"\x1f\x8b":
                    problems.append(f"{sub}/{path.name} is not gzip-compressed NIfTI")
    meta = json.loads((task / "dataset.json").read_text(encoding="utf-8"))
    if isinstance(meta.get("numTraining"), int) and meta["numTraining"] != len(images):
        problems.append(f"dataset.json says numTraining={meta['numTraining']}, imagesTr/ holds {len(images)}")
    if problems:
        raise DatasetLayoutError(f"{archive}: " + "; ".join(problems[:10]) + (" ..." if len(problems) > 10 else "")
                                 + ". Delete the archive and download it again.")
    staging.mkdir(parents=True)
    for name in ("imagesTr", "labelsTr", "imagesTs", "dataset.json"):
        if (task / name).exists():
            os.replace(task / name, staging / name)
    n_test = len(list((staging / "imagesTs").glob("*.nii.gz"))) if (staging / "imagesTs").is_dir() else 0
    notes = [f"{len(junk)} macOS '._*' resource-fork file(s) from the tarball were removed."] if junk else []
    if meta.get("licence") or meta.get("license"):
        notes.append(f"dataset.json states the licence: {meta.get('licence') or meta.get('license')}.")
    if isinstance(meta.get("labels"), dict):
        notes.append("dataset.json labels: " + ", ".join(f"{k} = {v}" for k, v in meta["labels"].items()) + ".")
    return {"cases": len(images), "notes": [f"imagesTs/ holds {n_test} unlabelled test image(s)."] + notes}


_CONVERTERS = {"montgomery": _convert_montgomery, "shenzhen": _convert_shenzhen, "decathlon": _convert_decathlon}


def _write_manifest(folder: Path) -> None:
    """MANIFEST.sha256 ('<sha256>  <relative path>' per file), as data_download/verify_checksums.py reads."""
    lines = [f"{file_sha256(p)}  {p.relative_to(folder).as_posix()}"
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "MANIFEST.sha256"]
    (folder / "MANIFEST.sha256").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_readme(ds: Dataset, folder: Path, fetched: list[tuple[Source, str]], summary: dict, image_size) -> None:
    lines = [f"# {ds.title}", "", "Made by `lightm_edu.download.prepare` "
             f"(`python data_download/download.py {ds.name} --root ROOT`).", "",
             f"- layout: `{ds.layout}`; cases here: {summary['cases']} (the source holds {ds.cases})",
             f"- labels: {ds.labels}"]
    if ds.layout == "png":
        lines.append(f"- image size: {f'{image_size}x{image_size}' if image_size else 'as in the source'}")
    lines += ["", "## Sources", ""]
    for source, sha in fetched:
        check = (f"checked against the published {source.checksum_text}" if (source.sha256 or source.md5)
                 else "no published checksum")
        lines.append(f"- {source.role}: {source.url} (`{source.file_name}`, sha256 `{sha}`; {check})")
    lines += ["", "## What was done", "", ds.preparation, ""] + [f"- {n}" for n in summary["notes"]]
    lines += ["", "## License", "", ds.license, "", "## Cite", ""] + [f"- {c}" for c in ds.citation]
    lines += ["", "`MANIFEST.sha256` holds the sha256 of every other file "
                  "(`python data_download/verify_checksums.py` checks it).", ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")


def prepare(name, root, *, image_size: int | None = 256, progress: bool = True, timeout: float = 60.0,
            keep_downloads: bool = True) -> Path:
    """Download, check, unpack and convert one data set into ``root/<folder>`` (the project layout).

    Steps: (1) for a source on Kaggle, find the API token first (nothing is downloaded without
    it); (2) download every source into ``root/downloads/`` with :func:`download` (resumable,
    checked against the published checksum where there is one; a file already there is reused);
    (3) unpack each archive with :func:`extract` into a temporary folder inside ``root``;
    (4) convert (see ``DATASETS[name].preparation``): Montgomery: left + right lung masks -> one
    0/255 mask, image and mask resized on the same grid; Shenzhen: images matched to their masks;
    Decathlon (LiTS, hippocampus): imagesTr/labelsTr/imagesTs moved as they are; (5) write
    README.md (sources, checksums, what was done, license, citation) and MANIFEST.sha256; (6)
    rename the finished folder to ``root/<folder>``. On any error the temporary folder is removed,
    so ``root/<folder>`` either is complete or does not exist.

    Args:
        name: a key of :data:`DATASETS` ("montgomery", "shenzhen", "lits", "hippocampus") or a Dataset.
        root: the folder that receives ``<folder>/`` and ``downloads/`` (point LIGHTM_EDU_DATA at it
            to train on the result).
        image_size: 2D only: side of the square images and masks (None: keep the source size).
        progress: progress bars for downloads and conversion.
        timeout: network timeout in seconds (see :func:`download`).
        keep_downloads: keep the downloaded archives in ``root/downloads/`` (False: delete them once
            the folder is complete).

    Returns:
        ``root/<folder>``. If it already holds a finished data set (it has MANIFEST.sha256), it is
        returned as it is, without downloading.

    Raises:
        ValueError: unknown name, or image_size not a positive integer.
        KaggleCredentialsError: a Kaggle source and no token (the message says how to supply one).
        FileExistsError: ``root/<folder>`` exists but is not a finished data set.
        DownloadError, ChecksumError, ArchiveError, DatasetLayoutError: see those.
    """
    ds = _dataset(name)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    root = Path(root).expanduser()
    destination = root / ds.folder
    if destination.exists():
        if (destination / "MANIFEST.sha256").is_file():
            _say(f"{destination} is already prepared (it has MANIFEST.sha256); nothing to do. Delete it to "
                 "prepare it again.")
            return destination
        raise FileExistsError(f"{destination} exists but is not a finished data set (no MANIFEST.sha256): remove "
                              "it, or choose another root.")
    downloads = root / "downloads"
    auth = None
    if any(s.account == "kaggle" and not (downloads / s.file_name).is_file() for s in ds.sources):
        try:
            auth = kaggle_credentials()  # before any download: all or nothing
        except KaggleCredentialsError as err:
            manual = "".join(f"\nOr download {s.page} by hand (\"Download\" on that page, signed in) and save the "
                             f"file as {downloads / s.file_name}." for s in ds.sources if s.account == "kaggle")
            raise KaggleCredentialsError(f"{ds.name}: {err}{manual}") from None
    fetched = []
    for source in ds.sources:
        path = download(source.url, downloads / source.file_name, sha256=source.sha256, md5=source.md5,
                        progress=progress, timeout=timeout, auth=auth if source.account == "kaggle" else None)
        fetched.append((source, path))

    work = Path(tempfile.mkdtemp(prefix=f".{ds.folder}.partial-", dir=root))
    try:
        unpacked = {source.role: extract(path, work / f"unpacked-{source.role}") for source, path in fetched}
        staging = work / ds.folder
        summary = _CONVERTERS[ds.converter](ds, unpacked, staging, image_size, progress)
        _write_readme(ds, staging, [(s, file_sha256(p)) for s, p in fetched], summary, image_size)
        _write_manifest(staging)
        os.replace(staging, destination)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not keep_downloads:
        for _, path in fetched:
            path.unlink(missing_ok=True)
    _say(f"{ds.name}: {summary['cases']} cases in {destination}" + "".join(f"\n  {n}" for n in summary["notes"]))
    return destination
