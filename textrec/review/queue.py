"""The capture queue: line images a served model was unsure of, waiting for a person to read them.

A queue is a folder or an ``s3://`` prefix holding one JSON object per captured line::

    QUEUE/items/20261203T120102123456Z-1f2e3d4c.json
    {"format": "textrec-capture", "version": 1, "id": "20261203T120102123456Z-1f2e3d4c",
     "time": "2026-12-03T12:01:02.123456+00:00", "image": "<base64>", "image_type": "png",
     "text": "the model's reading", "confidence": 0.41, "char_confidences": [0.9, 0.2, ...] | null,
     "model": "textrec-line", "model_version": "4", "deployment": "prod-eu", "reason": "low_confidence"}

One item is one object, written whole (a temporary file renamed into place, or one S3 put), so a
reader never sees half of one. The name starts with the capture time (UTC), so listing order is time
order and retention can be applied from the names alone. Nothing about the caller is kept: no
address, header or token, only what the model was shown and what it answered.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from textrec import storage
from textrec.io import atomic_write

FORMAT = "textrec-capture"
VERSION = 1
ITEMS = "items"
_ID = re.compile(r"^(\d{8}T\d{12}Z)-[0-9a-f]{8}$")
_TIME = "%Y%m%dT%H%M%S%fZ"


class QueueError(RuntimeError):
    """A queue or one of its items cannot be read or written; the message names it."""


@dataclass(frozen=True)
class Entry:
    """One item as listed: its id, size in bytes and capture time (from its name)."""

    id: str
    size: int
    time: datetime


def new_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now.strftime(_TIME)}-{secrets.token_hex(4)}"


def id_time(item_id: str) -> datetime | None:
    """The capture time an id starts with; None for a name that is not an item id."""
    m = _ID.match(item_id)
    return datetime.strptime(m.group(1), _TIME).replace(tzinfo=UTC) if m else None


def is_item_id(item_id: str) -> bool:
    return id_time(item_id) is not None


def make_item(image: bytes, text: str, confidence: float, *, model: str, model_version: str,
              char_confidences: list[float] | None = None, deployment: str = "", reason: str = "",
              now: datetime | None = None) -> dict[str, Any]:
    """A queue item (a JSON-able dict) for one captured line."""
    now = now or datetime.now(UTC)
    chars = None
    if char_confidences is not None and len(char_confidences) == len(text):
        chars = [round(float(c), 4) for c in char_confidences]
    return {"format": FORMAT, "version": VERSION, "id": new_id(now), "time": now.isoformat(),
            "image": base64.b64encode(image).decode("ascii"), "image_type": _image_type(image),
            "text": text, "confidence": round(float(confidence), 6), "char_confidences": chars,
            "model": model, "model_version": model_version, "deployment": deployment, "reason": reason}


def _image_type(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "png"
    if data.startswith(b"\xff\xd8"):
        return "jpeg"
    return "octet-stream"


def item_image(item: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(item["image"], validate=True)
    except (KeyError, TypeError, binascii.Error, ValueError) as e:
        raise QueueError(f"queue item {item.get('id')!r}: no readable image ({e})") from e


QUEUE_S3_ENDPOINT_ENV = "TEXTREC_QUEUE_S3_ENDPOINT"
QUEUE_S3_KEYS_ENV = "TEXTREC_QUEUE_S3_KEYS_FILE"


def queue_s3_client() -> Any:
    """The S3 client a queue uses: ``textrec.storage``'s (the ``AWS_*`` environment), unless
    ``TEXTREC_QUEUE_S3_ENDPOINT`` / ``TEXTREC_QUEUE_S3_KEYS_FILE`` name the queue's own endpoint and
    keys (a file in the AWS shared-credentials format, its ``[default]`` section: a mounted Secret).
    TorchServe hides every ``AWS_*`` variable from its workers, which recognise images and need no
    credentials; these two let a capturing worker reach its queue, and only its queue."""
    import configparser

    import boto3

    endpoint = os.environ.get(QUEUE_S3_ENDPOINT_ENV)
    keys_file = os.environ.get(QUEUE_S3_KEYS_ENV)
    if not endpoint and not keys_file:
        return storage.s3_client()
    keys: dict[str, str] = {}
    if keys_file:
        parser = configparser.ConfigParser()
        if not parser.read(keys_file) or "default" not in parser:
            raise QueueError(f"{QUEUE_S3_KEYS_ENV}={keys_file}: no [default] section with "
                             "aws_access_key_id and aws_secret_access_key")
        section = parser["default"]
        keys = {k: section[k] for k in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
                if section.get(k)}
        if len(keys) < 2:
            raise QueueError(f"{QUEUE_S3_KEYS_ENV}={keys_file}: [default] needs aws_access_key_id and "
                             "aws_secret_access_key")
    return boto3.session.Session(**keys).client(
        "s3", endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        region_name=os.environ.get("TEXTREC_QUEUE_S3_REGION") or os.environ.get("AWS_REGION") or "us-east-1")


class CaptureQueue:
    """Read and write the items of one queue (a local folder or an ``s3://`` prefix)."""

    def __init__(self, uri: str | os.PathLike) -> None:
        self.uri = str(uri).rstrip("/") or str(uri)
        if not self.uri.strip():
            raise QueueError("empty queue location: expected a folder or an s3://bucket/prefix")
        self.s3 = storage.is_s3(self.uri)
        if self.s3:
            self.bucket, key = storage.split_s3(self.uri)
            self.prefix = (key.strip("/") + "/" if key.strip("/") else "") + ITEMS + "/"
        else:
            self.folder = Path(self.uri) / ITEMS

    def __repr__(self) -> str:
        return f"CaptureQueue({self.uri!r})"

    def _key(self, item_id: str) -> str:
        return f"{self.prefix}{item_id}.json"

    def put(self, item: dict[str, Any]) -> str:
        """Write one item whole; returns its id. Raises OSError / QueueError when it cannot."""
        body = json.dumps(item, separators=(",", ":")).encode()
        item_id = str(item["id"])
        if not is_item_id(item_id):
            raise QueueError(f"{self}: {item_id!r} is not an item id")
        if self.s3:
            self._s3(lambda c: c.put_object(Bucket=self.bucket, Key=self._key(item_id), Body=body,
                                            ContentType="application/json"))
        else:
            atomic_write(self.folder / f"{item_id}.json", body)
        return item_id

    def entries(self) -> list[Entry]:
        """Every item, oldest first."""
        out: list[Entry] = []
        if self.s3:
            def listing(c: Any) -> None:
                for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                    for o in page.get("Contents", []):
                        name = o["Key"][len(self.prefix):]
                        _add(out, name, int(o["Size"]))
            self._s3(listing)
        elif self.folder.is_dir():
            with os.scandir(self.folder) as it:
                for e in it:
                    if e.is_file():
                        _add(out, e.name, e.stat().st_size)
        return sorted(out, key=lambda e: e.id)

    def get(self, item_id: str) -> dict[str, Any]:
        """One item; KeyError when the queue has no such item."""
        if not is_item_id(item_id):
            raise KeyError(item_id)
        if self.s3:
            from botocore.exceptions import ClientError

            try:
                body = self._s3(lambda c: c.get_object(Bucket=self.bucket, Key=self._key(item_id))["Body"].read(),
                                passthrough=ClientError)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise KeyError(item_id) from e
                raise QueueError(f"{self}: item {item_id}: {e}") from e
        else:
            path = self.folder / f"{item_id}.json"
            if not path.is_file():
                raise KeyError(item_id)
            body = path.read_bytes()
        try:
            item = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise QueueError(f"{self}: item {item_id} is not JSON ({e})") from e
        if not isinstance(item, dict) or item.get("format") != FORMAT:
            raise QueueError(f"{self}: item {item_id} is not a {FORMAT!r} item")
        return item

    def delete(self, item_ids: list[str]) -> None:
        if not item_ids:
            return
        if self.s3:
            for k in range(0, len(item_ids), 1000):
                objects = [{"Key": self._key(i)} for i in item_ids[k:k + 1000]]
                self._s3(lambda c, objects=objects: c.delete_objects(Bucket=self.bucket,
                                                                     Delete={"Objects": objects}))
        else:
            for i in item_ids:
                (self.folder / f"{i}.json").unlink(missing_ok=True)

    def expire(self, retention_days: float, now: datetime | None = None) -> list[str]:
        """Delete the items captured more than ``retention_days`` ago; returns their ids."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
        old = [e.id for e in self.entries() if e.time < cutoff]
        self.delete(old)
        return old

    def _s3(self, call: Any, passthrough: type[BaseException] | None = None) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(queue_s3_client())
        except (BotoCoreError, ClientError) as e:
            if passthrough is not None and isinstance(e, passthrough):
                raise
            raise QueueError(f"{self}: {e}") from e


def _add(out: list[Entry], name: str, size: int) -> None:
    if name.endswith(".json"):
        t = id_time(name[:-5])
        if t is not None:
            out.append(Entry(name[:-5], size, t))
