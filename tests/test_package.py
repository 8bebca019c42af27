"""Packaging: a cheap import, a lazy public API, and the data checksum tool."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_cheap():
    code = "import sys, lightm_edu; print('torch' in sys.modules, lightm_edu.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == "False", "importing lightm_edu must not import torch"


def test_public_api_resolves_lazily():
    import lightm_edu

    assert callable(lightm_edu.selective_scan)
    assert lightm_edu.selective_scan is __import__("lightm_edu.scan", fromlist=["x"]).selective_scan
    assert "selective_scan" in dir(lightm_edu)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        lightm_edu.nonexistent


def _make_dataset(tmp_path):
    folder = tmp_path / "toy"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "a.txt").write_bytes(b"hello")
    digest = hashlib.sha256(b"hello").hexdigest()
    (folder / "MANIFEST.sha256").write_text(f"{digest}  images/a.txt\n")
    return folder


def _verify(tmp_path, *names):
    env = {**os.environ, "LIGHTM_EDU_DATA": str(tmp_path)}
    return subprocess.run([sys.executable, str(ROOT / "data_download" / "verify_checksums.py"), *names],
                          capture_output=True, text=True, env=env)


def test_verify_checksums_accepts_intact_data(tmp_path):
    _make_dataset(tmp_path)
    done = _verify(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "toy: OK" in done.stdout


def test_verify_checksums_names_altered_missing_and_escaping_files(tmp_path):
    folder = _make_dataset(tmp_path)
    (folder / "images" / "a.txt").write_bytes(b"hellO")
    with open(folder / "MANIFEST.sha256", "a") as f:
        f.write(f"{'0' * 64}  images/b.txt\n{'0' * 64}  ../outside.txt\n")
    done = _verify(tmp_path, "toy")
    assert done.returncode == 1
    assert "checksum mismatch for images/a.txt" in done.stdout
    assert "missing file images/b.txt" in done.stdout
    assert "outside the folder" in done.stdout


def test_verify_checksums_without_data_variable_says_how_to_fix(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LIGHTM_EDU_DATA"}
    done = subprocess.run([sys.executable, str(ROOT / "data_download" / "verify_checksums.py")],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert "LIGHTM_EDU_DATA is not set" in done.stderr


def test_notebook_glue_displays_outside_the_book_and_stores_inside(monkeypatch):
    from unittest import mock

    pytest.importorskip("IPython")
    pytest.importorskip("myst_nb")
    from lightm_edu import notebook

    monkeypatch.delenv("LIGHTM_EDU_BOOK_BUILD", raising=False)
    assert not notebook.in_book_build()
    with mock.patch("IPython.display.display") as shown:
        notebook.glue("fig-x", "an object")
    shown.assert_called_once_with("an object")
    monkeypatch.setenv("LIGHTM_EDU_BOOK_BUILD", "1")
    assert notebook.in_book_build()
    with mock.patch("myst_nb.glue") as stored:
        notebook.glue("fig-x", "an object")
    stored.assert_called_once_with("fig-x", "an object", display=False)


def test_show_source_displays_the_real_source():
    from unittest import mock

    pytest.importorskip("IPython")
    from lightm_edu import notebook, ssm

    with mock.patch("IPython.display.display") as shown:
        notebook.show_source(ssm.ssm_kernel)
    code = shown.call_args.args[0]
    assert "def ssm_kernel" in code.data


def test_atomic_output_leaves_nothing_half_written(tmp_path):
    from lightm_edu._atomic import atomic_output

    target = tmp_path / "sub" / "result.txt"
    with atomic_output(target) as temporary:
        temporary.write_text("complete")
        assert not target.exists()  # the final name appears only at the end
    assert target.read_text() == "complete"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "complete"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.txt"]


def test_atomic_output_gives_ordinary_file_permissions(tmp_path):
    import os
    import stat

    from lightm_edu._atomic import atomic_output

    ordinary = tmp_path / "ordinary.txt"
    ordinary.write_text("x")
    with atomic_output(tmp_path / "atomic.txt") as temporary:
        temporary.write_text("x")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "atomic.txt") == mode(ordinary)


def test_fast_mode_order_argument_then_environment_then_device(monkeypatch):
    import torch

    from lightm_edu import notebook

    monkeypatch.setenv("LIGHTM_EDU_FAST", "0")
    assert notebook.fast_mode(True) is True
    assert notebook.fast_mode() is False
    monkeypatch.setenv("LIGHTM_EDU_FAST", "1")
    assert notebook.fast_mode(False) is False
    assert notebook.fast_mode() is True
    monkeypatch.delenv("LIGHTM_EDU_FAST")
    assert notebook.fast_mode() is (not torch.cuda.is_available())
    monkeypatch.setenv("LIGHTM_EDU_FAST", "maybe")
    with pytest.raises(ValueError, match="LIGHTM_EDU_FAST='maybe'"):
        notebook.fast_mode()
