"""Local paths and ``s3://`` URIs behind one small API.

S3 access goes through boto3 and its standard configuration: credentials from the usual AWS
variables or files, and the endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (boto3 reads
both), or ``MLFLOW_S3_ENDPOINT_URL`` so one setting serves MLflow and textrec alike.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from textrec.io import atomic_copy, atomic_path


class StorageError(RuntimeError):
    """A URI cannot be read or written; the message names it."""


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` -> ``("bucket", "key/prefix")``."""
    p = urlparse(uri)
    if p.scheme != "s3" or not p.netloc:
        raise StorageError(f"{uri}: not an s3://bucket/key URI")
    return p.netloc, p.path.lstrip("/")


def s3_client():
    """An S3 client configured from the environment as it is now.

    A fresh session each time: boto3's default session caches the credentials it first saw, so a
    changed ``AWS_*`` variable (another profile, a rotated key) would otherwise be ignored.
    """
    import boto3

    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)
    return boto3.session.Session().client("s3", endpoint_url=endpoint)


def _s3_keys(client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def download(uri: str, dest: str | os.PathLike) -> Path:
    """Copy a file or a whole prefix (folder) from ``uri`` to ``dest``; returns ``dest``.

    A prefix is copied as a folder tree. Each file lands atomically (temp file + rename).
    """
    dest = Path(dest)
    if not is_s3(uri):
        src = Path(uri)
        if not src.exists():
            raise StorageError(f"{src}: no such file or folder")
        if src.is_dir():
            shutil.copytree(src, dest, dirs_exist_ok=True)
        else:
            atomic_copy(src, dest)
        return dest
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    client = s3_client()
    try:
        keys = _s3_keys(client, bucket, key)
        if key and key in keys:  # a single object
            _s3_get(client, bucket, key, dest)
            return dest
        prefix = key.rstrip("/") + "/" if key else ""
        keys = [k for k in keys if k.startswith(prefix) and not k.endswith("/")]
        if not keys:
            raise StorageError(f"{uri}: no such object or prefix")
        for k in keys:
            _s3_get(client, bucket, k, dest / k[len(prefix):])
    except (BotoCoreError, ClientError) as e:
        raise StorageError(f"{uri}: {e}") from e
    return dest


def _s3_get(client, bucket: str, key: str, dest: Path) -> None:
    with atomic_path(dest, suffix=".part") as tmp:
        client.download_file(bucket, key, str(tmp))



def upload(src: str | os.PathLike, uri: str) -> str:
    """Copy a local file or folder to ``uri`` (a path or ``s3://``); returns ``uri``."""
    src = Path(src)
    if not src.exists():
        raise StorageError(f"{src}: no such file or folder")
    if not is_s3(uri):
        download(str(src), uri)
        return uri
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    client = s3_client()
    try:
        if src.is_dir():
            prefix = key.rstrip("/") + "/" if key.strip("/") else ""  # a bucket root has no prefix
            for f in sorted(p for p in src.rglob("*") if p.is_file()):
                client.upload_file(str(f), bucket, prefix + f.relative_to(src).as_posix())
        else:
            client.upload_file(str(src), bucket, key)
    except (BotoCoreError, ClientError) as e:
        raise StorageError(f"{uri}: {e}") from e
    return uri


def exists(uri: str) -> bool:
    """Whether ``uri`` names a file or folder (for S3: an object, or a prefix holding objects)."""
    if not is_s3(uri):
        return Path(uri).exists()
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    try:
        keys = _s3_keys(s3_client(), bucket, key)
    except (BotoCoreError, ClientError) as e:
        raise StorageError(f"{uri}: {e}") from e
    # a bare prefix match is not enough: s3://b/data must not "exist" because s3://b/database does
    folder = key.rstrip("/") + "/"
    return any(k == key or not key or k.startswith(folder) for k in keys)


@contextmanager
def local_path(uri: str | os.PathLike) -> Iterator[Path]:
    """A local path for ``uri``: the path itself, or a temporary download of an S3 file or prefix."""
    if not is_s3(uri):
        p = Path(uri)
        if not p.exists():
            raise StorageError(f"{p}: no such file or folder")
        yield p
        return
    with tempfile.TemporaryDirectory(prefix="textrec-") as tmp:
        name = split_s3(str(uri))[1].rstrip("/").rsplit("/", 1)[-1] or "root"
        yield download(str(uri), Path(tmp) / name)
