"""Page recognition on labelled pages: segmentation + the line model, against the same lines pre-cut.

    python benchmarks/pages.py --model runs/cpu/model.pt --pages ../real-dev/pages.tsv \\
        --lines ../real-dev/lines.tsv [--report runs/pages-report] [--repeat 3]

``--pages`` is a TSV of ``page image<TAB>text`` rows, the page's lines joined by a literal ``\\n``
(``textrec evaluate --pages`` reads the same). With ``--lines`` (a line TSV whose names carry IAM line
ids such as ``a02-102-03``), the lines of the same forms are read pre-cut as well, so the page CER can
be set beside the line CER of exactly those lines: the difference is what segmentation costs.
Prints, per page and overall: lines found / true, page CER and WER, pages per second (segmentation +
recognition, ``--repeat`` timed passes, the best kept). Nothing is asserted.

``--paragraph`` reads the same pages with a paragraph model as well (whole pages, no segmentation):
a trained ``model.pt`` / run folder, or a training config (``configs/paragraph-smoke.yaml``), whose
model is then built untrained (its pages/s are real, its CER is not). One more line is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from real import writer_of  # noqa: E402

from textrec.evaluate import evaluate, real_samples  # noqa: E402
from textrec.evaluate_pages import evaluate_pages, tsv_pages, write_page_report  # noqa: E402
from textrec.recognizer import Recognizer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model.pt or run folder")
    ap.add_argument("--pages", required=True, help="page TSV (image<TAB>lines joined by \\n)")
    ap.add_argument("--lines", default=None, help="line TSV holding the same forms' lines, pre-cut")
    ap.add_argument("--report", type=Path, default=None, help="write report.html (boxes drawn) here")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes over the pages (best kept)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--paragraph", default=None,
                    help="also read the pages with this paragraph model (model.pt, run folder, or a config: untrained)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rec = Recognizer.load(a.model)
    pages = list(tsv_pages(a.pages))
    report = evaluate_pages(rec, pages, source=a.pages)
    best = report.seconds
    for _ in range(a.repeat - 1):
        t0 = time.perf_counter()
        for image, _, name in pages:
            rec.recognise_page(image, name)
        best = min(best, time.perf_counter() - t0)
    s = report.summary()
    print(f"model {a.model}  decoder {rec.decoder.label()}  threads {a.threads}")
    for r in report.rows:
        print(f"  {r.name:<28} lines {len(r.reading.lines):>2} found / {len(r.truth):>2} true  page CER {r.cer:6.2%}")
    print(f"pages: {report.n}, CER {report.cer:.2%}, WER {report.wer:.2%}, line count exact on "
          f"{s['line_count_exact']}/{report.n}, {report.n / best:.2f} pages/s ({best / report.n:.2f} s/page)")
    out = {**s, "pages_per_s": report.n / best, "rows": [r.to_dict() for r in report.rows]}
    if a.lines:
        forms = {Path(r.name).stem for r in report.rows}
        lines = [s_ for s_ in real_samples(a.lines) if writer_of(s_[2]) in forms]
        if lines:
            line_report = evaluate(rec, lines, keep_images=0)
            print(f"the same forms' {line_report.n} lines pre-cut: CER {line_report.cer:.2%}, WER "
                  f"{line_report.wer:.2%}  (page - lines: {100 * (report.cer - line_report.cer):+.1f} points)")
            out["lines_cer"], out["lines_wer"], out["lines_n"] = line_report.cer, line_report.wer, line_report.n
        else:
            print(f"no line of {sorted(forms)} in {a.lines}")
    if a.paragraph:
        out["paragraph"] = paragraph_line(a.paragraph, pages, a.repeat)
    if a.report is not None:
        print(f"wrote {write_page_report(report, a.report)}")
    if a.json is not None:
        a.json.write_text(json.dumps(out, indent=2))


def paragraph_recognizer(source: str) -> tuple[Recognizer, str]:
    """A paragraph model's Recognizer: from an artifact, or untrained from a training config."""
    if not source.endswith((".yaml", ".yml")):
        return Recognizer.load(source), "trained"
    from textrec.artifact import artifact_dict
    from textrec.models import create_model
    from textrec.training import load_config
    from textrec.training.data import charset_and_stem

    cfg = load_config(source)
    charset, stem = charset_and_stem(cfg)
    torch.manual_seed(0)
    model = create_model(cfg.model.name, num_classes=charset.num_classes, height=cfg.stem.height,
                         **cfg.model.options)
    info = {k: v for k, v in artifact_dict(model, charset=charset, stem=stem).items() if k != "state_dict"}
    return Recognizer(model, info), "untrained"


def paragraph_line(source: str, pages: list, repeat: int) -> dict:
    rec, state = paragraph_recognizer(source)
    report = evaluate_pages(rec, pages, source=source)
    best = report.seconds
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for image, _, name in pages:
            rec.recognise_page(image, name)
        best = min(best, time.perf_counter() - t0)
    s = report.summary()
    print(f"paragraph model {rec.info['model_name']} ({state}, {source}, "
          f"{rec.model.num_parameters() / 1e6:.2f} M parameters): CER {report.cer:.2%}, line count exact on "
          f"{s['line_count_exact']}/{report.n}, {report.n / best:.2f} pages/s ({best / report.n:.2f} s/page)")
    return {**s, "pages_per_s": report.n / best, "state": state, "source": source}


if __name__ == "__main__":
    main()
