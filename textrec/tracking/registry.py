"""The model registry: versions of one registered model, the ``challenger`` and ``champion`` aliases.

Every pipeline run registers its model as a new version of ``textrec-line`` with alias ``challenger``;
the promotion gate (:mod:`textrec.tracking.gate`) moves ``champion``, the version to serve. Serving
gets a ``model.pt`` back with :func:`download_champion`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textrec.io import publish, write_json
from textrec.rundir import MODEL
from textrec.tracking.runs import TrackingError, mlflow_client, resolve_tracking_uri

MODEL_NAME = "textrec-line"
# Pages: the name pages are served under (the line model behind the page segmenter) and that page
# models register under.
PAGE_MODEL_NAME = "textrec-page"
CHAMPION, CHALLENGER = "champion", "challenger"
# Where the textrec model.pt sits inside a logged model: the pyfunc's artifact, or (versions logged
# before the pyfunc) the PyTorch flavor's extra files.
MODEL_PT_PATHS = (f"artifacts/{MODEL}", f"extra_files/{MODEL}")


def best_step(run_id: str, monitor: str, *, tracking_uri: str | None = None) -> int:
    """The step (epoch number, as the training callback logs it) of the lowest ``monitor`` in the run's
    history, the first one on a tie as the best checkpoint keeps it; 0 when the run has no history."""
    history = mlflow_client(tracking_uri).get_metric_history(run_id, monitor) if monitor else []
    if not history:
        return 0
    return int(min(history, key=lambda m: (m.value, m.step)).step)


@dataclass(frozen=True)
class LoggedVersion:
    """A registered version and the LoggedModel behind it."""

    version: str
    model_id: str  # the LoggedModel (``models:/<model_id>``): its metrics and inputs live there
    run_id: str  # the run the model was logged from


def log_line_version(model_pt: str | os.PathLike, run_id: str, *, model_name: str = MODEL_NAME,
                     tags: Mapping[str, str] | None = None, tracking_uri: str | None = None,
                     step: int | None = None, task: str = "line") -> LoggedVersion:
    """Log ``model.pt`` from run ``run_id`` as a pyfunc model and register it (alias ``challenger``);
    the new version's source run is ``run_id``. ``task="page"``: the pyfunc reads pages.

    ``step`` is the run's step the model comes from; None: the best epoch of the run's history of
    the metric that picked the best checkpoint (``selected_by`` in the artifact's metrics).
    ``mlflow.pyfunc.load_model("models:/textrec-line@champion")`` then reads images
    (:mod:`textrec.tracking.pyfunc`), and :func:`download_model` gets ``model.pt`` back.
    """
    import mlflow

    from textrec.artifact import read_artifact
    from textrec.tracking.pyfunc import log_line_model

    client = mlflow_client(tracking_uri)
    if step is None:
        monitor = str((read_artifact(model_pt).get("metrics") or {}).get("selected_by") or "")
        step = best_step(run_id, monitor, tracking_uri=tracking_uri)
    logged = log_line_model(model_pt, run_id, step=step, tags=tags, task=task)
    mv = mlflow.register_model(logged.model_uri, model_name, tags=dict(tags or {}))
    client.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    return LoggedVersion(str(mv.version), str(logged.model_id), run_id)


def log_model_version(model_pt: str | os.PathLike, run_id: str, *, model_name: str = MODEL_NAME,
                      tags: Mapping[str, str] | None = None, tracking_uri: str | None = None,
                      step: int | None = None) -> str:
    """:func:`log_line_version`, returning only the new version."""
    return log_line_version(model_pt, run_id, model_name=model_name, tags=tags, tracking_uri=tracking_uri,
                            step=step).version


def alias_version(client, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def download_model(model_name: str, version_or_alias: str, dest: str | os.PathLike, *,
                   tracking_uri: str | None = None) -> Path:
    """Fetch a registered version's textrec ``model.pt`` into folder ``dest``; returns its path."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client(tracking_uri)
    ref = f"@{version_or_alias}" if not str(version_or_alias).isdigit() else f"/{version_or_alias}"
    uri = f"models:/{model_name}{ref}"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=dest) as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as e:
            raise TrackingError(f"{uri}: cannot download from the MLflow registry ({e})") from e
        found = next((local / p for p in MODEL_PT_PATHS if (local / p).is_file()), None)
        if found is None:
            raise TrackingError(f"{uri}: the logged model has no {' or '.join(MODEL_PT_PATHS)} "
                                "(not logged by textrec?)")
        publish(found, dest / MODEL)
    return dest / MODEL


def download_champion(model_name: str = MODEL_NAME, alias: str = CHAMPION, dest: str | os.PathLike = ".",
                      *, tracking_uri: str | None = None) -> Path:
    """The ``model.pt`` of ``models:/<model_name>@<alias>``, in folder ``dest``; returns its path.

    The version and its source are written beside it, to ``dest/model-version.json``
    (``model_name``, ``alias``, ``version``, ``run_id``, ``model_uri``), so whoever serves the file
    can say which version it is.
    """
    client = mlflow_client(tracking_uri)
    mv = alias_version(client, model_name, alias)
    if mv is None:
        raise TrackingError(f"models:/{model_name}@{alias}: no such registered model or alias in "
                            f"{resolve_tracking_uri(tracking_uri)}")
    path = download_model(model_name, str(mv.version), dest, tracking_uri=tracking_uri)
    meta = {"model_name": model_name, "alias": alias, "version": str(mv.version), "run_id": mv.run_id,
            "model_uri": f"models:/{model_name}/{mv.version}"}
    write_json(Path(dest) / "model-version.json", meta)
    return path


def version_info(model_name: str, version: str, *, tracking_uri: str | None = None) -> dict[str, Any]:
    """A registered version's aliases, tags and source, as plain values."""
    client = mlflow_client(tracking_uri)
    mv = client.get_model_version(model_name, version)
    return {"model_name": model_name, "version": str(mv.version), "aliases": sorted(mv.aliases),
            "tags": dict(mv.tags), "run_id": mv.run_id, "source": mv.source,
            "model_uri": f"models:/{model_name}/{mv.version}",
            "download_uri": client.get_model_version_download_uri(model_name, str(mv.version))}
