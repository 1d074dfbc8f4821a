"""Which registry a local server takes its default model from: the champion of the MLflow server in
``MLFLOW_TRACKING_URI``, or else the one the last local pipeline run recorded (``make local`` writes
``.textrec/last-run.json``), so ``make serve`` right after ``make local`` needs no settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

from serving.torchserve import ServeError
from textrec.tracking import CHAMPION, MODEL_NAME, PAGE_MODEL_NAME

CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"
PAGE_CHAMPION_URI = f"models:/{PAGE_MODEL_NAME}@{CHAMPION}"
LAST_RUN = Path(".textrec/last-run.json")


def tracking_uri_from_last_run(path: Path = LAST_RUN) -> str | None:
    """The MLflow server the last local run used, if it recorded one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data.get("tracking_uri") or None  # written by pipelines.local


def use_champion_registry() -> str:
    """Point MLflow at the registry that holds the champion (see the module doc); returns its URI, or
    raises ServeError saying how to name a model when there is none."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri_from_last_run()
    if not uri:
        raise ServeError("no model: pass MODEL=path/to/model.pt, or set MLFLOW_TRACKING_URI "
                         "(or run the pipeline so .textrec/last-run.json names the MLflow server)")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri
