"""The Kubernetes client, set up once: in a pod from its service account, elsewhere from kubeconfig."""

from __future__ import annotations

import os
from typing import Any

NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def load_config() -> None:
    """Configure the ``kubernetes`` client: the pod's service account, else ``~/.kube/config``."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def api_client() -> Any:
    """A generic API client (custom objects, dynamic resources)."""
    from kubernetes import client

    load_config()
    return client.ApiClient()


def apps_api() -> Any:
    """The apps/v1 API (Deployments)."""
    from kubernetes import client

    load_config()
    return client.AppsV1Api()


def current_namespace(default: str = "default") -> str:
    """``POD_NAMESPACE``, else the namespace of this pod's service account, else ``default``."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        with open(NAMESPACE_FILE) as f:
            return f.read().strip() or default
    except OSError:
        return default
