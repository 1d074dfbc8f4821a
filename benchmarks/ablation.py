"""Ablation of training recipes on real handwriting: train each variant under the same budget, then
score it on a labelled real set (and its own synthetic test split).

    python benchmarks/ablation.py --labels ../real-dev/lines.tsv --minutes 6 --out runs/ablation \\
        --variant base= \\
        --variant elastic=--data.synth.elastic_p=0.5 \\
        --variant wide='--model.options.lstm_hidden=192 --model.options.lstm_layers=2'

Each ``--variant NAME=OVERRIDES`` is a set of ``textrec train`` dotted overrides applied over ``--config``
(default configs/cpu.yaml) with ``loop.max_minutes`` set to ``--minutes``; variants run one after the
other (a run uses both cores) and a finished one is not trained again. Prints one row per variant:
synthetic test CER, real CER and WER with the artifact's decoder, per-writer CER, lines trained and
parameters; ``--json`` keeps them. Nothing is asserted. The real set is never trained on: it is read
only after training, by ``benchmarks/real.py``'s scorer.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from real import score  # noqa: E402

from textrec.evaluate import real_samples  # noqa: E402
from textrec.recognizer import Recognizer  # noqa: E402


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, sep, overrides = text.partition("=")
    if not sep or not name.strip():
        raise SystemExit(f"--variant {text!r}: expected NAME=OVERRIDES (OVERRIDES may be empty)")
    return name.strip(), shlex.split(overrides)


def train(config: Path, out: Path, overrides: list[str], minutes: float, log: Path) -> float:
    cmd = [str(Path(sys.executable).parent / "textrec"), "train", "--config", str(config), "--out", str(out),
           f"--loop.max_minutes={minutes}", "--loop.progress=false", *overrides]
    t0 = time.perf_counter()
    with log.open("w") as f:
        f.write(" ".join(shlex.quote(c) for c in cmd) + "\n")
        f.flush()
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", required=True, help="TSV of image<TAB>text, an IAM lines folder, or an s3:// URI")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    ap.add_argument("--minutes", type=float, default=6.0, help="training budget of each variant")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    ap.add_argument("--variant", action="append", required=True, help="NAME=OVERRIDES (repeatable)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()

    variants = [parse_variant(v) for v in a.variant]
    samples = list(real_samples(a.labels))
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, overrides in variants:
        run = a.out / name
        wall = None
        if not (run / "model.pt").is_file():
            print(f"[{name}] training {a.minutes:g} min: {' '.join(overrides) or '(config as is)'}", flush=True)
            wall = train(a.config, run, overrides, a.minutes, a.out / f"{name}.log")
        rec = Recognizer.load(run)
        r = score(rec, samples, rec.decoder)
        m = json.loads((run / "metrics.json").read_text())
        lines = round(m.get("lines_per_s", 0) * m.get("wall_s", 0))
        r.update(variant=name, overrides=overrides, test_cer=m.get("test_cer"),
                 unseen_font_cer=m.get("test_unseen_font_cer"), parameters=m.get("parameters"),
                 lines_trained=lines, run_wall_s=wall)
        results.append(r)
        writers = " ".join(f"{c:.0%}" for c in r["writers"].values())
        print(f"{name:<16} real CER {r['cer']:6.2%}  WER {r['wer']:6.2%}  synth test {m.get('test_cer', 0):6.2%}"
              f"  unseen font {m.get('test_unseen_font_cer') or 0:6.2%}  {r['decoder']:<14} params"
              f" {m.get('parameters', 0) / 1e6:.2f}M  ~{lines} lines  writers [{writers}]", flush=True)
        if a.json:
            a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
