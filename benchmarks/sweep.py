"""A local bayes sweep against the default recipe under the same total budget.

    python benchmarks/sweep.py                           # 8 trials of 0.4 min on 4,000 lines (~10 min)
    python benchmarks/sweep.py --trials 8 --trial-minutes 4 --train-lines 16000   # the real sweeps/cpu.yaml

The sweep is ``sweeps/cpu.yaml`` (its search space and pruner) with the budget and pool size given; the
default recipe is ``configs/cpu.yaml`` with the same overrides, trained once for the sweep's whole
budget (trials x minutes). Both are scored on the same synthetic val lines with greedy decoding. The
trials are tracked in a lean MLflow server started here, so the overhead per trial (wall time of a
trial outside the trainer's own clock: data setup, model build, Optuna and MLflow) is the real one.
Prints figures; nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from textrec.config import read_yaml
    from textrec.sweep.spec import parse_spec
    from textrec.sweep.study import run_sweep
    from textrec.tracking import start_local_server, stop_local_server
    from textrec.training import train

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--trial-minutes", type=float, default=0.4)
    p.add_argument("--train-lines", type=int, default=4000)
    p.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    a = p.parse_args()
    out = a.out or Path(tempfile.mkdtemp(prefix="textrec-sweep-bench-"))
    data = read_yaml(ROOT / "sweeps" / "cpu.yaml")
    data.update(name="bench", trials=a.trials, budget={"minutes": a.trial_minutes}, katib=None,
                base_config=str(ROOT / "configs" / "cpu.yaml"),
                overrides=[*data.get("overrides", []), f"data.train_lines={a.train_lines}",
                           f"data.cache_dir={out / 'pools'}"])
    spec = parse_spec(data, source=ROOT / "sweeps" / "cpu.yaml")
    server = start_local_server(out / "mlflow")
    try:
        t0 = time.perf_counter()
        result = run_sweep(spec, out / "sweep", tracking_uri=server.url)
        sweep_s = time.perf_counter() - t0
    finally:
        stop_local_server(server)
    total_minutes = a.trials * a.trial_minutes
    default = dataclasses.replace(spec, budget_minutes=total_minutes)
    t0 = time.perf_counter()
    metrics = train(default.train_config({}), out / "default")
    default_s = time.perf_counter() - t0

    summary = json.loads((out / "sweep" / "sweep.json").read_text())
    overheads = []
    for row in summary["trials"]:
        trained = Path(row["out_dir"]) / "metrics.json"
        if row["seconds"] is not None and trained.is_file():
            overheads.append(row["seconds"] - json.loads(trained.read_text())["wall_s"])
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {a.trials} trials x "
          f"{a.trial_minutes} min on {a.train_lines} lines (val {default.train_config({}).data.val_lines} lines)")
    print(f"sweep: {sweep_s / 60:.1f} min wall, trials {summary['counts']}")
    for row in summary["trials"]:
        print(f"  trial {row['number']}: {row['state']:8s} val_cer {row['value'] if row['value'] is None else round(row['value'], 4)} "
              f"{json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in row['params'].items()})}")
    print(f"best trial: val_cer {result.best_value:.4f} with {json.dumps(result.best_params)}")
    print(f"default recipe, one run of {total_minutes:.1f} min: val_cer {metrics['val_cer']:.4f} "
          f"({default_s / 60:.1f} min wall)")
    if overheads:
        ordered = sorted(overheads)
        print(f"overhead per trial outside the trainer's clock (data setup, Optuna, MLflow): median "
              f"{ordered[len(ordered) // 2]:.1f} s, mean {sum(overheads) / len(overheads):.1f} s, max "
              f"{max(overheads):.1f} s (the first trial renders the pool)")
    print(f"runs in {out}")


if __name__ == "__main__":
    main()
