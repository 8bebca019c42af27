"""lightm_edu.download, offline: a local HTTP server on 127.0.0.1 serves small archives made here.

The server (http.server in a background thread, ephemeral port) honours single-range ``Range``
requests (206 + Content-Range, 416 past the end), or ignores them (always 200), can close the
connection after N bytes of a response, can redirect, and records every request (path, Range,
Authorization) so the tests can check which bytes were asked for. No other host is contacted.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import importlib.util
import io
import json
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightm_edu import download as dl

TIMEOUT = 5.0  # seconds: every request of these tests is local and small


# --------------------------------------------------------------------------------------------
# The local server
# --------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range"),
                             "auth": self.headers.get("Authorization")})
        if self.path in srv.redirects:
            self.send_response(302)
            self.send_header("Location", srv.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        if self.path in srv.auth and self.headers.get("Authorization") != srv.auth[self.path]:
            self.send_error(401, "Unauthorized")
            return
        status, start, end = 200, 0, len(body)
        requested = self.headers.get("Range")
        if requested and srv.honour_range:
            first, _, last = requested.removeprefix("bytes=").partition("-")
            start = int(first)
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            end = min(len(body), int(last) + 1) if last else len(body)
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(body)}")
        self.end_headers()
        payload = body[start:end]
        if srv.drop_after.get(self.path):  # send only the first N bytes, then hang up
            payload = payload[: srv.drop_after.pop(self.path)]
            self.close_connection = True
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.requests, self.redirects, self.auth, self.drop_after = {}, [], {}, {}, {}
        self.honour_range = True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def paths(self):
        return [r["path"] for r in self.requests]


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # urllib would send 127.0.0.1 traffic to a proxy
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


@pytest.fixture
def no_kaggle(monkeypatch, tmp_path):
    """No Kaggle token anywhere: no variables, an empty config folder and an empty home."""
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "empty-kaggle-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes


def leftovers(folder: Path) -> list[str]:
    """Everything in a folder tree (names relative to it), to check that nothing half-done remains."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --------------------------------------------------------------------------------------------
# download()
# --------------------------------------------------------------------------------------------

def test_download_complete_file_with_checksum(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    target = tmp_path / "sub" / "data.bin"
    result = dl.download(server.url("/data.bin"), target, sha256=sha(PAYLOAD), progress=False, timeout=TIMEOUT)
    assert result == target and target.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["sub", "sub/data.bin"]  # no .part left
    assert server.requests[0]["range"] is None


def test_download_accepts_a_published_md5(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    target = tmp_path / "data.bin"
    dl.download(server.url("/data.bin"), target, md5=hashlib.md5(PAYLOAD).hexdigest(), progress=False,
                timeout=TIMEOUT)
    assert target.read_bytes() == PAYLOAD


def test_download_without_checksum_prints_the_sha256_to_pin(server, tmp_path, capsys):
    server.files["/data.bin"] = PAYLOAD
    dl.download(server.url("/data.bin"), tmp_path / "data.bin", progress=False, timeout=TIMEOUT)
    err = capsys.readouterr().err
    assert "no published checksum" in err and sha(PAYLOAD) in err


def test_interrupted_download_is_resumed_with_a_range_request(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.drop_after["/data.bin"] = 3000  # the first answer stops after 3000 bytes
    target = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    with pytest.raises(dl.DownloadError) as info:
        dl.download(server.url("/data.bin"), target, sha256=sha(PAYLOAD), progress=False, timeout=TIMEOUT)
    message = str(info.value)
    assert "interrupted" in message and "3000 of 10240" in message and "run again to resume" in message
    assert not target.exists() and part.read_bytes() == PAYLOAD[:3000]

    dl.download(server.url("/data.bin"), target, sha256=sha(PAYLOAD), progress=False, timeout=TIMEOUT)
    assert [r["range"] for r in server.requests] == [None, "bytes=3000-"]
    assert target.read_bytes() == PAYLOAD and not part.exists()


def test_existing_part_file_is_resumed_not_restarted(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:4321])
    dl.download(server.url("/data.bin"), tmp_path / "data.bin", sha256=sha(PAYLOAD), progress=False,
                timeout=TIMEOUT)
    assert server.requests[0]["range"] == "bytes=4321-"
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_resume_false_starts_over(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes")
    dl.download(server.url("/data.bin"), tmp_path / "data.bin", sha256=sha(PAYLOAD), resume=False,
                progress=False, timeout=TIMEOUT)
    assert server.requests[0]["range"] is None and (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_server_ignoring_range_gets_a_fresh_download(server, tmp_path, capsys):
    server.files["/data.bin"] = PAYLOAD
    server.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(b"x" * 5000)  # wrong bytes: appending would corrupt the file
    dl.download(server.url("/data.bin"), tmp_path / "data.bin", sha256=sha(PAYLOAD), progress=False,
                timeout=TIMEOUT)
    assert server.requests[0]["range"] == "bytes=5000-"  # asked to resume, answered 200
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD
    assert "does not resume downloads" in capsys.readouterr().err


def test_complete_part_file_is_finished_after_416(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # all bytes arrived, the rename did not happen
    dl.download(server.url("/data.bin"), tmp_path / "data.bin", sha256=sha(PAYLOAD), progress=False,
                timeout=TIMEOUT)
    assert server.requests[0]["range"] == f"bytes={len(PAYLOAD)}-"
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()


def test_checksum_mismatch_names_url_checksums_target_and_leaves_nothing(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    wrong = "0" * 64
    target = tmp_path / "data.bin"
    with pytest.raises(dl.ChecksumError) as info:
        dl.download(server.url("/data.bin"), target, sha256=wrong, progress=False, timeout=TIMEOUT)
    message = str(info.value)
    for expected in (server.url("/data.bin"), wrong, sha(PAYLOAD), str(target), "by hand"):
        assert expected in message
    assert leftovers(tmp_path) == []


def test_checksum_mismatch_says_when_the_server_sent_a_web_page(server, tmp_path):
    server.files["/data.zip"] = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
    with pytest.raises(dl.ChecksumError, match="web page instead of the file"):
        dl.download(server.url("/data.zip"), tmp_path / "data.zip", sha256="1" * 64, progress=False,
                    timeout=TIMEOUT)


def test_missing_file_404_names_url_and_target(server, tmp_path):
    target = tmp_path / "missing.zip"
    with pytest.raises(dl.DownloadError) as info:
        dl.download(server.url("/missing.zip"), target, sha256="2" * 64, progress=False, timeout=TIMEOUT)
    message = str(info.value)
    assert "HTTP 404" in message and server.url("/missing.zip") in message and str(target) in message
    assert "2" * 64 in message and "by hand" in message
    assert leftovers(tmp_path) == []


def test_no_connection_names_url_checksum_and_target(tmp_path):
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/data.bin"
    target = tmp_path / "data.bin"
    with pytest.raises(dl.DownloadError) as info:
        dl.download(url, target, sha256="3" * 64, progress=False, timeout=TIMEOUT)
    message = str(info.value)
    assert url in message and "3" * 64 in message and str(target) in message and "by hand" in message
    assert leftovers(tmp_path) == []


def test_present_file_with_right_checksum_is_not_downloaded_again(server, tmp_path, capsys):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin").write_bytes(PAYLOAD)
    dl.download(server.url("/data.bin"), tmp_path / "data.bin", sha256=sha(PAYLOAD), progress=False,
                timeout=TIMEOUT)
    dl.download(server.url("/data.bin"), tmp_path / "data.bin", progress=False, timeout=TIMEOUT)  # no checksum
    assert server.requests == []
    assert "not downloading it again" in capsys.readouterr().err


def test_present_file_with_wrong_checksum_is_reported_not_replaced(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin").write_bytes(b"something else")
    with pytest.raises(dl.ChecksumError) as info:
        dl.download(server.url("/data.bin"), tmp_path / "data.bin", sha256=sha(PAYLOAD), progress=False,
                    timeout=TIMEOUT)
    assert "already there" in str(info.value) and sha(b"something else") in str(info.value)
    assert "Delete it" in str(info.value) and server.requests == []
    assert (tmp_path / "data.bin").read_bytes() == b"something else"


def test_authorization_goes_to_the_first_host_only(server, tmp_path):
    server.files["/signed/data.bin"] = PAYLOAD
    server.redirects["/api/data.bin"] = server.url("/signed/data.bin")
    dl.download(server.url("/api/data.bin"), tmp_path / "data.bin", sha256=sha(PAYLOAD), auth=("ann", "k3y"),
                progress=False, timeout=TIMEOUT)
    first, second = server.requests
    assert first["auth"].startswith("Basic ") and second["auth"] is None
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


@pytest.mark.parametrize("url, sha256, problem", [
    ("ftp://example.org/x.zip", None, "http"),
    ("http://127.0.0.1/x.zip", "abc", "64 hexadecimal"),
])
def test_download_rejects_bad_arguments(tmp_path, url, sha256, problem):
    with pytest.raises(ValueError, match=problem):
        dl.download(url, tmp_path / "x.zip", sha256=sha256, progress=False)


# --------------------------------------------------------------------------------------------
# extract()
# --------------------------------------------------------------------------------------------

def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz", symlinks: dict[str, str] | None = None):
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, points_to in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, points_to
            tf.addfile(info)
    return path


def make_zip(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name as given ('..' and all)
        for name, points_to in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # a symbolic link, as Unix zip stores it
            zf.writestr(info, points_to)
    return path


@pytest.mark.parametrize("suffix, mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar", "w")])
def test_extract_tar(tmp_path, suffix, mode):
    archive = make_tar(tmp_path / f"a{suffix}", {"top/a.txt": b"A", "top/sub/b.txt": b"B"}, mode)
    out = dl.extract(archive, tmp_path / "out")
    assert (out / "top/a.txt").read_bytes() == b"A" and (out / "top/sub/b.txt").read_bytes() == b"B"
    assert leftovers(tmp_path) == sorted([archive.name, "out", "out/top", "out/top/a.txt", "out/top/sub",
                                          "out/top/sub/b.txt"])


def test_extract_zip(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"top/a.txt": b"A", "top/sub/b.txt": b"B"})
    out = dl.extract(archive, tmp_path / "out")
    assert (out / "top/a.txt").read_bytes() == b"A" and (out / "top/sub/b.txt").read_bytes() == b"B"


@pytest.mark.parametrize("members, symlinks", [
    ({"../evil.txt": b"x"}, None),
    ({"ok.txt": b"x", "top/../../evil.txt": b"x"}, None),
    ({"/tmp/evil.txt": b"x"}, None),
    ({}, {"link": "/etc/passwd"}),
    ({}, {"link": "../../outside"}),
])
def test_extract_tar_refuses_path_traversal(tmp_path, members, symlinks):
    archive = make_tar(tmp_path / "bad.tar.gz", members, symlinks=symlinks)
    with pytest.raises(dl.ArchiveError) as info:
        dl.extract(archive, tmp_path / "out" / "x")
    assert str(archive) in str(info.value) and "unsafe" in str(info.value)
    assert leftovers(tmp_path) == ["bad.tar.gz", "out"]  # no target, no temporary folder, nothing outside


@pytest.mark.parametrize("members, symlinks, why", [
    ({"../evil.txt": b"x"}, None, "'..'"),
    ({"ok.txt": b"x", "top/../../evil.txt": b"x"}, None, "'..'"),
    ({"/abs/evil.txt": b"x"}, None, "absolute"),
    ({"C:/evil.txt": b"x"}, None, "absolute"),
    ({"..\\evil.txt": b"x"}, None, "'..'"),
    ({}, {"link": "/etc/passwd"}, "symbolic link"),
])
def test_extract_zip_refuses_path_traversal_before_writing_anything(tmp_path, members, symlinks, why):
    archive = make_zip(tmp_path / "bad.zip", members, symlinks)
    with pytest.raises(dl.ArchiveError) as info:
        dl.extract(archive, tmp_path / "out" / "x")
    assert str(archive) in str(info.value) and why in str(info.value)
    assert leftovers(tmp_path) == ["bad.zip", "out"]


@pytest.mark.parametrize("name, data", [
    ("truncated.tar.gz", None),  # made below: a real .tar.gz cut in half
    ("random.zip", b"PK\x03\x04 this is not really a zip file"),
    ("random.tar", b"\x00\x01 not a tar" * 100),
    ("page.zip", b"<!DOCTYPE html><html>sign in</html>"),
])
def test_corrupt_archive_raises_a_clear_error_naming_the_file(tmp_path, name, data):
    archive = tmp_path / name
    if data is None:
        full = make_tar(tmp_path / "full.tar.gz", {"a.bin": np.random.default_rng(0).bytes(50_000)})
        archive.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        full.unlink()
    else:
        archive.write_bytes(data)
    with pytest.raises(dl.ArchiveError) as info:
        dl.extract(archive, tmp_path / "out")
    assert str(archive) in str(info.value) and "download it again" in str(info.value)
    if name == "page.zip":
        assert "web page" in str(info.value)
    assert leftovers(tmp_path) == [name]


def test_extract_refuses_a_non_empty_target_and_unknown_kinds(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"a.txt": b"A"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        dl.extract(archive, tmp_path / "out")
    (tmp_path / "a.rar").write_bytes(b"x")
    with pytest.raises(dl.ArchiveError, match="unknown archive type"):
        dl.extract(tmp_path / "a.rar", tmp_path / "out2")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dl.extract(tmp_path / "nope.zip", tmp_path / "out3")


# --------------------------------------------------------------------------------------------
# Kaggle credentials
# --------------------------------------------------------------------------------------------

def test_kaggle_credentials_from_environment_and_file(monkeypatch, tmp_path, no_kaggle):
    monkeypatch.setenv("KAGGLE_USERNAME", "ann")
    monkeypatch.setenv("KAGGLE_KEY", "k3y")
    assert dl.kaggle_credentials() == ("ann", "k3y")
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = tmp_path / "empty-kaggle-config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "bob", "key": "s3cret"}))
    assert dl.kaggle_credentials() == ("bob", "s3cret")


def test_kaggle_credentials_missing_or_malformed_say_how_to_supply_them(monkeypatch, tmp_path, no_kaggle):
    with pytest.raises(dl.KaggleCredentialsError) as info:
        dl.kaggle_credentials()
    for expected in ("KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", "https://www.kaggle.com/settings"):
        assert expected in str(info.value)
    monkeypatch.setenv("KAGGLE_USERNAME", "ann")
    with pytest.raises(dl.KaggleCredentialsError, match="KAGGLE_KEY is missing"):
        dl.kaggle_credentials()
    monkeypatch.delenv("KAGGLE_USERNAME")
    config = tmp_path / "empty-kaggle-config"
    config.mkdir()
    (config / "kaggle.json").write_text('{"username": "ann"}')
    with pytest.raises(dl.KaggleCredentialsError, match="must hold"):
        dl.kaggle_credentials()


# --------------------------------------------------------------------------------------------
# prepare(): small archives laid out like the real ones
# --------------------------------------------------------------------------------------------

def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def lung_boxes(h=64, w=48):
    """(left, right) lung masks of an h x w image: two rectangles with even edges (exact at half size)."""
    left, right = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    left[8:48, 4:20] = 255
    right[10:52, 26:44] = 255
    return left, right


def xray(h=64, w=48, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    high = 4095 if dtype == np.uint16 else 255  # 12-bit values in a 16-bit PNG, as X-ray detectors give
    return rng.integers(0, high + 1, size=(h, w)).astype(dtype)


def with_local_sources(name: str, server: _Server, files: dict[str, bytes], checksum: str = "sha256"):
    """DATASETS[name] with its URLs pointing at the local server (the rest of the entry unchanged)."""
    ds = dl.DATASETS[name]
    sources = []
    for source in ds.sources:
        data = files[source.file_name]
        path = f"/{source.file_name}"
        server.files[path] = data
        sums = ({"sha256": sha(data), "md5": None} if checksum == "sha256" else
                {"sha256": None, "md5": hashlib.md5(data).hexdigest()} if checksum == "md5" else
                {"sha256": None, "md5": None})
        sources.append(dataclasses.replace(source, url=server.url(path), **sums))
    return dataclasses.replace(ds, sources=tuple(sources))


def montgomery_zip() -> bytes:
    left, right = lung_boxes()
    left_01 = (left > 0).astype(np.uint8)  # a 0/1 mask: binarised at half its maximum, like 0/255
    members = {
        "MontgomerySet/CXR_png/MCUCXR_0001_0.png": png_bytes(xray(seed=1)),
        "MontgomerySet/CXR_png/MCUCXR_0002_1.png": png_bytes(xray(seed=2, dtype=np.uint16)),
        "MontgomerySet/ManualMask/leftMask/MCUCXR_0001_0.png": png_bytes(left),
        "MontgomerySet/ManualMask/rightMask/MCUCXR_0001_0.png": png_bytes(right),
        "MontgomerySet/ManualMask/leftMask/MCUCXR_0002_1.png": png_bytes(left_01),
        "MontgomerySet/ManualMask/rightMask/MCUCXR_0002_1.png": png_bytes(right),
        "MontgomerySet/ClinicalReadings/MCUCXR_0001_0.txt": b"Patient's Sex: F\nnormal\n",
        "MontgomerySet/NLM-MontgomeryCXRSet-ReadMe.pdf": b"%PDF-1.4 stand-in",
        "__MACOSX/MontgomerySet/CXR_png/._MCUCXR_0001_0.png": b"\x00\x05\x16\x07 resource fork",
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_prepare_montgomery_combines_left_and_right_masks(server, tmp_path, capsys):
    archive = montgomery_zip()
    ds = with_local_sources("montgomery", server, {"NLM-MontgomeryCXRSet.zip": archive}, checksum=None)
    out = dl.prepare(ds, tmp_path / "root", image_size=24, progress=False, timeout=TIMEOUT)
    assert out == tmp_path / "root" / "cxr-lung-montgomery"
    names = ["MCUCXR_0001_0.png", "MCUCXR_0002_1.png"]
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    assert sorted(p.name for p in (out / "masks").iterdir()) == names
    # independent reference: the centre of each output pixel, mapped back into the 64 x 48 source
    # frame, is lung when it falls inside either rectangle; only pixels on the reference's boundary
    # may differ (there resampling decides)
    rows, cols = (np.arange(24) + 0.5) * 64 / 24, (np.arange(24) + 0.5) * 48 / 24
    r, c = np.meshgrid(rows, cols, indexing="ij")
    ref = ((r >= 8) & (r < 48) & (c >= 4) & (c < 20)) | ((r >= 10) & (r < 52) & (c >= 26) & (c < 44))
    padded = np.pad(ref, 1, mode="edge")
    boundary = ((padded[1:-1, 1:-1] != padded[:-2, 1:-1]) | (padded[1:-1, 1:-1] != padded[2:, 1:-1])
                | (padded[1:-1, 1:-1] != padded[1:-1, :-2]) | (padded[1:-1, 1:-1] != padded[1:-1, 2:]))
    for name in names:
        image = Image.open(out / "images" / name)
        mask = np.asarray(Image.open(out / "masks" / name))
        assert image.mode == "L" and image.size == (24, 24)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        wrong = (mask == 255) != ref
        assert not (wrong & ~boundary).any() and wrong.sum() < boundary.sum() / 2
    # the 16-bit image was stretched to the full 8-bit range before resizing
    assert np.asarray(Image.open(out / "images" / "MCUCXR_0002_1.png")).max() > 200
    rows = (out / "provenance.csv").read_text().splitlines()
    assert rows[0].startswith("file,source_image,source_masks") and len(rows) == 3
    assert "leftMask/MCUCXR_0001_0.png rightMask/MCUCXR_0001_0.png" in rows[1] and ",48,64," in rows[1]
    readme = (out / "README.md").read_text()
    assert "Jaeger" in readme and "no published checksum" in readme and sha(archive) in readme
    assert sha(archive) in capsys.readouterr().err  # printed after the download, to pin it
    manifest = (out / "MANIFEST.sha256").read_text().splitlines()
    assert len(manifest) == 6 and all(
        sha((out / line.split("  ", 1)[1]).read_bytes()) == line.split("  ", 1)[0] for line in manifest)
    assert leftovers(tmp_path / "root") == sorted(
        ["cxr-lung-montgomery", "downloads", "downloads/NLM-MontgomeryCXRSet.zip"]
        + [f"cxr-lung-montgomery/{p}" for p in ("images", "masks", "provenance.csv", "README.md",
                                                 "MANIFEST.sha256")]
        + [f"cxr-lung-montgomery/{d}/{n}" for d in ("images", "masks") for n in names])


def test_prepare_montgomery_keeps_the_size_when_asked(server, tmp_path):
    ds = with_local_sources("montgomery", server, {"NLM-MontgomeryCXRSet.zip": montgomery_zip()})
    out = dl.prepare(ds, tmp_path, image_size=None, progress=False, timeout=TIMEOUT)
    left, right = lung_boxes()
    mask = np.asarray(Image.open(out / "masks" / "MCUCXR_0001_0.png"))
    np.testing.assert_array_equal(mask, np.maximum(left, right))  # exactly the union of the two masks
    np.testing.assert_array_equal(np.asarray(Image.open(out / "images" / "MCUCXR_0001_0.png")), xray(seed=1))


def test_prepare_montgomery_missing_mask_is_named_and_nothing_is_left(server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(montgomery_zip())) as src, zipfile.ZipFile(buffer, "w") as dst:
        for item in src.infolist():
            if item.filename != "MontgomerySet/ManualMask/rightMask/MCUCXR_0002_1.png":
                dst.writestr(item, src.read(item))
    ds = with_local_sources("montgomery", server, {"NLM-MontgomeryCXRSet.zip": buffer.getvalue()})
    with pytest.raises(dl.DatasetLayoutError, match="MCUCXR_0002_1.png: no ManualMask/rightMask/MCUCXR_0002_1.png"):
        dl.prepare(ds, tmp_path, progress=False, timeout=TIMEOUT)
    assert leftovers(tmp_path) == ["downloads", "downloads/NLM-MontgomeryCXRSet.zip"]


def shenzhen_zips() -> dict[str, bytes]:
    left, right = lung_boxes()
    rgb = np.stack([xray(seed=5)] * 3, axis=-1)  # some Shenzhen PNGs are stored as RGB
    images = {"ChinaSet_AllFiles/CXR_png/CHNCXR_0001_0.png": png_bytes(xray(seed=3)),
              "ChinaSet_AllFiles/CXR_png/CHNCXR_0002_1.png": png_bytes(rgb),
              "ChinaSet_AllFiles/CXR_png/CHNCXR_0003_0.png": png_bytes(xray(seed=4)),
              "ChinaSet_AllFiles/ClinicalReadings/CHNCXR_0001_0.txt": b"male 45yrs\nnormal\n",
              "ChinaSet_AllFiles/NLM-ChinaCXRSet-ReadMe.docx": b"stand-in"}
    masks = {"mask/CHNCXR_0001_0_mask.png": png_bytes(np.maximum(left, right)),
             "mask/CHNCXR_0002_1_mask.png": png_bytes(left)}
    out = {}
    for name, members in (("ChinaSet_AllFiles.zip", images), ("shcxr-lung-mask.zip", masks)):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
        out[name] = buffer.getvalue()
    return out


def test_prepare_shenzhen_without_kaggle_token_downloads_nothing(server, tmp_path, no_kaggle):
    ds = with_local_sources("shenzhen", server, shenzhen_zips(), checksum=None)
    with pytest.raises(dl.KaggleCredentialsError) as info:
        dl.prepare(ds, tmp_path / "root", progress=False, timeout=TIMEOUT)
    message = str(info.value)
    for expected in ("shenzhen", "KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json",
                     "https://www.kaggle.com/datasets/yoctoman/shcxr-lung-mask",
                     str(tmp_path / "root" / "downloads" / "shcxr-lung-mask.zip")):
        assert expected in message
    assert server.requests == [] and not (tmp_path / "root").exists()


def test_prepare_shenzhen_with_token_matches_masks_and_lists_the_rest(server, tmp_path, no_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "ann")
    monkeypatch.setenv("KAGGLE_KEY", "k3y")
    ds = with_local_sources("shenzhen", server, shenzhen_zips(), checksum=None)
    server.auth["/shcxr-lung-mask.zip"] = "Basic " + base64.b64encode(b"ann:k3y").decode()
    out = dl.prepare(ds, tmp_path, image_size=None, progress=False, timeout=TIMEOUT)
    assert [r["auth"] is not None for r in server.requests] == [False, True]  # the token goes to Kaggle only
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["CHNCXR_0001_0.png", "CHNCXR_0002_1.png"]
    assert (out / "images_without_mask.txt").read_text() == "CHNCXR_0003_0.png\n"
    left, right = lung_boxes()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "masks" / "CHNCXR_0002_1.png")), left)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "images" / "CHNCXR_0002_1.png")), xray(seed=5))
    assert "1 of the 3 images have no lung mask" in (out / "README.md").read_text()


def test_prepare_shenzhen_with_masks_downloaded_by_hand_needs_no_token(server, tmp_path, no_kaggle):
    zips = shenzhen_zips()
    ds = with_local_sources("shenzhen", server, zips, checksum=None)
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "shcxr-lung-mask.zip").write_bytes(zips["shcxr-lung-mask.zip"])
    out = dl.prepare(ds, tmp_path, image_size=16, progress=False, timeout=TIMEOUT)
    assert server.paths() == ["/ChinaSet_AllFiles.zip"]
    assert len(list((out / "images").iterdir())) == 2


def nifti_gz(array: np.ndarray) -> bytes:
    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(array, np.eye(4)).to_bytes(), mtime=0)


def decathlon_tar(task="Task04_Hippocampus", n_train=2, junk=True) -> tuple[bytes, dict[str, bytes]]:
    rng = np.random.default_rng(0)
    members = {f"{task}/dataset.json": json.dumps({
        "name": "Hippocampus", "licence": "CC-BY-SA 4.0", "labels": {"0": "background", "1": "Anterior",
                                                                    "2": "Posterior"},
        "numTraining": n_train, "numTest": 1}).encode()}
    for i in range(1, n_train + 1):
        members[f"{task}/imagesTr/hippocampus_{i:03d}.nii.gz"] = nifti_gz(rng.random((5, 6, 4)).astype(np.float32))
        members[f"{task}/labelsTr/hippocampus_{i:03d}.nii.gz"] = nifti_gz(rng.integers(0, 3, (5, 6, 4)).astype(np.uint8))
    members[f"{task}/imagesTs/hippocampus_099.nii.gz"] = nifti_gz(np.zeros((5, 6, 4), np.float32))
    if junk:
        members[f"{task}/imagesTr/._hippocampus_001.nii.gz"] = b"\x00\x05\x16\x07 AppleDouble"
        members[f"{task}/._dataset.json"] = b"\x00\x05\x16\x07 AppleDouble"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:  # the Decathlon tarballs are plain .tar
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), members


def test_prepare_hippocampus_checks_md5_and_keeps_the_files_byte_for_byte(server, tmp_path):
    import nibabel as nib

    tar, members = decathlon_tar()
    ds = with_local_sources("hippocampus", server, {"Task04_Hippocampus.tar": tar}, checksum="md5")
    assert ds.sources[0].md5 and ds.sources[0].sha256 is None  # like the registry: md5 published
    out = dl.prepare(ds, tmp_path, progress=False, timeout=TIMEOUT)
    assert out.name == "msd-task04-hippocampus-full"
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["hippocampus_001.nii.gz", "hippocampus_002.nii.gz"]
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        for path in (out / sub).iterdir():
            assert path.read_bytes() == members[f"Task04_Hippocampus/{sub}/{path.name}"]
    assert nib.load(out / "labelsTr" / "hippocampus_001.nii.gz").shape == (5, 6, 4)
    readme = (out / "README.md").read_text()
    assert "2 macOS '._*' resource-fork file(s)" in readme and "CC-BY-SA 4.0" in readme
    assert "checked against the published md5" in readme


def test_prepare_decathlon_with_missing_label_fails_cleanly(server, tmp_path):
    tar, members = decathlon_tar(n_train=2, junk=False)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(tar)) as src, tarfile.open(fileobj=buffer, mode="w") as dst:
        for info in src.getmembers():
            if not info.name.endswith("labelsTr/hippocampus_002.nii.gz"):
                dst.addfile(info, src.extractfile(info))
    ds = with_local_sources("lits", server, {"Task03_Liver.tar": buffer.getvalue()}, checksum="sha256")
    with pytest.raises(dl.DatasetLayoutError, match="imagesTr/hippocampus_002.nii.gz has no label"):
        dl.prepare(ds, tmp_path, progress=False, timeout=TIMEOUT)
    assert leftovers(tmp_path) == ["downloads", "downloads/Task03_Liver.tar"]


def test_prepare_reuses_a_finished_folder_and_refuses_an_unfinished_one(server, tmp_path, capsys):
    tar, _ = decathlon_tar()
    ds = with_local_sources("hippocampus", server, {"Task04_Hippocampus.tar": tar})
    out = dl.prepare(ds, tmp_path, progress=False, timeout=TIMEOUT)
    server.requests.clear()
    assert dl.prepare(ds, tmp_path, progress=False, timeout=TIMEOUT) == out and server.requests == []
    assert "already prepared" in capsys.readouterr().err
    (out / "MANIFEST.sha256").unlink()
    with pytest.raises(FileExistsError, match="not a finished data set"):
        dl.prepare(ds, tmp_path, progress=False, timeout=TIMEOUT)


def test_prepare_rejects_unknown_names_and_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'nope'.*montgomery"):
        dl.prepare("nope", tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        dl.prepare("montgomery", tmp_path, image_size=0)


# --------------------------------------------------------------------------------------------
# The registry and the command line
# --------------------------------------------------------------------------------------------

def test_registry_records_what_is_published():
    assert set(dl.DATASETS) == {"montgomery", "shenzhen", "lits", "hippocampus"}
    for ds in dl.DATASETS.values():
        assert ds.layout in ("png", "decathlon") and ds.license and ds.citation
        for source in ds.sources:
            assert source.url.startswith("https://") and source.file_name
            assert source.account in (None, "kaggle")
            if source.sha256 is None and source.md5 is None:
                assert "no published checksum" in source.checksum_text
            else:
                assert source.checksum_source
    assert dl.DATASETS["shenzhen"].accounts == ("kaggle",) and dl.DATASETS["lits"].accounts == ()
    assert "Task03_Liver" in dl.DATASETS["lits"].sources[0].url


def load_cli():
    path = Path(__file__).resolve().parents[1] / "data_download" / "download.py"
    spec = importlib.util.spec_from_file_location("data_download_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_list_describes_every_data_set(capsys):
    assert load_cli().main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, ds in dl.DATASETS.items():
        assert name in out and ds.folder in out and all(s.url in out for s in ds.sources)
    assert "no published checksum" in out and "KAGGLE_USERNAME" in out


def test_cli_reports_errors_without_a_traceback(capsys, tmp_path, no_kaggle):
    cli = load_cli()
    assert cli.main(["shenzhen", "--root", str(tmp_path / "root")]) == 1
    err = capsys.readouterr().err
    assert "KAGGLE_USERNAME" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as info:
        cli.main(["montgomery"])  # --root is required to prepare
    assert info.value.code == 2 and "--root" in capsys.readouterr().err


def test_lightm_edu_download_is_the_same_command(capsys, tmp_path, no_kaggle):
    from lightm_edu import cli as package_cli

    assert package_cli.main(["download", "--list"]) == 0
    assert capsys.readouterr().out.count("https://") >= len(dl.DATASETS)
    assert package_cli.main(["download", "shenzhen", "--root", str(tmp_path / "root")]) == 1
    assert "KAGGLE_USERNAME" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        package_cli.main(["download", "montgomery"])
    assert info.value.code == 2 and "--root" in capsys.readouterr().err


def test_repository_checksums_match_the_committed_files_the_chapters_use():
    import re

    from lightm_edu.notebook import repository_checksums

    root = Path(__file__).resolve().parents[1]
    checksums = repository_checksums()
    for name, digest in checksums.items():
        assert dl.file_sha256(root / name) == digest, (
            f"{name} changed: update lightm_edu/repository_files.sha256 (sha256sum of the file)")
    used = set()
    for chapter in (root / "book").glob("*.ipynb"):
        used |= set(re.findall(r'repository_file\(\\"([^\\"]+)\\"\)', chapter.read_text()))
    assert used and used <= set(checksums), sorted(used - set(checksums))


def test_repository_file_outside_a_clone_downloads_and_checks(server, tmp_path, monkeypatch):
    from lightm_edu import notebook

    name = "results/example.csv"
    server.files["/raw/" + name] = b"epoch,train_loss\n1,0.5\n"
    monkeypatch.setattr(notebook, "REPOSITORY_URL", server.url("/raw/"))
    monkeypatch.setattr(notebook, "repository_checksums", lambda: {name: sha(b"epoch,train_loss\n1,0.5\n")})
    monkeypatch.chdir(tmp_path)  # no clone here or above
    path = notebook.repository_file(name)
    assert path.read_bytes() == b"epoch,train_loss\n1,0.5\n" and path == tmp_path.resolve() / "lightm_edu_files" / name
    server.files["/raw/" + name] = b"tampered"
    monkeypatch.setattr(notebook, "repository_checksums", lambda: {name: sha(b"tampered!")})
    path.unlink()
    with pytest.raises(dl.ChecksumError):
        notebook.repository_file(name)
    assert not path.exists()
    with pytest.raises(FileNotFoundError, match="not one of the repository files with a recorded checksum"):
        notebook.repository_file("results/unknown.csv")
