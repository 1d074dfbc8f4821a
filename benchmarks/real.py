"""Real-handwriting CER of trained models: overall, per writer, and per decoder.

    python benchmarks/real.py --model runs/cpu/model.pt --labels ../real-dev/lines.tsv
    python benchmarks/real.py --model a/model.pt --model b/model.pt --labels lines.tsv \\
        --decoder kind=greedy --decoder kind=beam,lm_weight=0.35

``--labels`` is a TSV of ``image path<TAB>transcription`` rows (paths relative to the TSV), or a folder in
the IAM lines layout. Lines are grouped into writers by the IAM form id in their names (``a03-011-04`` ->
``a03-011``; one writer fills one IAM form); other names are grouped by their folder. Each model is read
with the decoder its artifact chose, then with every ``--decoder`` given (settings merged over the
artifact's, so ``word_weight=0`` switches one term off); with ``--lm-corpus SPEC`` every decoder runs
again with the artifact's character LM refitted on its texts plus that corpus's running text (the LM
``decode.lm_corpus`` gives a training run). Prints a table; ``--json`` writes the figures.
Nothing is asserted: this is how a change to data, model or decoder is judged on real pen strokes.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from textrec.data.text import corpus_lines
from textrec.decoding import CharNgramLM, DecoderSpec, WordLM
from textrec.evaluate import evaluate, real_samples
from textrec.metrics import cer as cer_score
from textrec.recognizer import Recognizer

FORM_ID = re.compile(r"([a-z]\d\d-\d\d\d[a-z]?)-\d\d")


def writer_of(name: str) -> str:
    """The IAM form id in a line's name (one form, one writer), else the name's folder."""
    m = FORM_ID.search(Path(name).name)
    return m.group(1) if m else str(Path(name).parent)


def parse_decoder(text: str, base: DecoderSpec) -> DecoderSpec:
    """``kind=beam,lm_weight=0.3`` merged over ``base``; values are parsed as numbers where they can be."""
    changes: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise SystemExit(f"--decoder {text!r}: expected key=value pairs, got {part!r}")
        try:
            changes[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            changes[key] = value
    data = {**base.to_dict(), **changes}
    if data.get("kind") == "greedy":
        data = {"kind": "greedy", "beam": data.get("beam", base.beam)}
    return DecoderSpec.from_dict(data)


def score(rec: Recognizer, samples: list, decoder: DecoderSpec) -> dict:
    rec.decoder = decoder
    t0 = time.perf_counter()
    report = evaluate(rec, samples, keep_images=0)
    seconds = time.perf_counter() - t0
    groups: dict[str, list] = defaultdict(list)
    for row in report.rows:
        groups[writer_of(row.name)].append(row)
    writers = {w: cer_score([r.prediction for r in rs], [r.truth for r in rs]) for w, rs in sorted(groups.items())}
    worst = sorted(report.rows, key=lambda r: r.cer, reverse=True)[:3]
    return {"decoder": decoder.label(), "cer": report.cer, "wer": report.wer, "n": report.n, "writers": writers,
            "seconds": seconds, "worst": [(r.truth, r.prediction) for r in worst],
            "exact": sum(r.cer == 0 for r in report.rows)}


def with_corpus(lm: CharNgramLM, corpus: str) -> CharNgramLM:
    """``lm`` with the n-gram counts of ``corpus``'s running text added (same order and charset)."""
    extra = CharNgramLM.fit(corpus_lines(corpus, charset=lm.charset), order=lm.order, charset=lm.charset)
    counts = dict(lm.counts)
    for gram, n in extra.counts.items():
        counts[gram] = counts.get(gram, 0) + n
    return CharNgramLM(counts, lm.order, lm.charset).with_words(lm.words)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, help="model.pt or run folder (repeatable)")
    ap.add_argument("--labels", required=True, help="TSV of image<TAB>text, an IAM lines folder, or an s3:// URI")
    ap.add_argument("--decoder", action="append", default=[], help="key=value,... decoder settings (repeatable)")
    ap.add_argument("--greedy", action="store_true", help="also score greedy decoding")
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    ap.add_argument("--lexicon", default="wordfreq", help="word LM for word_weight decoders of models saved "
                    "without one (decoding.LEXICONS)")
    ap.add_argument("--lm-corpus", default=None, help="corpus spec (data.corpus) whose running text is added "
                    "to the character LM for a second pass of every decoder")
    ap.add_argument("--show-worst", action="store_true", help="print the three worst lines per decoder")
    a = ap.parse_args()

    samples = list(real_samples(a.labels))
    print(f"{len(samples)} labelled lines, {len({writer_of(n) for _, _, n in samples})} writers from {a.labels}")
    results = []
    for model in a.model:
        rec = Recognizer.load(model)
        if rec.lm is not None and rec.lm.words is None and any("word_weight" in d for d in a.decoder):
            rec.lm = rec.lm.with_words(WordLM.build(a.lexicon, charset=rec.charset))
        chosen = rec.decoder
        decoders = [chosen] + ([DecoderSpec("greedy", chosen.beam)] if a.greedy and chosen.kind != "greedy" else [])
        decoders += [parse_decoder(d, chosen) for d in a.decoder]
        metrics = rec.info.get("metrics") or {}
        lms = [("", rec.lm)]
        if a.lm_corpus and rec.lm is not None:
            lms.append((f" +{a.lm_corpus}", with_corpus(rec.lm, a.lm_corpus)))
        for (suffix, lm), dec in ((x, d) for x in lms for d in decoders):
            rec.lm = lm
            r = score(rec, samples, dec)
            r["decoder"] += suffix
            r.update(model=str(model), test_cer=metrics.get("test_cer"), parameters=metrics.get("parameters"))
            results.append(r)
            per_writer = "  ".join(f"{w} {c:.1%}" for w, c in r["writers"].items())
            print(f"{model}  {r['decoder']:<28} CER {r['cer']:.2%}  WER {r['wer']:.2%}  exact {r['exact']}/{r['n']}"
                  f"  ({r['seconds']:.1f} s)  | {per_writer}")
            if a.show_worst:
                for truth, pred in r["worst"]:
                    print(f"    {truth!r}\n -> {pred!r}")
        rec.decoder = replace(chosen)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))
    if len(results) > 1:
        best = min(results, key=lambda r: r["cer"])
        print(f"best: {best['model']} {best['decoder']} CER {best['cer']:.2%}")


if __name__ == "__main__":
    main()
