"""The TorchServe handler without a server: a small stand-in for TorchServe's context, a tiny model.

TorchServe calls ``initialize(context)`` once per worker and ``handle(batch, context)`` per batch; a
batch is a list of dicts (``{"body": bytes}``, ``{"data": bytes}`` for multipart, ``{"body": dict}``
for JSON). These tests call the handler the same way.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.handler_context import FakeContext
from fixtures.serving import line_png, make_model_pt, noise_png, tiny_options
from PIL import Image

from textrec.artifact import save_artifact
from textrec.charset import DEFAULT_CHARSET
from textrec.decoding import CharNgramLM, DecoderSpec, WordLM
from textrec.models import create_model
from textrec.recognizer import Recognizer
from textrec.stem import LineStem, StemConfig
from textrec.tracking import MODEL_NAME

pytest.importorskip("ts")
from serving import images as images_module  # noqa: E402
from serving.handler import TextrecHandler  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("model")
    make_model_pt(d / "model.pt")
    (d / "textrec-source.json").write_text(json.dumps({"model_uri": f"models:/{MODEL_NAME}/7", "version": "7"}))
    return d


@pytest.fixture(scope="module")
def handler(model_dir: Path) -> TextrecHandler:
    torch.set_num_threads(1)
    h = TextrecHandler()
    h.initialize(FakeContext(model_dir, handler_options={"max_image_bytes": 50_000, "max_pixels": 200_000}))
    return h


def run(handler: TextrecHandler, batch: list[dict], headers: dict | None = None) -> tuple[list[dict], FakeContext]:
    ctx = FakeContext(Path("."))
    ctx.headers = headers or {}
    out = handler.handle(batch, ctx)
    return [json.loads(o) for o in out], ctx


def test_initialize_reads_model_version_limits_and_provenance(handler: TextrecHandler) -> None:
    assert handler.initialized and handler.version == "7"
    assert (handler.max_image_bytes, handler.max_pixels) == (50_000, 200_000)
    assert handler.source["model_uri"] == f"models:/{MODEL_NAME}/7"
    assert handler.formats == ("PNG", "JPEG")


def test_all_three_request_forms_give_the_in_process_answer(handler: TextrecHandler, model_dir: Path) -> None:
    images = [line_png(1), line_png(2, width=220), line_png(3, fmt="JPEG")]
    batch = [{"body": images[0]},
             {"data": bytearray(images[1])},  # multipart form field, as TorchServe hands it over
             {"body": {"image": base64.b64encode(images[2]).decode()}}]
    answers, ctx = run(handler, batch)
    expected = Recognizer.load(model_dir / "model.pt").recognise(images)
    assert [a["text"] for a in answers] == [r.text for r in expected]
    assert any(a["text"] for a in answers), "the tiny model should read something"
    for a, r in zip(answers, expected, strict=True):
        assert a["confidence"] == pytest.approx(r.confidence, abs=1e-5)
        assert a["version"] == "7"
    assert ctx.statuses == {} and set(ctx.content_types.values()) == {"application/json"}


def test_batched_answers_equal_one_by_one_answers(handler: TextrecHandler) -> None:
    images = [line_png(s, width=100 + 30 * s) for s in range(5)]
    together, _ = run(handler, [{"body": im} for im in images])
    alone = [run(handler, [{"body": im}])[0][0] for im in images]
    assert [a["text"] for a in together] == [a["text"] for a in alone]


def _truncated() -> bytes:
    png = line_png(4, width=400)
    return png[: len(png) // 2]


BAD_INPUTS = {
    "empty body": ({"body": bytearray()}, 400, "empty"),
    "not an image": ({"body": b"hello, this is text and no picture"}, 415, "not a known image format"),
    "truncated png": ({"body": _truncated()}, 400, "truncated"),
    "too many bytes": ({"body": noise_png(300)}, 413, "bytes"),
    "too many pixels": ({"body": line_png(5, width=6000)}, 413, "pixels"),
    "unsupported format": ({"body": line_png(6, fmt="TIFF")}, 415, "TIFF"),
    "json without image": ({"body": {"picture": "abc"}}, 400, '"image"'),
    "bad base64": ({"body": {"image": "@@not base64@@"}}, 400, "base64"),
    "no payload field": ({"other": b"x"}, 400, "no image field"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_a_bad_request_gets_its_own_4xx_and_the_rest_of_the_batch_succeeds(handler: TextrecHandler,
                                                                             name: str) -> None:
    bad, status, words = BAD_INPUTS[name]
    good = line_png(9)
    answers, ctx = run(handler, [{"body": good}, bad, {"body": good}])
    assert ctx.statuses.keys() == {1}, f"only the bad request should get a status, got {ctx.statuses}"
    assert ctx.statuses[1][0] == status
    assert answers[1]["code"] == status and words.lower() in answers[1]["message"].lower()
    assert answers[0]["text"] == answers[2]["text"] and "code" not in answers[0]


def test_invalid_json_body_is_named(handler: TextrecHandler) -> None:
    answers, ctx = run(handler, [{"body": bytearray(b"{not json")}],
                       headers={0: {"body": {"content-type": "application/json"}}})
    assert ctx.statuses[0][0] == 400 and "not valid JSON" in answers[0]["message"]


def test_unsupported_mode_from_the_decoder_maps_to_415(handler: TextrecHandler,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # PIL opens PNG/JPEG only in modes the Recognizer converts, so force the decoder's refusal.
    def refuse(data: bytes, **kw) -> np.ndarray:
        raise images_module.ImageError("image: unsupported image mode 'HSV'")

    monkeypatch.setattr(images_module, "decode_image", refuse)  # the checks both runtimes share
    answers, ctx = run(handler, [{"body": line_png(1)}])
    assert ctx.statuses[0][0] == 415 and "HSV" in answers[0]["message"]


def test_whole_batch_of_bad_requests_never_reaches_the_model(handler: TextrecHandler,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **kw):
        raise AssertionError("recognise must not run without good images")

    monkeypatch.setattr(handler.recognizer, "recognise_tensors", boom)
    answers, ctx = run(handler, [{"body": b""}, {"body": b"nope"}])
    assert [a["code"] for a in answers] == [400, 415]


def test_an_unexpected_failure_stays_with_its_request(handler: TextrecHandler,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    stem = handler.recognizer.preprocess
    poisoned = line_png(2)

    def flaky(image, name="image"):
        if image.shape[1] == 999:
            raise RuntimeError("stem exploded")
        return stem(image, name)

    monkeypatch.setattr(handler.recognizer, "preprocess", flaky)
    answers, ctx = run(handler, [{"body": poisoned}, {"body": line_png(3, width=999)}])
    assert "text" in answers[0] and ctx.statuses == {1: (500, "InternalError")}
    assert "stem exploded" in answers[1]["message"]


def test_unknown_format_setting_is_refused_at_load(model_dir: Path) -> None:
    with pytest.raises(ValueError, match="handler.formats"):
        TextrecHandler().initialize(FakeContext(model_dir, handler_options={"formats": ["PNG", "HEIC"]}))


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


BLANK_BODIES = {
    "white": _png(Image.new("L", (200, 40), 255)),
    "black": _png(Image.new("L", (200, 40), 0)),
    "uniform grey": _png(Image.new("L", (200, 40), 128)),
    "transparent": _png(Image.new("RGBA", (200, 40), (0, 0, 0, 0))),
    "light noise": _png(Image.fromarray(np.random.default_rng(0).normal(235, 5, (40, 200)).clip(0, 255)
                                        .astype(np.uint8))),
}


def test_blank_images_answer_empty_text_with_confidence_zero(handler: TextrecHandler) -> None:
    names = list(BLANK_BODIES)
    answers, ctx = run(handler, [{"body": line_png(1)}] + [{"body": BLANK_BODIES[n]} for n in names])
    assert ctx.statuses == {} and answers[0]["text"] != ""  # the model reads the real line
    for name, answer in zip(names, answers[1:], strict=True):
        assert (answer["text"], answer["confidence"]) == ("", 0.0), name
        assert answer["version"] == "7"


def test_the_artifacts_word_lm_reaches_the_handler(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("line_cnn_lstm", num_classes=DEFAULT_CHARSET.num_classes, height=StemConfig().height,
                         **tiny_options())
    words = WordLM.from_counts({"the": 5, "crowd": 2, "cheered": 1})
    spec = DecoderSpec("beam", 3, 0.2, word_weight=0.7)
    save_artifact(tmp_path / "model.pt", model, charset=DEFAULT_CHARSET, stem=LineStem(),
                  decoder=spec, lm=CharNgramLM.fit(["the crowd cheered"], order=2).with_words(words))
    h = TextrecHandler()
    h.initialize(FakeContext(tmp_path))
    assert h.recognizer.decoder == spec
    assert h.recognizer.lm is not None and h.recognizer.lm.words is not None
    assert h.recognizer.lm.words.words == words.words
    images = [line_png(7, width=90), line_png(8, width=120)]
    answers, _ = run(h, [{"body": im} for im in images])
    expected = Recognizer.load(tmp_path / "model.pt").recognise(images)
    assert [a["text"] for a in answers] == [r.text for r in expected]
