"""The paragraph model (``paragraph_transformer``): whole pages in, lines with line breaks out.

The line break is one more character of the page charset; the model learns on a fixed pair of tiny
pages; training on pages runs through ``textrec train``; the artifact says it reads pages, and the
Recognizer, ``textrec predict --page``, ``textrec evaluate --pages`` and the TorchServe page handler
read pages with it as they do with segmentation + a line model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from textrec.artifact import ArtifactError, artifact_dict, load_artifact, read_artifact, save_artifact
from textrec.charset import DEFAULT_CHARSET, IAM_CHARS, LINE_BREAK, PAGE_CHARSET, page_charset
from textrec.cli import main
from textrec.config import from_dict
from textrec.data.pages import PageConfig, PageRenderer
from textrec.data.synth import LineRenderer, SynthConfig
from textrec.data.text import open_text_source
from textrec.decoding import DecoderSpec
from textrec.metrics import cer
from textrec.models import create_model, list_models
from textrec.models.paragraph import PageStem
from textrec.recognizer import PageReading, Recognizer
from textrec.stem import LineStem, StemConfig
from textrec.training import load_config
from textrec.training.checkpoint import load_checkpoint
from textrec.training.config import TrainConfig
from textrec.training.data import charset_and_stem, collate

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "paragraph-smoke.yaml"
GPU = REPO / "configs" / "paragraph-gpu.yaml"
STEM = StemConfig(height=64, max_width=128)
TINY = dict(channels=[8, 16, 24, 32], d_model=32, heads=2, layers=1, ff=64, dropout=0.0, max_length=40)
TEXTS = [["a cat sat", "on the mat"], ["big dog", "ran off"]]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # the cores are shared; these models are tiny
    yield
    torch.set_num_threads(old)


def tiny(**options):
    return create_model("paragraph_transformer", num_classes=PAGE_CHARSET.num_classes, height=STEM.height,
                        **{**TINY, **options})


@pytest.fixture(scope="module")
def pages():
    """Two small synthetic pages of two lines each, in one hand per page."""
    renderer = PageRenderer(LineRenderer(SynthConfig(pen_p=0.0)), open_text_source(None), PageConfig(scale=0.4))
    return [renderer.render(np.random.default_rng(seed), texts) for seed, texts in enumerate(TEXTS, start=1)]


@pytest.fixture(scope="module")
def batch(pages):
    stem = PageStem(STEM)
    return collate([(stem(p.image), p.text) for p in pages], PAGE_CHARSET)


# --- the line break --------------------------------------------------------------------------------


def test_the_line_break_is_the_last_class_and_every_line_character_keeps_its_index():
    assert PAGE_CHARSET.chars == IAM_CHARS + LINE_BREAK and page_charset(PAGE_CHARSET) is PAGE_CHARSET
    assert PAGE_CHARSET.num_classes == DEFAULT_CHARSET.num_classes + 1 == 81
    assert PAGE_CHARSET.encode(IAM_CHARS, normalise=False) == DEFAULT_CHARSET.encode(IAM_CHARS, normalise=False)
    text = "It\u2019s  late\nso  we|go\n home "
    ids = PAGE_CHARSET.encode(text)
    assert ids.count(80) == 2 and PAGE_CHARSET.decode(ids) == "It's late\nso we go\nhome"
    assert DEFAULT_CHARSET.normalise(text) == "It's late so we go home"  # lines still know no breaks


def test_the_registry_keeps_line_models_and_page_models_apart():
    assert list_models() == ["line_cnn_lstm", "resnet_transformer"]
    assert list_models("page") == ["paragraph_transformer"]
    model = tiny()
    assert model.task == "page" and not model.uses_lm and model.charset is PAGE_CHARSET
    with pytest.raises(ValueError, match="reads pages but data.kind is 'lines'"):
        charset_and_stem(from_dict(TrainConfig, {"model": {"name": "paragraph_transformer"}}))
    with pytest.raises(ValueError, match="reads lines but data.kind is 'pages'.*paragraph_transformer"):
        charset_and_stem(from_dict(TrainConfig, {"data": {"kind": "pages"}}))


# --- the page stem ---------------------------------------------------------------------------------


def test_the_page_stem_fits_any_page_into_its_height_and_width_budget():
    stem = PageStem(STEM)
    tall = np.full((400, 100), 235, np.uint8)
    wide = np.full((100, 900), 235, np.uint8)
    for y in range(20, 380, 30):  # twelve 3-px strokes, 80 px long
        tall[y:y + 3, 10:90] = 30
    for y in (20, 40, 60):
        wide[y:y + 3, 30:870] = 30
    x_tall, box = stem.read(tall)
    assert x_tall.shape == (1, 64, stem.width_of(333, 80)) and box == (10, 20, 90, 353)
    x_wide = stem(wide)
    assert x_wide.shape[1:] == (64, 128) and x_wide[0, :, :].max() == 1.0
    assert x_wide[0, 8:].max() == 0.0  # a wide page fills the width; the rows below it are paper
    blank = stem(np.full((300, 200), 240, np.uint8))
    assert blank.shape[1] == 64 and not blank.any()
    assert stem.width_of(50, 2000) == 128 and stem.width_of(2000, 50) == 8  # never wider, never too thin
    augmented = stem(wide, np.random.default_rng(0), augment=True)
    assert augmented.shape[1] == 64 and augmented.shape[2] <= 128


# --- the model -------------------------------------------------------------------------------------


def test_memory_is_the_pages_2d_feature_map_and_every_parameter_learns(batch):
    torch.manual_seed(0)
    model = tiny()
    memory, pad = model.encode(batch.images, batch.widths)
    cols = (batch.widths + 7) // 8  # 8 x 8 px cells: 64 rows -> 8, columns / 8
    assert memory.shape == (2, 8 * int(cols.max()), 32)
    assert pad.sum(dim=1).tolist() == [8 * int(cols.max() - c) for c in cols]
    loss = model.loss(batch.images, batch.widths, batch.targets, batch.target_lengths)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_model_overfits_two_tiny_pages_line_breaks_included(batch):
    torch.manual_seed(0)
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = model.loss(batch.images, batch.widths, batch.targets, batch.target_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]
    read = [r.text for r in model.recognise(batch.images, batch.widths)]
    assert all(t.count(LINE_BREAK) == 1 for t in read), read
    assert cer(read, batch.texts) < 0.3, read


def test_greedy_and_beam_decoding_stay_within_the_pages_limit_and_batching_changes_nothing(batch):
    torch.manual_seed(0)
    model = tiny(max_length=500).eval()  # untrained: it runs on to its limit
    limits = model._max_steps(batch.widths).tolist()
    assert limits == [8 * int(c) for c in (batch.widths + 7) // 8]  # one character per memory cell
    together = model.recognise(batch.images, batch.widths)
    alone = model.recognise(batch.images[:1, :, :, : int(batch.widths[0])], batch.widths[:1])
    assert together[0].text == alone[0].text  # a page reads the same beside a wider one
    for decoder in (DecoderSpec(), DecoderSpec("beam", beam=3)):
        for r, limit in zip(model.recognise(batch.images, batch.widths, decoder), limits, strict=True):
            assert len(r.indices) <= limit and len(r.text) == len(r.char_confidences)
            assert 0.0 <= r.confidence <= 1.0


def test_the_gpu_recipe_loads_and_its_model_runs_on_a_tiny_batch():
    cfg = load_config(GPU)
    charset, stem = charset_and_stem(cfg)
    assert cfg.data.kind == "pages" and cfg.loop.amp == "bf16" and isinstance(stem, PageStem)
    torch.manual_seed(0)
    model = create_model(cfg.model.name, num_classes=charset.num_classes, height=cfg.stem.height,
                         **cfg.model.options)
    assert 5_000_000 < model.num_parameters() < 50_000_000
    images = torch.rand(1, 1, cfg.stem.height, 64)
    targets = torch.tensor([PAGE_CHARSET.encode("ab\ncd")])
    loss = model.loss(images, torch.tensor([64]), targets, torch.tensor([5]))
    assert torch.isfinite(loss)


# --- the artifact ----------------------------------------------------------------------------------


def test_the_artifact_records_the_task_and_older_artifacts_read_as_lines(tmp_path: Path):
    page_pt = save_artifact(tmp_path / "page.pt", tiny(), charset=PAGE_CHARSET, stem=PageStem(STEM))
    assert read_artifact(page_pt)["task"] == "page" and load_artifact(page_pt)[0].task == "page"
    line = create_model("line_cnn_lstm", num_classes=80, height=32, lstm_hidden=8, features=16)
    old = artifact_dict(line, charset=DEFAULT_CHARSET, stem=LineStem(StemConfig(height=32)))
    del old["task"]  # as written before paragraph models
    torch.save(old, tmp_path / "old.pt")
    assert read_artifact(tmp_path / "old.pt")["task"] == "line"
    rec = Recognizer.load(tmp_path / "old.pt")
    assert rec.task == "line" and type(rec.stem) is LineStem
    wrong = dict(old, task="page")
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ArtifactError, match="says task 'page' but model 'line_cnn_lstm' reads lines"):
        load_artifact(tmp_path / "wrong.pt")


# --- training, reading and scoring pages end to end ------------------------------------------------


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``textrec train --config configs/paragraph-smoke.yaml``: a tiny page pool rendered, two epochs."""
    out = tmp_path_factory.mktemp("paragraph-run")
    cache = tmp_path_factory.mktemp("paragraph-cache")
    assert main(["train", "--config", str(SMOKE), "--out", str(out), f"--data.cache_dir={cache}",
                 "--loop.threads=1"]) == 0
    return out


@pytest.fixture(scope="module")
def page_files(pages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A page TSV (``image<TAB>lines joined by a literal \\n``) of the two tiny pages."""
    folder = tmp_path_factory.mktemp("page-tsv")
    rows = []
    for k, page in enumerate(pages):
        Image.fromarray(page.image).save(folder / f"page{k}.png")
        rows.append(f"page{k}.png\t" + "\\n".join(t for _, t in page.lines))
    (folder / "pages.tsv").write_text("\n".join(rows) + "\n")
    return folder / "pages.tsv"


def test_smoke_training_on_pages_writes_a_page_artifact_and_scores_every_epoch(smoke_run: Path):
    raw = read_artifact(smoke_run / "model.pt")
    assert raw["task"] == "page" and raw["model_name"] == "paragraph_transformer"
    assert raw["charset"] == PAGE_CHARSET.chars and raw["num_classes"] == 81
    assert raw["stem"]["height"] == 64 and raw["stem"]["max_width"] == 128
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["val_n"] == 1 and metrics["test_n"] == 1 and metrics["test_unseen_font_n"] == 2
    history = load_checkpoint(smoke_run / "checkpoints" / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [1.0, 2.0]
    assert all(h["val_cer"] >= 0 and np.isfinite(h["train_loss"]) for h in history)


def test_the_recognizer_reads_a_page_whole_and_splits_it_into_banded_lines(smoke_run: Path, pages):
    rec = Recognizer.load(smoke_run)
    assert rec.task == "page" and isinstance(rec.stem, PageStem)
    image = pages[0].image
    reading = rec.recognise_page(image)
    assert isinstance(reading, PageReading)
    assert reading.text == "\n".join(line.text for line in reading.lines)
    raw = rec.recognise_tensors([rec.stem(image)])[0].text
    assert [t.strip() for t in raw.split("\n") if t.strip()] == [line.text for line in reading.lines]
    x0, y0, x1, y1 = rec.stem.page_box(image)
    if reading.lines:  # bands of the page's ink, top to bottom, touching
        assert reading.lines[0].box[1] == y0 and reading.lines[-1].box[3] == y1
        assert all(line.box[0] == x0 and line.box[2] == x1 for line in reading.lines)
        assert all(0.0 <= line.confidence <= 1.0 for line in reading.lines)
    blank = rec.recognise_page(np.full((120, 200), 245, np.uint8))
    assert blank.lines == [] and blank.text == "" and blank.confidence == 0.0


def test_predict_page_and_evaluate_pages_run_with_a_paragraph_model(smoke_run: Path, page_files: Path,
                                                                    tmp_path: Path, capsys):
    assert main(["predict", "--model", str(smoke_run), "--page", "--json", str(page_files.parent / "page0.png")]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) >= {"text", "lines"}
    report = tmp_path / "report"
    assert main(["evaluate", "--model", str(smoke_run), "--pages", str(page_files), "--report", str(report),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 2 and summary["lines_true"] == 4 and summary["cer"] >= 0
    saved = json.loads((report / "report.json").read_text())
    assert [r["truth"] for r in saved["rows"]] == ["\n".join(t) for t in TEXTS]


def test_the_torchserve_page_handler_answers_with_the_paragraph_model(smoke_run: Path, page_files: Path):
    pytest.importorskip("ts")
    from fixtures.handler_context import FakeContext

    from serving.handler import TextrecHandler

    handler = TextrecHandler()
    handler.initialize(FakeContext(smoke_run, name="textrec-page", handler_options={"task": "page"}))
    png = (page_files.parent / "page1.png").read_bytes()
    ctx = FakeContext(Path("."))
    (out,) = handler.handle([{"body": png}], ctx)
    answer = json.loads(out)
    assert ctx.statuses == {}
    assert answer["text"] == Recognizer.load(smoke_run).recognise_page(png).text
    assert answer["text"] == "\n".join(line["text"] for line in answer["lines"])


def _greedy_without_cache(model, memory, pad, limit):
    """Greedy decoding the plain way: the whole prefix through the decoder at every step."""
    tokens = torch.full((memory.shape[0], 1), model.start, dtype=torch.long)
    for _ in range(limit):
        nxt = model._step_logp(tokens, memory, pad).argmax(dim=-1)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
    return tokens[:, 1:]


@pytest.mark.parametrize("name", ["paragraph_transformer", "resnet_transformer"])
def test_cached_greedy_decoding_writes_what_the_full_prefix_decoder_writes(batch, name):
    torch.manual_seed(3)
    options = {**TINY, "layers": 2, "max_length": 60}
    model = create_model(name, num_classes=PAGE_CHARSET.num_classes, height=STEM.height, **options).eval()
    with torch.no_grad():
        memory, pad = model.encode(batch.images, batch.widths)
        limits = torch.full((memory.shape[0],), 60)
        cached = model._greedy(memory, pad, limits)
        plain = _greedy_without_cache(model, memory, pad, 60)
    for row, (tokens, probs) in enumerate(cached):
        expected = []
        for t in plain[row].tolist():
            if t in (model.end, model.pad):
                break
            expected.append(t)
        assert tokens == expected and len(tokens) > 5 and len(probs) == len(tokens)  # untrained: runs long
