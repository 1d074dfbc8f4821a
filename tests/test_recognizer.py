"""The model artifact and the Recognizer: loading, batching, image decoding and bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.lines import line_image
from fixtures.models import TINY, tiny_model_artifact
from fixtures.serving import line_png, make_model_pt
from PIL import Image

from textrec.artifact import ArtifactError, artifact_dict, load_artifact, read_artifact, save_artifact
from textrec.charset import DEFAULT_CHARSET
from textrec.decoding import DEFAULT_BEAM, CharNgramLM, DecoderSpec
from textrec.models import create_model
from textrec.recognizer import ImageError, Recognizer, decode_image, read_image
from textrec.stem import LineStem, StemConfig, has_ink, is_blank, to_grey


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model_artifact(tmp_path_factory.mktemp("model") / "model.pt", decoder={"kind": "greedy"}, lm=None, metrics={"test_cer": 0.5})


def png(image: np.ndarray | Image.Image, mode: str | None = None) -> bytes:
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    (im.convert(mode) if mode else im).save(buf, format="PNG")
    return buf.getvalue()


# --- the artifact ----------------------------------------------------------------------------------


def test_artifact_loads_with_weights_only_and_rebuilds_the_model(model_path):
    raw = torch.load(model_path, weights_only=True)
    assert raw["format"] == "textrec-model" and raw["version"] == 1
    assert raw["model_name"] == "line_cnn_lstm" and raw["model_config"]["lstm_hidden"] == 16
    assert raw["num_classes"] == 80 and raw["height"] == 32 and raw["stem"]["height"] == 32
    assert raw["decoder"] == {"kind": "greedy", "beam": DEFAULT_BEAM, "lm_weight": 0.0,
                              "insertion_bonus": 0.0, "word_weight": 0.0}
    assert raw["lm"] is None and raw["word_lm"] is None
    assert raw["created"].startswith("20")
    model, info = load_artifact(model_path)
    assert "state_dict" not in info and info["metrics"] == {"test_cer": 0.5}
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw["state_dict"][k])


def test_artifact_is_written_readable_by_others(model_path):
    assert model_path.stat().st_mode & 0o044 == 0o044


def test_a_run_folder_stands_for_its_model(model_path):
    assert Recognizer.load(model_path.parent).info["model_name"] == "line_cnn_lstm"


@pytest.mark.parametrize("content, message", [
    (None, "no model artifact"),
    (b"garbage", "not a readable textrec model artifact"),
    ({"format": "something-else"}, "not a textrec model artifact"),
    ({"format": "textrec-model", "version": 99}, "artifact version 99"),
    ({"format": "textrec-model", "version": 1, "model_name": "x"}, "lacks model_config"),
])
def test_bad_artifacts_are_named(tmp_path, content, message):
    path = tmp_path / "model.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(ArtifactError, match=message) as e:
        read_artifact(path)
    assert str(path) in str(e.value)


def test_an_unknown_decoder_kind_is_refused(tmp_path):
    model = create_model("line_cnn_lstm", num_classes=80, height=32, **TINY)
    with pytest.raises(ValueError, match="decoder kind"):
        save_artifact(tmp_path / "m.pt", model, charset=DEFAULT_CHARSET, stem=LineStem(),
                      decoder={"kind": "psychic"})
    assert not (tmp_path / "m.pt").exists()


def _tiny(name: str = "line_cnn_lstm"):
    torch.manual_seed(0)
    options = TINY if name == "line_cnn_lstm" else dict(channels=(8, 16, 24, 32), d_model=32, heads=2, layers=1,
                                                        ff=64, max_length=12)
    return create_model(name, num_classes=80, height=32, **options)


def test_an_artifact_stores_the_decoder_spec_and_the_recognizer_uses_it(tmp_path):
    spec = DecoderSpec("beam", 4, 0.3)
    lm = CharNgramLM.fit(["a line of text", "another line"], order=3)
    path = save_artifact(tmp_path / "m.pt", _tiny(), charset=DEFAULT_CHARSET, stem=LineStem(StemConfig(height=32)),
                         decoder=spec, lm=lm)
    assert torch.load(path, weights_only=True)["decoder"] == spec.to_dict()
    rec = Recognizer.load(path)
    assert rec.decoder == spec and rec.lm is not None and rec.lm.counts == lm.counts
    assert len(rec.recognise([line_image(width=200, seed=0, height=40)])) == 1


def test_an_artifact_written_before_the_decoder_spec_still_loads(tmp_path):
    """Artifacts so far held {"kind", "beam", "lm_weight"}: version 1 still, with the rest defaulted."""
    data = artifact_dict(_tiny(), charset=DEFAULT_CHARSET, stem=LineStem(StemConfig(height=32)),
                         lm=CharNgramLM.fit(["old text"], order=2))
    data["decoder"] = {"kind": "beam", "beam": 16, "lm_weight": 0.3}
    torch.save(data, tmp_path / "old.pt")
    assert read_artifact(tmp_path / "old.pt")["decoder"] == {"kind": "beam", "beam": 16, "lm_weight": 0.3,
                                                             "insertion_bonus": 0.0, "word_weight": 0.0}
    rec = Recognizer.load(tmp_path / "old.pt")
    assert rec.decoder == DecoderSpec("beam", 16, 0.3) and rec.lm is not None
    assert len(rec.recognise([line_image(width=150, seed=1, height=40)])) == 1


@pytest.mark.parametrize("decoder, message", [
    ({"kind": "beam", "width": 10}, r"unknown keys \['width'\]"),
    ({"kind": "beam", "beam": 0}, "beam width must be an integer >= 1, got 0"),
])
def test_a_bad_decoder_entry_is_named_with_the_file(tmp_path, decoder, message):
    data = artifact_dict(_tiny(), charset=DEFAULT_CHARSET, stem=LineStem(StemConfig(height=32)))
    data["decoder"] = decoder
    torch.save(data, tmp_path / "model.pt")
    with pytest.raises(ArtifactError, match=message) as e:
        read_artifact(tmp_path / "model.pt")
    assert str(tmp_path / "model.pt") in str(e.value) and "bad decoder entry" in str(e.value)


def test_a_model_that_does_not_use_an_lm_never_gets_one(tmp_path):
    """Training used to fit an LM for resnet_transformer too; such an artifact still reads lines, and
    the LM is not handed to the model (which would refuse it)."""
    model = _tiny("resnet_transformer")
    assert not model.uses_lm
    path = save_artifact(tmp_path / "m.pt", model, charset=DEFAULT_CHARSET, stem=LineStem(StemConfig(height=32)),
                         decoder=DecoderSpec("beam", 2, 0.3), lm=CharNgramLM.fit(["some text"], order=2))
    rec = Recognizer.load(path)
    assert rec.lm is None and rec.decoder == DecoderSpec("beam", 2, 0.3)
    (result,) = rec.recognise([line_image(width=120, seed=2, height=40)])
    assert 0.0 <= result.confidence <= 1.0


# --- recognising ------------------------------------------------------------------------------------


def test_batched_results_come_back_in_input_order_and_match_single_lines(model_path, tmp_path):
    rec = Recognizer.load(model_path)
    images = [line_image(width=w, seed=s, height=40) for s, w in enumerate([300, 120, 520, 90, 260])]
    file = tmp_path / "line.png"
    file.write_bytes(png(images[2]))
    inputs = [images[0], Image.fromarray(images[1]), file, png(images[3]), str(file), images[4]]
    batched = rec.recognise(inputs, batch_size=4)
    singles = [rec.recognise([x])[0] for x in inputs]
    assert [r.text for r in batched] == [r.text for r in singles]
    for r, s in zip(batched, singles, strict=True):
        assert r.confidence == pytest.approx(s.confidence, abs=1e-4)
        assert 0.0 <= r.confidence <= 1.0
    assert batched[2].text == batched[4].text  # the same file by Path and by str
    assert rec.recognise([]) == []


def test_lines_are_padded_to_a_few_widths_and_read_as_if_they_were_not(model_path, monkeypatch):
    from textrec import recognizer

    rec = Recognizer.load(model_path)
    seen: list[tuple[int, list[int]]] = []
    forward = rec.model.forward

    def spy(images, widths):
        seen.append((images.shape[-1], widths.tolist()))
        return forward(images, widths)

    monkeypatch.setattr(rec.model, "forward", spy)
    x = rec.preprocess(line_image(width=300, seed=1, height=40))
    assert x.shape[-1] % recognizer.LINE_PAD_WIDTH_TO  # a width the padding has to change
    padded = rec.recognise_tensors([x])[0]
    assert seen[-1][0] % recognizer.LINE_PAD_WIDTH_TO == 0 and seen[-1][1] == [x.shape[-1]]
    monkeypatch.setattr(recognizer, "LINE_PAD_WIDTH_TO", 1)
    tight = rec.recognise_tensors([x])[0]
    assert seen[-1][0] == x.shape[-1]
    assert padded.text == tight.text and padded.confidence == pytest.approx(tight.confidence, abs=1e-5)


def test_recognizer_exposes_charset_stem_and_info(model_path):
    rec = Recognizer.load(model_path)
    assert rec.charset == DEFAULT_CHARSET and rec.stem.config.height == 32
    assert rec.info["decoder"]["kind"] == "greedy" and "state_dict" not in rec.info
    assert tuple(rec.preprocess(line_image(width=200, seed=0, height=40)).shape[:2]) == (1, 32)


def test_recognizer_rejects_inputs_of_unknown_type(model_path):
    with pytest.raises(TypeError, match="image 0: expected an array, PIL image, path or bytes"):
        Recognizer.load(model_path).recognise([12345])


def test_missing_image_file_is_named(model_path, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png: no such image file"):
        Recognizer.load(model_path).recognise([tmp_path / "nope.png"])


# --- decoding image bytes --------------------------------------------------------------------------------


def test_decode_image_reads_common_modes_as_dark_ink_on_light_paper():
    img = line_image(width=80, seed=1, height=40)
    assert np.array_equal(decode_image(png(img)), img)
    rgb = decode_image(png(Image.fromarray(img).convert("RGB")))
    assert np.abs(rgb.astype(int) - img).max() <= 1
    sixteen = Image.fromarray(img.astype(np.uint16) * 257)
    assert np.abs(decode_image(png(sixteen)).astype(int) - img).max() <= 1


def test_transparent_background_becomes_paper():
    rgba = np.zeros((20, 30, 4), np.uint8)  # transparent black everywhere...
    rgba[5:15, 5:25] = (0, 0, 0, 255)  # ...except opaque black ink
    grey = decode_image(png(Image.fromarray(rgba, "RGBA")))
    assert grey[0, 0] == 255 and grey[10, 10] == 0


def _tiff(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="TIFF")
    return buf.getvalue()


def _float_tiff() -> bytes:
    return _tiff(Image.fromarray(np.ones((8, 8), np.float32)))


@pytest.mark.parametrize("data, message", [
    (b"", "empty input"),
    (b"this is not an image at all", "not an image"),
    (png(np.full((40, 200), 200, np.uint8))[:60], "truncated"),
    (_float_tiff(), "unsupported image mode 'F'"),
])
def test_decode_image_errors_name_the_input_and_the_problem(data, message):
    with pytest.raises(ImageError, match=message) as e:
        decode_image(data, name="upload.png")
    assert "upload.png" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_decode_image_refuses_too_many_pixels_before_decoding():
    data = png(np.full((100, 200), 255, np.uint8))
    with pytest.raises(ImageError, match="20000 pixels is more than the limit of 10000"):
        decode_image(data, max_pixels=10_000)
    assert decode_image(data, max_pixels=20_000).shape == (100, 200)


# --- one grey conversion for training and serving -------------------------------------------------------


def _modes(img: np.ndarray) -> dict[str, Image.Image]:
    """The same line in the PIL modes that files decode to."""
    grey = Image.fromarray(img)
    rgba = np.dstack([np.zeros_like(img)] * 3 + [255 - img])  # black ink whose opacity is the darkness
    palette = grey.convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])  # the paper's palette entry is see-through
    return {
        "L": grey, "RGB": grey.convert("RGB"), "RGBA": Image.fromarray(rgba, "RGBA"), "LA": grey.convert("LA"),
        "P": grey.convert("P"), "P+transparency": palette, "1": grey.convert("1"),
        "I;16": Image.fromarray(img.astype(np.uint16) * 257), "I": grey.convert("I"),
    }


@pytest.mark.parametrize("mode", list(_modes(line_image(width=60, seed=0, height=40))))
def test_decoded_files_and_in_memory_images_become_the_same_grey_pixels(model_path, mode):
    """Serving decodes uploaded bytes; training and predict hand images to the stem. Both go through
    the one conversion, so the same picture gives the same grey pixels and the same model input."""
    image = _modes(line_image(width=90, seed=3, height=40))[mode]
    data = _tiff(image) if mode == "I" else png(image)  # PNG has no 32-bit integer grey
    from_file = decode_image(data)
    assert from_file.dtype == np.uint8 and from_file.shape == (40, 90)
    assert np.array_equal(from_file, to_grey(Image.open(io.BytesIO(data))))
    assert np.array_equal(from_file, to_grey(image))
    rec = Recognizer.load(model_path)
    assert torch.equal(rec.preprocess(data), rec.stem(image))


def test_float_pixels_are_refused_as_files_and_as_pil_images_but_read_as_arrays(model_path):
    img = line_image(width=80, seed=4, height=40)
    floats = Image.fromarray(img.astype(np.float32) / 255)  # mode "F"
    assert floats.mode == "F"
    rec = Recognizer.load(model_path)
    for run in (lambda: decode_image(_float_tiff(), name="scan.tif"), lambda: to_grey(floats, "scan.tif"),
                lambda: rec.recognise([floats])):
        with pytest.raises(ValueError, match="unsupported image mode 'F'"):
            run()
    with pytest.raises(ImageError, match="scan.tif: unsupported image mode 'F'"):
        decode_image(_float_tiff(), name="scan.tif")
    # an array is the caller's own: floats in [0, 1] are the documented scale, and read exactly
    assert np.array_equal(to_grey(np.asarray(floats)), img)
    assert torch.equal(rec.preprocess(np.asarray(floats)), rec.preprocess(png(img)))


def test_big_endian_sixteen_bit_pixels_scale_like_little_endian_ones():
    img = line_image(width=50, seed=5, height=40).astype(np.uint16) * 257
    big = Image.frombytes("I;16B", (50, 40), img.astype(">u2").tobytes())
    assert big.mode == "I;16B"
    assert np.array_equal(to_grey(big), to_grey(Image.fromarray(img)))
    assert np.array_equal(to_grey(big), line_image(width=50, seed=5, height=40))


def test_read_image_names_unreadable_files(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ImageError, match="bad.png"):
        read_image(bad)


# --- lines with no ink ------------------------------------------------------------------------------


def _noise(mean: float, std: float) -> np.ndarray:
    return np.random.default_rng(int(mean + std)).normal(mean, std, (40, 200)).clip(0, 255).astype(np.uint8)


def _speckled() -> np.ndarray:
    img = np.full((40, 200), 245, np.uint8)
    img[np.random.default_rng(1).random(img.shape) < 0.005] = 0  # dust: isolated black pixels
    return img


BLANKS = {
    "white": png(np.full((40, 200), 255, np.uint8)),
    "black": png(np.zeros((40, 200), np.uint8)),
    "uniform grey": png(np.full((40, 200), 128, np.uint8)),
    "transparent": png(Image.fromarray(np.zeros((40, 200, 4), np.uint8), "RGBA")),
    "transparent white": png(Image.fromarray(np.full((40, 200, 4), (255, 255, 255, 0), np.uint8), "RGBA")),
    "grey paper with sensor noise": png(_noise(230, 6)),
    "white paper with noise clipped at 255": png(_noise(255, 8)),
    "dusty paper": png(_speckled()),
    "colour, uniform": png(Image.new("RGB", (200, 40), (200, 180, 90))),
}


@pytest.fixture(scope="module")
def reading_model(tmp_path_factory) -> Path:
    """A tiny model that reads letters into anything, blank paper included (as trained ones do)."""
    return make_model_pt(tmp_path_factory.mktemp("reading") / "model.pt")


def test_the_reading_model_would_read_letters_into_blank_paper(reading_model):
    rec = Recognizer.load(reading_model)
    (r,) = rec.model.recognise(torch.zeros(1, 1, 40, 200), torch.tensor([200]), rec.decoder)
    assert r.text != "" and r.confidence > 0  # so the answers below come from the blank check


@pytest.mark.parametrize("kind", list(BLANKS))
def test_a_line_with_no_ink_reads_as_empty_text_with_confidence_zero(reading_model, kind):
    rec = Recognizer.load(reading_model)
    data = BLANKS[kind]
    assert not has_ink(decode_image(data)) and is_blank(rec.preprocess(data))
    for image in (data, decode_image(data), Image.open(io.BytesIO(data))):  # bytes, array, PIL image
        (r,) = rec.recognise([image])
        assert (r.text, r.confidence, r.indices, r.char_confidences) == ("", 0.0, [], [])


def test_blank_lines_in_a_batch_keep_their_places_and_the_rest_is_read_as_alone(reading_model):
    rec = Recognizer.load(reading_model)
    lines = [line_png(seed, width=150 + 40 * seed) for seed in range(3)]
    inputs = [lines[0], BLANKS["white"], lines[1], BLANKS["transparent"], lines[2]]
    out = rec.recognise(inputs, batch_size=2)
    assert [(r.text, r.confidence) for r in (out[1], out[3])] == [("", 0.0), ("", 0.0)]
    for got, line in zip((out[0], out[2], out[4]), lines, strict=True):
        alone = rec.recognise([line])[0]
        assert got.text == alone.text != "" and alone.confidence > 0
        assert got.confidence == pytest.approx(alone.confidence, abs=1e-5)


def test_a_faint_line_is_not_blank(reading_model):
    """Pencil 35 grey levels below the paper, with sensor noise: still ink, read like the dark line."""
    rec = Recognizer.load(reading_model)
    dark = decode_image(line_png(3, width=200))
    faint = (235 - (240 - dark.astype(np.float64)) * 35 / 240).round().astype(np.uint8)
    noisy = (faint + np.random.default_rng(0).normal(0, 3, faint.shape)).clip(0, 255).astype(np.uint8)
    for image in (faint, noisy):
        assert has_ink(image) and not is_blank(rec.preprocess(image))
    want = rec.recognise([dark])[0]
    got = rec.recognise([faint])[0]
    assert got.text == want.text != "" and got.confidence > 0
    assert rec.recognise([noisy])[0].text != ""
