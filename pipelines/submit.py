"""``make pipeline-run``: compile the pipeline and start a run on Kubeflow Pipelines.

    KFP_HOST=https://kubeflow.example.com/pipeline KFP_TOKEN=... python -m pipelines.submit --profile gpu

Settings come from the environment: ``KFP_HOST`` (required: the Pipelines API endpoint),
``KFP_NAMESPACE`` (the user's profile namespace on multi-user installs), ``KFP_TOKEN`` (a bearer
token, when the endpoint needs one), ``KFP_EXPERIMENT`` (default ``textrec``), ``KFP_UI_HOST``
(where run pages live, if not on ``KFP_HOST``) and ``KFP_SERVICE_ACCOUNT`` (the service account the
run's pods use, e.g. ``textrec-pipeline`` from the platform chart; empty: the Pipelines default). ``--profile`` sends ``configs/<profile>.yaml`` as the
training config; ``--real-val URI`` (or ``REAL_VAL``) sets the ``real_val`` parameter, labelled real
lines the run is judged on (an s3:// URI or a path the steps can read); ``--param NAME=VALUE`` sets any
other pipeline parameter, e.g. ``--param train_memory=32Gi`` (a number given to a string parameter,
``--param train_cpu=8``, is sent as the string it was written as). The endpoint is checked
first, with a short timeout, so a wrong or missing ``KFP_HOST`` fails in seconds and says what to set.
The components run in ``TEXTREC_IMAGE`` (at compile time) or the default component image.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HEALTHZ = "/apis/v2beta1/healthz"
CHECK_TIMEOUT_S = 5.0


class SubmitError(RuntimeError):
    """The run cannot be submitted; the message says which setting to fix."""


def settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    """KFP_* settings from the environment; fails at once without KFP_HOST."""
    env = os.environ if environ is None else environ
    host = env.get("KFP_HOST", "").strip().rstrip("/")
    if not host:
        raise SubmitError("KFP_HOST is not set: set it to your Kubeflow Pipelines API endpoint, e.g. "
                          "KFP_HOST=https://kubeflow.example.com/pipeline (plus KFP_TOKEN if it needs a bearer "
                          "token and KFP_NAMESPACE on a multi-user install), or run `make local` instead")
    if not host.startswith(("http://", "https://")):
        raise SubmitError(f"KFP_HOST={host!r}: expected an http:// or https:// URL")
    return {"host": host, "namespace": env.get("KFP_NAMESPACE", ""), "token": env.get("KFP_TOKEN", ""),
            "experiment": env.get("KFP_EXPERIMENT", "") or "textrec", "ui_host": env.get("KFP_UI_HOST", ""),
            "service_account": env.get("KFP_SERVICE_ACCOUNT", "")}


def check_endpoint(host: str, token: str = "", timeout: float = CHECK_TIMEOUT_S) -> None:
    """One quick request to the healthz endpoint, so a bad endpoint fails now, not after retries."""
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = requests.get(host + HEALTHZ, headers=headers, timeout=timeout)
    except requests.RequestException as e:
        raise SubmitError(f"cannot reach Kubeflow Pipelines at KFP_HOST={host} ({type(e).__name__}): check "
                          "KFP_HOST (port-forward with `kubectl -n kubeflow port-forward svc/ml-pipeline-ui "
                          "8080:80` and use http://127.0.0.1:8080)") from e
    if r.status_code in (401, 403):
        raise SubmitError(f"Kubeflow Pipelines at {host} refused the request ({r.status_code}): set KFP_TOKEN "
                          "to a valid bearer token (and KFP_NAMESPACE to your profile namespace)")
    if r.status_code >= 400:
        raise SubmitError(f"Kubeflow Pipelines at {host} answered {r.status_code} on {HEALTHZ}: is KFP_HOST the "
                          "Pipelines API endpoint?")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["epochs=3", "data_source=iam:s3://b/iam"]`` -> typed values (YAML scalars)."""
    import yaml

    params: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SubmitError(f"--param {item!r}: expected NAME=VALUE")
        params[name.strip()] = yaml.safe_load(value) if value.strip() else ""
    return params


def arguments(profile: str, params: dict[str, Any]) -> dict[str, Any]:
    """The run's pipeline arguments: the profile's config and data size, then explicit params."""
    from pipelines.local import PROFILES
    from pipelines.textrec_pipeline import textrec_pipeline
    from textrec.config import read_yaml

    if profile not in PROFILES:
        raise SubmitError(f"profile {profile!r}: expected one of {sorted(PROFILES)}")
    prof = PROFILES[profile]
    args: dict[str, Any] = {"train_config": Path(prof.config).read_text(),
                            "synth_lines": prof.synth_lines(read_yaml(prof.config)),
                            "gpus_per_node": prof.gpus}
    inputs = textrec_pipeline.component_spec.inputs or {}
    unknown = sorted(set(params) - set(inputs))
    if unknown:
        raise SubmitError(f"unknown pipeline parameter(s) {unknown}; the pipeline takes {sorted(inputs)}")
    # YAML reads `train_cpu=8` as a number; the API refuses a number for a string parameter.
    typed = {k: str(v) if inputs[k].type == "String" and not isinstance(v, str) else v for k, v in params.items()}
    return {**args, **typed}


def submit(cfg: dict[str, str], args: dict[str, Any], run_name: str) -> str:
    """Compile, create the run in the experiment; returns the run's URL."""
    import kfp

    from pipelines.textrec_pipeline import compile_pipeline

    with tempfile.TemporaryDirectory(prefix="textrec-kfp-") as tmp:
        package = compile_pipeline(Path(tmp) / "textrec_pipeline.yaml")
        client = kfp.Client(host=cfg["host"], namespace=cfg["namespace"] or "kubeflow",
                            existing_token=cfg["token"] or None)
        result = client.create_run_from_pipeline_package(
            str(package), arguments=args, run_name=run_name, experiment_name=cfg["experiment"],
            namespace=cfg["namespace"] or None, service_account=cfg.get("service_account") or None)
    return f"{(cfg['ui_host'] or cfg['host']).rstrip('/')}/#/runs/details/{result.run_id}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipelines.submit", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default=os.environ.get("PROFILE") or "cpu")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a pipeline parameter, e.g. --param nodes=2 (repeatable)")
    p.add_argument("--real-val", default=os.environ.get("REAL_VAL") or "",
                   help="labelled real lines (TSV or IAM lines folder, usually an s3:// URI) to judge the run on")
    p.add_argument("--run-name", default="")
    a = p.parse_args(argv)
    try:
        cfg = settings()
        params = parse_params(a.param)
        if a.real_val:
            params.setdefault("real_val", a.real_val)
        args = arguments(a.profile, params)
        check_endpoint(cfg["host"], cfg["token"])
        name = a.run_name or f"textrec-{a.profile}-{dt.datetime.now():%Y%m%d-%H%M%S}"
        url = submit(cfg, args, name)
    except SubmitError as e:
        print(f"pipeline-run: {e}", file=sys.stderr)
        return 2
    print(f"submitted {name} to experiment {cfg['experiment']!r}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
