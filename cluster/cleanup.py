"""What a pipeline run leaves on the cluster when it fails: its multi-node training job.

A run's TrainJob/PyTorchJob is named after the pipeline run (``cluster.trainjob.job_name``), so the
pipeline's exit task finds it again without being told, and deletes only that run's job. A job that
keeps running after its train step is gone holds its nodes (GPUs) with nobody waiting for the result.

The caller's service account needs ``delete`` on ``trainjobs`` / ``pytorchjobs``.
"""

from __future__ import annotations

from typing import Any

from cluster.client import api_client, current_namespace
from cluster.trainjob import KINDS, TrainJobError, detect_kind, job_name


def delete_run_job(pipeline_run_id: str, *, namespace: str = "", api: Any = None) -> str | None:
    """Delete the training job of ``pipeline_run_id`` (its pods first); returns what was deleted
    (``"TrainJob ns/name"``), or None when there was none or no training operator is installed."""
    from kubernetes import client

    api = api or api_client()
    try:
        kind = detect_kind(api)
    except TrainJobError:  # no operator, so no job could have been made
        return None
    group, version, plural, _ = KINDS[kind]
    namespace, name = namespace or current_namespace(), job_name(pipeline_run_id)
    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(group, version, namespace, plural, name,
                                                                     propagation_policy="Foreground")
    except client.ApiException as e:
        if e.status == 404:  # it never started, or is gone already
            return None
        raise
    return f"{kind} {namespace}/{name}"
