"""Model and decoder cost: training steps, inference and decoding per line, on one thread.

    python benchmarks/models.py [--lines 96] [--batch 24] [--threads 1]

Synthetic lines are rendered and stemmed once (not timed). For every registered model it times
optimiser steps (forward, CTC or cross-entropy loss, backward, AdamW) and eval-mode forward passes
on batches of lines sorted by width, and reports lines per CPU-second, which carries over between
busy and quiet machines better than wall time. For the CTC model it also times the decoders per
line: greedy, prefix beam search (the default beam width) and beam search with a 6-gram character LM.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

from textrec.charset import DEFAULT_CHARSET
from textrec.data.store import open_store
from textrec.data.synth import synthesize
from textrec.decoding import DEFAULT_BEAM, CharNgramLM, DecoderSpec, ctc_decode
from textrec.models import create_model, list_models
from textrec.stem import LineStem


def batches(lines: list[tuple[torch.Tensor, str]], size: int) -> list[tuple[torch.Tensor, ...]]:
    lines = sorted(lines, key=lambda item: item[0].shape[-1])
    out = []
    for k in range(0, len(lines), size):
        chunk = lines[k:k + size]
        images = torch.zeros(len(chunk), 1, chunk[0][0].shape[1], max(x.shape[-1] for x, _ in chunk))
        for i, (x, _) in enumerate(chunk):
            images[i, :, :, : x.shape[-1]] = x
        encoded = [DEFAULT_CHARSET.encode(t) for _, t in chunk]
        targets = torch.zeros(len(chunk), max(map(len, encoded)), dtype=torch.long)
        for i, e in enumerate(encoded):
            targets[i, : len(e)] = torch.tensor(e)
        out.append((images, torch.tensor([x.shape[-1] for x, _ in chunk]), targets,
                    torch.tensor([len(e) for e in encoded])))
    return out


def per_cpu_second(fn, n_lines: int) -> float:
    cpu = time.process_time()
    fn()
    return n_lines / (time.process_time() - cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=96)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(synthesize(a.lines, Path(tmp) / "lines.h5", seed=3, workers=1, progress=False))
        stem = LineStem()
        lines = [(stem(store.image(i)), store.text(i)) for i in range(len(store))]
    data = batches(lines, a.batch)
    n = len(lines)
    mean_w = sum(x.shape[-1] for x, _ in lines) / n
    mean_c = sum(len(t) for _, t in lines) / n
    print(f"{platform.processor() or platform.machine()}, {date.today()}, torch {torch.__version__}, "
          f"{a.threads} thread(s); {n} lines, mean width {mean_w:.0f} px at height {stem.config.height}, "
          f"mean {mean_c:.0f} characters; batch {a.batch}")
    print("| model | parameters | train lines per CPU-s | eval forward lines per CPU-s |")
    print("| --- | --- | --- | --- |")
    for name in list_models():
        model = create_model(name, num_classes=DEFAULT_CHARSET.num_classes, height=stem.config.height)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def train_epoch(model=model, opt=opt) -> None:
            model.train()
            for batch in data:
                opt.zero_grad()
                model.loss(*batch).backward()
                opt.step()

        train_epoch()  # warm-up: allocator and oneDNN kernel selection
        train = per_cpu_second(train_epoch, n)
        model.eval()
        with torch.no_grad():
            if hasattr(model, "output_lengths"):
                infer = per_cpu_second(lambda m=model: [m(b[0], b[1]) for b in data], n)
            else:
                infer = per_cpu_second(lambda m=model: [m.encode(b[0], b[1]) for b in data], n)
        note = "" if hasattr(model, "output_lengths") else " (encoder only)"
        print(f"| {name} | {model.num_parameters() / 1e6:.2f}M | {train:.1f} | {infer:.0f}{note} |")
        if name == "line_cnn_lstm":
            ctc = model
    with torch.no_grad():
        flat = [ctc(b[0], b[1]) for b in data]
    peaked = [peaked_like(lp, ln, b[2], b[3]) for (lp, ln), b in zip(flat, data, strict=True)]
    lm = CharNgramLM.fit((t for _, t in lines), order=6)
    print("| decoder | ms per line, untrained model (flat: worst case) | ms per line, peaked (trained-like) |")
    print("| --- | --- | --- |")
    for label, spec, spec_lm in [
        ("greedy", DecoderSpec(), None),
        (f"beam {DEFAULT_BEAM}", DecoderSpec("beam"), None),
        (f"beam {DEFAULT_BEAM} + 6-gram LM", DecoderSpec("beam", lm_weight=0.5), lm),
    ]:
        rates = [per_cpu_second(lambda s=spec, m=spec_lm, o=o: [ctc_decode(lp, ln, DEFAULT_CHARSET, s, m)
                                                               for lp, ln in o], n) for o in (flat, peaked)]
        print(f"| {label} | {1000 / rates[0]:.2f} | {1000 / rates[1]:.2f} |")


def peaked_like(log_probs: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor, peak: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """Log probs shaped like a trained model's: each target character on one frame, evenly spaced,
    with probability ``peak`` and two random rivals sharing most of the rest; blank elsewhere."""
    t, b, c = log_probs.shape
    best = torch.zeros(t, b, dtype=torch.long)
    for i in range(b):
        n, frames = int(target_lengths[i]), int(lengths[i])
        where = torch.linspace(0, frames - 1, n + 2)[1:-1].long()
        best[where, i] = targets[i, :n]
    gen = torch.Generator().manual_seed(0)
    probs = torch.full((t, b, c), 1e-5)
    probs.scatter_(2, torch.randint(1, c, (t, b, 2), generator=gen), (1 - peak) / 2)
    probs.scatter_(2, best[:, :, None], peak)
    return (probs / probs.sum(-1, keepdim=True)).log(), lengths


if __name__ == "__main__":
    main()
