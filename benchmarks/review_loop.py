"""The human-in-the-loop review loop, simulated end to end: what reviewed lines buy on unseen traffic.

    python benchmarks/review_loop.py --out .textrec/bench/review            # the full run
    python benchmarks/review_loop.py --out /tmp/rl --sizes 100,500 --eval-lines 200 \\
        --base-train-lines 2000 --base-epochs 3 --steps 150               # a reduced run (~10 min, 2 cores)

1. A base model: ``--model`` or, without it, one trained here on synthetic lines in the training fonts.
2. Traffic: lines rendered in the synthesizer's held-out font families (and pen faces), text from the
   default text source: an evaluation set (``--eval-lines``) and a stream the "served" model reads.
3. Capture: the stream goes through :class:`serving.capture.Capturer` (``--threshold``,
   ``--sample-rate``) into a local queue; "review" corrects every captured line from its known text
   into a reviewed store (:class:`textrec.review.store.ReviewStore`), as the review app would.
4. For each of ``--sizes`` (reviewed lines used), fine-tune the base model on that many reviewed lines
   (``--steps`` steps, ``--lr``) and score CER on the evaluation traffic, before and after.

Prints a table; ``--json`` writes the figures. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from serving.capture import CaptureConfig, Capturer
from textrec.artifact import load_artifact
from textrec.charset import DEFAULT_CHARSET
from textrec.data.fonts import discover_fonts, split_fonts
from textrec.data.pen import split_pen_faces
from textrec.data.store import LineStore
from textrec.data.synth import LineRenderer, SynthConfig
from textrec.data.text import open_text_source
from textrec.metrics import cer
from textrec.recognizer import Recognizer
from textrec.review.queue import CaptureQueue, item_image
from textrec.review.store import ReviewStore
from textrec.training.data import collate

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def png(image: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def unseen_font_lines(n: int, seed: int) -> list[tuple[np.ndarray, str]]:
    """``n`` lines in the held-out font families: traffic the model was never trained on."""
    _, held_out = split_fonts(discover_fonts())
    _, held_out_faces = split_pen_faces()
    renderer = LineRenderer(SynthConfig(), held_out, held_out_faces)
    source = open_text_source(None, charset=DEFAULT_CHARSET)
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        text = source.sample(rng)
        image, _ = renderer.render(text, rng)
        out.append((image, text))
    return out


def base_model(a: argparse.Namespace) -> Path:
    if a.model:
        return Path(a.model)
    from textrec.training import load_config, train

    out = a.out / "base"
    if not (out / "model.pt").exists():
        cfg = load_config(CONFIGS / "smoke.yaml", [
            f"--data.train_lines={a.base_train_lines}", f"--loop.epochs={a.base_epochs}", "--loop.threads=2",
            f"--data.cache_dir={a.out / 'cache'}", "--data.synth_workers=2", "--data.val_lines=64"])
        t0 = time.perf_counter()
        train(cfg, out)
        print(f"base model trained in {time.perf_counter() - t0:.0f} s -> {out / 'model.pt'}")
    return out / "model.pt"


def score(rec: Recognizer, lines: list[tuple[np.ndarray, str]]) -> float:
    results = rec.recognise([im for im, _ in lines], batch_size=32)
    return cer([r.text for r in results], [t for _, t in lines])


def capture_and_review(rec: Recognizer, stream: list[tuple[np.ndarray, str]], a: argparse.Namespace
                       ) -> tuple[ReviewStore, dict[str, Any]]:
    """Serve the stream, capture what the capture rules keep, correct it from the known text."""
    queue_dir, store_dir = a.out / "queue", a.out / "reviewed"
    for d in (queue_dir, store_dir):
        if d.exists():
            import shutil

            shutil.rmtree(d)
    capturer = Capturer(CaptureConfig(uri=str(queue_dir), threshold=a.threshold, sample_rate=a.sample_rate,
                                      max_items=10 ** 6, max_image_bytes=10 ** 7, deployment="traffic"),
                        model="textrec-line", rng=random.Random(a.seed))
    truth = {}
    for k in range(0, len(stream), 64):
        chunk = stream[k:k + 64]
        encoded = [png(im) for im, _ in chunk]
        for data, (_, text), r in zip(encoded, chunk, rec.recognise(encoded, batch_size=32), strict=True):
            truth[data] = text
            capturer.offer(data, r, "base")
        capturer.flush(120)
    queue = CaptureQueue(queue_dir)
    store = ReviewStore(store_dir)
    corrected = 0
    for e in queue.entries():
        item = queue.get(e.id)
        text = truth[item_image(item)]
        action = "accepted" if text == item["text"] else "corrected"
        corrected += action == "corrected"
        store.decide(item, action, text, "traffic", item_image(item), rebuild=False)
    store.rebuild()
    return store, {"served": len(stream), "captured": capturer.counts["captured"], "corrected": corrected}


def fine_tune(model_pt: Path, lines: list[tuple[np.ndarray, str]], a: argparse.Namespace) -> Recognizer:
    model, info = load_artifact(model_pt)
    rec = Recognizer(model, info)
    tensors = [(rec.stem(im), text) for im, text in lines]
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    rng = np.random.default_rng(a.seed)
    model.train()
    for _ in range(a.steps):
        pick = rng.choice(len(tensors), size=min(a.batch_size, len(tensors)), replace=False)
        b = collate([tensors[i] for i in pick], rec.charset)
        loss = model.loss(b.images, b.widths, b.targets, b.target_lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    model.eval()
    return Recognizer(model, info)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="working folder (base model, queue, reviewed store)")
    p.add_argument("--model", default="", help="the served model (default: train a small one here)")
    p.add_argument("--sizes", default="100,500,2000", help="reviewed lines to fine-tune on, comma-separated")
    p.add_argument("--eval-lines", type=int, default=500, help="unseen-font traffic lines scored")
    p.add_argument("--threshold", type=float, default=0.9, help="capture: confidence below this")
    p.add_argument("--sample-rate", type=float, default=0.05, help="capture: random share of the rest")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps per size")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--base-train-lines", type=int, default=5000)
    p.add_argument("--base-epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(s) for s in a.sizes.split(","))
    t0 = time.perf_counter()
    model_pt = base_model(a)
    rec = Recognizer.load(model_pt)
    evaluation = unseen_font_lines(a.eval_lines, seed=1_000 + a.seed)
    before = score(rec, evaluation)
    # The stream is larger than the largest size: only what the capture rules keep gets reviewed.
    stream: list[tuple[np.ndarray, str]] = []
    store: ReviewStore | None = None
    info: dict[str, Any] = {}
    while True:
        stream += unseen_font_lines(max(sizes), seed=2_000 + a.seed + len(stream))
        store, info = capture_and_review(rec, stream, a)
        if len(LineStore(store.store_path)) >= max(sizes) or len(stream) >= 8 * max(sizes):
            break
    lines = LineStore(store.store_path)
    reviewed = [(lines.image(i), lines.text(i)) for i in range(len(lines))]
    rows: list[dict[str, Any]] = [{"reviewed_lines": 0, "cer": round(before, 4)}]
    print(f"traffic: {info['served']} unseen-font lines served, {info['captured']} captured "
          f"({info['corrected']} corrected by review); eval {a.eval_lines} lines, base CER {before:.4f}")
    for n in sizes:
        if n > len(reviewed):
            print(f"only {len(reviewed)} reviewed lines; skipping size {n}")
            continue
        t1 = time.perf_counter()
        after = score(fine_tune(model_pt, reviewed[:n], a), evaluation)
        rows.append({"reviewed_lines": n, "cer": round(after, 4), "seconds": round(time.perf_counter() - t1, 1)})
        print(f"  {n:5d} reviewed lines: CER {before:.4f} -> {after:.4f}  ({rows[-1]['seconds']} s)")
    result = {"config": {k: str(v) for k, v in vars(a).items()}, "traffic": info, "rows": rows,
              "seconds": round(time.perf_counter() - t0, 1)}
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(SimpleNamespace(**result).rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
