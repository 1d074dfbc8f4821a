"""MLflow tracking and the model registry: runs, lineage, the promotion gate and champion download.

One MLflow run per pipeline run. The parent run carries the pipeline run id as a tag; each step
(train, evaluate, register, ...) is a child run under it, tagged with its step name, the git commit and
the pipeline run id, so one pipeline run reads as one tree in the MLflow UI::

    with step_run("train", pipeline_run_id, tracking_uri=uri, system_metrics=True) as run_id:
        train(cfg, out, callbacks=[MlflowCallback(run_id, uri)])

The registry keeps versions of one model, ``textrec-line``, with two aliases: ``challenger`` (the newest
version) and ``champion`` (the version to serve). :func:`promote` moves ``champion`` only when the
challenger's test CER beats the champion's on the *same* evaluation set by a margin; every version
records the hash of the set it was evaluated on, so a champion scored on another set is re-evaluated
on the challenger's set (or not promoted over, with the reason said). Serving gets a ``model.pt`` back
with :func:`download_champion`.

mlflow is imported inside the functions: the training loop and serving import this module without
paying for mlflow unless they track. Only rank 0 talks to MLflow (callbacks run only there).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from textrec.training.callbacks import Callback

MODEL_NAME = "textrec-line"
EXPERIMENT = "textrec"
CHAMPION, CHALLENGER = "champion", "challenger"
TAG_PIPELINE_RUN = "textrec.pipeline_run_id"
TAG_STEP = "textrec.step"
TAG_DATASET = "textrec.dataset_hash"
TAG_EVAL_SET = "textrec.eval_set_hash"
TAG_TEST_CER = "textrec.test_cer"
TAG_GIT = "mlflow.source.git.commit"
TAG_PARENT = "mlflow.parentRunId"
PARENT_STEP = "pipeline"
SYSTEM_METRICS_INTERVAL_S = 5.0  # seconds; TEXTREC_SYSTEM_METRICS_INTERVAL overrides
# What a machine needs to unpickle the logged model (textrec itself travels as code with it).
_MODEL_REQUIREMENTS = ("torch", "numpy", "pillow", "pyyaml", "editdistance", "h5py")


class TrackingError(RuntimeError):
    """MLflow cannot be reached or the registry is not in the expected state; the message says what."""


# --------------------------------------------------------------------------------------------- setup

def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The URI given, else ``MLFLOW_TRACKING_URI``; fails with what to set when neither is there."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise TrackingError("no MLflow tracking URI: pass one (e.g. http://127.0.0.1:5000) or set "
                            "MLFLOW_TRACKING_URI")
    return uri


def _client(tracking_uri: str | None = None):
    import mlflow
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The source commit: ``TEXTREC_GIT_COMMIT`` (set when an image is built), else ``git``, else unknown."""
    if os.environ.get("TEXTREC_GIT_COMMIT"):
        return os.environ["TEXTREC_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def ensure_experiment(name: str = EXPERIMENT, artifact_location: str | None = None,
                      tracking_uri: str | None = None) -> str:
    """The experiment's id, creating it (with ``artifact_location``, e.g. ``s3://bucket/mlflow``) if new."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location or None)
        except MlflowException:  # another step created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if artifact_location and exp.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
        warnings.warn(f"MLflow experiment {name!r} already stores artifacts at {exp.artifact_location}, "
                      f"not {artifact_location}; an experiment's location cannot change", stacklevel=2)
    return exp.experiment_id


def _check_id(pipeline_run_id: str) -> str:
    if not pipeline_run_id or any(c in pipeline_run_id for c in "'\"`\\"):
        raise TrackingError(f"pipeline run id {pipeline_run_id!r}: expected a non-empty id without quotes")
    return pipeline_run_id


def _find_run(client, experiment_id: str, pipeline_run_id: str, step: str):
    query = f"tags.`{TAG_PIPELINE_RUN}` = '{pipeline_run_id}' AND tags.`{TAG_STEP}` = '{step}'"
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def parent_run(pipeline_run_id: str, *, experiment: str = EXPERIMENT, artifact_location: str | None = None,
               tracking_uri: str | None = None) -> str:
    """The parent run of a pipeline run (found by its tag, created the first time); returns its id."""
    client = _client(tracking_uri)
    exp_id = ensure_experiment(experiment, artifact_location, tracking_uri)
    found = _find_run(client, exp_id, _check_id(pipeline_run_id), PARENT_STEP)
    if found is not None:
        return found.info.run_id
    tags = {TAG_PIPELINE_RUN: pipeline_run_id, TAG_STEP: PARENT_STEP, TAG_GIT: git_commit()}
    return client.create_run(exp_id, run_name=f"pipeline-{pipeline_run_id}", tags=tags).info.run_id


@contextmanager
def step_run(step: str, pipeline_run_id: str, *, tracking_uri: str | None = None,
             experiment: str = EXPERIMENT, artifact_location: str | None = None,
             system_metrics: bool = False, resume: bool = False,
             tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """A child run for one pipeline step, active for the ``with`` body; yields its run id.

    ``resume=True`` reopens this step's previous run in the same pipeline run (a retried training
    step continues its metric history). ``system_metrics`` samples CPU/GPU/memory while it runs.
    The parent's status follows the step: RUNNING during it, then FINISHED or FAILED.
    """
    import mlflow

    client = _client(tracking_uri)
    exp_id = ensure_experiment(experiment, artifact_location, tracking_uri)
    parent = parent_run(pipeline_run_id, experiment=experiment, tracking_uri=tracking_uri)
    previous = _find_run(client, exp_id, pipeline_run_id, step) if resume else None
    all_tags = {TAG_PIPELINE_RUN: pipeline_run_id, TAG_STEP: step, TAG_PARENT: parent,
                TAG_GIT: git_commit(), **(tags or {})}
    client.update_run(parent, status="RUNNING")
    if system_metrics:  # the default 10 s interval misses short steps entirely
        mlflow.set_system_metrics_sampling_interval(
            float(os.environ.get("TEXTREC_SYSTEM_METRICS_INTERVAL", SYSTEM_METRICS_INTERVAL_S)))
    status = "FAILED"
    run_id = previous.info.run_id if previous is not None else None
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id,
                          run_name=None if run_id else step, tags=all_tags,
                          log_system_metrics=system_metrics) as run:
        try:
            yield run.info.run_id
            status = "FINISHED"
        finally:
            client.set_terminated(parent, status=status)


def log_to_parent(run_id: str, metrics: Mapping[str, float], *, tracking_uri: str | None = None) -> None:
    """Headline metrics (test CER, say) on the pipeline's parent run too, where runs are compared."""
    client = _client(tracking_uri)
    parent = client.get_run(run_id).data.tags.get(TAG_PARENT)
    if parent:
        for k, v in _numeric(metrics).items():
            client.log_metric(parent, k, v)


def step_seconds(pipeline_run_id: str, *, experiment: str = EXPERIMENT,
                 tracking_uri: str | None = None) -> dict[str, float]:
    """Wall time of each finished step run of a pipeline run, by step name."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    query = f"tags.`{TAG_PIPELINE_RUN}` = '{_check_id(pipeline_run_id)}' AND tags.`{TAG_STEP}` != '{PARENT_STEP}'"
    return {r.data.tags[TAG_STEP]: (r.info.end_time - r.info.start_time) / 1000.0
            for r in client.search_runs([exp.experiment_id], filter_string=query)
            if r.info.end_time and r.info.start_time}


def set_lineage(run_id: str, tags: Mapping[str, str], *, tracking_uri: str | None = None,
                also_parent: bool = True) -> None:
    """Tag a run (and its parent) with lineage such as the dataset hash."""
    client = _client(tracking_uri)
    targets = [run_id]
    parent = client.get_run(run_id).data.tags.get(TAG_PARENT)
    if also_parent and parent:
        targets.append(parent)
    for rid in targets:
        for k, v in tags.items():
            client.set_tag(rid, k, str(v))


# ------------------------------------------------------------------------------------------- hashing

def combine_hashes(hashes: Iterable[str]) -> str:
    """One hash for several stores' content hashes, independent of their order."""
    h = hashlib.sha256()
    for part in sorted(hashes):
        h.update(part.encode())
    return h.hexdigest()


def eval_set_hash(samples: Iterable[tuple[Any, str]]) -> str:
    """SHA-256 over an evaluation set's images and texts, in order: equal hashes mean equal sets."""
    import numpy as np

    h = hashlib.sha256()
    for image, text in samples:
        a = np.ascontiguousarray(np.asarray(image))
        for part in (str(a.shape).encode(), a.tobytes(), text.encode()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------- callbacks

def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loop": {"epochs": 3}}`` -> ``{"loop.epochs": 3}`` (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))}


class MlflowCallback(Callback):
    """The training run's config (params), per-epoch metrics and final files, logged to one MLflow run.

    Failures to reach MLflow are warned about, never raised: a tracking outage must not end a
    long training run.
    """

    def __init__(self, run_id: str, tracking_uri: str | None = None) -> None:
        self.run_id = run_id
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self._warned = False

    def _safely(self, what: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 (any MLflow/HTTP error)
            if not self._warned:
                warnings.warn(f"MLflow: could not log {what} to run {self.run_id} ({e}); training goes on",
                              stacklevel=3)
                self._warned = True

    def on_train_start(self, trainer) -> None:
        from mlflow.entities import Param

        from textrec.config import to_dict

        def log() -> None:
            params = flatten(to_dict(trainer.config))
            params["world_size"] = getattr(trainer, "world_size", 1)
            existing = _client(self.tracking_uri).get_run(self.run_id).data.params
            new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
            for i in range(0, len(new), 100):  # log_batch takes at most 100 params at once
                _client(self.tracking_uri).log_batch(self.run_id, params=new[i:i + 100])
        self._safely("params", log)

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        def log() -> None:
            now = int(time.time() * 1000)
            batch = [Metric(k, v, now, epoch + 1) for k, v in _numeric(metrics).items()]
            _client(self.tracking_uri).log_batch(self.run_id, metrics=batch)
        self._safely("epoch metrics", log)

    def on_train_end(self, trainer, metrics: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        def log() -> None:
            client = _client(self.tracking_uri)
            now = int(time.time() * 1000)
            client.log_batch(self.run_id, metrics=[Metric(f"final_{k}", v, now, 0)
                                                   for k, v in _numeric(metrics).items()])
            out = Path(trainer.out_dir)
            for name in ("metrics.json", "config.yaml"):
                if (out / name).is_file():
                    client.log_artifact(self.run_id, str(out / name))
        self._safely("final metrics", log)


# ------------------------------------------------------------------------------------------ registry

def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for name in _MODEL_REQUIREMENTS:
        try:
            reqs.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


def log_model_version(model_pt: str | os.PathLike, run_id: str, *, model_name: str = MODEL_NAME,
                      tags: Mapping[str, str] | None = None, tracking_uri: str | None = None) -> str:
    """Log ``model.pt`` to a run as an MLflow PyTorch model and register it; returns the new version.

    The model is pickled (any input width works, unlike the exported format) with the textrec source
    beside it, so ``mlflow.pytorch.load_model("models:/textrec-line@champion")`` works on a machine
    without textrec; the textrec ``model.pt`` (charset, stem, decoder) travels as ``extra_files``.
    """
    import mlflow

    import textrec
    from textrec.artifact import load_artifact

    client = _client(tracking_uri)
    model, info = load_artifact(model_pt)
    with _active_run(run_id):
        logged = mlflow.pytorch.log_model(
            model, name="model", serialization_format="pickle", pip_requirements=_pip_requirements(),
            extra_files=[str(model_pt)], code_paths=[str(Path(textrec.__file__).parent)],
            metadata={"textrec_model": info["model_name"], "charset": info["charset"]})
    mv = mlflow.register_model(logged.model_uri, model_name, tags=dict(tags or {}))
    client.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    return str(mv.version)


@contextmanager
def _active_run(run_id: str) -> Iterator[None]:
    """Make ``run_id`` the active run for the block (it may already be: a step logging its model)."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield


@dataclass(frozen=True)
class Decision:
    """What the promotion gate decided about one challenger version, and why."""

    promoted: bool
    reason: str
    model_name: str
    version: str
    challenger_cer: float
    champion_version: str | None = None
    champion_cer: float | None = None
    margin: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(challenger_cer: float, champion_cer: float, margin: float) -> tuple[bool, str]:
    """Promote when the challenger's CER is lower than the champion's by more than ``margin``.

    >>> compare(0.10, 0.20, 0.05)[0], compare(0.18, 0.20, 0.05)[0], compare(0.20, 0.20, 0.0)[0]
    (True, False, False)
    """
    gain = champion_cer - challenger_cer
    if gain > margin:
        return True, (f"challenger CER {challenger_cer:.4f} beats the champion's {champion_cer:.4f} by "
                      f"{gain:.4f} (> margin {margin:.4f})")
    return False, (f"challenger CER {challenger_cer:.4f} does not beat the champion's {champion_cer:.4f} "
                   f"by more than the margin {margin:.4f}; the champion stays")


def _alias_version(client, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def promote(model_name: str, version: str, *, challenger_cer: float, eval_hash: str,
            margin: float = 0.0, reevaluate: Callable[[Path], float] | None = None,
            tracking_uri: str | None = None) -> Decision:
    """The promotion gate: move ``champion`` to ``version`` if it beats the champion on the same set.

    The champion's CER counts only if it was measured on the evaluation set with hash ``eval_hash``.
    Otherwise ``reevaluate(champion_model_pt) -> cer`` measures it on the challenger's set; without
    ``reevaluate`` the gate refuses to promote and says why. The decision is recorded on the version.
    """
    client = _client(tracking_uri)
    client.set_model_version_tag(model_name, version, TAG_TEST_CER, f"{challenger_cer:.6f}")
    client.set_model_version_tag(model_name, version, TAG_EVAL_SET, eval_hash)
    champ = _alias_version(client, model_name, CHAMPION)
    base = {"model_name": model_name, "version": str(version), "challenger_cer": challenger_cer,
            "margin": margin}
    if champ is None or str(champ.version) == str(version):
        decision = Decision(True, f"no champion yet: version {version} becomes the champion", **base)
    else:
        decision = _against_champion(client, champ, base, eval_hash, reevaluate, tracking_uri)
    if decision.promoted:
        client.set_registered_model_alias(model_name, CHAMPION, str(version))
    client.set_model_version_tag(model_name, version, "textrec.promoted", str(decision.promoted).lower())
    client.set_model_version_tag(model_name, version, "textrec.promotion_reason", decision.reason[:5000])
    return decision


def _against_champion(client, champ, base: dict[str, Any], eval_hash: str,
                      reevaluate: Callable[[Path], float] | None, tracking_uri: str | None) -> Decision:
    name, cv = base["model_name"], str(champ.version)
    champ_hash = champ.tags.get(TAG_EVAL_SET, "")
    note = ""
    if champ_hash == eval_hash and TAG_TEST_CER in champ.tags:
        champ_cer = float(champ.tags[TAG_TEST_CER])
    elif reevaluate is None:
        why = ("was evaluated on a different set" if champ_hash else "has no recorded evaluation set")
        return Decision(False, f"champion version {cv} {why} (hash {champ_hash[:12] or 'none'}, this set "
                               f"{eval_hash[:12]}): CERs are not comparable, so the champion stays; "
                               "re-evaluate it on this set to compare", champion_version=cv, **base)
    else:
        with tempfile.TemporaryDirectory(prefix="textrec-champion-") as tmp:
            champ_cer = float(reevaluate(download_model(name, cv, tmp, tracking_uri=tracking_uri)))
        note = f" (champion re-evaluated on this set: it was scored on {champ_hash[:12] or 'an unknown set'})"
    promoted, why = compare(base["challenger_cer"], champ_cer, base["margin"])
    return Decision(promoted, f"version {base['version']} vs champion version {cv}: {why}{note}",
                    champion_version=cv, champion_cer=champ_cer, **base)


def download_model(model_name: str, version_or_alias: str, dest: str | os.PathLike, *,
                   tracking_uri: str | None = None) -> Path:
    """Fetch a registered version's textrec ``model.pt`` into folder ``dest``; returns its path."""
    import mlflow
    from mlflow.exceptions import MlflowException

    _client(tracking_uri)
    ref = f"@{version_or_alias}" if not str(version_or_alias).isdigit() else f"/{version_or_alias}"
    uri = f"models:/{model_name}{ref}"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest) as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as e:
            raise TrackingError(f"{uri}: cannot download from the MLflow registry ({e})") from e
        found = local / "extra_files" / "model.pt"
        if not found.is_file():
            raise TrackingError(f"{uri}: the logged model has no extra_files/model.pt (not logged by textrec?)")
        os.replace(found, dest / "model.pt")
    return dest / "model.pt"


def download_champion(model_name: str = MODEL_NAME, alias: str = CHAMPION, dest: str | os.PathLike = ".",
                      *, tracking_uri: str | None = None) -> Path:
    """The ``model.pt`` of ``models:/<model_name>@<alias>``, in folder ``dest``; returns its path.

    The version and its source are written beside it, to ``dest/model-version.json``
    (``model_name``, ``alias``, ``version``, ``run_id``, ``model_uri``), so whoever serves the file
    can say which version it is.
    """
    client = _client(tracking_uri)
    mv = _alias_version(client, model_name, alias)
    if mv is None:
        raise TrackingError(f"models:/{model_name}@{alias}: no such registered model or alias in "
                            f"{resolve_tracking_uri(tracking_uri)}")
    path = download_model(model_name, str(mv.version), dest, tracking_uri=tracking_uri)
    meta = {"model_name": model_name, "alias": alias, "version": str(mv.version), "run_id": mv.run_id,
            "model_uri": f"models:/{model_name}/{mv.version}"}
    _write_json(Path(dest) / "model-version.json", meta)
    return path


def version_info(model_name: str, version: str, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """A registered version's aliases, tags and source, as plain values."""
    client = _client(tracking_uri)
    mv = client.get_model_version(model_name, version)
    return {"model_name": model_name, "version": str(mv.version), "aliases": sorted(mv.aliases),
            "tags": dict(mv.tags), "run_id": mv.run_id, "source": mv.source,
            "model_uri": f"models:/{model_name}/{mv.version}",
            "download_uri": client.get_model_version_download_uri(model_name, str(mv.version))}


def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------- local lean server

@dataclass(frozen=True)
class LocalServer:
    """A lean MLflow server on 127.0.0.1 (sqlite + proxied artifacts under ``root``)."""

    url: str
    pid: int
    root: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_local_server(root: str | os.PathLike, *, port: int = 0, timeout: float = 90.0) -> LocalServer:
    """Start ``mlflow server`` in its own process group, one worker, no job runner; wait until healthy.

    The server keeps runs in ``root/mlflow.db`` and artifacts under ``root/artifacts`` (clients send
    them through the server, so nothing but the URL needs sharing). ``root/server.json`` records it.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port or _free_port()}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
           "--port", url.rsplit(":", 1)[1], "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(root / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=root)
    deadline = time.monotonic() + timeout
    while not server_healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill_group(proc.pid)
            tail = (root / "server.log").read_text(errors="replace")[-2000:]
            raise TrackingError(f"MLflow server at {url} did not start (see {root / 'server.log'}):\n{tail}")
        time.sleep(0.3)
    server = LocalServer(url, proc.pid, root)
    _write_json(root / "server.json", {"url": url, "pid": proc.pid})
    return server


def running_local_server(root: str | os.PathLike) -> LocalServer | None:
    """The server recorded in ``root/server.json`` if it still answers, else None."""
    root = Path(root).resolve()
    try:
        rec = json.loads((root / "server.json").read_text())
    except (OSError, ValueError):
        return None
    if not server_healthy(rec.get("url", "")):
        return None
    return LocalServer(rec["url"], int(rec["pid"]), root)


def _kill_group(pid: int, timeout: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        _reap(pid)
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_local_server(server: LocalServer | str | os.PathLike) -> bool:
    """Stop a server started by :func:`start_local_server` (by its object or its root folder)."""
    if not isinstance(server, LocalServer):
        root = Path(server).resolve()
        try:
            rec = json.loads((root / "server.json").read_text())
        except (OSError, ValueError):
            return False
        server = LocalServer(rec["url"], int(rec["pid"]), root)
    _kill_group(server.pid)
    (server.root / "server.json").unlink(missing_ok=True)
    return True
