"""Capture of served lines for review: the decisions and limits on their own, then both runtimes for
real (the OIP server and TorchServe on 127.0.0.1) with capture on, into a local queue and into S3."""

from __future__ import annotations

import base64
import logging
import random
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from conftest import S3Server, free_port
from fixtures.serving import line_png, make_model_pt

from serving.archive import ArchiveOptions, archive_model
from serving.capture import CaptureConfig, Capturer
from serving.config import ServeConfig
from serving.oip import OipConfig
from serving.oip_process import OipServerProcess
from serving.torchserve import TorchServeProcess
from textrec.review.queue import CaptureQueue, item_image, make_item
from textrec.tracking import MODEL_NAME


def rec(text: str = "abc", confidence: float = 0.2, chars: list[float] | None = None) -> SimpleNamespace:
    return SimpleNamespace(text=text, confidence=confidence, char_confidences=chars)


def capturer(uri: Path | str, **kw) -> Capturer:
    return Capturer(CaptureConfig(uri=str(uri), **kw), model=MODEL_NAME, rng=random.Random(0))


def capture_env(monkeypatch: pytest.MonkeyPatch, uri: Path | str) -> None:
    """Capture everything (threshold 1: an untrained model is never sure), sample nothing extra."""
    monkeypatch.setenv("TEXTREC_CAPTURE_URI", str(uri))
    monkeypatch.setenv("TEXTREC_CAPTURE_THRESHOLD", "1.0")
    monkeypatch.setenv("TEXTREC_CAPTURE_SAMPLE_RATE", "0")
    monkeypatch.setenv("TEXTREC_CAPTURE_DEPLOYMENT", "test-deploy")


def wait_items(queue: CaptureQueue, n: int, timeout: float = 30.0) -> list:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = queue.entries()
        if len(entries) >= n:
            return entries
        time.sleep(0.1)
    raise AssertionError(f"{queue}: {len(queue.entries())} items after {timeout} s, expected {n}")


def block(queue_dir: Path) -> None:
    """Make the queue unwritable: its items folder becomes a regular file (root ignores permissions)."""
    items = queue_dir / "items"
    shutil.rmtree(items, ignore_errors=True)
    items.parent.mkdir(parents=True, exist_ok=True)
    items.write_text("not a folder")


# --- the decisions and limits -----------------------------------------------------------------


def test_capture_is_off_unless_a_queue_is_named(tmp_path: Path) -> None:
    c = Capturer.from_env(MODEL_NAME, env={})
    assert not c.enabled
    c.offer(line_png(0), rec(confidence=0.0), "1")  # nothing to do, nothing raised
    assert c.counts["captured"] == 0 and not list(tmp_path.iterdir())


def test_low_confidence_lines_are_captured_whole_and_sure_ones_only_by_sample(tmp_path: Path) -> None:
    c = capturer(tmp_path, threshold=0.5, sample_rate=0.0, deployment="eu")
    image = line_png(1)
    c.offer(image, rec("hello", 0.3, [0.9, 0.1, 0.8, 0.7, 0.95]), "7")
    c.offer(line_png(2), rec("sure", 0.9), "7")
    assert c.flush()
    (entry,) = CaptureQueue(tmp_path).entries()
    item = CaptureQueue(tmp_path).get(entry.id)
    assert item_image(item) == image and item["text"] == "hello" and item["confidence"] == 0.3
    assert item["char_confidences"] == [0.9, 0.1, 0.8, 0.7, 0.95]
    assert (item["model"], item["model_version"], item["deployment"], item["reason"]) == (MODEL_NAME, "7", "eu",
                                                                                          "low_confidence")
    assert datetime.fromisoformat(item["time"]).tzinfo is not None
    assert set(item) == {"format", "version", "id", "time", "image", "image_type", "text", "confidence",
                         "char_confidences", "model", "model_version", "deployment", "reason"}
    sampled = capturer(tmp_path / "s", threshold=0.0, sample_rate=0.5)
    for i in range(40):
        sampled.offer(line_png(i), rec(confidence=0.99), "1")
    assert sampled.flush()
    assert 8 <= sampled.counts["captured"] <= 32  # about half, never all or none


def test_queue_limits_and_retention_hold(tmp_path: Path) -> None:
    c = capturer(tmp_path, threshold=1.0, sample_rate=0.0, max_items=3, max_image_bytes=len(line_png(0)))
    c.offer(line_png(0, width=400), rec(), "1")  # larger than max_image_bytes
    for _ in range(5):
        c.offer(line_png(0), rec(), "1")
    assert c.flush()
    assert len(CaptureQueue(tmp_path).entries()) == 3
    assert c.counts["captured"] == 3 and c.counts["dropped_full"] == 2 and c.counts["skipped_large"] == 1
    small = capturer(tmp_path / "b", threshold=1.0, sample_rate=0.0, max_bytes=10 * len(line_png(0)))
    for _ in range(4):
        small.offer(line_png(0), rec(), "1")
    assert small.flush() and 1 <= small.counts["captured"] < 4 and small.counts["dropped_full"] >= 1

    q = CaptureQueue(tmp_path / "r")
    old = make_item(line_png(0), "old", 0.1, model="m", model_version="1", now=datetime.now(UTC) - timedelta(days=9))
    new = make_item(line_png(0), "new", 0.1, model="m", model_version="1")
    q.put(old), q.put(new)
    kept = capturer(tmp_path / "r", threshold=1.0, sample_rate=0.0, retention_days=7)
    kept.offer(line_png(3), rec(), "1")
    assert kept.flush() and kept.counts["expired"] == 1
    assert [q.get(e.id)["text"] for e in q.entries()] == ["new", "abc"]


def test_a_queue_that_cannot_be_written_is_counted_and_logged_not_raised(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    block(tmp_path)
    c = capturer(tmp_path, threshold=1.0, sample_rate=0.0)
    with caplog.at_level(logging.WARNING, logger="serving.capture"):
        c.offer(line_png(0), rec(), "1")
        c.offer(line_png(1), rec(), "1")
        assert c.flush()
    assert c.counts["failed"] == 2 and c.counts["captured"] == 0
    assert "the prediction was answered" in caplog.text and str(tmp_path) in caplog.text


def test_capture_config_reads_model_config_then_environment() -> None:
    cfg = CaptureConfig.from_env({"TEXTREC_CAPTURE_THRESHOLD": "0.7", "TEXTREC_CAPTURE_URI": ""},
                                 {"uri": "/q", "threshold": 0.2, "max_items": 5})
    assert (cfg.uri, cfg.threshold, cfg.max_items, cfg.enabled) == ("/q", 0.7, 5, True)
    with pytest.raises(ValueError, match="sample_rate"):
        CaptureConfig.from_env({"TEXTREC_CAPTURE_SAMPLE_RATE": "2"})


def test_capture_to_s3_puts_one_object_per_item_and_expires_old_ones(s3: S3Server) -> None:
    uri = s3.uri(f"review/{uuid.uuid4().hex[:8]}")  # the S3 server is shared by the session
    c = capturer(uri, threshold=1.0, sample_rate=0.0)
    c.offer(line_png(4), rec("on s3", 0.1), "2")
    assert c.flush() and c.counts == {**c.counts, "captured": 1, "failed": 0}
    prefix = uri[len(f"s3://{s3.bucket}/"):] + "/"
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix)["Contents"]]
    assert len(keys) == 1 and keys[0].startswith(prefix + "items/") and keys[0].endswith(".json")
    q = CaptureQueue(uri)
    assert q.get(q.entries()[0].id)["text"] == "on s3"
    q.put(make_item(b"\x89PNG", "old", 0.1, model="m", model_version="1",
                    now=datetime.now(UTC) - timedelta(days=40)))
    assert len(q.expire(30)) == 1 and len(q.entries()) == 1


# --- both runtimes, for real ------------------------------------------------------------------


def test_oip_server_captures_an_unsure_line_and_answers_when_the_queue_is_unwritable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queue_dir = tmp_path / "queue"
    capture_env(monkeypatch, queue_dir)
    model_pt = make_model_pt(tmp_path / "model.pt")
    server = OipServerProcess(OipConfig(port=free_port()), tmp_path / "work")
    server.start(model_pt, "5")
    try:
        server.wait_ready()  # one prediction: captured too
        answer = server.predict(line_png(11))
        entries = wait_items(CaptureQueue(queue_dir), 2)
        items = [CaptureQueue(queue_dir).get(e.id) for e in entries]
        assert any(item_image(i) == line_png(11) and i["text"] == answer["text"] for i in items)
        assert {(i["model"], i["model_version"], i["deployment"]) for i in items} == {(MODEL_NAME, "5", "test-deploy")}
        block(queue_dir)
        for seed in range(3):
            r = server.request("POST", f"/v2/models/{MODEL_NAME}/infer", json={"inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [1],
                 "data": [base64.b64encode(line_png(20 + seed)).decode()]}]})
            assert r.status_code == 200, r.text
        server.wait_ready()
    finally:
        server.stop()
    log = server.log_file.read_text()
    assert "capture: could not write item" in log and "failed so far: " in log


def start_torchserve(tmp_path: Path, *, version: str) -> TorchServeProcess:
    """A TorchServe on free 127.0.0.1 ports serving a tiny line model unbatched, capturing as the
    environment says (set it first: the frontend passes it on to its workers)."""
    cfg = ServeConfig(model_store=tmp_path / "store", inference_port=free_port(), management_port=free_port(),
                      metrics_port=free_port(), grpc_inference_port=free_port(), grpc_management_port=free_port())
    mar = archive_model(make_model_pt(tmp_path / "model.pt"), cfg.model_store, version=version,
                        options=ArchiveOptions(batch_size=1, max_batch_delay_ms=5))
    server = TorchServeProcess(cfg, tmp_path / "work")
    server.start({MODEL_NAME: mar.name})
    return server


def test_torchserve_captures_an_unsure_line_and_answers_when_the_queue_is_unwritable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17 (java on PATH)")
    queue_dir = tmp_path / "queue"
    capture_env(monkeypatch, queue_dir)
    server = start_torchserve(tmp_path, version="3")
    cfg = server.config
    url = f"{cfg.inference_url}/predictions/{MODEL_NAME}"
    try:
        server.wait_ready()
        image = line_png(12)
        r = requests.post(url, data=image, headers={"Authorization": f"Bearer {server.token()}",
                                                    "Content-Type": "image/png"}, timeout=60)
        assert r.status_code == 200, r.text
        q = CaptureQueue(queue_dir)
        wait_items(q, 2)
        mine = [q.get(e.id) for e in q.entries() if item_image(q.get(e.id)) == image]
        assert mine and mine[0]["text"] == r.json()["text"] and mine[0]["model_version"] == "3"
        block(queue_dir)
        for seed in range(3):
            r = requests.post(url, data=line_png(30 + seed), timeout=60,
                              headers={"Authorization": f"Bearer {server.token()}", "Content-Type": "image/png"})
            assert r.status_code == 200, r.text
    finally:
        server.stop()
    logs = "".join(p.read_text(errors="replace") for p in server.log_dir.glob("*.log"))
    assert "capture: could not write item" in logs


def test_torchserve_workers_capture_to_s3_with_the_queues_own_keys(tmp_path: Path, s3: S3Server,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # TorchServe hides every AWS_* variable from its workers; the queue's own endpoint and keys file
    # (what the serving chart mounts from a Secret) are what let a capturing worker reach S3.
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17 (java on PATH)")
    uri = s3.uri(f"review/ts-{uuid.uuid4().hex[:8]}")
    capture_env(monkeypatch, uri)
    keys = tmp_path / "queue-keys"
    keys.write_text(f"[default]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n")
    monkeypatch.setenv("TEXTREC_QUEUE_S3_ENDPOINT", s3.endpoint_url)
    monkeypatch.setenv("TEXTREC_QUEUE_S3_KEYS_FILE", str(keys))
    server = start_torchserve(tmp_path, version="5")
    cfg = server.config
    try:
        server.wait_ready()
        image = line_png(21)
        r = requests.post(f"{cfg.inference_url}/predictions/{MODEL_NAME}", data=image, timeout=60,
                          headers={"Authorization": f"Bearer {server.token()}", "Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        q = CaptureQueue(uri)
        wait_items(q, 2)  # wait_ready's own probe line is captured too
        assert any(item_image(q.get(e.id)) == image and q.get(e.id)["model_version"] == "5" for e in q.entries())
    finally:
        server.stop()


def test_a_queue_keys_file_without_keys_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from textrec.review.queue import QueueError, queue_s3_client

    bad = tmp_path / "keys"
    bad.write_text("[default]\naws_access_key_id = only-half\n")
    monkeypatch.setenv("TEXTREC_QUEUE_S3_KEYS_FILE", str(bad))
    with pytest.raises(QueueError, match="TEXTREC_QUEUE_S3_KEYS_FILE=.*aws_secret_access_key"):
        queue_s3_client()
