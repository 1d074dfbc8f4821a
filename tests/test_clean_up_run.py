"""The pipeline's exit task, ``clean_up_run``: a run that did not succeed has its MLflow parent run
closed as FAILED (KILLED when cancelled) and its multi-node training job deleted; a successful run is
left alone. The whole pipeline with its exit handler also runs under kfp.local.

MLflow is a real server on 127.0.0.1. No Kubernetes API server can run here, so the job deletion
(``cluster.cleanup``) talks to a mocked API: a small HTTP server on 127.0.0.1 that answers discovery, GET and DELETE for
custom objects and records the requests.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from fixtures.http_server import JsonHandler
from kfp import dsl

from cluster import trainjob
from components import clean_up_run
from textrec import tracking

TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs"
PYTORCHJOBS = "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs"


def final_status(state: str, message: str | None = None) -> dsl.PipelineTaskFinalStatus:
    return dsl.PipelineTaskFinalStatus(state=state, pipeline_job_resource_name="runs/r",
                                       pipeline_task_name="exit-handler-1", error_code=None if state ==
                                       "SUCCEEDED" else 1, error_message=message)


def parent_runs(uri: str, experiment: str) -> list:
    client = tracking.mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_STEP}` = '{tracking.PARENT_STEP}'")


class FakeApi:
    """The mocked Kubernetes API: the CRD groups it serves, its objects, and the requests it saw."""

    def __init__(self) -> None:
        self.groups: dict[str, str] = {}
        self.objects: set[str] = set()
        self.requests: list[tuple[str, str]] = []


def _handler(api: FakeApi) -> type[JsonHandler]:
    class Handler(JsonHandler):
        def do_GET(self) -> None:
            api.requests.append(("GET", self.path))
            groups = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                       "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in api.groups.items()]
            self.reply_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

        def do_DELETE(self) -> None:
            api.requests.append(("DELETE", self.path))
            path = self.path.split("?")[0]
            if path not in api.objects:
                return self.reply_json(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            api.objects.discard(path)
            self.reply_json(200, {"kind": "Status", "status": "Success"})

    return Handler


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApi]:
    """The mocked API, as the client ``cluster.client.api_client`` returns, in namespace ``ml``."""
    from kubernetes import client

    api = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr("cluster.cleanup.api_client", lambda: client.ApiClient(config))
    monkeypatch.setenv("POD_NAMESPACE", "ml")
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


def run_exit_task(status: dsl.PipelineTaskFinalStatus, *, nodes: int, run_id: str, uri: str, experiment: str) -> None:
    clean_up_run.python_func(status=status, nodes=nodes, pipeline_run_id=run_id, mlflow_uri=uri,
                             experiment=experiment)


def test_a_failed_run_closes_its_mlflow_parent_as_failed(mlflow_server):
    experiment, run_id = f"exit-{uuid.uuid4().hex[:6]}", f"run-{uuid.uuid4().hex[:8]}"
    parent = tracking.parent_run(run_id, experiment=experiment, tracking_uri=mlflow_server.url)
    tracking.mlflow_client(mlflow_server.url).update_run(parent, status="RUNNING")  # as a killed step left it

    run_exit_task(final_status("FAILED", "train-model: OOMKilled"), nodes=1, run_id=run_id, uri=mlflow_server.url,
                  experiment=experiment)
    [run] = parent_runs(mlflow_server.url, experiment)
    assert run.info.run_id == parent and run.info.status == "FAILED" and run.info.end_time


def test_a_cancelled_run_is_killed_and_a_run_with_no_parent_yet_gets_one(mlflow_server):
    experiment, run_id = f"exit-{uuid.uuid4().hex[:6]}", f"run-{uuid.uuid4().hex[:8]}"
    run_exit_task(final_status("CANCELLED"), nodes=1, run_id=run_id, uri=mlflow_server.url, experiment=experiment)
    [run] = parent_runs(mlflow_server.url, experiment)
    assert run.info.status == "KILLED" and run.data.tags[tracking.TAG_PIPELINE_RUN] == run_id


def test_a_successful_run_is_left_as_its_steps_recorded_it(mlflow_server, fake_api):
    experiment, run_id = f"exit-{uuid.uuid4().hex[:6]}", f"run-{uuid.uuid4().hex[:8]}"
    parent = tracking.parent_run(run_id, experiment=experiment, tracking_uri=mlflow_server.url)
    tracking.mlflow_client(mlflow_server.url).set_terminated(parent, status="FINISHED")
    fake_api.groups = {"trainer.kubeflow.org": "v1alpha1"}
    fake_api.objects.add(f"{TRAINJOBS}/{trainjob.job_name(run_id)}")

    run_exit_task(final_status("SUCCEEDED"), nodes=2, run_id=run_id, uri=mlflow_server.url, experiment=experiment)
    assert [r.info.status for r in parent_runs(mlflow_server.url, experiment)] == ["FINISHED"]
    assert fake_api.requests == []  # a finished job is no orphan: its logs stay


@pytest.mark.parametrize("groups,jobs", [({"trainer.kubeflow.org": "v1alpha1", "kubeflow.org": "v1"}, TRAINJOBS),
                                         ({"kubeflow.org": "v1"}, PYTORCHJOBS)])
def test_a_failed_multi_node_run_deletes_its_job(mlflow_server, fake_api, groups, jobs):
    experiment, run_id = f"exit-{uuid.uuid4().hex[:6]}", f"run-{uuid.uuid4().hex[:8]}"
    fake_api.groups = groups
    path = f"{jobs}/{trainjob.job_name(run_id)}"
    fake_api.objects.add(path)

    run_exit_task(final_status("FAILED"), nodes=2, run_id=run_id, uri=mlflow_server.url, experiment=experiment)
    assert ("DELETE", f"{path}?propagationPolicy=Foreground") in fake_api.requests
    assert not fake_api.objects  # and the job of another run would have been left: only this name was asked for
    assert [r.info.status for r in parent_runs(mlflow_server.url, experiment)] == ["FAILED"]


def test_a_job_that_never_started_is_no_error(mlflow_server, fake_api):
    experiment, run_id = f"exit-{uuid.uuid4().hex[:6]}", f"run-{uuid.uuid4().hex[:8]}"
    fake_api.groups = {"trainer.kubeflow.org": "v1alpha1"}
    run_exit_task(final_status("FAILED"), nodes=4, run_id=run_id, uri=mlflow_server.url, experiment=experiment)
    assert [m for m, _ in fake_api.requests] == ["GET", "DELETE"]  # discovery, then the delete's 404
    assert [r.info.status for r in parent_runs(mlflow_server.url, experiment)] == ["FAILED"]


def test_deleting_a_runs_job_says_what_it_deleted_and_needs_no_operator(fake_api):
    from cluster.cleanup import delete_run_job

    fake_api.groups = {"kubeflow.org": "v1"}
    name = trainjob.job_name("run-7")
    fake_api.objects.update({f"{PYTORCHJOBS}/{name}", f"{PYTORCHJOBS}/{trainjob.job_name('run-8')}"})
    assert delete_run_job("run-7") == f"PyTorchJob ml/{name}"
    assert fake_api.objects == {f"{PYTORCHJOBS}/{trainjob.job_name('run-8')}"}  # another run's job stays
    assert delete_run_job("run-7") is None  # gone already
    fake_api.groups = {"apps": "v1"}
    assert delete_run_job("run-8") is None  # no training operator: no job could have been made
    assert fake_api.requests[-1][0] == "GET"


def test_the_pipeline_runs_its_exit_task_under_kfp_local_when_a_step_fails(mlflow_server, tmp_path, monkeypatch):
    from kfp import local

    from pipelines.textrec_pipeline import textrec_pipeline_with_clean_up

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(local.config.LocalExecutionConfig, "instance", None)  # this test's settings, then none
    experiment = f"exit-{uuid.uuid4().hex[:6]}"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=False)
    missing = tmp_path / "no-such-iam-lines"
    textrec_pipeline_with_clean_up(data_source=f"iam:{missing}", mlflow_uri=mlflow_server.url, experiment=experiment,
                                   serving_target="none")
    [run] = parent_runs(mlflow_server.url, experiment)  # ingest failed before any step tracked: made to say so
    assert run.info.status == "FAILED"
    outputs = [json.loads(p.read_text()) for p in Path(tmp_path / "kfp").rglob("clean-up-run/executor_output.json")]
    assert outputs, "the exit task did not run"
