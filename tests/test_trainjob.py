"""Training on a cluster: the TrainJob / PyTorchJob manifests, creating and watching them, and a
retried training step resuming from the pipeline run's checkpoint on S3.

No Kubernetes API server can run here, so the creation tests point the real ``kubernetes`` client at
a mocked API: a small HTTP server on 127.0.0.1 that answers the few endpoints the client uses
(discovery, create, get, delete) and records the requests. ``kubernetes_validate`` has no schemas for
custom resources, so the manifests' structure is asserted, and their pod-level parts (containers,
env, resources, placement) are validated as core/v1 objects.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate
import pytest
from fixtures.http_server import JsonHandler

from cluster import trainjob
from cluster.trainjob import DistributedJob, TrainJobError
from textrec.data.sources import synthesize_dataset
from textrec.data.store import find_line_stores
from textrec.tracking import StepTracking
from textrec.training.job import TrainRequest, train_from_request
from textrec.training.remote import checkpoint_location

REPO = Path(__file__).resolve().parents[1]
K8S = "1.30.0"
TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def job(**changes) -> DistributedJob:
    base = dict(name=trainjob.job_name("run-abc"), namespace="ml", image="registry.example/textrec:1.0",
                args=("--out", "/tmp/train", "--run-id", "r1"), nodes=4, gpus_per_node=8,
                env={"MLFLOW_TRACKING_URI": "http://mlflow:5000"},
                secret_env={"AWS_SECRET_ACCESS_KEY": "textrec-s3/AWS_SECRET_ACCESS_KEY"},
                node_selector={"nvidia.com/gpu.present": "true"}, tolerations=(TOLERATION,),
                service_account="textrec-train")
    return DistributedJob(**{**base, **changes})


def validate_pod_spec(spec: dict) -> None:
    """The pod-level part of a manifest, as a strict core/v1 PodTemplate."""
    doc = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "check"},
           "template": {"spec": spec}}
    kubernetes_validate.validate(doc, K8S, strict=True)


# ----------------------------------------------------------------------------------------- manifests

def test_trainjob_runs_torchrun_on_every_node_with_gpus_and_placement():
    m = trainjob.trainjob_manifest(job())
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    assert m["metadata"]["namespace"] == "ml" and re.fullmatch(r"textrec-train-[0-9a-f]{12}", m["metadata"]["name"])
    spec = m["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed", "apiGroup": "trainer.kubeflow.org",
                                  "kind": "ClusterTrainingRuntime"}
    t = spec["trainer"]
    assert t["numNodes"] == 4 and t["numProcPerNode"] == 8
    assert t["command"][:3] == ["torchrun", "-m", "textrec.training"]
    assert t["command"][3:] == ["--out", "/tmp/train", "--run-id", "r1"]
    assert t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert t["resourcesPerNode"]["requests"]["nvidia.com/gpu"] == "8"
    (patch,) = spec["runtimePatches"]
    assert patch["manager"] == "textrec"
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = node["template"]["spec"]["template"]["spec"]
    assert node["name"] == "node"
    assert pod == {"nodeSelector": {"nvidia.com/gpu.present": "true"}, "tolerations": [TOLERATION],
                   "serviceAccountName": "textrec-train"}
    container = {"name": "node", "image": t["image"], "command": t["command"], "env": t["env"],
                 "resources": t["resourcesPerNode"]}
    validate_pod_spec({"containers": [container], **pod})


def test_trainjob_env_passes_values_and_secret_references_never_secrets():
    env = trainjob.trainjob_manifest(job())["spec"]["trainer"]["env"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"} in env
    secret = next(e for e in env if e["name"] == "AWS_SECRET_ACCESS_KEY")
    assert secret == {"name": "AWS_SECRET_ACCESS_KEY",
                      "valueFrom": {"secretKeyRef": {"name": "textrec-s3", "key": "AWS_SECRET_ACCESS_KEY"}}}


def test_cpu_only_trainjob_asks_for_no_gpu_and_has_no_patch_without_placement():
    m = trainjob.trainjob_manifest(job(gpus_per_node=0, node_selector={}, tolerations=(), service_account=""))
    t = m["spec"]["trainer"]
    assert "nvidia.com/gpu" not in t["resourcesPerNode"]["limits"] and t["numProcPerNode"] == 1
    assert "runtimePatches" not in m["spec"]


@pytest.mark.parametrize("nodes", [1, 3])
def test_pytorchjob_has_one_master_and_the_rest_workers(nodes):
    m = trainjob.pytorchjob_manifest(job(nodes=nodes))
    assert m["apiVersion"] == "kubeflow.org/v1" and m["kind"] == "PyTorchJob"
    specs = m["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1
    assert specs.get("Worker", {}).get("replicas", 0) == nodes - 1
    assert m["spec"]["nprocPerNode"] == "8"
    for replica in specs.values():
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch"  # the operator finds the training container by this name
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert pod["tolerations"] == [TOLERATION]
        validate_pod_spec(pod)


@pytest.mark.parametrize(("changes", "message"), [
    ({"name": "Textrec_Train"}, "DNS label"),
    ({"nodes": 0}, "nodes must be >= 1"),
    ({"secret_env": {"X": "no-key"}}, "secret-name/key"),
])
def test_bad_job_settings_are_rejected_with_the_reason(changes, message):
    with pytest.raises(ValueError, match=message):
        job(**changes)


def test_job_name_is_stable_per_pipeline_run():
    assert trainjob.job_name("run-1") == trainjob.job_name("run-1") != trainjob.job_name("run-2")


# ------------------------------------------------------------------------- creation, mocked API server

class FakeApi:
    """A mocked Kubernetes API: which CRD groups exist, the stored objects, and what was asked."""

    def __init__(self, groups: dict[str, str], finish: str = "Complete", polls_before_done: int = 1) -> None:
        self.groups, self.finish, self.polls_before_done = groups, finish, polls_before_done
        self.objects: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.polls = 0


def _handler(api: FakeApi):
    class Handler(JsonHandler):
        _reply = JsonHandler.reply_json

        def do_GET(self) -> None:
            api.requests.append(("GET", self.path))
            if self.path.rstrip("/") == "/apis":
                groups = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                           "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
                          for g, v in api.groups.items()]
                return self._reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            obj = api.objects.get(self.path)
            if obj is None:
                return self._reply(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            api.polls += 1
            if api.polls > api.polls_before_done and "status" not in obj:
                obj["status"] = {"conditions": [{"type": api.finish, "status": "True", "message": "exit 1"}]}
            self._reply(200, obj)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            api.requests.append(("POST", self.path))
            key = f"{self.path}/{body['metadata']['name']}"
            if key in api.objects:
                return self._reply(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
            api.objects[key] = body
            self._reply(201, body)

        def do_DELETE(self) -> None:
            api.requests.append(("DELETE", self.path))
            api.objects.pop(self.path.split("?")[0], None)
            self._reply(200, {"kind": "Status", "status": "Success"})

    return Handler


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeApi, object]]:
    from kubernetes import client

    api = FakeApi({})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = client.Configuration()
    config.host = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield api, client.ApiClient(config)
    finally:
        server.shutdown()
        server.server_close()


def test_creates_a_trainjob_where_kubeflow_trainer_is_installed_and_waits_for_it(fake_api):
    api, client = fake_api
    api.groups = {"trainer.kubeflow.org": "v1alpha1", "kubeflow.org": "v1"}
    j = job()
    assert trainjob.run(j, api=client, poll_s=0.01) == "TrainJob"
    path = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs/{j.name}"
    assert api.objects[path]["spec"] == trainjob.trainjob_manifest(j)["spec"]
    assert ("POST", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs") in api.requests
    assert api.polls == 2  # one poll while running, one that saw it complete


def test_falls_back_to_pytorchjob_where_only_the_training_operator_is_installed(fake_api):
    api, client = fake_api
    api.groups = {"kubeflow.org": "v1"}
    api.finish = "Succeeded"
    j = job(nodes=2)
    assert trainjob.run(j, api=client, poll_s=0.01) == "PyTorchJob"
    body = api.objects[f"/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs/{j.name}"]
    assert body["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1


def test_no_training_operator_says_what_to_install(fake_api):
    api, client = fake_api
    api.groups = {"apps": "v1"}
    with pytest.raises(TrainJobError, match="neither Kubeflow Trainer .* nor the training operator"):
        trainjob.run(job(), api=client, poll_s=0.01)


def test_a_failed_job_is_reported_with_its_message(fake_api):
    api, client = fake_api
    api.groups = {"trainer.kubeflow.org": "v1alpha1"}
    api.finish = "Failed"
    with pytest.raises(TrainJobError, match=r"TrainJob ml/textrec-train-\w+ failed: exit 1"):
        trainjob.run(job(), api=client, poll_s=0.01)


def test_a_retry_replaces_the_failed_job_of_the_same_pipeline_run(fake_api):
    api, client = fake_api
    api.groups = {"trainer.kubeflow.org": "v1alpha1"}
    j = job()
    path = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs/{j.name}"
    api.objects[path] = {**trainjob.trainjob_manifest(j),
                         "status": {"conditions": [{"type": "Failed", "status": "True"}]}}
    assert trainjob.submit(j, client) == "TrainJob"
    assert [r for r in api.requests if r[0] != "GET"] == [
        ("POST", path.rsplit("/", 1)[0]), ("DELETE", f"{path}?propagationPolicy=Foreground"),
        ("POST", path.rsplit("/", 1)[0])]  # the old pods go before the new job starts
    assert "status" not in api.objects[path]  # the new job, not the failed one


def test_a_retry_adopts_a_job_that_is_still_running(fake_api):
    api, client = fake_api
    api.groups = {"trainer.kubeflow.org": "v1alpha1"}
    j = job()
    path = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/ml/trainjobs/{j.name}"
    api.objects[path] = trainjob.trainjob_manifest(j)
    assert trainjob.submit(j, client) == "TrainJob"
    assert not [r for r in api.requests if r[0] == "DELETE"]


# ---------------------------------------------------------------------------- resume on retry (S3)

# Each attempt is a fresh interpreter, as a retried step is a fresh pod: only the S3 prefix carries over.
ATTEMPT = """
import json, sys
from pathlib import Path
from textrec.training.callbacks import Callback
from textrec.training.job import train_config, train_here

class CrashAtEpoch(Callback):  # a lost node, once an epoch's checkpoint is written
    def on_epoch_start(self, trainer, epoch):
        if epoch == int(sys.argv[4]):
            raise SystemExit("node lost")

stores, out, remote = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
cfg = train_config(Path("configs/smoke.yaml").read_text(), stores, overrides=["loop.threads=1"])
metrics = train_here(cfg, out, checkpoint_uri=remote, callbacks=[CrashAtEpoch()])
print(json.dumps({"epochs": metrics["epochs"]}))
"""


def attempt(stores: list[str], out: Path, remote: str, crash_at_epoch: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", ATTEMPT, json.dumps(stores), str(out), remote,
                           str(crash_at_epoch)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_a_retried_training_resumes_from_the_runs_checkpoint_on_s3(tmp_path, s3):
    store = synthesize_dataset(120, tmp_path / "none", tmp_path / "lines", seed=3)
    stores = [str(p) for p in find_line_stores(tmp_path / "lines")]
    assert store["lines"] > 100
    remote = checkpoint_location(s3.uri("checkpoints"), f"pipeline-{uuid.uuid4().hex[:6]}")

    first = attempt(stores, tmp_path / "attempt1", remote, crash_at_epoch=1)
    assert first.returncode != 0 and "node lost" in first.stderr, first.stderr[-2000:]
    first_epoch = _history(tmp_path / "attempt1")
    assert len(first_epoch) == 1

    second = attempt(stores, tmp_path / "attempt2", remote, crash_at_epoch=-1)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(second.stdout.strip().splitlines()[-1]) == {"epochs": 2}
    resumed = _history(tmp_path / "attempt2")
    assert resumed[0] == first_epoch[0]  # epoch 1 came from the checkpoint, not from training again
    assert "resumed from" in second.stdout + second.stderr
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=remote.split("/", 3)[3])
            .get("Contents", [])}
    assert any(k.endswith("/model.pt") for k in keys) and any(k.endswith("checkpoints/last.pt") for k in keys)


def _history(out: Path) -> list[dict]:
    from textrec.rundir import RunDir
    from textrec.training.checkpoint import load_checkpoint

    return load_checkpoint(RunDir(out).last)["history"]


@pytest.mark.slow
def test_several_gpus_in_one_pod_train_under_torchrun_and_only_rank_0_tracks(tmp_path, mlflow_server, monkeypatch):
    """gpus_per_node=2 starts torchrun with two ranks; on this CPU machine gloo stands in for NCCL."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    synthesize_dataset(120, tmp_path / "none", tmp_path / "lines", seed=5)
    stores = tuple(str(p) for p in find_line_stores(tmp_path / "lines"))
    request = TrainRequest(stores=stores, config=(REPO / "configs/smoke.yaml").read_text(),
                           overrides=("loop.threads=1",), gpus_per_node=2,
                           checkpoint_root=str(tmp_path / "ckpt"),
                           step=StepTracking(f"torchrun-{uuid.uuid4().hex[:6]}", mlflow_server.url))
    result = train_from_request(request, tmp_path / "model")
    assert result["world_size"] == 2 and (tmp_path / "model" / "model.pt").is_file()
    from textrec import tracking

    client = tracking.mlflow_client(mlflow_server.url)
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.params["world_size"] == "2"
    history = client.get_metric_history(run.info.run_id, "val_cer")
    assert [m.step for m in history] == [1, 2]  # one point per epoch: rank 1 logged nothing
