"""``make local``: the whole pipeline on this machine (kfp.local), tracked by MLflow.

    python -m pipelines.local [--profile smoke|cpu] [--data-source none|emnist:URI|iam:URI]
                              [--real-val labels.tsv|iam-lines-folder|s3://...] ...
    python -m pipelines.local --serve-only      # start (or find) the local MLflow server
    python -m pipelines.local --stop-server

Every component runs as a subprocess of this one, in this virtualenv (``SubprocessRunner(use_venv=
False)``). Without ``MLFLOW_TRACKING_URI`` a lean MLflow server is started on 127.0.0.1 (sqlite and
artifacts under ``.textrec/mlflow/``) and left running for the UI; the next run reuses it. A run ends
with a summary and ``.textrec/last-run.json``. Running again registers a new version, and the
promotion gate decides whether it becomes the champion.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textrec.progress import LOG_INTERVAL_S, quiet_when_piped
from textrec.tracking import MODEL_NAME

ROOT = Path(".textrec")
DEFAULT_PORT = 5000
KEEP_RUNS = 3  # pipeline runs whose data, models and checkpoints stay on disk
PAGES_FOR_PAGE_TASK = 60  # synthetic pages a task=page run renders unless told (test split: about 6)


@dataclass(frozen=True)
class Profile:
    """A named training recipe and how much data to render for it."""

    config: str
    threads: int = 0  # torch threads for local training; 0 keeps the config's
    gpus: int = 0  # GPUs per node on a cluster (local runs use none)

    def synth_lines(self, config: dict[str, Any]) -> int:
        """Enough lines that the synthetic store's train split holds the recipe's train lines."""
        from textrec.data.synth import lines_for_train
        from textrec.training.config import DataConfig

        return max(30, lines_for_train(int(config.get("data", {}).get("train_lines", DataConfig.train_lines))))


CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # found from any working folder
PROFILES = {
    "smoke": Profile(str(CONFIGS / "smoke.yaml"), threads=1),  # the test-sized run: minutes on 2 cores
    "cpu": Profile(str(CONFIGS / "cpu.yaml")),  # the default: about 20-25 minutes on 2 cores
    "gpu": Profile(str(CONFIGS / "gpu.yaml"), gpus=1),
    # The paragraph model (data.kind pages): with --task page, trained on the run's synthetic pages.
    "paragraph-smoke": Profile(str(CONFIGS / "paragraph-smoke.yaml"), threads=1),
    "paragraph-gpu": Profile(str(CONFIGS / "paragraph-gpu.yaml"), gpus=1),
}


def tracking_uri(root: Path, port: int = DEFAULT_PORT) -> str:
    """``MLFLOW_TRACKING_URI``, else the local server under ``root/mlflow`` (started if not running)."""
    from textrec import tracking

    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    server = tracking.running_local_server(root / "mlflow")
    if server is None:
        server = tracking.start_local_server(root / "mlflow", port=port if _port_free(port) else 0)
        print(f"started MLflow at {server.url} (data in {root / 'mlflow'}; stop with `make mlflow-stop`)")
    return server.url


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def local_server_running() -> bool:
    """Whether `make serve` left a TorchServe running, so a new champion should be rolled onto it."""
    from serving.torchserve import ServeError, TorchServeProcess

    try:
        return TorchServeProcess.from_workdir().pid() is not None
    except ServeError:
        return False


def run_pipeline(*, profile: str, data_source: str = "none", epochs: int = 0, margin: float = 0.0,
                 seed: int = 0, synth_lines: int = 0, overrides: tuple[str, ...] = (),
                 root: Path = ROOT, mlflow_uri: str | None = None, serving_target: str = "none",
                 model_name: str = "", real_val: str = "", task: str = "line",
                 synth_pages: int = 0, reviewed_store: str = "", reviewed_weight: float = 0.0) -> dict[str, Any]:
    """Run the pipeline locally; returns (and writes to ``root/last-run.json``) its summary.

    ``real_val``: labelled real lines (a TSV, an IAM lines folder, or an s3:// URI of either) that
    training, evaluation and the promotion gate score; a local path is made absolute for the steps.
    ``task="page"``: a page model, scored by page CER on ``synth_pages`` synthetic pages (default
    ``PAGES_FOR_PAGE_TASK``) and registered as ``textrec-page`` (unless ``model_name`` says otherwise).
    ``reviewed_store``: lines reviewed in ``textrec review``, the real validation set when ``real_val``
    is empty and, with ``reviewed_weight`` > 0, part of training.
    """
    from kfp import local

    from pipelines.textrec_pipeline import textrec_pipeline
    from textrec.config import read_yaml

    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r}: expected one of {sorted(PROFILES)}")
    prof = PROFILES[profile]
    config = read_yaml(prof.config)  # checks the file; the pipeline gets its text
    real_val = _real_val_arg(real_val)
    if prof.threads:
        overrides = (f"loop.threads={prof.threads}", *overrides)
    uri = mlflow_uri or tracking_uri(root)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str((root / "kfp").resolve()),
               raise_on_error=True)
    started = time.monotonic()
    run = textrec_pipeline(
        data_source=data_source, synth_lines=synth_lines or prof.synth_lines(config), seed=seed,
        train_config=Path(prof.config).read_text(), config_overrides=list(overrides), epochs=epochs, gpus_per_node=0, nodes=1,
        checkpoint_root=str((root / "checkpoints").resolve()), promotion_margin=margin, mlflow_uri=uri,
        model_name=model_name, serving_target=serving_target, real_val=real_val, task=task,
        synth_pages=synth_pages or (PAGES_FOR_PAGE_TASK if task == "page" else 0),
        reviewed_store=_reviewed_arg(reviewed_store), reviewed_weight=reviewed_weight)
    summary = summarise(run.outputs, uri, root, time.monotonic() - started, task=task)
    for folder in (root / "kfp", root / "checkpoints"):
        prune(folder, keep=KEEP_RUNS)
    return summary


def _real_val_arg(real_val: str) -> str:
    """An s3:// URI as it is; a local labelled set as an absolute path, failing now if it is not there."""
    from textrec import storage

    if not real_val or storage.is_s3(real_val):
        return real_val
    path = Path(real_val).expanduser().resolve()
    if not path.exists():
        raise ValueError(f"--real-val {real_val}: no such file or folder (a TSV of image<TAB>text rows or an "
                         "IAM lines folder)")
    return str(path)


def _reviewed_arg(store: str) -> str:
    """An s3:// prefix as it is; a local reviewed store as an absolute path, failing now if it is not one."""
    from textrec import storage

    if not store or storage.is_s3(store):
        return store
    path = Path(store).expanduser().resolve()
    if not (path / "reviewed.h5").is_file():
        raise ValueError(f"--reviewed-store {store}: no reviewed.h5 there (`textrec review --store` writes one)")
    return str(path)


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest run folders in ``folder`` (a cpu run's data is ~0.7 GB)."""
    import shutil

    runs = sorted((p for p in folder.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in runs[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return runs[keep:]


def summarise(outputs: dict[str, Any], uri: str, root: Path, seconds: float, task: str = "line") -> dict[str, Any]:
    """What the run registered, read back from MLflow; written atomically to ``root/last-run.json``."""
    from textrec import tracking
    from textrec.io import write_json

    missing = sorted({"model_uri", "version", "promoted", "deployed", "serving"} - set(outputs))
    if missing:  # a step that did not run leaves its outputs out: say so rather than report a half run
        raise RuntimeError(f"the pipeline run ended without the outputs {missing}: a step was skipped")
    name, version = outputs["model_uri"].split("/")[1], str(outputs["version"])
    info = tracking.version_info(name, version, tracking_uri=uri)
    summary = {
        "tracking_uri": uri, "task": task, "model_name": name, "version": version, "aliases": info["aliases"],
        "cer": float(info["tags"].get(tracking.TAG_TEST_CER, "nan")), "model_uri": info["model_uri"],
        "real_val_cer": (float(info["tags"][tracking.TAG_REAL_VAL_CER])
                         if tracking.TAG_REAL_VAL_CER in info["tags"] else None),
        "promoted": bool(outputs["promoted"]), "reason": info["tags"].get("textrec.promotion_reason", ""),
        "deployed": bool(outputs["deployed"]), "serving": str(outputs["serving"]),
        "artifact_location": info["download_uri"],
        "pipeline_run_id": info["tags"].get(tracking.TAG_PIPELINE_RUN, ""), "seconds": round(seconds, 1),
    }
    source = tracking.mlflow_client(uri).get_run(info["run_id"]) if info.get("run_id") else None
    if source is not None:
        summary["runs_url"] = tracking.experiment_url(uri, source.info.experiment_id)
    steps = tracking.step_seconds(summary["pipeline_run_id"], tracking_uri=uri) if summary["pipeline_run_id"] else {}
    summary["step_seconds"] = {k: round(v, 1) for k, v in sorted(steps.items())}
    write_json(root / "last-run.json", summary)
    return summary


def print_summary(s: dict[str, Any], root: Path = ROOT) -> None:
    minutes, secs = divmod(int(s["seconds"]), 60)
    print(f"\ntextrec pipeline finished in {minutes}m{secs:02d}s")
    print(f"  model      {s['model_name']} version {s['version']} (aliases: {', '.join(s['aliases']) or 'none'})")
    print(f"  test CER   {s['cer']:.4f}" + (" (page CER)" if s.get("task") == "page" else ""))
    if s.get("real_val_cer") is not None:
        print(f"  real CER   {s['real_val_cer']:.4f} (real_val)")
    print(f"  promotion  {'promoted' if s['promoted'] else 'not promoted'}: {s['reason']}")
    if s.get("serving"):
        print(f"  serving    {s['serving']}")
    print(f"  MLflow     {s['tracking_uri']}/#/models/{s['model_name']}/versions/{s['version']}")
    if s.get("runs_url"):
        print(f"  runs       {s['runs_url']}")
    print(f"  artifacts  {s['artifact_location']}")
    local = _local_artifacts(s["artifact_location"], root)
    if local is not None:
        print(f"             {local}")
    if s.get("step_seconds"):
        timed = ", ".join(f"{k} {v:.0f}s" for k, v in s["step_seconds"].items())
        print(f"  steps      {timed} (data steps: the rest)")
    print(f"  summary    {root / 'last-run.json'}")


def _local_artifacts(location: str, root: Path) -> Path | None:
    """Where the local server keeps a ``mlflow-artifacts:/`` location, if this machine has it."""
    prefix = "mlflow-artifacts:/"
    path = root / "mlflow" / "artifacts" / location[len(prefix):] if location.startswith(prefix) else None
    return path if path is not None and path.exists() else None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m pipelines.local", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default=os.environ.get("PROFILE") or "cpu", choices=sorted(PROFILES))
    p.add_argument("--data-source", default=os.environ.get("DATA_SOURCE") or "none",
                   help="none, emnist:URI or iam:URI")
    p.add_argument("--epochs", type=int, default=0, help="override the profile's epochs (0: keep)")
    p.add_argument("--margin", type=float, default=0.0, help="promotion margin on test CER")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real-val", default=os.environ.get("REAL_VAL") or "",
                   help="labelled real lines to judge the run on: a TSV of image<TAB>text rows, an IAM lines "
                        "folder, or an s3:// URI of either")
    p.add_argument("--synth-lines", type=int, default=0, help="lines to render (0: from the profile)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override, e.g. --set loop.max_minutes=5 (repeatable)")
    p.add_argument("--serving-target", default=os.environ.get("SERVING_TARGET") or "auto",
                   choices=("auto", "none", "local"),
                   help="roll a new champion onto the local TorchServe of `make serve` (auto: when one runs)")
    p.add_argument("--task", default=os.environ.get("TASK") or "line", choices=("line", "page"),
                   help="line: a line model; page: scored by page CER on synthetic pages, registered as "
                        f"textrec-page (default {MODEL_NAME} for lines)")
    p.add_argument("--synth-pages", type=int, default=0,
                   help=f"synthetic pages to render (0: none for lines, {PAGES_FOR_PAGE_TASK} for --task page)")
    p.add_argument("--model-name", default="", help="registered model name (default: by --task)")
    p.add_argument("--reviewed-store", default=os.environ.get("REVIEWED_STORE") or "",
                   help="lines reviewed in `textrec review` (folder or s3:// prefix): the real validation set "
                        "when --real-val is empty")
    p.add_argument("--reviewed-weight", type=float, default=0.0,
                   help="> 0: the reviewed training lines join training, each counting this many times per epoch")
    p.add_argument("--root", type=Path, default=ROOT)
    p.add_argument("--serve-only", action="store_true", help="start (or find) the MLflow server and exit")
    p.add_argument("--stop-server", action="store_true", help="stop the local MLflow server and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from textrec import tracking

    a = _parse(argv)
    # Components stream their output into this log line by line: a bar is a heartbeat, not a flood.
    os.environ.setdefault("TQDM_MININTERVAL", str(LOG_INTERVAL_S))
    quiet_when_piped()
    if a.stop_server:
        stopped = tracking.stop_local_server(a.root / "mlflow")
        print("stopped the local MLflow server" if stopped else "no local MLflow server was running")
        return 0
    if a.serve_only:
        uri = tracking_uri(a.root)
        experiment = tracking.ensure_experiment(tracking_uri=uri)
        print(f"MLflow: {uri}\n  runs: {tracking.experiment_url(uri, experiment)}")
        return 0
    if a.serving_target == "auto":
        a.serving_target = "local" if local_server_running() else "none"
    try:
        summary = run_pipeline(profile=a.profile, data_source=a.data_source, epochs=a.epochs, margin=a.margin,
                               seed=a.seed, synth_lines=a.synth_lines, overrides=tuple(a.overrides),
                               root=a.root, serving_target=a.serving_target, model_name=a.model_name,
                               real_val=a.real_val, task=a.task, synth_pages=a.synth_pages,
                               reviewed_store=a.reviewed_store, reviewed_weight=a.reviewed_weight)
    except (RuntimeError, ValueError, OSError) as e:
        print(f"textrec local pipeline failed: {e}", file=sys.stderr)
        return 1
    print_summary(summary, a.root)
    print(json.dumps({k: summary[k] for k in ("model_uri", "cer", "promoted")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
