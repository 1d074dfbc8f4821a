"""Rolling the serving workload onto a new model version (the Kubernetes half of a deploy).

The workload is what the serving chart installed under one name: a Deployment whose container is
``torchserve`` (runtime torchserve: it serves a ``.mar``) or ``oip`` (runtime kserve: the Open
Inference Protocol server, which loads a ``model.pt``), or, when the chart made one instead, a KServe
``InferenceService`` whose ``kserve-container`` is that OIP server. :func:`find_workload` reads which
it is, so a deploy uploads the artifact that runtime reads.

The workload records the version it serves in the annotation ``textrec.io/model-version`` (on itself
and on its pods, with the model URI and run id). A rollout changes those pod annotations and the
container's ``TEXTREC_MODEL_ARCHIVE`` / ``TEXTREC_MODEL_VERSION``, so Kubernetes (or KServe) replaces
the pods one by one, each new pod fetching the model named there. The model must be in the model
store before the patch (``serving.deploy`` uploads it first). A Deployment takes a strategic-merge
patch naming only the container; an InferenceService, a custom resource, takes a merge patch, which
replaces lists whole, so its containers are read, changed and written back under the read's
``resourceVersion`` (a concurrent change fails the patch instead of being overwritten).

The caller's service account needs ``get`` and ``patch`` on ``deployments`` and, for clusters that
serve through KServe, on ``inferenceservices.serving.kserve.io``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

from cluster import client as k8s

VERSION_ANNOTATION = "textrec.io/model-version"
MODEL_URI_ANNOTATION = "textrec.io/model-uri"
RUN_ID_ANNOTATION = "textrec.io/run-id"
ARCHIVE_ENV = "TEXTREC_MODEL_ARCHIVE"  # read by docker/serving/entrypoint.sh and the chart's OIP container
VERSION_ENV = "TEXTREC_MODEL_VERSION"

CONTAINERS = {"torchserve": "torchserve", "oip": "kserve"}  # a Deployment's container -> its runtime
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
ISVC_CONTAINER = "kserve-container"


class Release(Protocol):
    """What a rollout records about the model (``serving.archive.ModelSource`` is one)."""

    version: str
    model_uri: str
    run_id: str | None


@dataclass(frozen=True)
class Workload:
    """The serving workload a deploy rolls: its kind, the runtime it runs and the container to patch."""

    kind: str  # "Deployment" or "InferenceService"
    name: str
    namespace: str
    runtime: str  # "torchserve" (serves a .mar) or "kserve" (the OIP server, serves a model.pt)
    container: str
    served_version: str | None = None
    body: dict = field(default_factory=dict, compare=False, repr=False)  # the InferenceService as read

    def describe(self) -> str:
        return f"{self.kind}, runtime {self.runtime}"


def find_workload(name: str, namespace: str, *, apps_api: Any = None, custom_api: Any = None) -> Workload:
    """The Deployment ``namespace/name``, or else the InferenceService of that name; a clear error if
    neither exists or the Deployment runs no container a textrec runtime is known by."""
    from kubernetes.client.exceptions import ApiException

    try:
        dep = (apps_api or k8s.apps_api()).read_namespaced_deployment(name, namespace)
    except ApiException as e:
        if e.status != 404:
            raise
        dep = None
    if dep is not None:
        annotations = (dep.metadata.annotations or {}) if dep.metadata else {}
        names = [c.name for c in dep.spec.template.spec.containers]
        known = [c for c in names if c in CONTAINERS]
        if not known:
            raise ValueError(f"Deployment {namespace}/{name} runs containers {names}, none of them a textrec "
                             f"serving runtime ({', '.join(f'{c!r} for {r}' for c, r in CONTAINERS.items())})")
        return Workload("Deployment", name, namespace, CONTAINERS[known[0]], known[0],
                        annotations.get(VERSION_ANNOTATION))
    objects = custom_api or _custom()
    try:
        isvc = objects.get_namespaced_custom_object(*ISVC[:2], namespace, ISVC[2], name)
    except ApiException as e:
        if e.status != 404:
            raise
        raise LookupError(f"no Deployment or InferenceService named {name!r} in namespace {namespace!r}: is "
                          "the serving chart installed there (serving_deployment names its release)?") from None
    containers = [c.get("name") for c in isvc.get("spec", {}).get("predictor", {}).get("containers", [])]
    if ISVC_CONTAINER not in containers:
        raise ValueError(f"InferenceService {namespace}/{name} has no {ISVC_CONTAINER!r} container "
                         f"(it has {containers}): textrec rolls only the OIP server as a custom predictor")
    annotations = isvc.get("metadata", {}).get("annotations") or {}
    return Workload("InferenceService", name, namespace, "kserve", ISVC_CONTAINER,
                    annotations.get(VERSION_ANNOTATION), isvc)


def _custom() -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(k8s.api_client())


def _notes(release: Release) -> dict[str, str]:
    return {VERSION_ANNOTATION: release.version, MODEL_URI_ANNOTATION: release.model_uri,
            RUN_ID_ANNOTATION: release.run_id or ""}


def rollout_patch(release: Release, container: str, archive_uri: str) -> dict:
    """A strategic-merge patch for a Deployment: changed pod-template annotations and env make
    Kubernetes roll the pods."""
    notes = _notes(release)
    env = [{"name": VERSION_ENV, "value": release.version}, {"name": ARCHIVE_ENV, "value": archive_uri}]
    return {"metadata": {"annotations": notes},
            "spec": {"template": {"metadata": {"annotations": notes},
                                  "spec": {"containers": [{"name": container, "env": env}]}}}}


def isvc_patch(isvc: dict, release: Release, model_uri: str) -> dict:
    """A merge patch for an InferenceService: its predictor's containers written back whole with the
    ``kserve-container``'s model variables changed, the pod annotations the chart's container reads its
    version from, and the read's ``resourceVersion``."""
    notes = _notes(release)
    predictor = isvc.get("spec", {}).get("predictor", {})
    containers = copy.deepcopy(predictor.get("containers", []))
    for c in containers:
        if c.get("name") != ISVC_CONTAINER:
            continue
        env = [e for e in c.get("env", []) if e.get("name") not in (ARCHIVE_ENV, VERSION_ENV)]
        # The chart's container reads its version from the pod annotation; the value set here says the
        # same thing and does not depend on KServe carrying annotations to the pods.
        c["env"] = [{"name": ARCHIVE_ENV, "value": model_uri}, {"name": VERSION_ENV, "value": release.version},
                    *env]
    meta = isvc.get("metadata", {})
    return {"metadata": {"annotations": notes, "resourceVersion": meta.get("resourceVersion")},
            "spec": {"predictor": {"annotations": {**(predictor.get("annotations") or {}), **notes},
                                   "containers": containers}}}


def roll_out(workload: Workload, release: Release, artifact_uri: str, *, apps_api: Any = None,
             custom_api: Any = None) -> None:
    """Point ``workload`` at ``artifact_uri`` (the ``.mar`` or ``model.pt`` already in the store)."""
    if workload.kind == "Deployment":
        patch = rollout_patch(release, workload.container, artifact_uri)
        (apps_api or k8s.apps_api()).patch_namespaced_deployment(workload.name, workload.namespace, patch)
        return
    patch = isvc_patch(workload.body, release, artifact_uri)
    (custom_api or _custom()).patch_namespaced_custom_object(*ISVC[:2], workload.namespace, ISVC[2],
                                                             workload.name, patch)
