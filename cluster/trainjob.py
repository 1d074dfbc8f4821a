"""Multi-node training through the Kubeflow training operator: manifests, creation, waiting.

Two operators are supported, whichever the cluster has:

- Kubeflow Trainer: a ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``) on the ``torch-distributed``
  ClusterTrainingRuntime; placement goes in a ``runtimePatches`` entry owned by ``textrec``.
- the older training operator: a ``PyTorchJob`` (``kubeflow.org/v1``), one Master and N-1 Workers.

Either way every node runs the same command, ``torchrun -m textrec.training ...``; torchrun takes
the node count, node rank and rendezvous address from the ``PET_*`` variables both operators set, and
the training loop picks up ``RANK``/``WORLD_SIZE`` from torchrun. Rank 0 writes checkpoints and the
model to the run's checkpoint prefix (S3), which is also where a retried job resumes from.

Job names derive from the pipeline run id, so a retried pipeline step finds its job again instead of
starting a second one: a running job is waited on, a finished one reused, a failed one replaced.
The ``kubernetes`` client is imported inside the functions that talk to the API.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.client import api_client, current_namespace
from textrec.training.job import MultiNodeLaunch

TRAINJOB = ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob")
PYTORCHJOB = ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob")
KINDS = {"TrainJob": TRAINJOB, "PyTorchJob": PYTORCHJOB}
ENTRY = ("torchrun", "-m", "textrec.training")
GPU = "nvidia.com/gpu"
MANAGER = "textrec"
# Variables the launcher passes on to the training pods as plain values (never credentials).
PASS_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
            "AWS_DEFAULT_REGION", "TEXTREC_GIT_COMMIT")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class TrainJobError(RuntimeError):
    """The distributed job could not be created, or it failed; the message names the job."""


@dataclass(frozen=True)
class DistributedJob:
    """What to run on how many nodes, and where those nodes may be."""

    name: str
    namespace: str
    image: str
    args: tuple[str, ...]  # after ``torchrun -m textrec.training``
    nodes: int = 2
    gpus_per_node: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)  # VAR -> "secret-name/key"
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    service_account: str = ""
    runtime: str = "torch-distributed"
    cpu: str = "4"
    memory: str = "16Gi"

    def __post_init__(self) -> None:
        if not self.image:
            raise ValueError(f"job {self.name}: no image; the launcher passes its own (TEXTREC_IMAGE)")
        if not _NAME.match(self.name) or len(self.name) > 63:
            raise ValueError(f"job name {self.name!r}: expected a DNS label (a-z, 0-9, '-', at most 63)")
        if self.nodes < 1 or self.gpus_per_node < 0:
            raise ValueError(f"job {self.name}: nodes must be >= 1 and gpus_per_node >= 0, got "
                             f"{self.nodes} and {self.gpus_per_node}")
        for var, ref in self.secret_env.items():
            if ref.count("/") != 1 or not all(ref.split("/")):
                raise ValueError(f"secret_env[{var}] = {ref!r}: expected 'secret-name/key'")

    @property
    def procs_per_node(self) -> int:
        return max(1, self.gpus_per_node)


def job_name(pipeline_run_id: str, prefix: str = "textrec-train") -> str:
    """A stable DNS-label name for a pipeline run's training job."""
    digest = hashlib.sha256(pipeline_run_id.encode()).hexdigest()[:12]
    return f"{prefix}-{digest}"


def _env(job: DistributedJob) -> list[dict[str, Any]]:
    plain = [{"name": k, "value": str(v)} for k, v in sorted(job.env.items())]
    secret = [{"name": k, "valueFrom": {"secretKeyRef": {"name": ref.split("/")[0], "key": ref.split("/")[1]}}}
              for k, ref in sorted(job.secret_env.items())]
    return plain + secret


def _resources(job: DistributedJob) -> dict[str, Any]:
    requests: dict[str, str] = {"cpu": job.cpu, "memory": job.memory}
    limits: dict[str, str] = {"memory": job.memory}
    if job.gpus_per_node:
        requests[GPU] = limits[GPU] = str(job.gpus_per_node)
    return {"requests": requests, "limits": limits}


def _placement(job: DistributedJob) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if job.node_selector:
        spec["nodeSelector"] = dict(job.node_selector)
    if job.tolerations:
        spec["tolerations"] = [dict(t) for t in job.tolerations]
    if job.service_account:
        spec["serviceAccountName"] = job.service_account
    return spec


def _labels(job: DistributedJob) -> dict[str, str]:
    return {"app.kubernetes.io/name": "textrec", "app.kubernetes.io/component": "train",
            "app.kubernetes.io/managed-by": MANAGER}


def trainjob_manifest(job: DistributedJob) -> dict[str, Any]:
    """A Kubeflow Trainer ``TrainJob`` running ``torchrun`` on ``job.nodes`` nodes."""
    group, version, _, kind = TRAINJOB
    manifest: dict[str, Any] = {
        "apiVersion": f"{group}/{version}", "kind": kind,
        "metadata": {"name": job.name, "namespace": job.namespace, "labels": _labels(job)},
        "spec": {
            "runtimeRef": {"name": job.runtime, "apiGroup": group, "kind": "ClusterTrainingRuntime"},
            "trainer": {"image": job.image, "command": [*ENTRY, *job.args], "env": _env(job),
                        "numNodes": job.nodes, "numProcPerNode": job.procs_per_node,
                        "resourcesPerNode": _resources(job)},
        },
    }
    placement = _placement(job)
    if placement:
        pod_patch = {"template": {"spec": {"template": {"spec": placement}}}}
        manifest["spec"]["runtimePatches"] = [{"manager": MANAGER, "trainingRuntimeSpec": {"template": {
            "spec": {"replicatedJobs": [{"name": "node", **pod_patch}]}}}}]
    return manifest


def _replica(job: DistributedJob, replicas: int) -> dict[str, Any]:
    container = {"name": "pytorch", "image": job.image, "command": [*ENTRY, *job.args], "env": _env(job),
                 "resources": _resources(job)}
    return {"replicas": replicas, "restartPolicy": "OnFailure",
            "template": {"metadata": {"labels": _labels(job)},
                         "spec": {"containers": [container], **_placement(job)}}}


def pytorchjob_manifest(job: DistributedJob) -> dict[str, Any]:
    """A training-operator ``PyTorchJob``: one Master and ``nodes - 1`` Workers, torchrun in each."""
    group, version, _, kind = PYTORCHJOB
    specs = {"Master": _replica(job, 1)}
    if job.nodes > 1:
        specs["Worker"] = _replica(job, job.nodes - 1)
    return {
        "apiVersion": f"{group}/{version}", "kind": kind,
        "metadata": {"name": job.name, "namespace": job.namespace, "labels": _labels(job)},
        "spec": {"nprocPerNode": str(job.procs_per_node),
                 "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3},
                 "pytorchReplicaSpecs": specs},
    }


def manifest(job: DistributedJob, kind: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {sorted(KINDS)}")
    return trainjob_manifest(job) if kind == "TrainJob" else pytorchjob_manifest(job)


# ----------------------------------------------------------------------------------- talking to the API

def detect_kind(api) -> str:
    """``TrainJob`` if Kubeflow Trainer's API group is served, else ``PyTorchJob`` if that one is."""
    from kubernetes import client

    groups = {g.name: {v.version for v in g.versions} for g in client.ApisApi(api).get_api_versions().groups}
    for kind, (group, version, _, _) in KINDS.items():
        if version in groups.get(group, set()):
            return kind
    raise TrainJobError("neither Kubeflow Trainer (trainer.kubeflow.org/v1alpha1) nor the training "
                        "operator (kubeflow.org/v1) is installed in this cluster; install one, or train "
                        "on one node (nodes=1)")


def _conditions(obj: Mapping[str, Any]) -> dict[str, str]:
    return {c.get("type", ""): c.get("status", "") for c in obj.get("status", {}).get("conditions", []) or []}


def state(obj: Mapping[str, Any], kind: str) -> str:
    """``succeeded``, ``failed`` or ``running`` from a job object's conditions."""
    cond = _conditions(obj)
    done = "Complete" if kind == "TrainJob" else "Succeeded"
    if cond.get(done) == "True":
        return "succeeded"
    if cond.get("Failed") == "True":
        return "failed"
    return "running"


def submit(job: DistributedJob, api, kind: str = "auto") -> str:
    """Create the job (or adopt the one from an earlier attempt); returns the kind used."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    kind = detect_kind(api) if kind == "auto" else kind
    group, version, plural, _ = KINDS[kind]
    objects = client.CustomObjectsApi(api)
    try:
        objects.create_namespaced_custom_object(group, version, job.namespace, plural, manifest(job, kind))
        return kind
    except ApiException as e:
        if e.status != 409:
            raise TrainJobError(f"{kind} {job.namespace}/{job.name}: cannot create ({e.status} {e.reason}: "
                                f"{(e.body or '')[:500]})") from e
    existing = objects.get_namespaced_custom_object(group, version, job.namespace, plural, job.name)
    if state(existing, kind) == "failed":  # a retry: replace it; the new one resumes from the checkpoint
        objects.delete_namespaced_custom_object(group, version, job.namespace, plural, job.name,
                                                propagation_policy="Foreground")
        _wait_gone(objects, job, kind)
        objects.create_namespaced_custom_object(group, version, job.namespace, plural, manifest(job, kind))
    return kind


def _wait_gone(objects, job: DistributedJob, kind: str, timeout_s: float = 300, poll_s: float = 2) -> None:
    from kubernetes.client.exceptions import ApiException

    group, version, plural, _ = KINDS[kind]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            objects.get_namespaced_custom_object(group, version, job.namespace, plural, job.name)
        except ApiException as e:
            if e.status == 404:
                return
            raise
        time.sleep(poll_s)
    raise TrainJobError(f"{kind} {job.namespace}/{job.name}: the failed job was not deleted within {timeout_s}s")


def wait(job: DistributedJob, api, kind: str, *, timeout_s: float = 7 * 24 * 3600, poll_s: float = 20) -> None:
    """Block until the job succeeds; raise :class:`TrainJobError` when it fails or times out."""
    from kubernetes import client

    group, version, plural, _ = KINDS[kind]
    objects = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout_s
    while True:
        obj = objects.get_namespaced_custom_object(group, version, job.namespace, plural, job.name)
        s = state(obj, kind)
        if s == "succeeded":
            return
        if s == "failed":
            msgs = [c.get("message", "") for c in obj.get("status", {}).get("conditions", [])
                    if c.get("type") == "Failed"]
            raise TrainJobError(f"{kind} {job.namespace}/{job.name} failed: {'; '.join(msgs) or 'no message'}")
        if time.monotonic() > deadline:
            raise TrainJobError(f"{kind} {job.namespace}/{job.name}: not finished after {timeout_s:.0f}s")
        time.sleep(poll_s)


def run(job: DistributedJob, *, api=None, kind: str = "auto", timeout_s: float = 7 * 24 * 3600,
        poll_s: float = 20) -> str:
    """Submit (or adopt) the job and wait for it; returns the kind used."""
    api = api or api_client()
    kind = submit(job, api, kind)
    wait(job, api, kind, timeout_s=timeout_s, poll_s=poll_s)
    return kind


# ---------------------------------------------------------------------------- launching a training

# GPU nodes are commonly tainted so that only pods asking for GPUs land there.
GPU_TOLERATIONS = ({"key": GPU, "operator": "Exists", "effect": "NoSchedule"},)


def _secret_env() -> dict[str, str]:
    """S3 credentials for the training pods, from the secret named in ``TEXTREC_S3_SECRET``."""
    secret = os.environ.get("TEXTREC_S3_SECRET", "")
    if not secret:
        return {}
    return {k: f"{secret}/{k}" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def launch_multi_node(launch: MultiNodeLaunch, *, api=None, poll_s: float = 20) -> None:
    """Train on ``launch.request.nodes`` nodes as one job and wait for it (the trainer's multi-node hook).

    Every node reads the stores and meets the others' checkpoints on S3; the launching pod's plain
    settings (``PASS_ENV``) and S3 credentials (by secret reference) go with the job.
    """
    req = launch.request
    env = {k: os.environ[k] for k in PASS_ENV if os.environ.get(k)}
    env.update(req.job_env)
    job = DistributedJob(
        name=job_name(req.step.pipeline_run_id), namespace=current_namespace(),
        image=os.environ.get("TEXTREC_IMAGE", ""), nodes=req.nodes, gpus_per_node=req.gpus_per_node,
        args=tuple(launch.args), env=env, secret_env=_secret_env(), node_selector=dict(req.job_node_selector),
        tolerations=GPU_TOLERATIONS if req.gpus_per_node else ())
    run(job, api=api, poll_s=poll_s)
