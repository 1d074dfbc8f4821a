"""Population-based training against the default recipe under the same total budget: best val CER of each.

    python benchmarks/pbt.py                                    # sweeps/pbt.yaml as it is (hours on 2 cores)
    python benchmarks/pbt.py --spec sweeps/pbt-smoke.yaml --rounds 4 --interval 2 --metric val_cer \\
        data.train_lines=2000 data.val_lines=100 data.test_lines=100

The budget is counted in training epochs: PBT trains ``population x rounds x interval`` member-epochs,
and the default recipe (the spec's base config and overrides, its own hyperparameters) trains one run
of that many epochs, its schedule spanning them all. Both train on the same pool. Prints the val CER of
PBT's best member, of the default run and of a default run as long as one member's (final model: best checkpoint, the recipe's decoder), their
test CERs and wall times; nothing is asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from textrec import config as configlib
from textrec.sweep.pbt import base_training, load_spec, run_pbt
from textrec.training import train
from textrec.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=ROOT / "sweeps" / "pbt.yaml")
    ap.add_argument("--population", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--interval", type=int, default=None, help="epochs per round")
    ap.add_argument("--metric", default=None, help="what ranks the members (default: the spec's)")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("overrides", nargs="*", help="training config overrides for both, e.g. data.train_lines=2000")
    a = ap.parse_args()
    spec = load_spec(a.spec, population=a.population)
    changes = {k: v for k, v in {"rounds": a.rounds, "interval": a.interval, "metric": a.metric}.items() if v}
    spec = dataclasses.replace(spec, unit="epochs", **changes)
    budget = spec.population * spec.rounds * spec.interval
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; spec {a.spec.name}: population {spec.population}, {spec.rounds} rounds x "
          f"{spec.interval} epochs, ranked by {spec.metric}; budget {budget} epochs each; overrides {a.overrides}")
    with tempfile.TemporaryDirectory(prefix="textrec-pbt-bench-") as tmp:
        out = a.out or Path(tmp)
        overrides = [f"data.cache_dir={out / 'pools'}", *a.overrides]
        t0 = time.perf_counter()
        result = run_pbt(spec, out / "pbt", overrides=overrides, log=lambda s: print(f"  {s}", flush=True))
        pbt_s = time.perf_counter() - t0
        pbt = result.final
        defaults: dict[str, tuple[dict, int, float]] = {}
        for name, epochs in (("default", budget), ("default-short", spec.rounds * spec.interval)):
            data = base_training(spec, overrides)
            data["loop"]["epochs"] = epochs
            t0 = time.perf_counter()
            defaults[name] = (train(configlib.from_dict(TrainConfig, data), out / name), epochs,
                              time.perf_counter() - t0)
    print("run           val CER  test CER  epochs  wall s")
    print(f"PBT           {pbt.get('val_cer', float('nan')):.4f}   {pbt.get('test_cer') or float('nan'):.4f}"
          f"    {budget:>4}  {pbt_s:6.0f}   best member m{result.best}, {len(result.events)} exploits")
    for name, (m, epochs, seconds) in defaults.items():
        what = "same total budget" if name == "default" else "as many epochs as one member"
        print(f"{name:<13} {m['val_cer']:.4f}   {m.get('test_cer') or float('nan'):.4f}    {epochs:>4}  "
              f"{seconds:6.0f}   {what}")
    print(json.dumps({"pbt_val_cer": pbt.get("val_cer"), "default_val_cer": defaults["default"][0]["val_cer"],
                      "default_short_val_cer": defaults["default-short"][0]["val_cer"],
                      "pbt_hparams": next(m["hparams"] for m in result.members if m["member"] == result.best)}))


if __name__ == "__main__":
    main()
