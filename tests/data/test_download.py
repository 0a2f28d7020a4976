"""Downloads against a local HTTP server: resume, checksum, atomicity; pip wheels via a faked pip."""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile
from pathlib import Path

import pytest

from recstack.data import download
from recstack.data.download import extract_zip, fetch_pypi_wheel_files, fetch_url
from recstack.errors import DataError
from tests.data.local_http import closed_port_url, serve

BODY = bytes(range(256)) * 40  # 10,240 bytes
DIGEST = hashlib.sha256(BODY).hexdigest()


def test_fetch_verifies_and_renames_atomically(tmp_path):
    dest = tmp_path / "data.bin"
    with serve({"/data.bin": BODY}) as (base, log):
        assert fetch_url(f"{base}/data.bin", dest, sha256=DIGEST, progress=False) == dest
        assert fetch_url(f"{base}/data.bin", dest, sha256=DIGEST, progress=False) == dest  # cached
    assert dest.read_bytes() == BODY and not (tmp_path / "data.bin.part").exists()
    assert len(log) == 1


def test_fetch_resumes_a_partial_download_with_a_range_request(tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(BODY[:4000])
    with serve({"/data.bin": BODY}) as (base, log):
        fetch_url(f"{base}/data.bin", dest, sha256=DIGEST, progress=False)
    assert log == [{"path": "/data.bin", "range": "bytes=4000-"}]
    assert dest.read_bytes() == BODY


def test_fetch_restarts_when_the_server_ignores_the_range(tmp_path):
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"garbage that must not be kept")
    with serve({"/data.bin": BODY}, honour_range=False) as (base, _):
        fetch_url(f"{base}/data.bin", dest, sha256=DIGEST, progress=False)
    assert dest.read_bytes() == BODY


def test_checksum_mismatch_is_an_error_and_leaves_no_file(tmp_path):
    dest = tmp_path / "data.bin"
    with serve({"/data.bin": BODY}) as (base, _), pytest.raises(DataError, match="checksum mismatch"):
        fetch_url(f"{base}/data.bin", dest, sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_and_missing_urls_are_data_errors(tmp_path):
    url = closed_port_url()
    with pytest.raises(DataError, match="127.0.0.1"):
        fetch_url(url, tmp_path / "x.zip", timeout=2, progress=False)
    with serve({}) as (base, _), pytest.raises(DataError, match="404"):
        fetch_url(f"{base}/nope.zip", tmp_path / "nope.zip", progress=False)
    assert not (tmp_path / "x.zip").exists() and not (tmp_path / "nope.zip").exists()


def make_wheel(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


WHEEL = make_wheel(
    {
        "pkg/data/toy/a.txt": b"alpha\n",
        "pkg/data/toy/sub/b.txt": b"beta\n",
        "pkg/__init__.py": b"",
        "pkg-1.0.dist-info/METADATA": b"Name: pkg\n",
    }
)


@pytest.fixture
def fake_pip(monkeypatch):
    """Replace `pip download` by writing WHEEL into the -d folder; records each command."""
    calls: list[list[str]] = []

    def run(command, **kwargs):
        calls.append(list(command))
        target = Path(command[command.index("-d") + 1])
        (target / "pkg-1.0-py3-none-any.whl").write_bytes(WHEEL)
        return subprocess.CompletedProcess(command, 0, stdout="Saved", stderr="")

    monkeypatch.setattr(download.subprocess, "run", run)
    return calls


def test_wheel_files_are_extracted_under_the_prefix(tmp_path, fake_pip):
    digest = hashlib.sha256(b"alpha\n").hexdigest()
    dest = tmp_path / "toy"
    fetch_pypi_wheel_files("pkg", "1.0", "pkg/data/toy/", dest, sha256={"a.txt": digest})
    assert (dest / "a.txt").read_bytes() == b"alpha\n" and (dest / "sub" / "b.txt").read_bytes() == b"beta\n"
    assert sorted(p.name for p in dest.rglob("*")) == ["a.txt", "b.txt", "sub"]
    command = fake_pip[0]
    assert command[1:5] == ["-m", "pip", "download", "--no-deps"] and "--only-binary=:all:" in command
    assert "pkg==1.0" in command


def test_wheel_checksum_mismatch_leaves_nothing(tmp_path, fake_pip):
    dest = tmp_path / "toy"
    with pytest.raises(DataError, match="a.txt"):
        fetch_pypi_wheel_files("pkg", "1.0", "pkg/data/toy/", dest, sha256={"a.txt": "f" * 64})
    assert not dest.exists() and [p.name for p in tmp_path.iterdir() if p.name != "recstack_home"] == []


def test_pip_failure_is_a_data_error(tmp_path, monkeypatch):
    def run(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(download.subprocess, "run", run)
    with pytest.raises(DataError, match="No matching distribution"):
        fetch_pypi_wheel_files("pkg", "9.9", "pkg/", tmp_path / "out")


def test_unsafe_zip_member_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    archive.write_bytes(make_wheel({"data/../../escape.txt": b"x"}))
    with pytest.raises(DataError, match="unsafe"):
        extract_zip(archive, tmp_path / "out", "data/")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out").exists()
