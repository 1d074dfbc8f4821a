"""The training loop end to end on a tiny recipe, and the parts it is built from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from textrec.artifact import load_artifact
from textrec.charset import DEFAULT_CHARSET
from textrec.decoding import CharNgramLM, DecoderSpec
from textrec.stem import LineStem, StemConfig
from textrec.training import Callback, EarlyStopping, load_config, train
from textrec.training.checkpoint import load_checkpoint
from textrec.training.data import BucketBatchSampler, StoreLines, bucket_batches, collate, eval_batches
from textrec.training.loop import make_scheduler

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


SMALL_TRANSFORMER = dict(channels=[8, 16, 24, 32], d_model=32, heads=2, layers=1, ff=64, max_length=16)


def tiny_config(cache: Path, *overrides: str, model: str = "line_cnn_lstm"):
    """The smoke recipe shrunk further: a 160-line pool, 4 steps per epoch (and a small transformer
    when ``model`` is resnet_transformer)."""
    recipe = yaml.safe_load((CONFIGS / "smoke.yaml").read_text())
    if model != recipe["model"]["name"]:
        recipe["model"] = {"name": model, "options": SMALL_TRANSFORMER}
    return load_config(recipe, [
        f"--data.cache_dir={cache}", "--data.train_lines=64", "--data.val_lines=8", "--data.test_lines=8",
        "--data.unseen_font_lines=8", "--loop.epochs=2", "--loop.threads=1", *overrides])


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pool-cache")


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.is_main, trainer.config.loop.epochs))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.events.append(("epoch", epoch, round(metrics["val_cer"], 6), trainer.step))

    def on_train_end(self, trainer, metrics):
        self.events.append(("end", metrics["epochs"], len(trainer.history)))


# --- data ------------------------------------------------------------------------------------------


def test_collate_refuses_lines_of_different_heights():
    with pytest.raises(ValueError, match="different heights"):
        collate([(torch.ones(1, 8, 10), "a"), (torch.ones(1, 9, 10), "b")], DEFAULT_CHARSET)


def test_width_buckets_cut_padding_against_a_random_order():
    rng = np.random.default_rng(0)
    lengths = rng.integers(50, 1500, size=2000).astype(float)

    def padding(batches):
        return sum(max(lengths[b]) * len(b) - lengths[b].sum() for b in batches)

    bucketed = bucket_batches(lengths, 32, rng=np.random.default_rng(1), bucket_batches=16)
    order = rng.permutation(2000)
    shuffled = [order[k:k + 32].tolist() for k in range(0, 2000, 32)]
    assert sorted(i for b in bucketed for i in b) == list(range(2000))
    assert padding(bucketed) < 0.2 * padding(shuffled)


def test_sampler_order_is_a_function_of_seed_and_epoch():
    lengths = np.arange(100, dtype=float)
    a, b = (BucketBatchSampler(lengths, 8, seed=3, bucket_batches=2) for _ in range(2))
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert list(a) != list(b)
    assert all(e == 1 for batch in a for e, _ in batch)


def test_sampler_shards_cover_every_batch_with_equal_counts_per_rank():
    lengths = np.arange(90, dtype=float)  # 12 batches of 8 (the last short): 6 per rank of 2
    ranks = [BucketBatchSampler(lengths, 8, seed=0, rank=r, world_size=2) for r in range(2)]
    shares = [[tuple(i for _, i in b) for b in s] for s in ranks]
    assert len(shares[0]) == len(shares[1])
    assert sorted(i for share in shares for b in share for i in b) == list(range(90))
    three = [BucketBatchSampler(lengths, 8, seed=0, rank=r, world_size=5) for r in range(5)]
    assert len({len(s) for s in three}) == 1  # 12 batches wrapped around to 15, 3 per rank


def test_sampler_skip_continues_with_the_batches_not_yet_seen():
    s = BucketBatchSampler(np.arange(64, dtype=float), 4, seed=1)
    s.set_epoch(0)
    full = list(s)
    s.set_epoch(0, skip=5)
    assert list(s) == full[5:] and len(s) == len(full) - 5


def test_eval_batches_are_width_sorted_and_sharded():
    lengths = np.array([9, 1, 5, 3, 7, 2], dtype=float)
    assert eval_batches(lengths, 2) == [[1, 5], [3, 2], [4, 0]]
    assert eval_batches(lengths, 2, rank=1, world_size=2) == [[3, 2]]


def _tiny_store(path: Path, n: int = 6) -> Path:
    from textrec.data.store import LineWriter

    rng = np.random.default_rng(0)
    with LineWriter(path) as w:
        for i in range(n):
            img = np.full((30, 60 + 10 * i), 240, np.uint8)
            img[8:22, 5:50] = rng.integers(0, 60, size=(14, 45))
            w.add(img, f"line {i}", split="train" if i < 4 else "val", source="test")
    return path


def test_augmentation_depends_only_on_seed_epoch_and_index(tmp_path):
    from textrec.data.store import LineStore

    store = LineStore(_tiny_store(tmp_path / "s.h5"))
    ds = StoreLines([store], "train", LineStem(StemConfig(height=32)), augment=True, seed=5)
    assert len(ds) == 4 and ds.texts == ["line 0", "line 1", "line 2", "line 3"]
    a, b = ds[(3, 1)][0], ds[(3, 1)][0]
    assert torch.equal(a, b)
    assert not torch.equal(a, ds[(4, 1)][0])
    clean = StoreLines([store], "val", LineStem(StemConfig(height=32)))
    assert len(clean) == 2 and torch.equal(clean[0][0], clean[0][0]) and clean[0][0].shape[1] == 32


def test_store_lines_are_batched_by_the_width_the_stem_gives(tmp_path):
    """Scaled by the core, a line's stored width no longer predicts its width out of the stem; the
    sampler's lengths are then the stem's own widths."""
    from textrec.data.store import LineStore, LineWriter

    with LineWriter(tmp_path / "s.h5") as w:
        for i, (xheight, gap) in enumerate([(20, 8), (8, 8), (20, 3), (10, 20), (14, 6)]):
            img = np.full((xheight + 40, 20 + 30 * gap), 245, np.uint8)
            for k in range(30):
                img[20:20 + xheight, 10 + k * gap:12 + k * gap] = 20
                img[5:20, 10 + k * gap:12 + k * gap] = 20 if k % 5 == 0 else 245
            w.add(img, f"line {i}", split="train", source="test")
    stem = LineStem(StemConfig(height=32, core=0.45, spacing=0.87, stroke=1.6))
    ds = StoreLines([LineStore(tmp_path / "s.h5")], "train", stem)
    widths = [ds[i][0].shape[-1] for i in range(len(ds))]
    assert ds.lengths(0).tolist() == widths and ds.lengths(3).tolist() == widths
    scaled = [store_w * 32 / h for store_w, h in zip(ds.stores[0].widths, ds.stores[0].heights, strict=True)]
    assert np.argsort(scaled).tolist() != np.argsort(widths).tolist()  # the old estimate ordered them wrongly
    plain = StoreLines([LineStore(tmp_path / "s.h5")], "train", LineStem(StemConfig(height=32)))
    assert plain.lengths(0).tolist() == scaled  # without the core the stored width predicts it: no measuring


def test_batches_are_padded_to_the_width_multiple_and_lines_read_the_same(tmp_path, cache):
    from textrec.training.loop import Trainer

    trainer = Trainer(tiny_config(cache, "--data.pad_width_to=64"), tmp_path / "run")
    try:
        trainer.sampler.set_epoch(0)
        batches = list(trainer.loader)
        assert batches and all(b.images.shape[-1] % 64 == 0 for b in batches)
        assert all(b.images.shape[-1] - int(b.widths.max()) < 64 for b in batches)
        trainer.model.eval()
        b = batches[0]
        with torch.no_grad():
            padded, lengths = trainer.model(b.images, b.widths)
            tight, same = trainer.model(b.images[..., :int(b.widths.max())], b.widths)
        assert torch.equal(lengths, same)
        for j, n in enumerate(lengths.tolist()):  # the padding changes no line's frames
            assert torch.allclose(padded[:n, j], tight[:n, j], atol=1e-5)
    finally:
        trainer.close()
    with pytest.raises(ValueError, match="pad_width_to"):
        load_config(CONFIGS / "smoke.yaml", ["--data.pad_width_to=0"])
    with pytest.raises(ValueError, match="page model"):
        load_config(CONFIGS / "smoke.yaml", ["--data.kind=pages", "--data.pad_width_to=64"])


# --- schedule and callbacks -----------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_schedules_warm_up_then_decay(schedule):
    cfg = load_config(None, [f"--optim.schedule={schedule}", "--optim.lr=0.01", "--optim.warmup=0.2"])
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=cfg.optim.lr)
    sched = make_scheduler(opt, cfg, total_steps=50)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    peak = int(np.argmax(lrs))
    assert 5 <= peak <= 12 and lrs[0] < 0.5 * max(lrs) and lrs[-1] < 0.05 * max(lrs)
    assert max(lrs) == pytest.approx(0.01, rel=0.05)


def test_a_time_budget_anneals_the_learning_rate_by_the_time_used():
    cfg = load_config(None, ["--optim.lr=0.01", "--optim.warmup=0.1"])
    used = {"fraction": 0.0}
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=cfg.optim.lr)
    sched = make_scheduler(opt, cfg, total_steps=10_000, time_progress=lambda: used["fraction"])
    opt.step()
    sched.step()
    early = opt.param_groups[0]["lr"]
    used["fraction"] = 0.99  # almost out of time after a handful of steps
    opt.step()
    sched.step()
    assert early < 0.01 and opt.param_groups[0]["lr"] < 0.001 * 0.01 * 2


class _FakeTrainer:
    def __init__(self):
        self.reason = None

    def request_stop(self, reason):
        self.reason = reason


def test_early_stopping_waits_patience_epochs_without_improvement():
    cb, t = EarlyStopping(patience=2), _FakeTrainer()
    for epoch, cer in enumerate([0.5, 0.4, 0.41, 0.39, 0.395, 0.40]):
        cb.on_epoch_end(t, epoch, {"val_cer": cer})
        if t.reason:
            break
    assert epoch == 5 and "2 epochs" in t.reason
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(cb.state_dict())
    assert restored.best == pytest.approx(0.39) and restored.waited == 2


# --- the loop -------------------------------------------------------------------------------------------


def test_train_writes_model_metrics_and_checkpoints(tmp_path, cache):
    out = tmp_path / "run"
    rec = Recorder()
    metrics = train(tiny_config(cache), out, callbacks=[rec])
    for key in ("val_cer", "test_cer", "test_unseen_font_cer", "epochs", "lines_per_s", "wall_s", "parameters"):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and metrics["lines_per_s"] > 0 and metrics["stopped"] == "completed"
    assert metrics["selected_by"] == "val_cer" and not any(k.startswith("real_val") for k in metrics)
    assert json.loads((out / "metrics.json").read_text())["test_cer"] == pytest.approx(metrics["test_cer"])
    raw = torch.load(out / "model.pt", weights_only=True)  # plain tensors and Python types only
    assert raw["format"] == "textrec-model" and raw["charset"] == DEFAULT_CHARSET.chars
    assert raw["decoder"]["kind"] == "greedy" and raw["stem"]["height"] == 32
    model, info = load_artifact(out / "model.pt")
    assert info["metrics"]["epochs"] == 2 and not model.training
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["step"] == 8 and len(last["history"]) == 2
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "config.yaml").is_file()
    assert [e[0] for e in rec.events] == ["start", "epoch", "epoch", "end"]
    assert rec.events[1][3] == 4 and rec.events[2][3] == 8  # trainer.step at each epoch end


@pytest.mark.parametrize("model", ["line_cnn_lstm", "resnet_transformer"])
def test_decoders_tried_on_val_follow_whether_the_model_uses_an_lm(tmp_path, cache, monkeypatch, model):
    """A model that uses an LM gets beam search at each LM weight; one that does not gets no LM
    fitted and one plain beam pass. The choice is what the artifact and the metrics record."""
    fitted = []
    real_fit = CharNgramLM.fit.__func__

    def counting_fit(cls, *args, **kwargs):
        fitted.append(cls)
        return real_fit(cls, *args, **kwargs)

    monkeypatch.setattr(CharNgramLM, "fit", classmethod(counting_fit))
    out = tmp_path / "run"
    metrics = train(tiny_config(cache, "--decode.lm_order=3", "--decode.beam=4", "--decode.lm_weights=[0.3,0.6]",
                                model=model), out)
    tried = metrics["val_decoders"]
    if model == "line_cnn_lstm":
        assert set(tried) == {"greedy", "beam4+lm0.3", "beam4+lm0.6"} and fitted == [CharNgramLM]
    else:
        assert set(tried) == {"greedy", "beam4"} and fitted == []
        assert not any("lm" in label for label in tried)
    chosen = DecoderSpec.from_dict(metrics["decoder"])
    assert chosen.label() in tried and tried[chosen.label()] == min(tried.values())
    assert metrics["val_cer"] == pytest.approx(tried[chosen.label()])
    raw = torch.load(out / "model.pt", weights_only=True)
    assert raw["decoder"] == chosen.to_dict() == metrics["decoder"]
    assert (raw["lm"] is not None) == (chosen.lm_weight > 0)


def test_decode_config_checks_its_beam_and_weights():
    with pytest.raises(ValueError, match="decode.beam must be an integer >= 1, got 0"):
        load_config(None, ["--decode.beam=0"])
    with pytest.raises(ValueError, match=r"decode.lm_weights must be >= 0, got \[0.3, -1.0\]"):
        load_config(None, ["--decode.lm_weights=[0.3,-1]"])
    assert load_config(None).decode.beam == DecoderSpec().beam  # one default beam width


def test_a_fixed_decoder_is_kept_whatever_val_prefers_and_every_candidate_is_still_scored(tmp_path, cache):
    metrics = train(tiny_config(cache, "--decode.lm_order=3", "--decode.beam=4", "--decode.lm_weights=[0.6]",
                                "--decode.word_weights=[0.3]", "--decode.choose=fixed"), tmp_path / "run")
    tried = metrics["val_decoders"]
    assert set(tried) == {"greedy", "beam4+lm0.6", "beam4+lm0.6+word0.3"}
    assert DecoderSpec.from_dict(metrics["decoder"]).label() == "beam4+lm0.6+word0.3"
    assert metrics["val_cer"] == pytest.approx(tried["beam4+lm0.6+word0.3"])
    raw = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert raw["lm"] is not None and raw["word_lm"] is not None


def test_a_fixed_decoder_needs_one_set_of_weights():
    for bad in (["--decode.lm_weights=[0.3,0.6]"], ["--decode.word_weights=[0.1,0.2]"]):
        with pytest.raises(ValueError, match="decode.choose=fixed needs one LM weight and at most one word"):
            load_config(None, ["--decode.lm_order=4", "--decode.lm_weights=[0.5]", "--decode.choose=fixed", *bad])
    # greedy only (no LM): nothing to fix, nothing to refuse
    assert load_config(CONFIGS / "cpu.yaml", ["--decode.lm_order=0", "--decode.word_weights=[]"]).decode.choose == "fixed"
    with pytest.raises(ValueError, match="decode.choose must be val or fixed, got 'best'"):
        load_config(None, ["--decode.choose=best"])


def test_time_budget_stops_cleanly_and_still_writes_the_model(tmp_path, cache):
    out = tmp_path / "run"
    metrics = train(tiny_config(cache, "--loop.epochs=50", "--loop.max_minutes=0.0001"), out)
    assert metrics["epochs"] < 50 and "time budget" in metrics["stopped"]
    assert (out / "model.pt").is_file()
    last = load_checkpoint(out / "checkpoints" / "last.pt")
    assert last["epoch"] + last["step_in_epoch"] / 4 == metrics["epochs"]
    assert last["history"][-1]["epoch"] == metrics["epochs"] and "val_cer" in last["history"][-1]


def test_resume_auto_with_no_checkpoint_starts_fresh(tmp_path, cache):
    metrics = train(tiny_config(cache, "--loop.epochs=1"), tmp_path / "run", resume="auto")
    assert metrics["epochs"] == 1


def test_a_finished_run_resumed_trains_no_more(tmp_path, cache):
    out = tmp_path / "run"
    train(tiny_config(cache, "--loop.epochs=1"), out)
    before = load_checkpoint(out / "checkpoints" / "last.pt")
    metrics = train(tiny_config(cache, "--loop.epochs=1"), out, resume="auto")
    after = load_checkpoint(out / "checkpoints" / "last.pt")
    assert metrics["steps"] == before["step"] == after["step"]
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])


def test_store_mode_reads_the_named_stores(tmp_path):
    from textrec.data.store import LineWriter

    path = tmp_path / "lines.h5"
    rng = np.random.default_rng(0)
    with LineWriter(path) as w:
        for i in range(24):
            img = np.full((40, 200), 235, np.uint8)
            img[10:30, 10:190] = rng.integers(0, 80, size=(20, 180))
            w.add(img, "abc def"[: 1 + i % 7].strip() or "a", split=["train", "train", "val", "test"][i % 4],
                  source="test")
    cfg = tiny_config(tmp_path, "--data.mode=store", f"--data.stores=[{path}]", "--loop.epochs=1")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["val_n"] == 6 and metrics["test_n"] == 6 and "test_unseen_font_cer" not in metrics


def test_online_mode_renders_new_lines_each_epoch(tmp_path):
    from textrec.training.loop import Trainer

    cfg = tiny_config(tmp_path, "--data.mode=online", "--data.train_lines=16", "--data.val_lines=4",
                      "--data.test_lines=4", "--data.unseen_font_lines=4", "--loop.epochs=1")
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        train_set = trainer.data.train
        assert len(train_set) == 16 and set(trainer.data.evals) == {"val", "test", "test_unseen_font"}
        assert train_set.text(3, epoch=0) == train_set.text(3, epoch=0) != train_set.text(3, epoch=1)
        image, text = train_set[(1, 3)]
        assert text == train_set.text(3, epoch=1) and image.shape[1] == 32
        assert trainer.data.evals["val"].text(0, epoch=0) == trainer.data.evals["val"].text(0, epoch=5)
        trainer.fit()
        metrics = trainer.finish()
    finally:
        trainer.close()
    assert metrics["epochs"] == 1 and metrics["test_unseen_font_n"] == 4
    assert not (tmp_path / "cache").exists()  # nothing was rendered ahead of time


def test_store_and_model_on_s3(tmp_path, s3):
    """A line store read from s3:// for training, and the model read back from s3:// (a real S3 server
    on 127.0.0.1)."""
    from textrec import storage
    from textrec.recognizer import Recognizer

    local = _tiny_store(tmp_path / "lines.h5", n=8)
    uri = storage.upload(local, s3.uri("data/lines.h5"))
    cfg = tiny_config(tmp_path / "cache", "--data.mode=store", f"--data.stores=[{uri}]", "--loop.epochs=1",
                      "--data.batch_size=2")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["val_n"] == 4 and metrics["epochs"] == 1
    assert list((tmp_path / "cache" / "stores").rglob("lines.h5"))  # downloaded once, into the cache
    model_uri = storage.upload(tmp_path / "run" / "model.pt", s3.uri("models/model.pt"))
    rec = Recognizer.load(model_uri)
    assert len(rec.recognise([np.full((30, 90), 230, np.uint8)])) == 1


def test_word_weights_are_tried_on_the_best_lm_weight_and_a_chosen_word_lm_is_saved(tmp_path, cache):
    out = tmp_path / "run"
    metrics = train(tiny_config(cache, "--decode.lm_order=3", "--decode.beam=4", "--decode.lm_weights=[0.3]",
                                "--decode.word_weights=[0.5,2.0]", "--decode.lexicon=wordfreq+texts"), out)
    tried = metrics["val_decoders"]
    assert set(tried) == {"greedy", "beam4+lm0.3", "beam4+lm0.3+word0.5", "beam4+lm0.3+word2"}
    chosen = DecoderSpec.from_dict(metrics["decoder"])
    assert tried[chosen.label()] == min(tried.values())
    raw = torch.load(out / "model.pt", weights_only=True)
    assert (raw["word_lm"] is not None) == (chosen.word_weight > 0)
    assert (raw["lm"] is not None) == (chosen.lm_weight > 0 or chosen.word_weight > 0)


@pytest.mark.parametrize("override, message", [
    ("--decode.word_weights=[0.5,-1]", r"decode.word_weights must be >= 0, got \[0.5, -1.0\]"),
    ("--decode.lexicon=oxford", r"decode.lexicon must be one of wordfreq, wordfreq\+texts, texts, got 'ox"),
    ("--decode.lexicon_size=0", "decode.lexicon_size must be an integer >= 1, got 0"),
])
def test_decode_config_checks_its_word_lm_settings(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, ["--decode.lm_order=3", override])
    with pytest.raises(ValueError, match="decode.word_weights need beam search"):
        load_config(None, ["--decode.word_weights=[0.5]"])
    assert load_config(None).decode.word_weights == ()  # off unless asked for
