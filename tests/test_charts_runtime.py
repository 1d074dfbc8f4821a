"""The serving chart's runtime value: TorchServe (the default), the Open Inference Protocol v2 server of
serving/oip.py (runtime: kserve), and KServe's InferenceService running that server. Renders offline
through the Helm SDK; the OIP container's own command is run here against a real server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from fixtures.net import free_port
from fixtures.serving import line_png, make_model_pt
from test_charts import KUBE_VERSION, charts, env_of, of_kind, one, render  # noqa: F401 (charts: a fixture)

from cluster.rollout import ARCHIVE_ENV, VERSION_ANNOTATION
from textrec.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]
CHART = "textrec-serving"
KSERVE = {"runtime": "kserve", "model": {"uri": "s3://models/textrec-line/v7/model.pt",
                                         "s3": {"existingSecret": "textrec-s3"}}}
ISVC = KSERVE | {"inferenceService": {"enabled": True, "maxReplicas": 4}}
# The fields of a serving.kserve.io/v1beta1 PredictorSpec the chart may set: PodSpec fields and those of
# ComponentExtensionSpec (kubernetes-validate has no schema for the custom resource).
PREDICTOR_FIELDS = {"minReplicas", "maxReplicas", "annotations", "labels", "serviceAccountName",
                    "automountServiceAccountToken", "imagePullSecrets", "securityContext",
                    "terminationGracePeriodSeconds", "containers", "volumes", "nodeSelector", "tolerations",
                    "affinity"}


def server_of(docs: list[dict]) -> dict:
    [container] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_default_runtime_is_torchserve_as_before(charts: Path) -> None:  # noqa: F811
    assert yaml.safe_load((ROOT / "charts" / CHART / "values.yaml").read_text())["runtime"] == "torchserve"
    docs = render(charts, CHART, {})
    server = server_of(docs)
    assert server["name"] == "torchserve" and "command" not in server  # the image's entrypoint
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {"http": 8080, "metrics": 8082}
    assert server["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {p["name"] for p in one(docs, "Service")["spec"]["ports"]} == {"http", "metrics"}
    assert not of_kind(docs, "InferenceService")


def test_kserve_runtime_runs_the_oip_server_with_its_port_and_probes(charts: Path) -> None:  # noqa: F811
    docs = render(charts, CHART, KSERVE)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    server = server_of(docs)
    assert server["name"] == "oip"
    assert server["command"] == ["python", "-c"] and "from serving.oip import" in server["args"][0]
    compile(server["args"][0], "oip-container", "exec")
    assert server["ports"] == [{"name": "http", "containerPort": 8090, "protocol": "TCP"}]
    env = env_of(server)
    assert env["TEXTREC_MODEL_ARCHIVE"]["value"] == "s3://models/textrec-line/v7/model.pt"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "textrec-s3"
    assert server["startupProbe"]["tcpSocket"] == {"port": "http"}
    assert "/v2/health/ready" in server["readinessProbe"]["exec"]["command"][2]
    assert "/v2/health/live" in server["livenessProbe"]["exec"]["command"][2]
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert "prometheus.io/port" not in svc["metadata"].get("annotations", {})  # no metrics endpoint
    policy = one(docs, "NetworkPolicy")
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [8090]
    test_pod = one(docs, "Pod")
    url = env_of(test_pod["spec"]["containers"][0])["URL"]["value"]
    assert url.endswith(":8080/v2/models/textrec-line/infer")
    compile(test_pod["spec"]["containers"][0]["args"][0], "test-predict", "exec")


def test_kserve_runtime_refuses_a_torchserve_archive(charts: Path) -> None:  # noqa: F811
    with pytest.raises(helm.HelmRenderError, match=r"runtime kserve serves a model\.pt"):
        render(charts, CHART, {"runtime": "kserve"})  # the default model.uri is a .mar


@pytest.mark.parametrize("values,expected", [
    ({"runtime": "triton"}, "/runtime"),
    ({"inferenceService": {"enabled": "yes"}}, "/inferenceService/enabled"),
    ({"inferenceService": {"protocol": "v2"}}, "protocol"),
])
def test_schema_refuses_bad_runtime_values(charts: Path, values: dict, expected: str) -> None:  # noqa: F811
    with pytest.raises(helm.HelmValuesError) as e:
        render(charts, CHART, values)
    assert expected in str(e.value)
    if "runtime" in values:
        assert "torchserve" in str(e.value) and "kserve" in str(e.value)  # the allowed values are named


def test_inference_service_replaces_the_deployment(charts: Path) -> None:  # noqa: F811
    docs = render(charts, CHART, ISVC)
    assert not {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy",
                "Pod"} & {d["kind"] for d in docs}
    isvc = one(docs, "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert set(isvc) == {"apiVersion", "kind", "metadata", "spec"} and set(isvc["spec"]) == {"predictor"}
    predictor = isvc["spec"]["predictor"]
    assert set(predictor) <= PREDICTOR_FIELDS, set(predictor) - PREDICTOR_FIELDS
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 4)
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for in a custom predictor
    assert env_of(container)["PROTOCOL"]["value"] == "v2"  # a custom predictor's protocolVersion
    deployment_server = server_of(render(charts, CHART, KSERVE))
    assert {k: v for k, v in container.items() if k != "name"} == {
        k: v for k, v in deployment_server.items() if k != "name"}  # the same image, command, model, probes
    assert container["resources"] == {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "2Gi"}}
    # The predictor is a PodSpec: check it as one.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {k: v for k, v in predictor.items() if k not in ("minReplicas", "maxReplicas", "labels",
                                                                     "annotations")}}
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    volumes = {v["name"] for v in predictor["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} <= volumes


def test_inference_service_needs_the_kserve_runtime(charts: Path) -> None:  # noqa: F811
    with pytest.raises(helm.HelmRenderError, match="inferenceService.enabled: needs runtime: kserve"):
        render(charts, CHART, {"inferenceService": {"enabled": True}})


def _get(url: str, token: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError:
        return 0  # not listening yet


def test_the_oip_container_command_serves_the_model_with_the_charts_token(charts: Path,  # noqa: F811
                                                                           tmp_path: Path) -> None:
    model = make_model_pt(tmp_path / "model.pt")
    token_file = tmp_path / "token"
    token_file.write_text("chart-token-0123456789\n")
    port = free_port()
    docs = render(charts, CHART, {"runtime": "kserve", "model": {"uri": "model.pt", "existingClaim": "models"}})
    server = server_of(docs)
    env = {name: e["value"] for name, e in env_of(server).items() if "value" in e}
    env |= {"TEXTREC_MODEL_ARCHIVE": str(model), "TEXTREC_TOKEN_FILE": str(token_file),
            "TEXTREC_OIP_WORKDIR": str(tmp_path / "oip"), "TEXTREC_OIP_PORT": str(port)}
    (tmp_path / "oip").mkdir()
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, *server["command"][1:], server["args"][0]], cwd=ROOT,
                            env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while _get(base + "/v2/health/live", "chart-token-0123456789") != 200:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the OIP server did not answer"
            time.sleep(0.3)
        assert _get(base + "/v2/health/ready", None) == 401
        # The probes' own command, with the port this test uses.
        for probe in ("readinessProbe", "livenessProbe"):
            cmd = [sys.executable, *server[probe]["exec"]["command"][1:]]
            cmd[-1] = cmd[-1].replace("127.0.0.1:8090", f"127.0.0.1:{port}")
            assert subprocess.run(cmd, env={**os.environ, **env}, timeout=30).returncode == 0, probe
        body = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                       "data": [base64.b64encode(line_png()).decode()]}]}).encode()
        req = urllib.request.Request(f"{base}/v2/models/textrec-line/infer", data=body, headers={
            "Authorization": "Bearer chart-token-0123456789", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        assert answer["model_name"] == "textrec-line" and answer["model_version"] == "unversioned"
        assert {o["name"] for o in answer["outputs"]} == {"text", "confidence"}
        state = json.loads((tmp_path / "oip" / "server.json").read_text())
        assert state["config"]["host"] == "0.0.0.0"  # reachable from outside the pod
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


# --- promotion rolls the kserve runtime: the Deployment's oip container, or the InferenceService ----
# Mocked API objects: no Kubernetes API server can run here. What they return is what the chart
# renders; the model goes to a real S3 server, and the patched container's command is run for real.


def _deployment(doc: dict, version: str) -> SimpleNamespace:
    """A rendered Deployment as the kubernetes client's read_namespaced_deployment returns it."""
    containers = [SimpleNamespace(name=c["name"]) for c in doc["spec"]["template"]["spec"]["containers"]]
    return SimpleNamespace(metadata=SimpleNamespace(annotations={VERSION_ANNOTATION: version}),
                           spec=SimpleNamespace(template=SimpleNamespace(spec=SimpleNamespace(containers=containers))))


def _merge(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch, as the API server applies it to a custom resource."""
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def test_promotion_rolls_a_kserve_deployment_onto_the_model_pt(charts: Path, tmp_path: Path,  # noqa: F811
                                                                 s3) -> None:
    from serving.deploy import deploy_model

    apps = mock.Mock()
    apps.read_namespaced_deployment.return_value = _deployment(one(render(charts, CHART, KSERVE), "Deployment"), "3")
    result = deploy_model(str(make_model_pt(tmp_path / "model.pt")), target="cluster", version="4",
                          model_store_uri=s3.uri("model-store"), namespace="textrec", apps_api=apps)
    assert result.changed and result.previous == "3" and "runtime kserve" in result.reason
    assert result.archive == s3.uri("model-store/textrec-line-v4.pt")  # the model.pt, not a .mar
    assert Recognizer.load(result.archive) is not None  # what the OIP container will load, from S3
    name, namespace, patch = apps.patch_namespaced_deployment.call_args.args
    [container] = patch["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "oip"
    assert {e["name"]: e["value"] for e in container["env"]}[ARCHIVE_ENV] == result.archive


def test_promotion_rolls_an_inference_service_and_its_container_serves_the_new_version(
        charts: Path, tmp_path: Path, s3) -> None:  # noqa: F811
    from kubernetes.client.exceptions import ApiException

    from serving.deploy import deploy_model

    isvc = one(render(charts, CHART, ISVC), "InferenceService")
    isvc["metadata"] |= {"resourceVersion": "812", "annotations": {VERSION_ANNOTATION: "3"}}
    apps, objects = mock.Mock(), mock.Mock()
    apps.read_namespaced_deployment.side_effect = ApiException(status=404)  # the chart made no Deployment
    objects.get_namespaced_custom_object.return_value = isvc
    result = deploy_model(str(make_model_pt(tmp_path / "model.pt")), target="cluster", version="4",
                          model_store_uri=s3.uri("model-store"), namespace="textrec",
                          deployment=isvc["metadata"]["name"], apps_api=apps, custom_api=objects)
    assert result.changed and "InferenceService" in result.reason and result.previous == "3"
    group, version, namespace, plural, name, patch = objects.patch_namespaced_custom_object.call_args.args
    assert (group, version, plural, namespace) == ("serving.kserve.io", "v1beta1", "inferenceservices", "textrec")
    assert patch["metadata"]["resourceVersion"] == "812"  # a concurrent change fails the patch
    rolled = _merge(isvc, patch)
    assert rolled["metadata"]["annotations"][VERSION_ANNOTATION] == "4"
    [before], [after] = isvc["spec"]["predictor"]["containers"], rolled["spec"]["predictor"]["containers"]
    assert {k: v for k, v in after.items() if k != "env"} == {k: v for k, v in before.items() if k != "env"}
    unchanged = {n: e for n, e in env_of(before).items() if n not in (ARCHIVE_ENV, "TEXTREC_MODEL_VERSION")}
    assert {n: e for n, e in env_of(after).items() if n in unchanged} == unchanged  # the rest kept as it was
    assert env_of(after)[ARCHIVE_ENV]["value"] == result.archive == s3.uri("model-store/textrec-line-v4.pt")

    # The rolled container's own command, with its patched environment, serves version 4 from S3.
    env = {n: e["value"] for n, e in env_of(after).items() if "value" in e}
    token_file, port = tmp_path / "token", free_port()
    token_file.write_text("isvc-token-0123456789\n")
    env |= {"TEXTREC_TOKEN_FILE": str(token_file), "TEXTREC_OIP_WORKDIR": str(tmp_path / "oip"),
            "TEXTREC_OIP_PORT": str(port)}
    env.pop("AWS_ENDPOINT_URL_S3", None)  # the chart's cluster endpoint; this test's S3 is in os.environ
    (tmp_path / "oip").mkdir()
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, *after["command"][1:], after["args"][0]], cwd=ROOT,
                                env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        body = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                       "data": [base64.b64encode(line_png()).decode()]}]}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/textrec-line/infer", data=body, headers={
            "Authorization": "Bearer isvc-token-0123456789", "Content-Type": "application/json"})
        deadline = time.monotonic() + 90
        while _get(f"http://127.0.0.1:{port}/v2/health/live", "isvc-token-0123456789") != 200:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the OIP server did not answer"
            time.sleep(0.3)
        with urllib.request.urlopen(req, timeout=30) as r:
            assert json.loads(r.read())["model_version"] == "4"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_promotion_names_what_it_found_when_nothing_textrec_serves_there() -> None:
    from kubernetes.client.exceptions import ApiException

    from cluster.rollout import find_workload

    apps, objects = mock.Mock(), mock.Mock()
    apps.read_namespaced_deployment.side_effect = ApiException(status=404)
    objects.get_namespaced_custom_object.side_effect = ApiException(status=404)
    with pytest.raises(LookupError, match="no Deployment or InferenceService named 'textrec-serving' in namespace 'ml'"):
        find_workload("textrec-serving", "ml", apps_api=apps, custom_api=objects)
    apps.read_namespaced_deployment.side_effect = None
    apps.read_namespaced_deployment.return_value = SimpleNamespace(
        metadata=SimpleNamespace(annotations=None),
        spec=SimpleNamespace(template=SimpleNamespace(spec=SimpleNamespace(containers=[SimpleNamespace(name="nginx")]))))
    with pytest.raises(ValueError, match=r"runs containers \['nginx'\], none of them a textrec serving runtime"):
        find_workload("textrec-serving", "ml", apps_api=apps, custom_api=objects)


def test_the_serving_image_runs_both_runtimes_without_what_it_leaves_out() -> None:
    # The serving image installs the project's pins minus docker/requirements.py's SERVING_EXCLUDES:
    # both runtimes' modules (the chart's OIP container imports serving.oip) must import without them.
    sys.path.insert(0, str(ROOT / "docker"))
    try:
        from requirements import SERVING_EXCLUDES
    finally:
        sys.path.remove(str(ROOT / "docker"))
    blocked = sorted(n.replace("-", "_") for n in SERVING_EXCLUDES if n != "kfp-kubernetes") + ["kfp_kubernetes"]
    code = ("import sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None  # importing one raises ImportError\n"
            "import serving.oip, serving.oip_process, serving.handler, serving.images\n"
            "from textrec.recognizer import Recognizer\n"
            "print('imported')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0 and "imported" in out.stdout, out.stderr[-3000:]
    assert "mlflow" in blocked and "kubernetes" in blocked  # the check blocks what the image lacks


@pytest.mark.parametrize("runtime", ["torchserve", "kserve"])
def test_capture_values_reach_the_server_and_its_queue_keys_are_mounted(charts: Path, runtime: str) -> None:  # noqa: F811
    from serving.capture import CaptureConfig

    values = {"runtime": runtime, "model": {"uri": "s3://m/model.pt" if runtime == "kserve" else "s3://m/m.mar"},
              "capture": {"uri": "s3://review/prod", "threshold": 0.7, "sampleRate": 0.02,
                          "s3": {"endpoint": "http://minio:9000", "existingSecret": "queue-keys"}}}
    docs = render(charts, CHART, values)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    server = server_of(docs)
    env = {n: e["value"] for n, e in env_of(server).items() if "value" in e}
    cfg = CaptureConfig.from_env(env)  # what the server reads back from the rendered variables
    release = one(docs, "Deployment")["metadata"]["name"]  # the source tag defaults to the release's name
    assert (cfg.uri, cfg.threshold, cfg.sample_rate, cfg.deployment) == ("s3://review/prod", 0.7, 0.02, release)
    # Names TorchServe passes on to its workers (its filter hides AWS_* and anything like a secret).
    import re

    from serving.config import SECRET_ENV
    queue = {n: v for n, v in env.items() if n.startswith("TEXTREC_QUEUE_")}
    assert queue == {"TEXTREC_QUEUE_S3_ENDPOINT": "http://minio:9000", "TEXTREC_QUEUE_S3_REGION": "us-east-1",
                     "TEXTREC_QUEUE_S3_KEYS_FILE": "/etc/textrec/queue/keys"}
    assert not [n for n in [*queue, *(n for n in env if n.startswith("TEXTREC_CAPTURE_"))] if re.fullmatch(SECRET_ENV, n)]
    assert {"name": "queue-keys", "mountPath": "/etc/textrec/queue", "readOnly": True} in server["volumeMounts"]
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    [volume] = [v for v in spec["volumes"] if v["name"] == "queue-keys"]
    assert volume["secret"]["secretName"] == "queue-keys"
    off = server_of(render(charts, CHART, {k: v for k, v in values.items() if k != "capture"}))
    assert not [n for n in env_of(off) if n.startswith(("TEXTREC_CAPTURE_", "TEXTREC_QUEUE_"))]
