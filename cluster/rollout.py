"""Rolling the serving Deployment onto a new model version (the Kubernetes half of a deploy).

The Deployment records the version it serves in the annotation ``textrec.io/model-version`` (on the
Deployment and on its pod template, with the model URI and run id). A rollout is one strategic-merge
patch: the changed pod-template annotations and the ``torchserve`` container's
``TEXTREC_MODEL_ARCHIVE`` / ``TEXTREC_MODEL_VERSION`` make Kubernetes replace the pods one by one,
and each new pod's entrypoint fetches the archive named there. The archive must be in the model
store before the patch (``serving.deploy`` uploads it first).

The caller's service account needs ``get`` and ``patch`` on ``deployments``.
"""

from __future__ import annotations

from typing import Any, Protocol

from cluster.client import apps_api

VERSION_ANNOTATION = "textrec.io/model-version"
MODEL_URI_ANNOTATION = "textrec.io/model-uri"
RUN_ID_ANNOTATION = "textrec.io/run-id"
ARCHIVE_ENV = "TEXTREC_MODEL_ARCHIVE"  # read by docker/serving/entrypoint.sh
VERSION_ENV = "TEXTREC_MODEL_VERSION"


class Release(Protocol):
    """What a rollout records about the model (``serving.archive.ModelSource`` is one)."""

    version: str
    model_uri: str
    run_id: str | None


def served_version(deployment: str, namespace: str, *, api: Any = None) -> str | None:
    """The model version ``namespace/deployment`` says it serves (None before the first rollout)."""
    current = (api or apps_api()).read_namespaced_deployment(deployment, namespace)
    annotations = (current.metadata.annotations or {}) if current.metadata else {}
    return annotations.get(VERSION_ANNOTATION)


def rollout_patch(release: Release, container: str, archive_uri: str) -> dict:
    """A strategic-merge patch: a changed pod-template annotation and env make Kubernetes roll the pods."""
    notes = {VERSION_ANNOTATION: release.version, MODEL_URI_ANNOTATION: release.model_uri,
             RUN_ID_ANNOTATION: release.run_id or ""}
    env = [{"name": VERSION_ENV, "value": release.version}, {"name": ARCHIVE_ENV, "value": archive_uri}]
    return {"metadata": {"annotations": notes},
            "spec": {"template": {"metadata": {"annotations": notes},
                                  "spec": {"containers": [{"name": container, "env": env}]}}}}


def roll_out(deployment: str, namespace: str, patch: dict, *, api: Any = None) -> None:
    """Apply ``patch`` (from :func:`rollout_patch`) to ``namespace/deployment``."""
    (api or apps_api()).patch_namespaced_deployment(deployment, namespace, patch)
