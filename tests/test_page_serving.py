"""Pages through the serving layer: the handler in page mode (no server), the page archive, and a real
TorchServe answering ``/predictions/textrec-page`` beside ``/predictions/textrec-line``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import torch
from fixtures.handler_context import FakeContext
from fixtures.net import free_port
from fixtures.page_images import blank_png, page_png
from fixtures.serving import line_png, make_model_pt

from textrec.recognizer import Recognizer
from textrec.tracking import MODEL_NAME, PAGE_MODEL_NAME

pytest.importorskip("ts")
from serving.archive import PAGE_BATCH_SIZE, SERVED_NAMES, ArchiveOptions, build_archive  # noqa: E402
from serving.handler import TextrecHandler  # noqa: E402
from serving.torchserve import ServeConfig, ServeError, TorchServeProcess  # noqa: E402

MAX_PAGE_PIXELS = 600 * 420  # the fixture page exactly


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_pt(tmp_path_factory.mktemp("page-model") / "model.pt")


@pytest.fixture(scope="module")
def page_handler(model_pt: Path) -> TextrecHandler:
    torch.set_num_threads(1)
    h = TextrecHandler()
    h.initialize(FakeContext(model_pt.parent, name=PAGE_MODEL_NAME,
                             handler_options={"task": "page", "max_page_pixels": MAX_PAGE_PIXELS}))
    return h


def _run(handler: TextrecHandler, batch: list[dict]) -> tuple[list[dict], FakeContext]:
    ctx = FakeContext(Path("."))
    return [json.loads(o) for o in handler.handle(batch, ctx)], ctx


def _overlap(a: list[int], b: tuple[int, int, int, int]) -> int:
    return max(0, min(a[3], b[3]) - max(a[1], b[1]))


def test_a_page_is_answered_with_its_lines_boxes_and_the_in_process_text(page_handler: TextrecHandler,
                                                                         model_pt: Path) -> None:
    png, boxes = page_png()
    (answer,), ctx = _run(page_handler, [{"body": png}])
    assert ctx.statuses == {}
    assert set(answer) == {"text", "lines", "confidence", "version"} and answer["version"] == "7"
    assert len(answer["lines"]) == len(boxes)
    for line, truth in zip(answer["lines"], boxes, strict=True):  # top to bottom, each on its true line
        assert set(line) == {"box", "text", "confidence"}
        assert _overlap(line["box"], truth) > 0.5 * (truth[3] - truth[1])
    assert answer["text"] == "\n".join(line["text"] for line in answer["lines"])
    assert answer["confidence"] == pytest.approx(min(line["confidence"] for line in answer["lines"]), abs=1e-6)
    expected = Recognizer.load(model_pt).recognise_page(png)
    assert answer["text"] == expected.text


def test_a_page_over_the_pixel_limit_is_413_and_its_batch_neighbour_is_read(page_handler: TextrecHandler) -> None:
    good, _ = page_png(seed=1)
    answers, ctx = _run(page_handler, [{"body": blank_png(700, 420)}, {"body": good}])
    assert ctx.statuses[0][0] == 413 and "pixel" in answers[0]["message"].lower()
    assert 1 not in ctx.statuses and len(answers[1]["lines"]) == 4


def test_bad_bodies_get_their_4xx_and_the_handler_still_reads_pages(page_handler: TextrecHandler) -> None:
    answers, ctx = _run(page_handler, [{"body": b"not an image at all"}, {"body": {"image": "%%%"}}])
    assert [ctx.statuses[i][0] for i in (0, 1)] == [415, 400]
    assert all(a["message"] and a["code"] >= 400 for a in answers)
    (page,), ctx = _run(page_handler, [{"body": page_png()[0]}])
    assert ctx.statuses == {} and len(page["lines"]) == 4


def test_a_blank_page_has_no_lines_and_confidence_zero(page_handler: TextrecHandler) -> None:
    (answer,), ctx = _run(page_handler, [{"body": blank_png(300, 200)}])
    assert ctx.statuses == {}
    assert (answer["text"], answer["lines"], answer["confidence"]) == ("", [], 0.0)


def test_an_unknown_task_is_refused_at_load(model_pt: Path) -> None:
    with pytest.raises(ValueError, match="handler.task"):
        TextrecHandler().initialize(FakeContext(model_pt.parent, handler_options={"task": "paragraph"}))
    with pytest.raises(ValueError, match="task"):
        ArchiveOptions(task="paragraph")


def test_page_options_read_one_page_per_call_and_name_the_page_model(model_pt: Path, tmp_path: Path) -> None:
    from serving.archive import resolve_model

    page = ArchiveOptions(batch_size=8, workers=2).for_task("page")
    assert (page.task, page.batch_size, page.workers) == ("page", PAGE_BATCH_SIZE, 2)
    assert page.model_config()["handler"]["task"] == "page"
    assert page.for_task("line").batch_size == ArchiveOptions.batch_size
    source = resolve_model(str(model_pt), tmp_path / "src", version="3")
    mar = build_archive(source, tmp_path / "store", options=page)
    assert mar.name == f"{PAGE_MODEL_NAME}-v3.mar" and SERVED_NAMES == {"line": MODEL_NAME, "page": PAGE_MODEL_NAME}


# --- a real TorchServe serving both names -----------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_pt: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TorchServeProcess]:
    from serving.archive import resolve_model

    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17 (java on PATH)")
    root = tmp_path_factory.mktemp("ts-pages")
    cfg = ServeConfig(model_store=root / "store", inference_port=free_port(), management_port=free_port(),
                      metrics_port=free_port(), grpc_inference_port=free_port(),
                      grpc_management_port=free_port(), enable_model_api=True)
    source = resolve_model(str(model_pt), root / "src", version="1")
    options = ArchiveOptions(max_page_pixels=MAX_PAGE_PIXELS)
    mars = {name: build_archive(source, cfg.model_store, model_name=name, options=options.for_task(task)).name
            for task, name in SERVED_NAMES.items()}
    proc = TorchServeProcess(cfg, root / "work")
    proc.start(mars, timeout=180)
    try:
        for name in mars:
            proc.wait_ready(name, timeout=180)
        yield proc
    finally:
        proc.stop()


def test_torchserve_answers_pages_and_lines_side_by_side(server: TorchServeProcess) -> None:
    png, boxes = page_png(seed=2)
    page = server.predict(png, model=PAGE_MODEL_NAME)
    assert len(page["lines"]) == len(boxes) and page["version"] == "1"
    line = server.predict(line_png(3), model=MODEL_NAME)
    assert set(line) == {"text", "confidence", "version"}
    with pytest.raises(ServeError, match="413"):
        server.predict(blank_png(700, 420), model=PAGE_MODEL_NAME)
    url = server.config.inference_url + f"/predictions/{PAGE_MODEL_NAME}"
    r = requests.post(url, data=b"garbage", headers={"Authorization": f"Bearer {server.token()}"}, timeout=60)
    assert r.status_code == 415 and r.json()["code"] == 415
    assert len(server.predict(png, model=PAGE_MODEL_NAME)["lines"]) == len(boxes)  # still serving
