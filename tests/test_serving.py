"""TorchServe for real: archive a tiny model, start TorchServe on 127.0.0.1 (free ports, temporary model
store, token auth on), send real HTTP requests, roll a new version in while requests run, stop it.

The cluster deploy path is tested against a mocked Kubernetes API (there is no API server here) and
a real S3 server for the model store.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import requests
from conftest import free_port
from fixtures.serving import line_png, make_model_pt, noise_png

from cluster.rollout import VERSION_ANNOTATION
from serving import config as serve_config
from serving.archive import ArchiveError, ArchiveOptions, archive_model, read_source, resolve_model
from serving.config import SECRET_ENV, ServeConfig, allowed_urls, render
from serving.deploy import DeployResult, deploy_model
from serving.torchserve import ServeError, TorchServeProcess
from textrec.recognizer import Recognizer
from textrec.tracking import MODEL_NAME

# Only the tests that start TorchServe need Java; the rest (config, archives, the cluster path) run anyway.
requires_java = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java 17 (java on PATH)")

LIMITS = {"max_image_bytes": 60_000, "max_pixels": 300_000}


@dataclass
class Served:
    server: TorchServeProcess
    model_pt: Path
    root: Path

    def url(self, version: str | None = None) -> str:
        return f"{self.server.config.inference_url}/predictions/{MODEL_NAME}" + (f"/{version}" if version else "")

    def post(self, session: requests.Session | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.server.token()}", **kw.pop("headers", {})}
        return (session or requests).post(self.url(), headers=headers, timeout=60, **kw)


def _config(root: Path) -> ServeConfig:
    return ServeConfig(model_store=root / "store", inference_port=free_port(), management_port=free_port(),
                       metrics_port=free_port(), grpc_inference_port=free_port(),
                       grpc_management_port=free_port(), enable_model_api=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17 (java on PATH)")
    root = tmp_path_factory.mktemp("serve")
    model_pt = make_model_pt(root / "v1" / "model.pt", seed=0)
    cfg = _config(root)
    mar = archive_model(model_pt, cfg.model_store, version="1",
                        options=ArchiveOptions(batch_size=8, max_batch_delay_ms=5, **LIMITS))
    server = TorchServeProcess(cfg, root / "work")
    server.start({MODEL_NAME: mar.name})
    try:
        server.wait_ready()
        yield Served(server, model_pt, root)
    finally:
        server.stop()
    assert server.pid() is None and not server.key_file.exists()


def test_config_binds_loopback_and_restricts_models_to_the_store(tmp_path: Path) -> None:
    text = render(ServeConfig(model_store=tmp_path / "store", enable_model_api=False))
    lines = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert lines["inference_address"] == "http://127.0.0.1:8080"
    assert lines["management_address"] == "http://127.0.0.1:8081"
    assert lines["grpc_inference_address"] == lines["grpc_management_address"] == "127.0.0.1"
    assert lines["enable_model_api"] == "false" and lines["disable_token_authorization"] == "false"
    assert lines["install_py_dep_per_model"] == "false" and lines["metrics_mode"] == "prometheus"
    assert lines["allowed_urls"] == allowed_urls(tmp_path / "store")
    assert "$" not in text, "every placeholder must be filled"
    with pytest.raises(ValueError, match="ports must differ"):
        ServeConfig(model_store=tmp_path, inference_port=9000, management_port=9000)


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_config_cli_takes_flags_then_environment_then_the_pod_layout(tmp_path: Path) -> None:
    out = tmp_path / "config.properties"
    env = {"TEXTREC_TS_JOB_QUEUE_SIZE": "7", "TEXTREC_TS_METRICS_PORT": "9100", "TEXTREC_TS_GPUS": "2",
           "TEXTREC_TS_TOKEN_EXPIRATION_MIN": "0.05", "TEXTREC_TS_WORKERS_PER_MODEL": "", "OTHER": "x"}
    code = serve_config.main(["--pod", "--model-store", str(tmp_path / "store"), "--metrics-port", "9200",
                              "--out", str(out)], env=env)
    props = _props(out.read_text())
    assert code == 0
    assert props["inference_address"] == "http://127.0.0.1:8085"  # the pod layout: the gateway owns 8080
    assert props["metrics_address"] == "http://0.0.0.0:9200"  # the flag beats the environment
    assert (props["job_queue_size"], props["number_of_gpu"], props["token_expiration_min"]) == ("7", "2", "0.05")
    assert props["default_workers_per_model"] == "1"  # an empty variable keeps the default
    assert props["model_store"] == str(tmp_path / "store") and "$" not in out.read_text()
    local = _props(render(ServeConfig(model_store=tmp_path / "store")))
    assert "number_of_gpu" not in local and local["metrics_address"] == "http://127.0.0.1:8082"
    assert local["token_expiration_min"] == "720" and local["vmargs"] == "-Xmx768m -XX:+ExitOnOutOfMemoryError"


def test_config_refuses_bad_settings_and_names_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "config.properties"
    cases = [({"TEXTREC_TS_JOB_QUEUE_SIZE": "lots"}, "TEXTREC_TS_JOB_QUEUE_SIZE: expected int, got 'lots'"),
             ({"TEXTREC_TS_ENABLE_MODEL_API": "maybe"}, "TEXTREC_TS_ENABLE_MODEL_API: expected a boolean"),
             ({"TEXTREC_TS_JAVA_OPTS": "-Xmx1g\nenable_model_api=true"}, "java_opts must be one line"),
             ({"TEXTREC_TS_MAX_REQUEST_SIZE": "0"}, "max_request_size must be at least 1")]
    for env, words in cases:
        assert serve_config.main(["--model-store", str(tmp_path), "--out", str(out)], env=env) == 2
        assert words in capsys.readouterr().err
    assert serve_config.main(["--out", str(out)], env={}) == 2
    assert "no model store" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == [], "a refused config writes nothing"


def test_the_request_limit_admits_the_largest_image_the_handler_accepts_as_base64_json() -> None:
    from serving.handler import DEFAULT_MAX_IMAGE_BYTES

    body = json.dumps({"image": base64.b64encode(bytes(DEFAULT_MAX_IMAGE_BYTES)).decode()})
    assert len(body) <= ServeConfig.max_request_size


def test_the_workers_never_see_credentials() -> None:
    import re

    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "MLFLOW_TRACKING_PASSWORD", "HF_TOKEN", "DB_PASSWORD"):
        assert re.fullmatch(SECRET_ENV, name), name
    assert not re.fullmatch(SECRET_ENV, "OMP_NUM_THREADS")


def test_cli_stop_says_when_no_server_runs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "serving", "stop", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and f"no TorchServe running from {tmp_path}" in proc.stdout


def test_archive_carries_the_version_and_where_the_model_came_from(served: Served) -> None:
    info = read_source(served.server.config.model_store / f"{MODEL_NAME}-v1.mar")
    assert info["version"] == "1" and info["manifest"]["model"]["modelVersion"] == "1"
    assert info["model_uri"] == str(served.model_pt.absolute())
    assert info["sha256"] == __import__("serving.archive").archive.sha256(served.model_pt)
    with pytest.raises(ArchiveError, match="no such model file"):
        resolve_model(served.root / "missing.pt", served.root)


def test_predictions_in_all_three_forms_match_the_in_process_recognizer(served: Served) -> None:
    images = [line_png(1), line_png(2, width=240), line_png(3, fmt="JPEG")]
    answers = [
        served.post(data=images[0], headers={"Content-Type": "image/png"}),
        served.post(files={"data": ("line.png", images[1], "image/png")}),
        served.post(json={"image": base64.b64encode(images[2]).decode()}),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200], [r.text for r in answers]
    assert all(r.headers["content-type"].startswith("application/json") for r in answers)
    expected = Recognizer.load(served.model_pt).recognise(images)
    got = [r.json() for r in answers]
    assert [g["text"] for g in got] == [e.text for e in expected]
    assert [g["confidence"] for g in got] == pytest.approx([e.confidence for e in expected], abs=1e-5)
    assert {g["version"] for g in got} == {"1"}


BAD = {
    "empty body": (b"", 400, "empty"),
    "not an image": (b"just some text, no picture", 415, "not a known image format"),
    "truncated png": (line_png(4, width=400)[:300], 400, "truncated"),
    "too many bytes": (noise_png(300), 413, "bytes"),
    "too many pixels": (line_png(5, width=8000), 413, "pixels"),
    "unsupported format": (line_png(6, fmt="TIFF"), 415, "TIFF"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_gets_a_4xx_json_error_and_the_worker_keeps_serving(served: Served, name: str) -> None:
    body, status, words = BAD[name]
    r = served.post(data=body, headers={"Content-Type": "image/png"})
    assert r.status_code == status, r.text
    assert words.lower() in r.json()["message"].lower()
    ok = served.post(data=line_png(7), headers={"Content-Type": "image/png"})
    assert ok.status_code == 200 and "text" in ok.json()


def test_bad_json_bodies_are_named(served: Served) -> None:
    r = served.post(json={"picture": "x"})
    assert r.status_code == 400 and '"image"' in r.json()["message"]
    r = served.post(data=b"{oops", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]


def test_a_body_over_max_request_size_is_refused_by_torchserve(served: Served) -> None:
    r = served.post(data=b"\x89PNG" + b"0" * (served.server.config.max_request_size + 10),
                    headers={"Content-Type": "image/png"})
    assert r.status_code == 413


def test_a_base64_body_of_a_10_mib_image_reaches_the_handler(served: Served) -> None:
    # Not refused by TorchServe's request limit: the handler's own image limit (LIMITS) answers.
    r = served.post(json={"image": base64.b64encode(bytes(10 * 1024 * 1024)).decode()})
    assert r.status_code == 413 and "bytes" in r.json()["message"], r.text


def test_bad_and_good_requests_sent_together_each_get_their_own_answer(served: Served) -> None:
    bodies = [line_png(10 + i) if i % 2 == 0 else b"not an image" for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: served.post(data=b, headers={"Content-Type": "image/png"}), bodies))
    assert [r.status_code for r in answers] == [200 if i % 2 == 0 else 415 for i in range(16)]


def test_500_requests_at_concurrency_8_all_succeed(served: Served) -> None:
    images = [line_png(i, width=120 + 10 * (i % 20)) for i in range(50)]
    local = threading.local()

    def one(i: int) -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return served.post(local.session, data=images[i % 50], headers={"Content-Type": "image/png"}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = Counter(pool.map(one, range(500)))
    assert codes == {200: 500}


def test_metrics_endpoint_counts_inference_requests(served: Served) -> None:
    served.post(data=line_png(1), headers={"Content-Type": "image/png"})
    text = requests.get(f"{served.server.config.metrics_url}/metrics", timeout=10).text
    counts = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("ts_inference_requests_total{")]
    assert counts and sum(counts) >= 1


def test_requests_without_the_right_token_are_refused(served: Served) -> None:
    no_token = requests.post(served.url(), data=line_png(1), timeout=10)
    wrong = requests.post(served.url(), data=line_png(1), headers={"Authorization": "Bearer nope"}, timeout=10)
    manage = requests.get(f"{served.server.config.management_url}/models",
                          headers={"Authorization": f"Bearer {served.server.token()}"}, timeout=10)
    assert no_token.status_code == wrong.status_code == 400 and "InvalidKeyException" in no_token.text
    assert manage.status_code == 400, "the inference key must not open the management API"


def test_models_outside_the_store_cannot_be_registered(served: Served) -> None:
    outside = served.root / "elsewhere.mar"
    shutil.copy(served.server.config.model_store / f"{MODEL_NAME}-v1.mar", outside)
    r = requests.post(f"{served.server.config.management_url}/models", params={"url": f"file://{outside}"},
                      headers={"Authorization": f"Bearer {served.server.token('management')}"}, timeout=30)
    assert r.status_code == 404 and "allowed" in r.text


def test_textrec_predict_endpoint_prints_text_and_confidence(served: Served, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    from textrec.cli import main

    image = tmp_path / "line.png"
    image.write_bytes(line_png(1))
    code = main(["predict", "--endpoint", served.server.config.inference_url,
                 "--token-file", str(served.server.key_file), str(image)])
    text, confidence = capsys.readouterr().out.rstrip("\n").split("\t")
    expected = Recognizer.load(served.model_pt).recognise([line_png(1)])[0]
    assert code == 0 and text == expected.text and float(confidence) == pytest.approx(expected.confidence, abs=1e-4)


def test_predict_takes_exactly_one_of_model_and_endpoint(tmp_path: Path) -> None:
    from textrec.cli import main

    image = tmp_path / "line.png"
    image.write_bytes(line_png(1))
    for argv in (["predict", str(image)], ["predict", "--model", "m.pt", "--endpoint", "http://x", str(image)]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2


def test_endpoint_token_comes_from_file_environment_or_key_file(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from textrec.cli import _endpoint_token

    plain, keys = tmp_path / "token", tmp_path / "key_file.json"
    plain.write_text("s3cret-client-token\n")
    keys.write_text(json.dumps({"inference": {"key": "abc"}, "management": {"key": "def"}}))
    monkeypatch.setenv("TEXTREC_TOKEN", "from-env")
    assert _endpoint_token(plain) == "s3cret-client-token" and _endpoint_token(keys) == "abc"
    assert _endpoint_token(None) == "from-env"
    monkeypatch.delenv("TEXTREC_TOKEN")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="--token-file"):
        _endpoint_token(None)


def test_live_version_swap_drops_no_request_and_unchanged_champion_is_left_alone(served: Served) -> None:
    v2 = make_model_pt(served.root / "v2" / "model.pt", seed=1)
    stop, results = threading.Event(), []

    def hammer() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = served.post(s, data=line_png(len(results) % 7), headers={"Content-Type": "image/png"})
                    results.append((r.status_code if r.ok else f"{r.status_code}: {r.text[:200]}", r.json().get("version")))
                except requests.RequestException as e:  # a dropped or hung request is a failure too
                    results.append((f"{type(e).__name__}: {e}"[:300], None))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        result = deploy_model(str(v2), version="2", workdir=served.server.workdir,
                              archive_options=ArchiveOptions(**LIMITS))
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert result.changed and (result.version, result.previous) == ("2", "1")
    codes = Counter(code for code, _ in results)
    assert codes.keys() == {200}, f"failed requests during the swap: {codes}"
    versions = [v for _, v in results]
    assert versions[0] == "1" and versions[-1] == "2", "requests must have run before and after the swap"
    assert served.server.versions() == ["2"]

    again = deploy_model(str(v2), version="2", workdir=served.server.workdir)
    assert not again.changed and "already served" in again.reason


@requires_java
def test_a_model_that_cannot_load_fails_fast_with_its_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"this is no model artifact")
    cfg = _config(tmp_path)
    mar = archive_model(broken, cfg.model_store, version="1")
    server = TorchServeProcess(cfg, tmp_path / "work")
    server.start({MODEL_NAME: mar.name})
    try:
        # "keeps dying" is the crash-loop detector's error: a timeout would say it did not become ready
        with pytest.raises(ServeError, match="keeps dying") as err:
            server.wait_ready(timeout=300)
        assert "not a readable textrec model artifact" in str(err.value)
    finally:
        assert server.stop()


def test_deploy_component_interface() -> None:
    from components import deploy_model as component

    spec = component.component_spec
    assert set(spec.inputs) == {"model_uri", "promoted", "mlflow_uri", "model_store_uri", "deployment", "namespace", "target",
                                "task"}
    assert set(spec.outputs) == {"changed", "version", "reason"}
    assert spec.inputs["target"].default == "cluster"


# --- cluster target: a mocked Kubernetes API, a real S3 server -----------------------------------


def _fake_apps_api(annotations: dict[str, str], container: str = "torchserve") -> mock.Mock:
    api = mock.Mock()
    pod = SimpleNamespace(containers=[SimpleNamespace(name=container)])
    api.read_namespaced_deployment.return_value = SimpleNamespace(
        metadata=SimpleNamespace(annotations=annotations), spec=SimpleNamespace(template=SimpleNamespace(spec=pod)))
    return api


def test_cluster_deploy_uploads_the_archive_and_patches_the_deployment(tmp_path: Path, s3) -> None:
    # Mocked API: no Kubernetes API server can run here. The archive goes to a real S3 server.
    model_pt = make_model_pt(tmp_path / "model.pt")
    api = _fake_apps_api({VERSION_ANNOTATION: "3"})
    result = deploy_model(str(model_pt), target="cluster", version="4", model_store_uri=s3.uri("model-store"),
                          namespace="textrec", deployment="textrec-serving", apps_api=api)
    assert isinstance(result, DeployResult) and result.changed and result.previous == "3"
    key = f"model-store/{MODEL_NAME}-v4.mar"
    assert result.archive == s3.uri(key)
    assert s3.client().head_object(Bucket=s3.bucket, Key=key)["ContentLength"] > 1000
    name, namespace, patch = api.patch_namespaced_deployment.call_args.args
    assert (name, namespace) == ("textrec-serving", "textrec")
    template = patch["spec"]["template"]
    assert template["metadata"]["annotations"][VERSION_ANNOTATION] == "4"
    env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
    assert env["TEXTREC_MODEL_VERSION"] == "4" and env["TEXTREC_MODEL_ARCHIVE"] == s3.uri(key)


def test_cluster_deploy_does_nothing_when_the_champion_did_not_move(tmp_path: Path) -> None:
    api = _fake_apps_api({VERSION_ANNOTATION: "4"})
    result = deploy_model(str(make_model_pt(tmp_path / "model.pt")), target="cluster", version="4",
                          model_store_uri=str(tmp_path / "store"), apps_api=api)
    assert not result.changed and "already serves" in result.reason
    api.patch_namespaced_deployment.assert_not_called()
    assert not (tmp_path / "store").exists()


def test_deploy_refuses_unknown_targets_and_missing_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="target must be"):
        deploy_model(str(tmp_path / "m.pt"), target="moon", version="1")
    with pytest.raises(ValueError, match="model_store_uri"):
        deploy_model(str(tmp_path / "m.pt"), target="cluster", version="1")


def test_archive_from_the_registry_champion_keeps_its_version_and_run(tmp_path: Path, monkeypatch) -> None:
    """models:/textrec-line@champion -> the archive's version is the registry version; the run id is kept.
    (Registry look-up and download are faked here; the slow test below uses a real MLflow server.)"""
    from serving import archive

    model_pt = make_model_pt(tmp_path / "model.pt")
    champion = f"models:/{MODEL_NAME}@champion"
    monkeypatch.setattr(archive, "lookup_version", lambda uri: (MODEL_NAME, "12", "run-abc"))
    monkeypatch.setattr(archive, "_download_version", lambda name, version, dest: model_pt)
    mar = archive_model(champion, tmp_path / "store")
    info = read_source(mar)
    assert mar.name == f"{MODEL_NAME}-v12.mar"
    assert (info["version"], info["run_id"], info["model_uri"]) == ("12", "run-abc", champion)
    assert json.loads(json.dumps(info))["manifest"]["model"]["modelVersion"] == "12"


# --- the registry champion, end to end: a real MLflow server, a real TorchServe ------------------


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from textrec import tracking

    server = tracking.start_local_server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server.url
    finally:
        tracking.stop_local_server(server)


def _register(model_pt: Path, champion: bool) -> str:
    from textrec import tracking

    client = tracking.mlflow_client()  # MLFLOW_TRACKING_URI, not a URI an earlier test left set in mlflow
    run_id = client.create_run(tracking.ensure_experiment()).info.run_id
    version = tracking.log_model_version(model_pt, run_id)
    if champion:
        client.set_registered_model_alias(tracking.MODEL_NAME, tracking.CHAMPION, version)
    return version


@requires_java
@pytest.mark.slow  # an MLflow server and a second TorchServe: ~40 s on two cores
def test_serve_and_deploy_follow_the_registry_champion(tmp_path: Path, mlflow_uri: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.deploy import serve

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    first = _register(make_model_pt(tmp_path / "a" / "model.pt", seed=0), champion=True)
    server = serve(workdir=tmp_path / "work", config=_config(tmp_path))  # what `make serve` runs
    try:
        assert server.default_version() == first
        unchanged = deploy_model(workdir=server.workdir)
        assert not unchanged.changed and "already served" in unchanged.reason

        second = _register(make_model_pt(tmp_path / "b" / "model.pt", seed=1), champion=True)
        moved = deploy_model(workdir=server.workdir)
        assert moved.changed and (moved.version, moved.previous) == (second, first)
        assert server.predict(line_png(1))["version"] == second
        source = read_source(moved.archive)
        assert source["registered_name"] == MODEL_NAME and source["model_uri"] == f"models:/{MODEL_NAME}@champion"
        from mlflow import MlflowClient

        assert source["run_id"] == MlflowClient().get_model_version(MODEL_NAME, second).run_id
    finally:
        server.stop()
