"""Decoding cost and accuracy with and without the word LM, on one thread.

    python benchmarks/decode_words.py --model runs/cpu/model.pt [--lines 200] [--word-weight 0.3]

Synthetic lines (seeded, wordfreq prose) are rendered, stemmed and run through the model once (not
timed); then each decoder reads the same log probs and the CPU time per line is printed with the CER
and WER it reaches: "first pass" with the word LM's caches empty (a fresh server), "warm" the best of
the ``--repeats`` passes after it (a server that has read many lines; the character LM keeps its
caches throughout, as it does in a server). The word LM is the default lexicon (wordfreq's top words); the artifact's own
character LM is used where it has one, else one is fitted on the rendered texts. Also prints how much
the word LM adds to a saved artifact. Synthetic prose is kind to a lexicon, so the CER gains here are
an upper bound for real handwriting.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from textrec import decoding
from textrec.artifact import load_artifact, save_artifact
from textrec.charset import Charset
from textrec.data.store import open_store
from textrec.data.synth import synthesize
from textrec.decoding import CharNgramLM, DecoderSpec, ctc_decode
from textrec.metrics import cer, wer
from textrec.stem import LineStem, pad_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a model.pt of a CTC model")
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--repeats", type=int, default=2, help="warm passes per decoder; the fastest counts")
    ap.add_argument("--word-weight", type=float, action="append", default=None)
    ap.add_argument("--lm-weight", type=float, default=None, help="default: the artifact's, else 0.3")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model, info = load_artifact(a.model)
    charset, stem = Charset(info["charset"]), LineStem.from_dict(info["stem"])
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(synthesize(a.lines, Path(tmp) / "lines.h5", seed=a.seed, workers=1,
                                      progress=False))
        lines = [(stem(store.image(i)), charset.normalise(store.text(i))) for i in range(len(store))]
    truths = [t for _, t in lines]
    scores = []
    with torch.inference_mode():
        for k in range(0, len(lines), 16):
            images, widths = pad_images([x for x, _ in lines[k:k + 16]])
            lp, lengths = model(images, widths)
            scores += [(lp[:, j:j + 1].clone(), lengths[j:j + 1].clone()) for j in range(lp.shape[1])]
    char_lm = CharNgramLM.from_dict(info["lm"]) if info.get("lm") else CharNgramLM.fit(truths, order=6)
    spec = DecoderSpec.from_dict(info["decoder"])
    lm_weight = a.lm_weight if a.lm_weight is not None else (spec.lm_weight or 0.3)
    beam = spec.beam
    runs: list[tuple[str, DecoderSpec, CharNgramLM | None]] = [
        ("greedy", DecoderSpec(), None),
        (f"beam{beam}", DecoderSpec("beam", beam), None),
        (f"beam{beam}+lm{lm_weight:g}", DecoderSpec("beam", beam, lm_weight), char_lm),
    ]
    word_lm = getattr(decoding, "WordLM", None)
    if word_lm is not None:
        t0 = time.perf_counter()
        words = word_lm.from_wordfreq()
        print(f"word LM: {len(words)} words, built in {time.perf_counter() - t0:.2f} s")
        with_words = char_lm.with_words(words)
        for w in a.word_weight or [0.3, 0.6]:
            runs.append((f"beam{beam}+word{w:g}", DecoderSpec("beam", beam, word_weight=w), with_words))
            runs.append((f"beam{beam}+lm{lm_weight:g}+word{w:g}",
                         DecoderSpec("beam", beam, lm_weight, word_weight=w), with_words))
    mean_chars = sum(map(len, truths)) / len(truths)
    print(f"{len(lines)} synthetic lines, mean {mean_chars:.0f} characters, model {info['model_name']}")
    print("| decoder | ms per line, first pass | ms per line, warm | CER | WER |")
    print("| --- | --- | --- | --- | --- |")
    for label, s, lm in runs:
        if getattr(lm, "words", None) is not None:
            lm.words.clear_cache()
        times = []
        for _ in range(1 + max(1, a.repeats)):
            cpu = time.process_time()
            preds = [ctc_decode(lp, ln, charset, s, lm)[0].text for lp, ln in scores]
            times.append(1000 * (time.process_time() - cpu) / len(scores))
        # a busy machine slows some passes: the fastest warm pass is the cost
        print(f"| {label} | {times[0]:.2f} | {min(times[1:]):.2f} | {cer(preds, truths):.4f} | "
              f"{wer(preds, truths):.4f} |")
    if word_lm is not None:
        with tempfile.TemporaryDirectory() as tmp:
            kwargs = dict(charset=charset, stem=stem, decoder=spec)
            plain = save_artifact(Path(tmp) / "a.pt", model, lm=char_lm, **kwargs)
            full = save_artifact(Path(tmp) / "b.pt", model, lm=with_words, **kwargs)
            a_size, b_size = plain.stat().st_size, full.stat().st_size
        print(f"artifact: {a_size / 1e6:.2f} MB without the word LM, {b_size / 1e6:.2f} MB with it "
              f"(+{(b_size - a_size) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
