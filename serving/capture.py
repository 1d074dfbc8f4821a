"""Capture of served lines for review: what the model was unsure of, plus a small random sample.

Off unless ``TEXTREC_CAPTURE_URI`` names a queue (a folder or an ``s3://`` prefix; the format is
:mod:`textrec.review.queue`). Both runtimes read the same settings: the TorchServe handler from its
environment (the frontend passes ``TEXTREC_CAPTURE_*`` on to its workers) or from the archive's
``model-config.yaml`` (``handler: {capture: {uri: ..., threshold: ...}}``; the environment wins), the
OIP server from its environment.

    TEXTREC_CAPTURE_URI=s3://bucket/review/prod   # where items go; empty: capture is off
    TEXTREC_CAPTURE_THRESHOLD=0.6                 # a line below this confidence is captured
    TEXTREC_CAPTURE_SAMPLE_RATE=0.01              # and this fraction of the others, at random
    TEXTREC_CAPTURE_MAX_IMAGE_BYTES=262144        # larger images are not captured
    TEXTREC_CAPTURE_MAX_ITEMS=10000               # the queue's size limits: when it holds this many
    TEXTREC_CAPTURE_MAX_BYTES=1073741824          #   items or bytes, new lines are not captured
    TEXTREC_CAPTURE_RETENTION_DAYS=30             # items older than this are deleted
    TEXTREC_CAPTURE_DEPLOYMENT=prod-eu            # the source tag reviewed lines carry

A captured item holds the image, the text, its confidence (and per-character confidences), the model's
name and version, the UTC time and the deployment tag; nothing about the caller. Items are written by
one background thread per process, so a prediction never waits for the queue, and a capture that fails
(a full disk, S3 down, the queue full) never fails the prediction: it is logged as a warning and
counted in :attr:`Capturer.counts`.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from textrec.config import parse_text
from textrec.review.queue import CaptureQueue, make_item

logger = logging.getLogger(__name__)

ENV_PREFIX = "TEXTREC_CAPTURE_"
PENDING = 64  # items waiting for the writer; more are dropped (and counted), never queued in memory
REFRESH_S = 60.0  # how often the writer re-reads the queue's size and applies retention


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture and where; each default is written once, here."""

    uri: str = ""  # "" = off
    threshold: float = 0.5
    sample_rate: float = 0.01
    max_image_bytes: int = 256 * 1024
    max_items: int = 10_000
    max_bytes: int = 1024 ** 3
    retention_days: float = 30.0
    deployment: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"capture threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"capture sample_rate must be in [0, 1], got {self.sample_rate}")
        for name in ("max_image_bytes", "max_items", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"capture {name} must be at least 1, got {getattr(self, name)}")
        if not self.retention_days > 0:
            raise ValueError(f"capture retention_days must be positive, got {self.retention_days}")

    @property
    def enabled(self) -> bool:
        return bool(self.uri.strip())

    @classmethod
    def from_env(cls, env: Mapping[str, str], options: Mapping[str, Any] | None = None) -> CaptureConfig:
        """``options`` (a model config's ``handler.capture``) overridden by ``TEXTREC_CAPTURE_<FIELD>``
        variables; empty variables leave a field as it was."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if options and options.get(f.name) is not None:
                values[f.name] = parse_text(str(options[f.name]), hints[f.name], key=f"capture.{f.name}")
            var = ENV_PREFIX + f.name.upper()
            if env.get(var, "").strip():
                values[f.name] = parse_text(env[var].strip(), hints[f.name], key=var)
        return cls(**values)


class Capturer:
    """Decides which answered lines to keep and writes them to the queue in the background."""

    def __init__(self, config: CaptureConfig, *, model: str, rng: random.Random | None = None) -> None:
        self.config = config
        self.model = model
        self.queue = CaptureQueue(config.uri) if config.enabled else None
        self.deployment = config.deployment or model
        self.counts = {"captured": 0, "failed": 0, "dropped_full": 0, "dropped_pending": 0,
                       "skipped_large": 0, "expired": 0}
        self._rng = rng or random.Random()
        self._pending: queue.Queue[dict[str, Any]] = queue.Queue(PENDING)
        self._lock = threading.Lock()
        self._size: tuple[int, int] | None = None  # (items, bytes) in the queue as last counted
        self._refreshed = 0.0
        self._thread: threading.Thread | None = None

    @classmethod
    def from_env(cls, model: str, options: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None) -> Capturer:
        config = CaptureConfig.from_env(os.environ if env is None else env, options)
        if config.enabled:
            logger.info("capture on: lines below confidence %s and %s of the rest go to %s", config.threshold,
                        config.sample_rate, config.uri)
        return cls(config, model=model)

    @property
    def enabled(self) -> bool:
        return self.queue is not None

    def reason(self, confidence: float) -> str | None:
        """Why a line of this confidence is captured (None: it is not)."""
        if confidence < self.config.threshold:
            return "low_confidence"
        if self.config.sample_rate and self._rng.random() < self.config.sample_rate:
            return "sample"
        return None

    def offer(self, image: bytes, recognition: Any, version: str) -> None:
        """Consider one answered line; never raises."""
        if self.queue is None:
            return
        try:
            confidence = float(recognition.confidence)
            why = self.reason(confidence)
            if why is None:
                return
            if len(image) > self.config.max_image_bytes:
                self._count("skipped_large")
                return
            item = make_item(image, recognition.text, confidence, model=self.model, model_version=version,
                             char_confidences=getattr(recognition, "char_confidences", None),
                             deployment=self.deployment, reason=why)
            self._start()
            self._pending.put_nowait(item)
        except queue.Full:
            self._warn("dropped_pending", f"more than {PENDING} items wait to be written")
        except Exception as e:  # noqa: BLE001 (a capture never fails a prediction)
            self._warn("failed", f"could not prepare the item ({e})")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every offered item is written or given up on (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self._pending.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._pending.unfinished_tasks

    # --- the writer thread -----------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="textrec-capture", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._pending.get()
            try:
                self._write(item)
            except Exception as e:  # noqa: BLE001 (the writer keeps going whatever one item does)
                self._warn("failed", f"could not write item {item.get('id')} to {self.config.uri} ({e})")
            finally:
                self._pending.task_done()

    def _write(self, item: dict[str, Any]) -> None:
        assert self.queue is not None
        self._refresh()
        items, size = self._size or (0, 0)
        body = len(item["image"]) + 512  # base64 image plus the other fields, roughly
        if items >= self.config.max_items or size + body > self.config.max_bytes:
            self._warn("dropped_full", f"the queue {self.config.uri} is full ({items} items, {size} bytes; limits "
                       f"{self.config.max_items} items, {self.config.max_bytes} bytes)")
            return
        self.queue.put(item)
        self._size = (items + 1, size + body)
        self._count("captured")

    def _refresh(self) -> None:
        """Re-count the queue (other replicas write to it too) and apply retention, now and then."""
        assert self.queue is not None
        if self._size is not None and time.monotonic() - self._refreshed < REFRESH_S:
            return
        self._refreshed = time.monotonic()
        expired = self.queue.expire(self.config.retention_days)
        if expired:
            self._count("expired", len(expired))
        entries = self.queue.entries()
        self._size = (len(entries), sum(e.size for e in entries))

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def _warn(self, name: str, message: str) -> None:
        self._count(name)
        logger.warning("capture: %s; the prediction was answered (%s so far: %d)", message, name, self.counts[name])
