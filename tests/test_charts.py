"""Helm charts: lint, render with default and production-like values, validate every manifest against
the Kubernetes 1.30 schemas, and check the security and serving properties the charts promise.
Everything runs offline through the Helm SDK (helm-python) in well under a second per render.
"""

from __future__ import annotations

import base64
import inspect
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "charts"
KUBE_VERSION = "1.30.0"
NAMESPACE = "textrec"
RELEASE = "prod"
MANAGEMENT_PORT = 8081

SERVING_PRODUCTION = {
    "image": {"repository": "registry.example.com/textrec/textrec-serving", "tag": "1.2.3",
              "pullPolicy": "Always"},
    "imagePullSecrets": ["registry-credentials"],
    "model": {"uri": "s3://models/textrec-line/v7/textrec-line.mar",
              "s3": {"endpoint": "https://s3.example.com", "region": "eu-west-1",
                     "existingSecret": "textrec-s3"}},
    "auth": {"existingSecret": "textrec-serving-token", "secretKey": "token"},
    "torchserve": {"workers": 2, "jobQueueSize": 200},
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}},
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 10},
    "ingress": {"enabled": True, "className": "nginx", "host": "htr.example.com", "tlsSecret": "htr-example-tls",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "16m"}},
    "networkPolicy": {"clients": [{"namespaceSelector": {"matchLabels": {"textrec/clients": "true"}}},
                                  {"namespaceSelector": {"matchLabels": {
                                      "kubernetes.io/metadata.name": "ingress-nginx"}}}],
                      "scrapers": [{"namespaceSelector": {"matchLabels": {
                          "kubernetes.io/metadata.name": "monitoring"}}}]},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
            "matchLabels": {"app.kubernetes.io/name": "textrec-serving"}}}}]}},
}
MLFLOW_PRODUCTION = {
    "image": {"repository": "registry.example.com/textrec/textrec-component", "tag": "1.2.3"},
    "mlflow": {"workers": 4, "artifactsDestination": "s3://textrec-mlflow/artifacts",
               "allowedHosts": ["mlflow.example.com"]},
    "s3": {"endpoint": "https://s3.example.com", "existingSecret": "textrec-s3"},
    "postgresql": {"enabled": False},
    "externalDatabase": {"existingSecret": "mlflow-db", "secretKey": "uri"},
    "replicaCount": 2,
    "networkPolicy": {"clients": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kubeflow"}}}]},
}
PLATFORM_PRODUCTION = {
    "global": {"imageRegistry": "registry.example.com/textrec"},
    "mlflow": MLFLOW_PRODUCTION | {"image": {"tag": "1.2.3"}},
    "serving": SERVING_PRODUCTION | {"image": {"tag": "1.2.3"}},
}
CASES = {
    "textrec-serving": ({}, SERVING_PRODUCTION),
    "textrec-mlflow": ({}, MLFLOW_PRODUCTION),
    "textrec-platform": ({}, PLATFORM_PRODUCTION),
}
RENDERS = [(chart, kind) for chart in CASES for kind in ("default", "production")]


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of charts/ with the platform chart's file:// dependencies built (the tree stays clean)."""
    dest = tmp_path_factory.mktemp("charts") / "charts"
    shutil.copytree(CHARTS, dest, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    helm.dependency_update(dest / "textrec-platform")
    return dest


def render(charts: Path, chart: str, values: dict) -> list[dict]:
    """Every manifest the chart renders, as dicts (NOTES.txt and empty documents left out)."""
    out = helm.Chart.load(charts / chart).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [doc for path, text in sorted(out.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def values_for(chart: str, kind: str) -> dict:
    return CASES[chart][0 if kind == "default" else 1]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> Iterator[tuple[str, dict]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield f"Pod/{d['metadata']['name']}", d["spec"]


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def one(docs: list[dict], kind: str, name_part: str = "") -> dict:
    found = [d for d in of_kind(docs, kind) if name_part in d["metadata"]["name"]]
    assert len(found) == 1, f"expected one {kind} named *{name_part}*, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --- lint, render, validate -----------------------------------------------------------------------

@pytest.mark.parametrize("chart", list(CASES))
def test_chart_lints_clean_in_strict_mode(charts: Path, chart: str) -> None:
    report = helm.lint(charts / chart, strict=True, kube_version=f"v{KUBE_VERSION}", with_subcharts=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("chart,kind", RENDERS)
def test_every_manifest_is_valid_kubernetes_1_30(charts: Path, chart: str, kind: str) -> None:
    docs = render(charts, chart, values_for(chart, kind))
    validated = 0
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
            validated += 1
        except kubernetes_validate.SchemaNotFoundError:
            # Only custom resources may lack a schema.
            assert "." in doc["apiVersion"].split("/")[0] and not doc["apiVersion"].startswith(
                ("apps/", "batch/", "policy/", "networking.k8s.io/", "autoscaling/")), doc["apiVersion"]
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{chart} ({kind}) {doc['kind']}/{doc['metadata']['name']}: {e}")
    assert validated >= 5


def test_platform_installs_both_charts_as_one_release(charts: Path) -> None:
    docs = render(charts, "textrec-platform", PLATFORM_PRODUCTION)
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    assert deployments == {"textrec-mlflow", "textrec-serving"}
    assert {d["metadata"]["labels"]["app.kubernetes.io/instance"] for d in docs} == {RELEASE}
    images = {c["image"] for _, spec in pod_specs(docs) for c in containers(spec)}
    assert images == {"registry.example.com/textrec/textrec-serving:1.2.3",
                      "registry.example.com/textrec/textrec-component:1.2.3"}


def test_platform_can_leave_a_component_out(charts: Path) -> None:
    docs = render(charts, "textrec-platform", {"serving": {"enabled": False}})
    assert {d["metadata"]["name"] for d in of_kind(docs, "Deployment")} == {"textrec-mlflow"}


# --- security properties --------------------------------------------------------------------------

@pytest.mark.parametrize("chart,kind", RENDERS)
def test_no_service_exposes_the_management_api(charts: Path, chart: str, kind: str) -> None:
    docs = render(charts, chart, values_for(chart, kind))
    for svc in of_kind(docs, "Service"):
        for port in svc["spec"]["ports"]:
            assert MANAGEMENT_PORT not in (port["port"], port.get("targetPort")), svc["metadata"]["name"]
            assert port.get("targetPort") != "management"
    for _, spec in pod_specs(docs):
        for c in containers(spec):
            assert all(p["containerPort"] != MANAGEMENT_PORT for p in c.get("ports", [])), c["name"]


@pytest.mark.parametrize("chart,kind", RENDERS)
def test_every_pod_is_non_root_read_only_and_without_capabilities(charts: Path, chart: str, kind: str) -> None:
    docs = render(charts, chart, values_for(chart, kind))
    specs = list(pod_specs(docs))
    assert specs
    for where, spec in specs:
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("runAsNonRoot") is True, where
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in containers(spec):
            sc = c.get("securityContext", {})
            assert sc.get("readOnlyRootFilesystem") is True, (where, c["name"])
            assert sc.get("allowPrivilegeEscalation") is False, (where, c["name"])
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], (where, c["name"])
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) != 0, (where, c["name"])


@pytest.mark.parametrize("chart,kind", RENDERS)
def test_long_running_containers_have_all_three_probes_and_resources(charts: Path, chart: str, kind: str) -> None:
    docs = render(charts, chart, values_for(chart, kind))
    for where, spec in pod_specs(docs):
        if where.startswith("Pod/"):
            continue  # helm test pods run once
        for c in spec["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert probe in c, (where, c["name"], probe)
            assert c["resources"].get("requests") and c["resources"].get("limits"), (where, c["name"])


def test_serving_readiness_asks_for_a_ready_model_worker(charts: Path) -> None:
    dep = one(render(charts, "textrec-serving", {}), "Deployment")
    server = dep["spec"]["template"]["spec"]["containers"][0]
    # /ready is the gateway's model check (a READY worker via the management API), never /ping.
    assert server["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert server["startupProbe"]["httpGet"]["path"] == "/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/live"
    gateway = (ROOT / "docker/serving/gateway.py").read_text()
    assert '"/models/{self.settings.model_name}"' in gateway and '"READY"' in gateway


def test_serving_token_comes_from_a_secret_mounted_into_the_gateway(charts: Path) -> None:
    docs = render(charts, "textrec-serving", {})
    secret = one(docs, "Secret", "token")
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) >= 32 and token.isalnum()
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    server = spec["containers"][0]
    assert env_of(server)["TEXTREC_TOKEN_FILE"]["value"] == "/etc/textrec/token/token"
    volume = next(v for v in spec["volumes"] if v["name"] == "token")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert any(m["name"] == "token" and m["mountPath"] == "/etc/textrec/token" for m in server["volumeMounts"])
    assert not any("TOKEN" in name and "value" in e and name != "TEXTREC_TOKEN_FILE"
                   for name, e in env_of(server).items())


def test_an_existing_token_secret_replaces_the_generated_one(charts: Path) -> None:
    docs = render(charts, "textrec-serving", {"auth": {"existingSecret": "my-token", "secretKey": "t"}})
    assert not of_kind(docs, "Secret")
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "token")
    assert volume["secret"] == {"secretName": "my-token", "defaultMode": 0o440, "items": [{"key": "t", "path": "token"}]}
    test_pod = one(docs, "Pod")
    ref = env_of(test_pod["spec"]["containers"][0])["TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "my-token", "key": "t"}


def pod_torchserve_config(deployment: dict, tmp_path: Path) -> dict[str, str]:
    """The config.properties the serving pod's entrypoint renders from its container's environment."""
    from serving.config import main

    server = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {name: e["value"] for name, e in env_of(server).items() if "value" in e}
    out = tmp_path / "config.properties"
    # The entrypoint's command (docker/serving/entrypoint.sh), with the pod's environment.
    assert main(["--pod", "--model-store", env["TEXTREC_MODEL_STORE"], "--out", str(out)], env=env) == 0
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line and line[0] != "#")


def test_the_entrypoint_renders_the_config_the_way_this_test_does() -> None:
    script = (ROOT / "docker/serving/entrypoint.sh").read_text()
    assert 'python -m serving.config --pod --model-store "$MODEL_STORE" --out "$TS_CONFIG_FILE"' in script
    assert '--ts-config "$TS_CONFIG_FILE"' in script


def test_torchserve_config_keeps_auth_on_and_private_apis_on_localhost(charts: Path, tmp_path: Path) -> None:
    from serving.config import ServeConfig, allowed_urls

    docs = render(charts, "textrec-serving", {"resources": {"limits": {"nvidia.com/gpu": 1}}})
    assert not of_kind(docs, "ConfigMap"), "TorchServe's config is rendered in the pod, not shipped"
    props = pod_torchserve_config(one(docs, "Deployment"), tmp_path)
    assert props["disable_token_authorization"] == "false"
    assert props["enable_model_api"] == "false"
    assert props["metrics_mode"] == "prometheus"
    assert props["management_address"].startswith("http://127.0.0.1:")
    assert props["inference_address"].startswith("http://127.0.0.1:")
    assert props["allowed_urls"] == allowed_urls(Path("/home/model-server/model-store"))
    assert props["number_of_gpu"] == "1"
    server = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(server)["OMP_NUM_THREADS"]["value"] == "1"
    # Large numbers must render as integers (Helm reads values as floats: 1.048576e+07 is no size).
    assert props["max_request_size"] == str(ServeConfig.max_request_size)
    big = one(render(charts, "textrec-serving", {"torchserve": {"maxRequestSize": 123456789, "jobQueueSize": 2000000,
                                                                "responseTimeout": 3600}}), "Deployment")
    lines = set(f"{k}={v}" for k, v in pod_torchserve_config(big, tmp_path).items())
    assert {"max_request_size=123456789", "job_queue_size=2000000", "default_response_timeout=3600"} <= lines


# Where the pod and the local server may differ: addresses and ports (a gateway fronts the pod's
# TorchServe), the model store's path, the JVM's sizing and the GPUs the pod was given.
POD_ONLY = {"inference_address", "metrics_address", "model_store", "workflow_store", "allowed_urls", "vmargs",
            "number_of_gpu"}


def test_chart_and_local_server_torchserve_configs_agree_on_every_other_setting(charts: Path,
                                                                               tmp_path: Path) -> None:
    from serving.config import ServeConfig
    from serving.config import render as render_config

    pod = pod_torchserve_config(one(render(charts, "textrec-serving", {}), "Deployment"), tmp_path)
    local = dict(line.split("=", 1) for line in render_config(ServeConfig(model_store=tmp_path)).splitlines()
                 if "=" in line and line[0] != "#")
    assert pod.keys() - POD_ONLY == local.keys() - POD_ONLY
    differing = {k: (pod[k], local[k]) for k in local.keys() - POD_ONLY if pod[k] != local[k]}
    assert not differing, "the chart's defaults must be serving/config.py's"
    assert "-XX:+ExitOnOutOfMemoryError" in pod["vmargs"] and "MaxRAMPercentage" in pod["vmargs"]
    # The limits a client meets (queue, body size, timeouts, token expiry) are the documented ones.
    assert (pod["job_queue_size"], pod["max_request_size"], pod["default_response_timeout"]) == ("256", "16777216", "60")
    assert pod["token_expiration_min"] == "720"


def test_the_gateway_takes_its_limits_from_the_rendered_torchserve_config(charts: Path) -> None:
    server = one(render(charts, "textrec-serving", {}), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    # No second copy of the body limit or the timeout: docker/serving/gateway.py reads them from the file.
    assert not {"GATEWAY_MAX_BODY", "GATEWAY_UPSTREAM_TIMEOUT", "TS_INFERENCE_URL"} & env_of(server).keys()


def test_defaults_of_the_model_name_outside_python_equal_tracking_model_name() -> None:
    from textrec.tracking import MODEL_NAME

    serving_values = yaml.safe_load((CHARTS / "textrec-serving/values.yaml").read_text())
    platform_values = yaml.safe_load((CHARTS / "textrec-platform/values.yaml").read_text())
    assert serving_values["model"]["name"] == MODEL_NAME
    assert serving_values["model"]["uri"].endswith(f"/{MODEL_NAME}.mar")
    assert platform_values["serving"]["model"]["uri"].endswith(f"/{MODEL_NAME}.mar")
    entrypoint = (ROOT / "docker/serving/entrypoint.sh").read_text()
    assert re.findall(r"\$\{TEXTREC_MODEL_NAME:-([^}]*)\}", entrypoint) == [MODEL_NAME]
    kind = (ROOT / "deploy/kind/local-kind.sh").read_text()
    assert re.findall(r"^MODEL_NAME=(\S+)", kind, flags=re.M) == [MODEL_NAME]
    dockerfile = (ROOT / "docker/serving.Dockerfile").read_text()
    assert re.findall(r"TEXTREC_MODEL_NAME=(\S+)", dockerfile) in ([], [MODEL_NAME])


@pytest.mark.parametrize("chart,kind", RENDERS)
def test_network_policies_cover_every_server(charts: Path, chart: str, kind: str) -> None:
    docs = render(charts, chart, values_for(chart, kind))
    policies = of_kind(docs, "NetworkPolicy")
    for where, _spec in pod_specs(docs):
        if where.startswith("Pod/"):
            continue
        labels = next(d for d in docs if f"{d['kind']}/{d['metadata']['name']}" == where)[
            "spec"]["template"]["metadata"]["labels"]
        covering = [p for p in policies
                    if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        assert covering, f"{where} has no NetworkPolicy"
        assert all("Ingress" in p["spec"]["policyTypes"] for p in covering)


def test_serving_network_policy_opens_only_inference_and_metrics(charts: Path) -> None:
    policy = one(render(charts, "textrec-serving", SERVING_PRODUCTION), "NetworkPolicy")
    ports = sorted(p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"])
    assert ports == [8080, 8082]
    inference = next(r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == 8080)
    assert {"namespaceSelector": {"matchLabels": {"textrec/clients": "true"}}} in inference["from"]


def test_database_accepts_only_the_tracking_server(charts: Path) -> None:
    docs = render(charts, "textrec-mlflow", {})
    policy = one(docs, "NetworkPolicy", "postgresql")
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    server_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= server_labels.items()


# --- behaviour of the values ----------------------------------------------------------------------

def test_autoscaling_replaces_the_fixed_replica_count(charts: Path) -> None:
    docs = render(charts, "textrec-serving", SERVING_PRODUCTION)
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert "replicas" not in one(docs, "Deployment")["spec"]
    default = render(charts, "textrec-serving", {})
    assert not of_kind(default, "HorizontalPodAutoscaler")
    assert one(default, "Deployment")["spec"]["replicas"] == 1
    assert one(default, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_service_monitor_is_off_by_default(charts: Path) -> None:
    assert not of_kind(render(charts, "textrec-serving", {}), "ServiceMonitor")
    monitor = one(render(charts, "textrec-serving", SERVING_PRODUCTION), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_service_routes_to_the_server_pods_only(charts: Path) -> None:
    docs = render(charts, "textrec-serving", {})
    svc, dep, test_pod = one(docs, "Service"), one(docs, "Deployment"), one(docs, "Pod")
    selector = svc["spec"]["selector"].items()
    assert selector <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert not selector <= test_pod["metadata"]["labels"].items()
    assert svc["metadata"]["annotations"]["prometheus.io/port"] == "8082"
    names = {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]}
    container_ports = {p["name"]: p["containerPort"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert names == {"http": "http", "metrics": "metrics"}
    assert container_ports == {"http": 8080, "metrics": 8082}


def test_model_archive_comes_from_s3_with_credentials_from_a_secret(charts: Path, tmp_path: Path) -> None:
    spec = one(render(charts, "textrec-serving", SERVING_PRODUCTION), "Deployment")["spec"]["template"]["spec"]
    [server] = spec["containers"]
    env = env_of(server)
    assert env["TEXTREC_MODEL_ARCHIVE"]["value"] == "s3://models/textrec-line/v7/textrec-line.mar"
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "https://s3.example.com"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "textrec-s3",
                                                                         "key": "AWS_SECRET_ACCESS_KEY"}
    # ...and TorchServe does not hand the credentials on to its Python workers.
    blacklist = pod_torchserve_config(one(render(charts, "textrec-serving", SERVING_PRODUCTION), "Deployment"),
                                      tmp_path)["blacklist_env_vars"]
    assert blacklist.startswith("AWS_.*|")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        assert re.fullmatch(blacklist, name), name


def test_model_archive_can_come_from_a_pvc_instead(charts: Path) -> None:
    values = {"model": {"uri": "releases/textrec-line.mar", "existingClaim": "models"}}
    spec = one(render(charts, "textrec-serving", values), "Deployment")["spec"]["template"]["spec"]
    [server] = spec["containers"]
    assert env_of(server)["TEXTREC_MODEL_ARCHIVE"]["value"] == "/mnt/models/releases/textrec-line.mar"
    assert "AWS_REGION" not in env_of(server)
    assert {"name": "models", "mountPath": "/mnt/models", "readOnly": True} in server["volumeMounts"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in spec["volumes"]


def test_deploy_step_rollout_patch_targets_the_charts_container(charts: Path) -> None:
    # serving/deploy.py rolls a new model out through cluster/rollout.py, which patches
    # TEXTREC_MODEL_ARCHIVE on this container.
    from cluster import rollout
    from serving import deploy

    default_deployment = inspect.signature(deploy.deploy_model).parameters["deployment"].default
    platform = {d["metadata"]["name"] for d in of_kind(render(charts, "textrec-platform", {}), "Deployment")}
    assert default_deployment in platform  # the Deployment the step patches unless told another
    release = type("S", (), {"version": "7", "model_uri": "models:/m/7", "run_id": "r"})()
    for runtime, model in (("torchserve", "s3://b/textrec-line-v7.mar"), ("kserve", "s3://b/textrec-line-v7.pt")):
        values = {"runtime": runtime, "model": {"uri": model}}
        spec = one(render(charts, "textrec-serving", values), "Deployment")["spec"]["template"]["spec"]
        [container] = spec["containers"]
        assert rollout.CONTAINERS[container["name"]] == runtime  # the container the deploy finds and patches
        patch = rollout.rollout_patch(release, container["name"], model)
        patched_env = {e["name"] for e in patch["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert rollout.ARCHIVE_ENV in patched_env and rollout.ARCHIVE_ENV in env_of(container)
        assert patch["spec"]["template"]["metadata"]["annotations"][rollout.VERSION_ANNOTATION] == "7"


def test_mlflow_server_command_and_allowed_hosts(charts: Path) -> None:
    dep = one(render(charts, "textrec-mlflow", MLFLOW_PRODUCTION), "Deployment")
    server = dep["spec"]["template"]["spec"]["containers"][0]
    args = dict(a[2:].split("=", 1) for a in server["args"] if "=" in a)
    assert server["command"] == ["mlflow", "server"]
    assert args["artifacts-destination"] == "s3://textrec-mlflow/artifacts"
    assert args["workers"] == "4"
    hosts = args["allowed-hosts"].split(",")
    svc = f"{RELEASE}-textrec-mlflow"
    for name in (svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc", f"{svc}.{NAMESPACE}.svc.cluster.local"):
        assert name in hosts and f"{name}:*" in hosts  # MLflow matches `name` and `name:port` separately
    assert "mlflow.example.com" in hosts
    env = env_of(server)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "uri"}
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "https://s3.example.com"


def test_bundled_postgres_password_never_appears_in_a_manifest(charts: Path) -> None:
    docs = render(charts, "textrec-mlflow", {})
    assert one(docs, "StatefulSet", "postgresql")["spec"]["volumeClaimTemplates"][0]["spec"]["resources"][
        "requests"]["storage"] == "8Gi"
    password = base64.b64decode(one(docs, "Secret")["data"]["password"]).decode()
    assert len(password) >= 32
    assert password not in yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
    server = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    uri = env_of(server)["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert uri == f"postgresql://mlflow:$(DB_PASSWORD)@{RELEASE}-textrec-mlflow-postgresql:5432/mlflow"


def test_helm_test_hooks_post_a_real_png_with_the_token(charts: Path) -> None:
    for chart, values in CASES.items():
        for doc in render(charts, chart, values[1]):
            if doc["kind"] == "Pod":
                assert doc["metadata"]["annotations"]["helm.sh/hook"] == "test"
                compile(doc["spec"]["containers"][0]["args"][0], doc["metadata"]["name"], "exec")
    pod = one(render(charts, "textrec-serving", {}), "Pod")
    script = pod["spec"]["containers"][0]["args"][0]
    assert 'format="PNG"' in script and '"Authorization"' in script and '"text" not in result' in script
    assert "status != 401" in script  # and it checks that a request without the token is refused
    url = env_of(pod["spec"]["containers"][0])["URL"]["value"]
    assert url == f"http://{RELEASE}-textrec-serving.{NAMESPACE}.svc:8080/predictions/textrec-line"


# --- the pipeline's service account (platform chart) -----------------------------------------------

def validate_strictly(doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def rules_of(role: dict) -> dict[tuple[str, str], dict]:
    return {(r["apiGroups"][0], r["resources"][0]): r for r in role["rules"]}


def test_platform_grants_the_pipeline_what_its_steps_do_and_nothing_more(charts: Path) -> None:
    from cluster.trainjob import KINDS
    from pipelines.textrec_pipeline import textrec_pipeline

    docs = render(charts, "textrec-platform", {})
    account = one(docs, "ServiceAccount", "pipeline")
    training, serving = one(docs, "Role", "training"), one(docs, "Role", "serving")
    bindings = of_kind(docs, "RoleBinding")
    for doc in (account, training, serving, *bindings):
        validate_strictly(doc)
    assert account["metadata"]["name"] == "textrec-pipeline"
    assert account.get("automountServiceAccountToken") is not False  # its steps talk to the API server

    rules = rules_of(training)
    for group, _version, plural, kind in KINDS.values():  # every job kind cluster/trainjob.py may create
        assert set(rules.pop((group, plural))["verbs"]) == {"create", "get", "watch", "delete"}, kind
    assert not rules, f"rules for more than the steps use: {sorted(rules)}"
    rules = rules_of(serving)
    deployments, isvcs = rules.pop(("apps", "deployments")), rules.pop(("serving.kserve.io", "inferenceservices"))
    assert not rules, f"rules for more than cluster/rollout.py uses: {sorted(rules)}"
    assert deployments["verbs"] == isvcs["verbs"] == ["get", "patch"]  # cluster/rollout.py
    served = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")} - {"textrec-mlflow"}
    default_target = inspect.signature(textrec_pipeline.pipeline_func).parameters["serving_deployment"].default
    assert deployments["resourceNames"] == isvcs["resourceNames"] == sorted(served) == [default_target]
    assert "*" not in yaml.safe_dump([training["rules"], serving["rules"]])

    assert sorted(b["roleRef"]["name"] for b in bindings) == sorted(r["metadata"]["name"] for r in (training, serving))
    for b in bindings:
        assert b["roleRef"]["kind"] == "Role"
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": "textrec-pipeline", "namespace": NAMESPACE}]
    assert {d["metadata"]["labels"]["app.kubernetes.io/instance"] for d in (account, training, *bindings)} == {RELEASE}


def test_steps_in_the_pipelines_namespace_may_still_roll_the_serving_deployment(charts: Path) -> None:
    docs = render(charts, "textrec-platform", {"pipeline": {"namespace": "kubeflow"}})
    assert one(docs, "ServiceAccount", "pipeline")["metadata"]["namespace"] == "kubeflow"
    # Jobs are made in the steps' own namespace; the Deployment stays in the release's.
    assert one(docs, "Role", "training")["metadata"]["namespace"] == "kubeflow"
    assert one(docs, "Role", "serving")["metadata"]["namespace"] == NAMESPACE
    for binding in of_kind(docs, "RoleBinding"):
        role = one(docs, "Role", binding["roleRef"]["name"])
        assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
        assert binding["subjects"][0]["namespace"] == "kubeflow"


def test_the_roles_can_go_to_the_account_pipelines_already_runs_steps_as(charts: Path) -> None:
    docs = render(charts, "textrec-platform", {"pipeline": {"serviceAccount": {"create": False,
                                                                               "name": "default-editor"},
                                                        "servingDeployment": "htr-serving"}})
    assert not [d for d in of_kind(docs, "ServiceAccount") if "default-editor" in d["metadata"]["name"]]
    assert {b["subjects"][0]["name"] for b in of_kind(docs, "RoleBinding")} == {"default-editor"}
    assert one(docs, "Role", "serving")["rules"][0]["resourceNames"] == ["htr-serving"]
    bare = render(charts, "textrec-platform", {"pipeline": {"rbac": {"create": False}}})
    assert not of_kind(bare, "Role") and not of_kind(bare, "RoleBinding")


# --- Ingress and HTTPRoute (serving chart) ---------------------------------------------------------

# The fields of a gateway.networking.k8s.io/v1 HTTPRoute that the chart may set (kubernetes-validate has
# no schema for it, being a custom resource).
HTTPROUTE_FIELDS = {"spec": {"parentRefs", "hostnames", "rules"},
                    "parentRef": {"group", "kind", "namespace", "name", "sectionName", "port"},
                    "rule": {"matches", "filters", "backendRefs", "timeouts", "name"},
                    "backendRef": {"group", "kind", "name", "namespace", "port", "weight", "filters"}}
HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.mark.parametrize("chart", ["textrec-serving", "textrec-platform"])
def test_ingress_and_http_route_are_off_by_default(charts: Path, chart: str) -> None:
    docs = render(charts, chart, {})
    assert not of_kind(docs, "Ingress") and not of_kind(docs, "HTTPRoute")


def test_ingress_routes_the_inference_port_with_tls(charts: Path) -> None:
    docs = render(charts, "textrec-serving", SERVING_PRODUCTION)
    ingress, svc = one(docs, "Ingress"), one(docs, "Service")
    validate_strictly(ingress)
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "htr-example-tls", "hosts": ["htr.example.com"]}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "htr.example.com"
    [path] = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    assert backend == {"name": svc["metadata"]["name"], "port": {"name": "http"}}
    assert {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"} in svc["spec"]["ports"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "16m"


def test_ingress_without_a_host_or_tls_serves_every_host(charts: Path) -> None:
    ingress = one(render(charts, "textrec-serving", {"ingress": {"enabled": True}}), "Ingress")
    validate_strictly(ingress)
    assert "tls" not in ingress["spec"] and "host" not in ingress["spec"]["rules"][0]
    assert "ingressClassName" not in ingress["spec"]  # the cluster's default class


def test_http_route_attaches_to_the_gateway_and_routes_the_inference_port(charts: Path) -> None:
    values = {"httpRoute": {"enabled": True, "parentRefs": [{"name": "public", "namespace": "gateway",
                                                            "sectionName": "https"}],
                            "hostnames": ["htr.example.com"], "path": "/predictions"}}
    docs = render(charts, "textrec-serving", values)
    route, svc = one(docs, "HTTPRoute"), one(docs, "Service")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    spec = route["spec"]
    assert set(spec) <= HTTPROUTE_FIELDS["spec"]
    assert spec["parentRefs"] == values["httpRoute"]["parentRefs"]
    assert all(set(ref) <= HTTPROUTE_FIELDS["parentRef"] for ref in spec["parentRefs"])
    assert spec["hostnames"] == ["htr.example.com"] and all(HOSTNAME.match(h) for h in spec["hostnames"])
    [rule] = spec["rules"]
    assert set(rule) <= HTTPROUTE_FIELDS["rule"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/predictions"}}]
    [backend] = rule["backendRefs"]
    assert set(backend) <= HTTPROUTE_FIELDS["backendRef"]
    assert backend == {"name": svc["metadata"]["name"], "port": 8080}  # a Service port number, not a name
    assert backend["port"] == next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "http")
    assert route["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_http_route_needs_a_gateway_to_attach_to(charts: Path) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"httpRoute\.parentRefs: required when httpRoute\.enabled"):
        render(charts, "textrec-serving", {"httpRoute": {"enabled": True}})


# --- security contexts from values -----------------------------------------------------------------

def test_security_context_values_reach_every_pod_and_merge_over_the_defaults(charts: Path) -> None:
    values = {"podSecurityContext": {"runAsUser": 2000, "runAsGroup": 2000, "fsGroup": 2000},
              "containerSecurityContext": {"runAsUser": 2000, "runAsGroup": 2000, "seccompProfile": None}}
    docs = render(charts, "textrec-serving", values)
    specs = dict(pod_specs(docs))
    assert set(specs) == {"Deployment/prod-textrec-serving", "Pod/prod-textrec-serving-test-predict"}
    for where, spec in specs.items():
        pod_sc = spec["securityContext"]
        assert (pod_sc["runAsUser"], pod_sc["runAsGroup"], pod_sc["fsGroup"]) == (2000, 2000, 2000), where
        assert pod_sc["runAsNonRoot"] is True and pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["runAsUser"] == 2000 and sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (where, c["name"])
            assert "seccompProfile" not in sc, (where, c["name"])  # null leaves a default out (the pod's holds)
    for doc in docs:
        if doc["kind"] in ("Deployment", "Pod"):
            validate_strictly(doc)


def test_platform_passes_security_contexts_to_the_serving_pods(charts: Path) -> None:
    docs = render(charts, "textrec-platform", {"serving": {"podSecurityContext": {"runAsUser": 3000},
                                                           "containerSecurityContext": {"runAsUser": 3000}}})
    spec = one(docs, "Deployment", "serving")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsUser"] == 3000 and spec["securityContext"]["runAsNonRoot"] is True
    assert spec["containers"][0]["securityContext"]["runAsUser"] == 3000
    mlflow = one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]
    assert mlflow["securityContext"]["runAsUser"] != 3000  # the serving chart's values only


# --- schema and clear errors ----------------------------------------------------------------------

@pytest.mark.parametrize("chart,values,expected", [
    ("textrec-serving", {"replicaCount": "2"}, "/replicaCount"),
    ("textrec-serving", {"service": {"port": 8081}}, "/service/port"),
    ("textrec-serving", {"torchserve": {"workers": 0}}, "/torchserve/workers"),
    ("textrec-serving", {"modle": {"name": "x"}}, "modle"),
    ("textrec-serving", {"autoscaling": {"enabled": "yes"}}, "/autoscaling/enabled"),
    ("textrec-mlflow", {"mlflow": {"artifactsDestination": "/data/artifacts"}}, "/mlflow/artifactsDestination"),
    ("textrec-mlflow", {"postgresql": {"storage": {"size": "lots"}}}, "/postgresql/storage/size"),
    ("textrec-mlflow", {"replicaCount": 1.5}, "/replicaCount"),
    ("textrec-serving", {"ingress": {"pathType": "Regex"}}, "/ingress/pathType"),
    ("textrec-serving", {"ingress": {"host": "HTR.example.com"}}, "/ingress/host"),
    ("textrec-serving", {"httpRoute": {"hostnames": ["not a host"]}}, "/httpRoute/hostnames/0"),
    ("textrec-serving", {"httpRoute": {"parentRefs": [{"namespace": "gateway"}]}}, "/httpRoute/parentRefs/0"),
    ("textrec-serving", {"containerSecurityContext": {"readOnlyRootFileSystem": True}}, "readOnlyRootFileSystem"),
    ("textrec-serving", {"podSecurityContext": {"runAsUser": "1000"}}, "/podSecurityContext/runAsUser"),
    ("textrec-platform", {"pipeline": {"serviceAccount": {"name": "Pipeline_Runner"}}}, "/pipeline/serviceAccount/name"),
    ("textrec-platform", {"pipeline": {"rbac": {"create": "yes"}}}, "/pipeline/rbac/create"),
])
def test_schema_rejects_bad_values(charts: Path, chart: str, values: dict, expected: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(expected)):
        render(charts, chart, values)


def test_a_model_uri_that_is_not_s3_needs_a_claim(charts: Path) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"model\.uri=\"gs://b/m\.mar\": expected an s3://"):
        render(charts, "textrec-serving", {"model": {"uri": "gs://b/m.mar"}})


def test_an_external_database_needs_its_secret(charts: Path) -> None:
    with pytest.raises(helm.HelmRenderError, match="externalDatabase.existingSecret: required"):
        render(charts, "textrec-mlflow", {"postgresql": {"enabled": False}})


# --- documentation of values ----------------------------------------------------------------------

def _leaf_paths(values: dict, prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _leaf_paths(value, path + ".")
        else:
            yield path


@pytest.mark.parametrize("chart", list(CASES))
def test_every_value_is_documented_with_a_param_line(chart: str) -> None:
    text = (CHARTS / chart / "values.yaml").read_text()
    documented = set(re.findall(r"^## @param (\S+) \S", text, flags=re.M))
    leaves = set(_leaf_paths(yaml.safe_load(text)))

    def covered(path: str) -> bool:  # a whole block (e.g. resources) may be documented as one value
        parts = path.split(".")
        return any(".".join(parts[:i]) in documented for i in range(1, len(parts) + 1))

    assert not [p for p in leaves if not covered(p)], "undocumented values"
    assert not [d for d in documented if d not in leaves and not any(p.startswith(d + ".") for p in leaves)], \
        "@param lines for values that do not exist"


# --- the local kind script ------------------------------------------------------------------------

def test_local_kind_stops_at_once_and_names_every_missing_tool(tmp_path: Path) -> None:
    proc = subprocess.run(["/bin/bash", str(ROOT / "deploy/kind/local-kind.sh")], capture_output=True, text=True,
                          env={"PATH": str(tmp_path), "HOME": str(tmp_path)}, timeout=30)
    assert proc.returncode == 1
    assert "missing tools: docker kind kubectl helm make git" in proc.stderr
    assert not list(tmp_path.iterdir())  # it created nothing


def test_local_kind_stops_when_the_docker_engine_does_not_answer(tmp_path: Path) -> None:
    for tool in ("docker", "kind", "kubectl", "helm", "make", "git"):
        stub = tmp_path / tool
        # Present but unusable: `docker info` fails as it does with no daemon; the others must not run.
        stub.write_text(f"#!/bin/sh\necho ran-{tool} >> {tmp_path}/calls\nexit 1\n")
        stub.chmod(0o755)
    proc = subprocess.run(["/bin/bash", str(ROOT / "deploy/kind/local-kind.sh")], capture_output=True, text=True,
                          env={"PATH": f"{tmp_path}:/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=30)
    assert proc.returncode == 1
    assert "no Docker engine answers" in proc.stderr
    assert (tmp_path / "calls").read_text().split() == ["ran-docker"]


def test_kind_cluster_config_is_a_kind_cluster() -> None:
    config = yaml.safe_load((ROOT / "deploy/kind/cluster.yaml").read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in config["nodes"]] == ["control-plane", "worker"]


def test_scripts_are_valid_bash() -> None:
    for script in ("deploy/kind/local-kind.sh", "docker/build-images.sh", "docker/build-base-image.sh",
                   "docker/serving/entrypoint.sh"):
        path = ROOT / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
