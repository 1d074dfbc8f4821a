"""Fetch a dataset archive: http(s) with resume and a SHA-256 check, local paths, or ``s3://`` URIs.

An http(s) download streams into ``<name>.part`` next to its destination and is renamed to ``<name>``
only once it is complete and its checksum (when given) matches, so a file under its final name is
always whole. An interrupted download keeps its ``.part`` file; the next call (or the next retry
within this call) asks the server for the rest with an HTTP ``Range`` header and appends to it.
A server that ignores ``Range`` (answers 200 instead of 206) simply restarts the file.

A checksum mismatch deletes the bad bytes: resuming from them could never succeed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from tqdm import tqdm

from textrec import storage
from textrec.io import publish

CHUNK = 1 << 20
RETRIES = 3
RETRY_WAIT_S = 0.5  # times the attempt number
TIMEOUT_S = 60.0


class DownloadError(RuntimeError):
    """A file cannot be fetched; the message names the URL or path."""


class ChecksumError(DownloadError):
    """A fetched file's SHA-256 differs from the expected one."""


def sha256_of(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch(url_or_path: str | os.PathLike, dest_dir: str | os.PathLike, *, sha256: str | None = None,
          progress: bool = True) -> Path:
    """Make ``url_or_path`` available as a local file and return its path.

    - ``http(s)://``: downloaded into ``dest_dir`` (resumed from a ``.part`` file, retried on a dropped
      connection); an existing complete file with the right checksum is not downloaded again.
    - ``s3://bucket/key``: copied into ``dest_dir`` through :mod:`textrec.storage`.
    - a local path (or ``file://`` URL): used in place, not copied; only its checksum is checked.

    Raises :class:`ChecksumError` (naming the file, the expected and the actual digest) when
    ``sha256`` is given and does not match, and :class:`DownloadError` when the source cannot be read.
    """
    src = str(url_or_path)
    expected = _normalise_digest(sha256, src)
    scheme = urlparse(src).scheme
    if scheme in ("http", "https"):
        return _fetch_http(src, Path(dest_dir), expected, progress)
    if scheme == "s3":
        return _fetch_s3(src, Path(dest_dir), expected)
    path = Path(unquote(urlparse(src).path)) if scheme == "file" else Path(src)
    if not path.is_file():
        raise DownloadError(f"{path}: no such file")
    if expected:
        _verify(path, expected, delete=False)
    return path


def _normalise_digest(sha256: str | None, src: str) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{src}: expected SHA-256 must be 64 hex digits, got {sha256!r}")
    return digest


def _verify(path: Path, expected: str, *, delete: bool) -> None:
    actual = sha256_of(path)
    if actual == expected:
        return
    if delete:
        path.unlink(missing_ok=True)
    raise ChecksumError(f"{path}: SHA-256 mismatch: expected {expected}, got {actual}"
                        + (" (the file was deleted)" if delete else ""))


def _file_name(url: str) -> str:
    name = Path(unquote(urlparse(url).path)).name
    return name or "download"


def _fetch_s3(uri: str, dest_dir: Path, expected: str | None) -> Path:
    dest = dest_dir / _file_name(uri)
    if dest.is_file() and (expected is None or sha256_of(dest) == expected):
        return dest
    try:
        storage.download(uri, dest)
    except storage.StorageError as e:
        raise DownloadError(str(e)) from e
    if expected:
        _verify(dest, expected, delete=True)
    return dest


def _fetch_http(url: str, dest_dir: Path, expected: str | None, progress: bool) -> Path:
    dest = dest_dir / _file_name(url)
    if dest.is_file() and (expected is None or sha256_of(dest) == expected):
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, RETRIES + 1):
        try:
            if _download_to(url, part, progress):
                break
        except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
            if attempt == RETRIES:
                raise DownloadError(f"{url}: download failed ({e}){_kept(part)}") from e
        if attempt < RETRIES:
            time.sleep(RETRY_WAIT_S * attempt)  # a dropped connection: give the server a moment, then resume
    else:
        raise DownloadError(f"{url}: connection kept dropping after {RETRIES} attempts{_kept(part)}")
    if expected:
        _verify(part, expected, delete=True)
    publish(part, dest)  # the verified partial file becomes the download
    return dest


def _kept(part: Path) -> str:
    return f"; partial data kept in {part}, run again to resume" if part.exists() else ""


def _download_to(url: str, part: Path, progress: bool) -> bool:
    """One request: append the missing bytes to ``part``. True when the file is known complete."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "textrec"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the .part file is already whole
            return True
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    with response:
        start = _resume_offset(response, have, url)
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        mode = "ab" if start else "wb"
        with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                         desc=part.name[:-5], disable=not progress, leave=False) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
        size = part.stat().st_size
    # A dropped connection can look like a clean end of stream: trust only a matching length.
    return total is None or size == total


def _resume_offset(response, have: int, url: str) -> int:
    """Where the response body starts in the file: ``have`` for a 206 answer, 0 for a full 200."""
    if response.status != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")
    m = re.match(r"bytes (\d+)-", content_range)
    if not m or int(m.group(1)) != have:
        raise DownloadError(f"{url}: asked for bytes {have}- but the server sent {content_range!r}")
    return have

