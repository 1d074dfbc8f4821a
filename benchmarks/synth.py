"""Synthetic line throughput: lines per second written to a store, for 1 and 2 worker processes.

    python benchmarks/synth.py [--n 400] [--workers 1 2] [--json]

Each run is a whole ``synthesize`` call (worker start-up, rendering, writing the HDF5 store); fonts are
discovered once before timing. Besides wall-clock lines/s it reports lines per CPU-second (this process
and its workers), which stays meaningful on a machine that other work is sharing. Prints one row per
worker count, or a JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from datetime import date
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(n: int, workers: int, seed: int = 0) -> dict[str, float]:
    from textrec.data.store import LineStore
    from textrec.data.synth import synthesize

    with tempfile.TemporaryDirectory() as tmp:
        cpu, start = cpu_seconds(), time.perf_counter()
        out = synthesize(n, Path(tmp) / "bench.h5", seed=seed, workers=workers, progress=False)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        lines = len(LineStore(out))
    return {"workers": workers, "lines": lines, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
            "lines_per_s": round(lines / seconds, 1), "lines_per_cpu_s": round(lines / cpu, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=400, help="lines per run (plus ~5%% out-of-font lines)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    a = p.parse_args()

    from textrec.data.fonts import discover_fonts

    discover_fonts()  # warm the font cache so runs time rendering, not discovery
    rows = [run(a.n, w) for w in a.workers]
    machine = {"cpu": cpu_model(), "nproc": os.cpu_count(), "python": platform.python_version(),
               "date": date.today().isoformat(), "load_1min": round(os.getloadavg()[0], 2)}
    if a.json:
        print(json.dumps({"benchmark": "synth", "machine": machine, "runs": rows}, indent=2))
        return
    print(f"synth on {machine['cpu']} ({machine['nproc']} CPUs, load {machine['load_1min']}), {machine['date']}")
    print(f"{'workers':>8} {'lines':>6} {'seconds':>8} {'lines/s':>8} {'lines/CPU-s':>12}")
    for r in rows:
        print(f"{r['workers']:>8} {r['lines']:>6} {r['seconds']:>8.2f} {r['lines_per_s']:>8.1f} "
              f"{r['lines_per_cpu_s']:>12.1f}")


if __name__ == "__main__":
    main()
