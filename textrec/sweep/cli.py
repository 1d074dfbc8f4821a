"""``textrec sweep``: run (or continue) a sweep file's Optuna study on this machine."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

LOCAL_MLFLOW = Path(".textrec/mlflow")  # where `make mlflow-ui` keeps its server


def add_parser(subparsers) -> argparse.ArgumentParser:
    s = subparsers.add_parser(
        "sweep", help="a hyperparameter sweep (Optuna) from a sweep file: --config sweeps/cpu.yaml",
        description="Run a sweep file's trials as one Optuna study (resumable: run it again to continue), each "
                    "trial an MLflow child run of one sweep run.")
    s.add_argument("--config", type=Path, required=True, help="sweep file (sweeps/cpu.yaml, ...)")
    s.add_argument("--trials", type=int, default=0, help="finished trials the study should reach (default: the file's)")
    s.add_argument("--workers", type=int, default=1, help="worker processes sharing the study (default 1)")
    s.add_argument("--storage", default="",
                   help="the study's database, an SQLAlchemy URL (default: sqlite:///OUT/study.db); "
                        "workers elsewhere given the same URL join the study")
    s.add_argument("--out", type=Path, default=None, help="sweep folder (default: .textrec/sweeps/NAME)")
    s.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the local server of "
                        "`make mlflow-ui` if it runs, else no tracking)")
    s.add_argument("--heartbeat", type=int, default=10,
                   help="seconds between trial heartbeats; a trial silent for 3 of them is failed and retried")
    s.set_defaults(func=run)
    return s


def tracking_uri(given: str | None) -> str:
    if given is not None:
        return given
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from textrec.tracking.server import running_local_server

    server = running_local_server(LOCAL_MLFLOW)
    return server.url if server else ""


def run(a: argparse.Namespace) -> None:
    from textrec.sweep.spec import load_spec
    from textrec.sweep.study import run_sweep

    spec = load_spec(a.config)
    out = a.out or Path(".textrec/sweeps") / spec.name
    uri = tracking_uri(a.mlflow_uri)
    if not uri:
        print("note: no MLflow tracking URI (--mlflow-uri, MLFLOW_TRACKING_URI or `make mlflow-ui`): trials are "
              "not tracked")
    result = run_sweep(spec, out, trials=a.trials, workers=a.workers, storage=a.storage, tracking_uri=uri,
                       heartbeat_s=a.heartbeat)
    print(json.dumps({"study": result.study_name, "metric": spec.metric, "best_value": result.best_value,
                      "best_params": result.best_params, "best_trial": result.best_trial, "counts": result.counts,
                      "mlflow_run_id": result.parent_run_id}, indent=2))
    print(f"wrote {result.out / 'sweep.json'}" + (f", {result.out / 'best' / 'model.pt'}"
                                                    if (result.out / "best" / "model.pt").is_file() else ""))
