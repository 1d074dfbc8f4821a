"""Submit a sweep file as a Katib Experiment (``make sweep-run``), or print its manifest.

    python -m cluster.katib --config sweeps/cpu.yaml [--dry-run] [--namespace NS] [--image IMAGE]

The manifest is :func:`textrec.sweep.katib.experiment`; this module only talks to the API server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from textrec.sweep.katib import GROUP, PLURAL, VERSION, experiment


class KatibError(RuntimeError):
    """The Experiment could not be created; the message says why and what to do."""


def submit(manifest: Mapping[str, Any], api=None) -> dict[str, Any]:
    """Create the Experiment; returns what the API server stored. An Experiment of the same name
    is not replaced (Katib cannot change a running one): delete it or rename the sweep."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from cluster.client import api_client

    objects = client.CustomObjectsApi(api or api_client())
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    try:
        return objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, dict(manifest))
    except ApiException as e:
        if e.status == 409:
            raise KatibError(f"Experiment {namespace}/{name} exists already: `kubectl delete experiment -n "
                             f"{namespace} {name}` or give the sweep another name") from e
        if e.status == 404:
            raise KatibError(f"no Katib on this cluster ({GROUP}/{VERSION} {PLURAL} not found in namespace "
                             f"{namespace}): install Katib first") from e
        raise KatibError(f"creating Experiment {namespace}/{name} failed: {e.status} {e.reason}: {e.body}") from e


def main(argv: Sequence[str] | None = None, api=None) -> int:
    import yaml

    from textrec.sweep.spec import SweepError, load_spec

    p = argparse.ArgumentParser(prog="python -m cluster.katib", description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, required=True, help="sweep file (sweeps/cpu.yaml, ...)")
    p.add_argument("--namespace", default="", help="default: the file's katib.namespace")
    p.add_argument("--image", default="", help="trial image (default: katib.image, else TEXTREC_IMAGE, else the release's)")
    p.add_argument("--trials", type=int, default=0, help="maxTrialCount (default: the file's trials)")
    p.add_argument("--dry-run", action="store_true", help="print the manifest instead of submitting it")
    a = p.parse_args(argv)
    try:
        manifest = experiment(load_spec(a.config), image=a.image, namespace=a.namespace, trials=a.trials)
        if a.dry_run:
            print(yaml.safe_dump(manifest, sort_keys=False), end="")
            return 0
        created = submit(manifest, api)
    except (SweepError, KatibError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    meta = created.get("metadata", manifest["metadata"])
    print(f"created Experiment {meta['namespace']}/{meta['name']}: kubectl get experiment -n {meta['namespace']} "
          f"{meta['name']}; trials: kubectl get trials -n {meta['namespace']} -l katib.kubeflow.org/experiment="
          f"{meta['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
