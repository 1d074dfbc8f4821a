"""The review app for real: a capture queue on disk (and on S3), the app served by uvicorn on
127.0.0.1, real HTTP requests, good and bad; the reviewed store read by the line store reader,
``textrec evaluate --labels`` and the trainer's real-validation loader; and the page in a real
headless chromium (selenium + chromium-driver)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import requests
from conftest import S3Server, free_port
from fixtures.models import tiny_model_artifact
from fixtures.serving import line_png
from PIL import Image

from textrec.charset import DEFAULT_CHARSET
from textrec.data.store import LineStore
from textrec.review.app import MAX_TEXT, Review, create_app
from textrec.review.queue import CaptureQueue, make_item
from textrec.review.store import ReviewStore, split_of
from textrec.stem import LineStem, StemConfig

TOKEN = "review-test-token"
TEXTS = ["the quick fox", "jumps ovr", "the lazy dog"]
CHARS = [[0.9] * 4 + [0.2] + [0.9] * 8, None, [0.3] * 12]


def fill_queue(uri: str | Path, texts: list[str] = TEXTS, deployment: str = "eu-prod") -> list[str]:
    q = CaptureQueue(uri)
    ids = []
    for i, text in enumerate(texts):
        item = make_item(line_png(i, width=60 + 10 * len(text)), text, 0.3 + 0.1 * i, model="textrec-line",
                         model_version="4", char_confidences=CHARS[i % len(CHARS)], deployment=deployment)
        ids.append(q.put(item))
        time.sleep(0.002)  # ids sort by capture time
    return ids


@dataclass
class App:
    url: str
    store: ReviewStore
    ids: list[str]

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30, **kw)

    def post(self, path: str, body: object = None, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", **kw.pop("headers", {})}
        return requests.post(self.url + path, json=body, headers=headers, timeout=30, **kw)

    def decide(self, item_id: str, action: str, text: str = "") -> requests.Response:
        return self.post(f"/api/items/{item_id}/decision", {"action": action, "text": text})


@pytest.fixture
def serve_app(tmp_path: Path):
    """Start the app on a free port in this process (uvicorn in a thread); stopped after the test."""
    import uvicorn

    servers = []

    def start(queue: str | Path, ids: list[str], store: Path | None = None, source: str = "") -> App:
        review_store = ReviewStore(store or tmp_path / "reviewed")
        app = create_app(Review(CaptureQueue(queue), review_store, source=source), TOKEN)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started, "the review app did not start"
        return App(f"http://127.0.0.1:{port}", review_store, ids)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def app(tmp_path: Path, serve_app) -> App:
    return serve_app(tmp_path / "queue", fill_queue(tmp_path / "queue"))


# --- the API ------------------------------------------------------------------------------------


def test_items_come_in_capture_order_and_each_decision_is_in_the_store_at_once(app: App) -> None:
    first = app.get("/api/next").json()
    assert first["item"]["id"] == app.ids[0] and first["item"]["text"] == TEXTS[0]
    assert first["item"]["char_confidences"] == CHARS[0] and "image" not in first["item"]
    assert first["progress"] == {"reviewed": 0, "total": 3, "accepted": 0, "corrected": 0, "unreadable": 0,
                                 "skipped": 0}
    image = app.get(f"/api/items/{app.ids[0]}/image")
    assert image.headers["content-type"] == "image/png" and image.content == line_png(0, width=60 + 10 * len(TEXTS[0]))

    r = app.decide(app.ids[0], "save", TEXTS[0])
    assert r.status_code == 200 and r.json()["decision"]["action"] == "accepted"
    r = app.decide(app.ids[1], "save", "jumps \u201cover\u201d")  # typographic quotes are normalised
    assert r.json()["decision"]["action"] == "corrected" and r.json()["decision"]["text"] == 'jumps "over"'
    assert app.decide(app.ids[2], "unreadable").json()["progress"]["reviewed"] == 3
    assert app.get("/api/next").json() == {"done": True, "progress": {
        "reviewed": 3, "total": 3, "accepted": 1, "corrected": 1, "unreadable": 1, "skipped": 0}}

    store = LineStore(app.store.store_path)
    assert store.texts == [TEXTS[0], 'jumps "over"']  # the unreadable line is no labelled line
    assert {store.source(i) for i in range(len(store))} == {"eu-prod"}
    assert {store.split(i) for i in range(len(store))} == {split_of("eu-prod")}
    np.testing.assert_array_equal(store.image(0), np.asarray(Image.open(io.BytesIO(line_png(0, width=190)))))
    tsv = app.store.tsv(split_of("eu-prod")).read_text().splitlines()
    assert [row.split("\t")[1] for row in tsv] == store.texts


def test_a_restarted_app_resumes_where_the_last_one_stopped(tmp_path: Path, serve_app) -> None:
    ids = fill_queue(tmp_path / "queue")
    first = serve_app(tmp_path / "queue", ids)
    first.decide(ids[0], "skip")
    second = serve_app(tmp_path / "queue", ids)  # a new process over the same store folder
    nxt = second.get("/api/next").json()
    assert nxt["item"]["id"] == ids[1] and nxt["progress"]["reviewed"] == 1 and nxt["progress"]["skipped"] == 1


def test_bad_input_is_refused_with_the_fault_named_and_nothing_is_lost(app: App) -> None:
    app.decide(app.ids[0], "save", "kept line")
    r = app.decide("20990101T000000000000Z-deadbeef", "save", "x")
    assert r.status_code == 404 and "no item" in r.json()["error"]
    assert app.get("/api/items/nonsense").status_code == 404
    r = app.decide(app.ids[1], "save", "a" * (MAX_TEXT + 1))
    assert r.status_code == 413 and str(MAX_TEXT) in r.json()["error"]
    r = app.decide(app.ids[1], "save", "na\u00efve caf\u00e9 \u20ac5")
    assert r.status_code == 422
    for c in ("'\u00ef' (U+00EF)", "'\u00e9' (U+00E9)", "'\u20ac' (U+20AC)"):
        assert c in r.json()["error"]
    assert app.decide(app.ids[1], "delete").status_code == 422
    assert app.decide(app.ids[1], "save", "   ").status_code == 422
    r = app.post(f"/api/items/{app.ids[1]}/decision", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert requests.get(app.url + "/api/next", timeout=10).status_code == 401  # no token
    assert requests.get(app.url + "/api/next", headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    nxt = app.get("/api/next").json()  # still up, and the one good decision is kept
    assert nxt["item"]["id"] == app.ids[1] and nxt["progress"]["reviewed"] == 1
    assert LineStore(app.store.store_path).texts == ["kept line"]


def test_a_queue_on_s3_is_reviewed_like_a_local_one(tmp_path: Path, s3: S3Server, serve_app) -> None:
    uri = s3.uri(f"review/{uuid.uuid4().hex[:8]}")  # the S3 server is shared by the session
    ids = fill_queue(uri, TEXTS[:2])
    app = serve_app(uri, ids)
    assert app.get("/api/next").json()["item"]["id"] == ids[0]
    assert app.decide(ids[0], "save", "from s3").status_code == 200
    assert LineStore(app.store.store_path).texts == ["from s3"]


def test_textrec_review_serves_on_loopback_with_the_token_from_its_file(tmp_path: Path) -> None:
    ids = fill_queue(tmp_path / "queue", TEXTS[:2])
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "textrec.cli", "review", "--queue", str(tmp_path / "queue"),
                             "--store", str(tmp_path / "rev"), "--port", str(port), "--token-file",
                             str(tmp_path / "token"), "--source", "batch-7"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        printed = [proc.stdout.readline() for _ in range(2)]
        assert f"http://127.0.0.1:{port}/?token={TOKEN}" in printed[1], printed
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(url + "/api/progress", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, "textrec review did not listen"
                time.sleep(0.2)
        assert r.json()["total"] == 2
        assert requests.get(url + "/api/progress", timeout=5).status_code == 401
        page = requests.get(f"{url}/?token={TOKEN}", timeout=5)  # follows the redirect with the cookie
        assert page.status_code == 200 and 'id="text"' in page.text
        r = requests.post(f"{url}/api/items/{ids[0]}/decision", json={"action": "save", "text": TEXTS[0]},
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert r.json()["decision"]["source"] == "batch-7"
    finally:
        proc.terminate()
        proc.wait(15)
    assert LineStore(tmp_path / "rev" / "reviewed.h5").sources == ["batch-7"]


# --- the store where real validation sets are read ----------------------------------------------


def test_splits_follow_the_source_so_no_source_is_in_both(tmp_path: Path) -> None:
    sources = [f"deploy-{i}" for i in range(40)]
    splits = {s: split_of(s) for s in sources}
    assert set(splits.values()) == {"train", "val"} and splits == {s: split_of(s) for s in sources}
    store = ReviewStore(tmp_path / "rev")
    queue = CaptureQueue(tmp_path / "q")
    for i, s in enumerate(sources[:8] * 2):
        item = queue.get(queue.put(make_item(line_png(i), "abc", 0.1, model="m", model_version="1", deployment=s)))
        store.decide(item, "accepted", "abc", s, line_png(i))
    lines = LineStore(store.store_path)
    per_source: dict[str, set[str]] = {}
    for i in range(len(lines)):
        per_source.setdefault(lines.source(i), set()).add(lines.split(i))
    assert all(len(v) == 1 for v in per_source.values()) and len(per_source) == 8
    assert {next(iter(v)) for v in per_source.values()} == {split_of(s) for s in sources[:8]}


def reviewed_val(tmp_path: Path) -> ReviewStore:
    """A reviewed store whose lines are all validation lines (the source is picked to hash to val)."""
    source = next(f"src-{i}" for i in range(100) if split_of(f"src-{i}") == "val")
    store = ReviewStore(tmp_path / "rev")
    queue = CaptureQueue(tmp_path / "q")
    for i, text in enumerate(TEXTS):
        item = queue.get(queue.put(make_item(line_png(i), "x", 0.1, model="m", model_version="1")))
        store.decide(item, "corrected", text, source, line_png(i))
    return store


def test_textrec_evaluate_reads_the_reviewed_validation_lines(tmp_path: Path) -> None:
    store = reviewed_val(tmp_path)
    model = tiny_model_artifact(tmp_path / "model.pt")
    out = subprocess.run([sys.executable, "-m", "textrec.cli", "evaluate", "--model", str(model), "--labels",
                          str(store.tsv("val")), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    scores = json.loads(out.stdout.strip().splitlines()[-1])
    assert scores["n"] == len(TEXTS) and 0 <= scores["cer"]


def test_the_trainers_real_validation_loader_reads_the_reviewed_store(tmp_path: Path) -> None:
    from textrec.training import load_config
    from textrec.training.data import _real_val

    store = reviewed_val(tmp_path)
    cfg = load_config(None, [f"--data.real_val={store.tsv('val')}"])
    env = SimpleNamespace(local_rank=0)
    real = _real_val(cfg, tmp_path / "cache", DEFAULT_CHARSET, LineStem(StemConfig(height=32)), env)
    assert real.texts == TEXTS and len(real) == len(TEXTS)


# --- the page in a real browser -----------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def synth_lines(tmp_path: Path, n: int) -> list[tuple[bytes, str]]:
    """Rendered handwriting lines (PNG bytes, text): what a real queue holds."""
    from textrec.data.synth import synthesize

    store = LineStore(synthesize(n, tmp_path / "synth.h5", seed=3, workers=1, progress=False))
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(store.image(i)).save(buf, "PNG")
        out.append((buf.getvalue(), store.text(i)))
    return out


@pytest.fixture
def browser() -> Iterator:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,640"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_in_a_browser_a_typed_correction_lands_in_the_store_and_a_reload_keeps_progress(
        tmp_path: Path, serve_app, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    lines = synth_lines(tmp_path, 3)
    q = CaptureQueue(tmp_path / "queue")
    ids = []
    for png, text in lines:
        wrong = text[:-2] + "zq" if len(text) > 3 else "zq"  # the model's reading, with two errors
        conf = [0.95] * (len(wrong) - 2) + [0.2, 0.3]
        ids.append(q.put(make_item(png, wrong, 0.41, model="textrec-line", model_version="4",
                                   char_confidences=conf, deployment="eu-prod")))
        time.sleep(0.002)
    app = serve_app(tmp_path / "queue", ids)
    wait = WebDriverWait(browser, 20)

    browser.get(f"{app.url}/?token={TOKEN}")
    wait.until(lambda d: d.find_element(By.ID, "progress").text == "0 of 3 reviewed")
    assert "token" not in browser.current_url  # the token became a cookie
    assert browser.execute_script("return document.getElementById('image').naturalWidth") > 0
    reading = browser.find_element(By.ID, "reading")
    assert reading.text == CaptureQueue(tmp_path / "queue").get(ids[0])["text"]
    assert [s.text for s in reading.find_elements(By.CSS_SELECTOR, ".low")] == ["z", "q"]

    field = browser.find_element(By.ID, "text")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(lines[0][1])
    if os.environ.get("TEXTREC_REVIEW_SCREENSHOT"):  # docs/images/review.png is made this way
        browser.save_screenshot(os.environ["TEXTREC_REVIEW_SCREENSHOT"])
    field.send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_element(By.ID, "progress").text == "1 of 3 reviewed")
    assert LineStore(app.store.store_path).texts == [lines[0][1]]
    assert app.store.decisions()[ids[0]].action == "corrected"

    browser.find_element(By.ID, "text").send_keys(Keys.CONTROL, "u")  # unreadable
    wait.until(lambda d: d.find_element(By.ID, "progress").text == "2 of 3 reviewed")
    assert app.store.decisions()[ids[1]].action == "unreadable"

    browser.refresh()
    wait.until(lambda d: d.find_element(By.ID, "progress").text == "2 of 3 reviewed")
    wait.until(lambda d: d.find_element(By.ID, "text").get_attribute("value") != "")
    assert browser.find_element(By.ID, "text").get_attribute("value") == \
        CaptureQueue(tmp_path / "queue").get(ids[2])["text"]
    browser.find_element(By.ID, "text").send_keys(Keys.CONTROL, "s")  # skip
    wait.until(lambda d: d.find_element(By.ID, "progress").text == "3 of 3 reviewed")
    browser.save_screenshot(str(tmp_path / "done.png"))
    assert (tmp_path / "done.png").stat().st_size > 1000
