"""The model registry: versions of one registered model, the ``challenger`` and ``champion`` aliases.

Every pipeline run registers its model as a new version of ``textrec-line`` with alias ``challenger``;
the promotion gate (:mod:`textrec.tracking.gate`) moves ``champion``, the version to serve. Serving
gets a ``model.pt`` back with :func:`download_champion`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
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
# What a machine needs to unpickle the logged model (textrec itself travels as code with it).
_MODEL_REQUIREMENTS = ("torch", "numpy", "pillow", "pyyaml", "editdistance", "h5py")


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

    client = mlflow_client(tracking_uri)
    model, info = load_artifact(model_pt)
    with _active_run(run_id):
        logged = mlflow.pytorch.log_model(
            model, name="model", serialization_format="pickle", pip_requirements=_pip_requirements(),
            extra_files=[str(model_pt)], code_paths=[str(Path(textrec.__file__).parent)],
            metadata={"textrec_model": info["model_name"], "charset": info["charset"]})
    mv = mlflow.register_model(logged.model_uri, model_name, tags=dict(tags or {}))
    client.set_registered_model_alias(model_name, CHALLENGER, mv.version)
    return str(mv.version)


def alias_version(client, model_name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


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
        found = local / "extra_files" / MODEL
        if not found.is_file():
            raise TrackingError(f"{uri}: the logged model has no extra_files/model.pt (not logged by textrec?)")
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
