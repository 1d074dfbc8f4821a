"""MLflow runs: one parent run per pipeline run, a child run per step, lineage tags.

The parent run carries the pipeline run id as a tag; each step (train, evaluate, register, ...) is a
child run under it, tagged with its step name, the git commit and the pipeline run id, so one pipeline
run reads as one tree in the MLflow UI::

    with step_run("train", pipeline_run_id, tracking_uri=uri, system_metrics=True) as run_id:
        train(cfg, out, callbacks=[MlflowCallback(run_id, uri)])

mlflow is imported inside the functions: the training loop and serving import this package without
paying for mlflow unless they track.
"""

from __future__ import annotations

import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from textrec.metrics import numeric

EXPERIMENT = "textrec"
TAG_PIPELINE_RUN = "textrec.pipeline_run_id"
TAG_STEP = "textrec.step"
TAG_DATASET = "textrec.dataset_hash"
TAG_EVAL_SET = "textrec.eval_set_hash"
TAG_TEST_CER = "textrec.test_cer"
TAG_REAL_VAL_SET = "textrec.real_val_hash"  # the labelled real set a model was also scored on
TAG_REAL_VAL_CER = "textrec.real_val_cer"
TAG_GIT = "mlflow.source.git.commit"
TAG_PARENT = "mlflow.parentRunId"
PARENT_STEP = "pipeline"
# What kind of experiment this is, for MLflow (untagged, it infers one). The UI of MLflow 3.17 still
# opens an experiment on the GenAI overview whatever its kind: the view is the browser's choice
# (``workflowType``, kept in local storage), so links into the UI name it (:func:`experiment_url`).
TAG_EXPERIMENT_KIND, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_WORKFLOW = "workflowType=machine_learning"  # the UI's "Model training" view
SYSTEM_METRICS_INTERVAL_S = 5.0  # seconds; TEXTREC_SYSTEM_METRICS_INTERVAL overrides


@dataclass(frozen=True)
class StepTracking:
    """Where a pipeline step reports: its pipeline run, the MLflow server ('' = MLFLOW_TRACKING_URI)
    and the experiment."""

    pipeline_run_id: str = "local"
    tracking_uri: str = ""
    experiment: str = EXPERIMENT

    @property
    def uri(self) -> str | None:
        return self.tracking_uri or None


class TrackingError(RuntimeError):
    """MLflow cannot be reached or the registry is not in the expected state; the message says what."""


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The URI given, else ``MLFLOW_TRACKING_URI``; fails with what to set when neither is there."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        raise TrackingError("no MLflow tracking URI: pass one (e.g. http://127.0.0.1:5000) or set "
                            "MLFLOW_TRACKING_URI")
    return uri


def mlflow_client(tracking_uri: str | None = None):
    import mlflow
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The source commit: ``TEXTREC_GIT_COMMIT`` (set when an image is built), else ``git``, else unknown."""
    if os.environ.get("TEXTREC_GIT_COMMIT"):
        return os.environ["TEXTREC_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI, in its "Model training" view (not the GenAI overview).

    >>> experiment_url("http://127.0.0.1:5000/", "3")
    'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning'
    """
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs?{UI_WORKFLOW}"


def ensure_experiment(name: str = EXPERIMENT, artifact_location: str | None = None,
                      tracking_uri: str | None = None) -> str:
    """The experiment's id, creating it (with ``artifact_location``, e.g. ``s3://bucket/mlflow``) if new.

    The experiment is marked as one of model training (:data:`EXPERIMENT_KIND`), also when an older
    one lacks the mark, unless someone gave it another kind.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location or None,
                                            tags={TAG_EXPERIMENT_KIND: EXPERIMENT_KIND})
        except MlflowException:  # another step created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if TAG_EXPERIMENT_KIND not in exp.tags:
        client.set_experiment_tag(exp.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
    if artifact_location and exp.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
        warnings.warn(f"MLflow experiment {name!r} already stores artifacts at {exp.artifact_location}, "
                      f"not {artifact_location}; an experiment's location cannot change", stacklevel=2)
    return exp.experiment_id


def _check_id(pipeline_run_id: str) -> str:
    if not pipeline_run_id or any(c in pipeline_run_id for c in "'\"`\\"):
        raise TrackingError(f"pipeline run id {pipeline_run_id!r}: expected a non-empty id without quotes")
    return pipeline_run_id


def _find_run(client, experiment_id: str, pipeline_run_id: str, step: str):
    query = f"tags.`{TAG_PIPELINE_RUN}` = '{pipeline_run_id}' AND tags.`{TAG_STEP}` = '{step}'"
    runs = client.search_runs([experiment_id], filter_string=query, max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def parent_run(pipeline_run_id: str, *, experiment: str = EXPERIMENT, artifact_location: str | None = None,
               tracking_uri: str | None = None) -> str:
    """The parent run of a pipeline run (found by its tag, created the first time); returns its id."""
    client = mlflow_client(tracking_uri)
    exp_id = ensure_experiment(experiment, artifact_location, tracking_uri)
    found = _find_run(client, exp_id, _check_id(pipeline_run_id), PARENT_STEP)
    if found is not None:
        return found.info.run_id
    tags = {TAG_PIPELINE_RUN: pipeline_run_id, TAG_STEP: PARENT_STEP, TAG_GIT: git_commit()}
    return client.create_run(exp_id, run_name=f"pipeline-{pipeline_run_id}", tags=tags).info.run_id


@contextmanager
def step_run(step: str, pipeline_run_id: str, *, tracking_uri: str | None = None,
             experiment: str = EXPERIMENT, artifact_location: str | None = None,
             system_metrics: bool = False, resume: bool = False,
             tags: Mapping[str, str] | None = None) -> Iterator[str]:
    """A child run for one pipeline step, active for the ``with`` body; yields its run id.

    ``resume=True`` reopens this step's previous run in the same pipeline run (a retried training
    step continues its metric history). ``system_metrics`` samples CPU/GPU/memory while it runs.
    The parent's status follows the step: RUNNING during it, then FINISHED or FAILED.
    """
    import mlflow

    client = mlflow_client(tracking_uri)
    exp_id = ensure_experiment(experiment, artifact_location, tracking_uri)
    parent = parent_run(pipeline_run_id, experiment=experiment, tracking_uri=tracking_uri)
    previous = _find_run(client, exp_id, pipeline_run_id, step) if resume else None
    all_tags = {TAG_PIPELINE_RUN: pipeline_run_id, TAG_STEP: step, TAG_PARENT: parent,
                TAG_GIT: git_commit(), **(tags or {})}
    client.update_run(parent, status="RUNNING")
    if system_metrics:  # the default 10 s interval misses short steps entirely
        mlflow.set_system_metrics_sampling_interval(
            float(os.environ.get("TEXTREC_SYSTEM_METRICS_INTERVAL", SYSTEM_METRICS_INTERVAL_S)))
    status = "FAILED"
    run_id = previous.info.run_id if previous is not None else None
    # The step's experiment is the process's active one: MLflow refuses to reopen a run of another
    # experiment than the active one (set by an earlier step_run of another experiment in this process).
    mlflow.set_experiment(experiment_id=exp_id)
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id,
                          run_name=None if run_id else step, tags=all_tags,
                          log_system_metrics=system_metrics) as run:
        try:
            yield run.info.run_id
            status = "FINISHED"
        finally:
            client.set_terminated(parent, status=status)


def log_to_parent(run_id: str, metrics: Mapping[str, float], *, tracking_uri: str | None = None) -> None:
    """Headline metrics (test CER, say) on the pipeline's parent run too, where runs are compared."""
    client = mlflow_client(tracking_uri)
    parent = client.get_run(run_id).data.tags.get(TAG_PARENT)
    if parent:
        for k, v in numeric(metrics).items():
            client.log_metric(parent, k, v)


def step_seconds(pipeline_run_id: str, *, experiment: str = EXPERIMENT,
                 tracking_uri: str | None = None) -> dict[str, float]:
    """Wall time of each finished step run of a pipeline run, by step name."""
    client = mlflow_client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    query = f"tags.`{TAG_PIPELINE_RUN}` = '{_check_id(pipeline_run_id)}' AND tags.`{TAG_STEP}` != '{PARENT_STEP}'"
    return {r.data.tags[TAG_STEP]: (r.info.end_time - r.info.start_time) / 1000.0
            for r in client.search_runs([exp.experiment_id], filter_string=query)
            if r.info.end_time and r.info.start_time}


def set_lineage(run_id: str, tags: Mapping[str, str], *, tracking_uri: str | None = None,
                also_parent: bool = True) -> None:
    """Tag a run (and its parent) with lineage such as the dataset hash."""
    client = mlflow_client(tracking_uri)
    targets = [run_id]
    parent = client.get_run(run_id).data.tags.get(TAG_PARENT)
    if also_parent and parent:
        targets.append(parent)
    for rid in targets:
        for k, v in tags.items():
            client.set_tag(rid, k, str(v))
