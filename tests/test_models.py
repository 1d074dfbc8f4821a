"""Every registered model: shapes, padding independence, learning, export; and the registry itself."""

from __future__ import annotations

import importlib.resources
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from textrec.charset import DEFAULT_CHARSET, Charset
from textrec.decoding import CharNgramLM, DecoderSpec, Recognition
from textrec.models import create_model, list_models, model_config
from textrec.models.line_cnn_lstm import LineCnnLstmConfig
from textrec.stem import LineStem

HEIGHT = 40
TEXTS = ["a cat", "Hello!", "big 42", "wordy"]


@pytest.fixture(autouse=True)
def _few_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # other tests share the cores; these are small
    yield
    torch.set_num_threads(old)


def render(text: str, size: int = 28, font_path: str | None = None) -> np.ndarray:
    font = ImageFont.truetype(font_path, size) if font_path else ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (right - left + 12, bottom - top + 12), 255)
    ImageDraw.Draw(img).text((6 - left, 6 - top), text, font=font, fill=0)
    return np.asarray(img)


def make_batch(texts: list[str], charset: Charset = DEFAULT_CHARSET):
    """Stem each rendered line and zero-pad to the widest, as training's collate does."""
    stem = LineStem()
    xs = [stem(render(t)) for t in texts]
    images = torch.zeros(len(xs), 1, HEIGHT, max(x.shape[-1] for x in xs))
    for i, x in enumerate(xs):
        images[i, :, :, : x.shape[-1]] = x
    widths = torch.tensor([x.shape[-1] for x in xs])
    encoded = [charset.encode(t) for t in texts]
    targets = torch.zeros(len(texts), max(map(len, encoded)), dtype=torch.long)
    for i, e in enumerate(encoded):
        targets[i, : len(e)] = torch.tensor(e)
    return images, widths, targets, torch.tensor([len(e) for e in encoded])


def small(name: str, **options):
    """Each model at its default size, except that decoding stays short for untrained models."""
    if name == "resnet_transformer":
        options.setdefault("max_length", 24)
    return create_model(name, num_classes=DEFAULT_CHARSET.num_classes, height=HEIGHT, **options)


@pytest.mark.parametrize("name", list_models())
def test_loss_is_finite_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = small(name)
    batch = make_batch(TEXTS)
    loss = model.loss(*batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
    assert model.num_parameters() < 3_000_000
    assert model.name == name and model.height == HEIGHT and model.num_classes == 80


@pytest.mark.parametrize("name", list_models())
def test_recognise_returns_one_recognition_per_line_and_keeps_the_training_mode(name):
    torch.manual_seed(0)
    model = small(name).train()
    images, widths, _, _ = make_batch(TEXTS[:3])
    out = model.recognise(images, widths)
    assert model.training  # restored after decoding in eval mode
    assert len(out) == 3 and all(isinstance(r, Recognition) for r in out)
    for r in out:
        assert 0.0 <= r.confidence <= 1.0 and len(r.char_confidences) == len(r.text) == len(r.indices)
    with pytest.raises(ValueError, match="unknown decoder"):
        model.recognise(images, widths, decoder=DecoderSpec("viterbi"))
    with pytest.raises(TypeError, match="must be a textrec.decoding.DecoderSpec, got 'beam'"):
        model.recognise(images, widths, "beam")  # the loose keywords of old are gone


@pytest.mark.parametrize("name", list_models())
def test_beam_search_gives_one_recognition_per_line_within_its_limits(name):
    torch.manual_seed(0)
    model = small(name).eval()
    images, widths, _, _ = make_batch(TEXTS[:2])
    out = model.recognise(images, widths, DecoderSpec("beam", beam=3))
    assert len(out) == 2
    for r in out:
        assert 0.0 <= r.confidence <= 1.0 and len(r.char_confidences) == len(r.text) == len(r.indices)


@pytest.mark.parametrize("name", list_models())
def test_uses_lm_says_whether_decoding_fuses_a_language_model(name):
    """Each model states the capability itself, and it is true: an LM changes what a model that uses
    one reads, and a model that does not use one refuses an LM rather than ignoring it."""
    cls = type(small(name))
    assert isinstance(vars(cls).get("uses_lm"), bool), f"{name} does not declare uses_lm"
    torch.manual_seed(0)
    model = small(name).eval()
    images, widths, _, _ = make_batch(TEXTS[:2])
    lm = CharNgramLM.fit(["zzz zzz zzz"] * 5, order=3)  # a language of nothing but z
    fused = DecoderSpec("beam", beam=4, lm_weight=5.0)
    if model.uses_lm:
        plain = [r.text for r in model.recognise(images, widths, DecoderSpec("beam", beam=4))]
        with_lm = [r.text for r in model.recognise(images, widths, fused, lm)]
        assert with_lm != plain
        weightless = [r.text for r in model.recognise(images, widths, DecoderSpec("beam", beam=4), lm)]
        assert weightless == plain  # the spec's lm_weight decides how much the LM counts
    else:
        with pytest.raises(ValueError, match=f"{name} does not use a language model"):
            model.recognise(images, widths, fused, lm)


def test_the_models_that_use_a_language_model():
    assert {name: create_model(name, num_classes=80, height=HEIGHT).uses_lm for name in list_models()} == {
        "line_cnn_lstm": True, "resnet_transformer": False}


def test_a_model_class_must_declare_uses_lm():
    from dataclasses import dataclass

    from textrec.models import LineModel, register_model

    @dataclass(frozen=True)
    class Cfg:
        pass

    class Undeclared(LineModel):
        pass

    with pytest.raises(TypeError, match="must set the class attribute uses_lm"):
        register_model("undeclared", Cfg)(Undeclared)
    assert "undeclared" not in list_models()


@pytest.mark.parametrize("name", list_models())
def test_a_line_decodes_the_same_alone_and_padded_in_a_batch(name):
    torch.manual_seed(0)
    model = small(name).eval()
    images, widths, _, _ = make_batch(["it", "a much longer line of text"])
    short = images[:1, :, :, : int(widths[0])]
    alone = model.recognise(short, widths[:1])[0]
    batched = model.recognise(images, widths)[0]
    assert alone.text == batched.text
    assert alone.confidence == pytest.approx(batched.confidence, abs=1e-5)


def test_ctc_forward_shapes_and_padding_independence():
    torch.manual_seed(0)
    model = small("line_cnn_lstm").eval()
    images, widths, _, _ = make_batch(["it", "a much longer line of text"])
    with torch.no_grad():
        log_probs, lengths = model(images, widths)
        alone, alone_len = model(images[:1, :, :, : int(widths[0])], widths[:1])
    t_max = (images.shape[-1] + 3) // 4
    assert log_probs.shape == (t_max, 2, 80)
    assert lengths.tolist() == [(int(w) + 3) // 4 for w in widths] == model.output_lengths(widths).tolist()
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(t_max, 2), atol=1e-4)
    n = int(alone_len[0])
    assert torch.allclose(alone[:n, 0], log_probs[:n, 0], atol=1e-4)
    # padding that is not zero is masked too
    noisy = images.clone()
    noisy[0, :, :, int(widths[0]):] = torch.rand_like(noisy[0, :, :, int(widths[0]):])
    with torch.no_grad():
        assert torch.allclose(model(noisy, widths)[0][:n, 0], alone[:n, 0], atol=1e-4)


def test_ctc_log_probabilities_stay_float32_under_bf16_autocast():
    """CTC sums a line's log-probabilities over every frame; CPU autocast would leave log_softmax in bf16."""
    model = small("line_cnn_lstm").eval()
    images, widths, _, _ = make_batch(["it", "a longer line"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, _ = model(images, widths)
    assert log_probs.dtype == torch.float32
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]), atol=1e-4)


@pytest.mark.parametrize("name", list_models())
def test_overfits_one_batch(name):
    torch.manual_seed(0)
    model = small(name, dropout=0.0)
    batch = make_batch(TEXTS)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3 if name == "line_cnn_lstm" else 1e-3)
    texts: list[str] = []
    for step in range(1, 301):
        opt.zero_grad()
        loss = model.loss(*batch)
        loss.backward()
        opt.step()
        if step % 25 == 0 and loss.item() < 1.0:
            texts = [r.text for r in model.recognise(batch[0], batch[1])]
            if texts == TEXTS:
                break
    assert loss.item() < 1.0, f"{name}: loss still {loss.item():.2f} after {step} steps"
    assert texts == TEXTS


def test_ctc_model_scripts_and_reloads_for_any_batch_and_width(tmp_path):
    """TorchScript is the Python-free export path: ``torch.export`` unrolls nn.LSTM over time and so
    fixes the width, while a scripted model takes any batch size and width."""
    torch.manual_seed(0)
    model = small("line_cnn_lstm").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        torch.jit.save(torch.jit.script(model), tmp_path / "model.ts")
        scripted = torch.jit.load(tmp_path / "model.ts")
    for texts in (["export", "me"], ["a different batch", "of three", "lines"]):
        images, widths, _, _ = make_batch(texts)
        got, got_len = scripted(images, widths)
        with torch.no_grad():
            want, want_len = model(images, widths)
        assert torch.equal(got_len, want_len)
        assert torch.allclose(got, want, atol=1e-5)


def test_registry_names_and_errors():
    assert {"line_cnn_lstm", "resnet_transformer"} <= set(list_models())
    assert model_config("line_cnn_lstm") is LineCnnLstmConfig
    with pytest.raises(KeyError, match="known models: line_cnn_lstm"):
        create_model("nope", num_classes=80, height=HEIGHT)
    with pytest.raises(TypeError, match="no option 'hidden'"):
        create_model("line_cnn_lstm", num_classes=80, height=HEIGHT, hidden=3)
    # YAML gives lists; the frozen config stores tuples and round-trips through config_dict
    m = create_model("line_cnn_lstm", num_classes=80, height=HEIGHT, channels=[8, 16, 24, 32])
    assert m.config.channels == (8, 16, 24, 32)
    again = create_model("line_cnn_lstm", num_classes=80, height=HEIGHT, **m.config_dict())
    assert again.config == m.config


def test_bad_inputs_are_named():
    model = small("line_cnn_lstm")
    with pytest.raises(ValueError, match=r"expected images \(B, 1, 40, W\)"):
        model.loss(torch.zeros(2, 1, 32, 64), torch.tensor([64, 64]), torch.ones(2, 3, dtype=torch.long),
                   torch.tensor([3, 3]))
    other = create_model("line_cnn_lstm", num_classes=5, height=HEIGHT)
    with pytest.raises(ValueError, match="no charset"):
        other.recognise(torch.zeros(1, 1, HEIGHT, 32), torch.tensor([32]))
    assert other.recognise(torch.zeros(1, 1, HEIGHT, 32), torch.tensor([32]), charset=Charset("abcd"))


def _handwriting_fonts() -> list[str]:
    fonts = []
    for pkg in ("fontpkg_caveat", "fontpkg_dancing_script", "fontpkg_indie_flower", "fontpkg_kalam",
                "fontpkg_great_vibes", "fontpkg_zeyada", "fontpkg_satisfy", "fontpkg_shadows_into_light"):
        try:
            folder = Path(str(importlib.resources.files(pkg))) / "files"
        except ModuleNotFoundError:
            continue
        fonts.extend(str(p) for p in sorted(folder.glob("*.ttf"))[:1])
    return fonts


def test_handwriting_lines_give_ctc_at_least_two_frames_per_character():
    fonts = _handwriting_fonts()
    if not fonts:
        pytest.skip("no fontpkg handwriting fonts installed")
    stem = LineStem()
    model = small("line_cnn_lstm")
    text = "Their meeting was held in the small hall, 3 miles away."
    for font in fonts:
        for size in (24, 48):
            x = stem(render(text, size=size, font_path=font))
            frames = int(model.output_lengths(torch.tensor([x.shape[-1]]))[0])
            assert frames >= 2 * len(text), f"{Path(font).name} at {size}px: {frames} frames for {len(text)} chars"
