"""The serving container's runtime and the images.

Without Docker: the serving image's own entrypoint, token gateway and archive fetcher run for real
against TorchServe on 127.0.0.1 (free ports, a tiny echo model), so the gateway's token check, key
renewal, model readiness check and clean SIGTERM stop are tested in the default tier.

With Docker (``-m docker``): both images are built from docker/*.Dockerfile on a base image made by
debootstrap (there is no registry here), then one KFP component runs in the component image exactly
as a pipeline pod runs it, and the serving image answers a real prediction with a real textrec model
under the chart's hardening (read-only root, non-root, no capabilities). Those tests start their own
dockerd when none answers and are skipped, with the reason, where docker or dockerd is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from conftest import free_port
from fixtures.serving import line_png, make_model_pt

from textrec.tracking import MODEL_NAME

ROOT = Path(__file__).resolve().parents[1]
SERVING = ROOT / "docker" / "serving"
VENV_BIN = Path(sys.executable).parent
TOKEN = "test-token-0123456789abcdefghij"
MODEL = MODEL_NAME
# A function handler: TorchServe and the gateway are real, the model is a stand-in that echoes sizes.
ECHO_HANDLER = '''
def handle(data, context):
    if not data:
        return None
    return [{"text": "echo", "bytes": len(row.get("body") or row.get("data") or b"")} for row in data]
'''

COMPONENT_SOURCE = '''
from kfp import dsl


@dsl.component(base_image="{image}", install_kfp_package=False)
def encode_text(text: str) -> str:
    import textrec
    from textrec.charset import DEFAULT_CHARSET

    return f"{{textrec.__version__}}:{{DEFAULT_CHARSET.encode(text)}}"
'''


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited ({proc.returncode})\n{_tail(log)}")
        try:
            result = check()
            if result:
                return result
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{_tail(log)}")


def _tail(log: Path | None) -> str:
    return log.read_text()[-3000:] if log and log.exists() else ""


def torchserve_env(ports: dict[str, int], token_minutes: float | None = None) -> dict[str, str]:
    """TEXTREC_TS_* settings that move the pod's TorchServe onto this test's free ports (the
    entrypoint renders its config.properties from them, as in a pod)."""
    env = {"TEXTREC_TS_INFERENCE_PORT": ports["inference"], "TEXTREC_TS_MANAGEMENT_PORT": ports["management"],
           "TEXTREC_TS_METRICS_PORT": ports["metrics"], "TEXTREC_TS_METRICS_HOST": "127.0.0.1",
           "TEXTREC_TS_GRPC_INFERENCE_PORT": ports["grpc_inference"],
           "TEXTREC_TS_GRPC_MANAGEMENT_PORT": ports["grpc_management"]}
    if token_minutes is not None:
        env["TEXTREC_TS_TOKEN_EXPIRATION_MIN"] = token_minutes
    return {k: str(v) for k, v in env.items()}


def config_line(config: Path, key: str) -> str:
    return next(line.split("=", 1)[1] for line in config.read_text().splitlines() if line.startswith(key + "="))


# --- the entrypoint, gateway and fetcher against a real TorchServe -------------------------------

@dataclass
class Pod:
    """The serving container's processes started the way the image starts them (without tini)."""

    proc: subprocess.Popen
    url: str
    run_dir: Path
    log: Path
    ports: dict[str, int]

    def post(self, body: bytes = b"\x89PNG...", token: str | None = TOKEN, path: str = f"/predictions/{MODEL}"):
        headers = {"Content-Type": "image/png"} | ({"Authorization": f"Bearer {token}"} if token else {})
        return requests.post(self.url + path, data=body, headers=headers, timeout=30)

    def keys(self) -> dict:
        return json.loads((self.run_dir / "key_file.json").read_text())


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    if shutil.which("java") is None or not (VENV_BIN / "torchserve").exists():
        pytest.skip("needs Java 17 and torchserve (the serving stack) on this machine")
    root = tmp_path_factory.mktemp("pod")
    source = root / "source"
    source.mkdir()
    (source / "echo_handler.py").write_text(ECHO_HANDLER)
    subprocess.run([str(VENV_BIN / "torch-model-archiver"), "--model-name", MODEL, "--version", "1",
                    "--handler", str(source / "echo_handler.py"), "--export-path", str(source)], check=True)
    ports = {k: free_port() for k in ("gateway", "inference", "management", "metrics", "grpc_inference",
                                      "grpc_management")}
    for d in ("logs", "tmp"):
        (root / d).mkdir()
    # The gateway finds TorchServe's addresses in the config the entrypoint renders; the
    # model name comes from the entrypoint's default. Keys expire after 3 s, so the gateway must
    # renew them through TorchServe's token API.
    env = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", "HOME": str(root), "TMPDIR": str(root / "tmp"),
           "TEMP": str(root / "tmp"), "TEXTREC_HOME": str(SERVING),
           "TEXTREC_MODEL_ARCHIVE": str(source / f"{MODEL}.mar"), "TEXTREC_MODEL_STORE": str(root / "store"),
           "TEXTREC_RUN_DIR": str(root / "run"), "LOG_LOCATION": str(root / "logs"), "TEXTREC_TOKEN": TOKEN,
           "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(ports["gateway"]), "GATEWAY_MAX_BODY": "4096",
           "OMP_NUM_THREADS": "1", "JAVA_HOME": os.environ.get("JAVA_HOME", ""),
           **torchserve_env(ports, token_minutes=0.05)}
    log = root / "pod.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(SERVING / "entrypoint.sh")], env={k: v for k, v in env.items() if v},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    pod = Pod(proc, f"http://127.0.0.1:{ports['gateway']}", root / "run", log, ports)
    try:
        wait_until(lambda: requests.get(pod.url + "/ready", timeout=5).status_code == 200, 120,
                   "model READY through the gateway", proc, log)
        yield pod
    finally:
        if proc.poll() is None:  # the stop test did not run: end the whole process group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_archive_was_fetched_into_the_store_once(pod: Pod) -> None:
    store = Path(pod.log.parent / "store")
    assert zipfile.is_zipfile(store / f"{MODEL}.mar")
    assert (store / f".{MODEL}.source").read_text().endswith(f"source/{MODEL}.mar")
    assert "fetch_model: fetched" in pod.log.read_text()


def test_requests_without_the_shared_token_are_refused(pod: Pod) -> None:
    for token in (None, "wrong-token", TOKEN[:-1]):
        r = pod.post(token=token)
        assert r.status_code == 401, (token, r.text)
        assert r.headers["WWW-Authenticate"] == "Bearer" and "token" in r.json()["error"]


def test_token_holders_get_torchserves_answer(pod: Pod) -> None:
    r = pod.post(b"x" * 100)
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "echo", "bytes": 100}


def test_the_gateway_renews_expired_torchserve_keys(pod: Pod) -> None:
    first = pod.keys()["inference"]["key"]
    time.sleep(3.5)  # the keys written at start have expired (token_expiration_min=0.05)
    for _ in range(3):
        assert pod.post().status_code == 200
    assert pod.keys()["inference"]["key"] != first
    assert requests.get(pod.url + "/ready", timeout=10).status_code == 200  # management key renewed too


def test_the_entrypoint_renders_torchserves_config_from_serving_config(pod: Pod) -> None:
    from serving.config import POD, ServeConfig, env_values, render

    settings = {**POD, **env_values(torchserve_env(pod.ports, token_minutes=0.05))}
    expected = render(ServeConfig(model_store=pod.log.parent / "store", **settings))
    assert (pod.run_dir / "config.properties").read_text() == expected
    assert config_line(pod.run_dir / "config.properties", "inference_address").endswith(f":{pod.ports['inference']}")


def test_a_bad_torchserve_setting_stops_the_container_at_once_with_its_name(tmp_path: Path) -> None:
    env = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", "TEXTREC_HOME": str(SERVING),
           "TEXTREC_RUN_DIR": str(tmp_path / "run"), "TEXTREC_MODEL_STORE": str(tmp_path / "store"),
           "TEXTREC_TS_JOB_QUEUE_SIZE": "lots", "TEXTREC_MODEL_ARCHIVE": str(tmp_path / "never-fetched.mar")}
    proc = subprocess.run(["bash", str(SERVING / "entrypoint.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "TEXTREC_TS_JOB_QUEUE_SIZE: expected int, got 'lots'" in proc.stderr
    assert "fetch_model" not in proc.stdout + proc.stderr and not (tmp_path / "store").exists()


def test_torchserve_itself_still_demands_its_own_key(pod: Pod) -> None:
    inference = config_line(pod.run_dir / "config.properties", "inference_address")
    r = requests.post(f"{inference}/predictions/{MODEL}", data=b"x", timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code in (400, 401) and "InvalidKeyException" in r.text


def test_oversized_bodies_unknown_paths_and_missing_lengths_get_clear_errors(pod: Pod) -> None:
    r = pod.post(b"x" * 5000)
    assert r.status_code == 413 and "4096" in r.json()["error"]
    r = pod.post(path="/models")
    assert r.status_code == 404 and "/models" in r.json()["error"]
    r = requests.get(pod.url + f"/predictions/{MODEL}", timeout=10)
    assert r.status_code == 404


def test_ready_and_live_report_the_model_state(pod: Pod) -> None:
    ready = requests.get(pod.url + "/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready_workers"] >= 1
    live = requests.get(pod.url + "/live", timeout=10)
    assert live.status_code == 200 and live.json() == {"live": True}


def test_ready_is_503_for_a_model_torchserve_does_not_serve(pod: Pod, tmp_path: Path) -> None:
    # A second gateway over the same TorchServe, asking about another model name; its addresses
    # given in the environment, its limits read from TorchServe's config.
    config = pod.run_dir / "config.properties"
    env = {**os.environ, "TEXTREC_TOKEN": TOKEN, "TEXTREC_MODEL_NAME": "not-loaded", "GATEWAY_HOST": "127.0.0.1",
           "GATEWAY_PORT": str(port := free_port()), "TS_KEY_FILE": str(pod.run_dir / "key_file.json"),
           "TS_CONFIG_FILE": str(config), "TS_INFERENCE_URL": config_line(config, "inference_address"),
           "TS_MANAGEMENT_URL": config_line(config, "management_address")}
    proc = subprocess.Popen([sys.executable, str(SERVING / "gateway.py")], env=env, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/live", timeout=5).status_code, 20, "second gateway")
        r = requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)
        assert r.status_code == 503 and r.json() == {"ready": False, "model": "not-loaded", "ready_workers": 0}
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM: a clean exit


def _load_gateway(monkeypatch: pytest.MonkeyPatch):
    """docker/serving/gateway.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("textrec_gateway", SERVING / "gateway.py")
    gateway = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, gateway)  # dataclasses look their module up there
    spec.loader.exec_module(gateway)
    return gateway


def test_gateway_takes_torchserves_addresses_and_limits_from_its_config(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.config import POD, ServeConfig, write_config

    gateway = _load_gateway(monkeypatch)
    cfg = ServeConfig(model_store=tmp_path / "store", **POD, response_timeout_s=30)
    write_config(cfg, tmp_path / "config.properties")
    env = {"TEXTREC_TOKEN": TOKEN, "TEXTREC_MODEL_NAME": MODEL, "TS_CONFIG_FILE": str(tmp_path / "config.properties")}
    settings = gateway.Settings.from_env(env)
    assert settings.inference == ("127.0.0.1", cfg.inference_port) and settings.management == ("127.0.0.1", 8081)
    assert settings.max_body == cfg.max_request_size and settings.timeout_s == 35.0
    assert settings.port == 8080 and settings.model_name == MODEL
    overridden = gateway.Settings.from_env({**env, "GATEWAY_MAX_BODY": "100", "GATEWAY_UPSTREAM_TIMEOUT": "9"})
    assert (overridden.max_body, overridden.timeout_s) == (100, 9.0)
    for missing, words in (({"TS_CONFIG_FILE": ""}, "is not set and no TS_CONFIG_FILE gives TorchServe"),
                           ({"TEXTREC_MODEL_NAME": ""}, "TEXTREC_MODEL_NAME"),
                           ({"TS_CONFIG_FILE": str(tmp_path / "nope")}, "nope: cannot read")):
        with pytest.raises(gateway.ConfigError, match=words):
            gateway.Settings.from_env({**env, **missing})


def test_gateway_refuses_to_start_without_a_usable_token(tmp_path: Path) -> None:
    for env in ({"TEXTREC_TOKEN": "short"}, {"TEXTREC_TOKEN_FILE": str(tmp_path / "missing")}):
        proc = subprocess.run([sys.executable, str(SERVING / "gateway.py")], capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], **env}, timeout=30)
        assert proc.returncode == 2
        assert "TEXTREC_TOKEN" in proc.stderr


def test_fetch_model_names_a_source_that_is_not_an_archive(tmp_path: Path) -> None:
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a zip")
    proc = subprocess.run([sys.executable, str(SERVING / "fetch_model.py"), str(bad), str(tmp_path / "s"), MODEL],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and f"{bad}: not a model archive" in proc.stderr
    proc = subprocess.run([sys.executable, str(SERVING / "fetch_model.py"), str(tmp_path / "nope.mar"),
                           str(tmp_path / "s"), MODEL], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "nope.mar: no such file" in proc.stderr


def test_sigterm_stops_gateway_and_torchserve_without_orphans(pod: Pod) -> None:
    # Runs last in this file (pytest keeps file order): it ends the module's pod.
    java = _session_processes(pod.proc.pid, "java")
    assert java, "TorchServe's Java server should be running in the pod's session"
    os.kill(pod.proc.pid, signal.SIGTERM)
    assert pod.proc.wait(timeout=60) == 0, _tail(pod.log)
    wait_until(lambda: not _session_processes(pod.proc.pid, "java"), 30, "Java server gone")
    assert not (pod.run_dir / "key_file.json").exists()  # `torchserve --stop` ran


def test_serving_image_requirements_keep_pins_and_leave_out_the_pipeline_stack() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "docker/requirements.py"), "serving", str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, check=True)
    reqs = proc.stdout.split()
    names = {r.split("==")[0] for r in reqs}
    assert {"torch", "torchserve", "torch-model-archiver", "pillow", "pyyaml", "numpy", "boto3"} <= names
    assert not names & {"kfp", "kfp-kubernetes", "mlflow", "kubernetes", "wordfreq"}
    assert not [n for n in names if n.startswith("fontpkg-")]
    assert "torchserve==0.12.0" in reqs  # pins come through unchanged
    bad = subprocess.run([sys.executable, str(ROOT / "docker/requirements.py"), "gpu", str(ROOT / "pyproject.toml")],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown image kind 'gpu'" in bad.stderr


def _session_processes(sid: int, name: str) -> list[int]:
    """Processes called ``name`` in session ``sid`` (from /proc: no pgrep needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        if comm == name and int(fields[3]) == sid:  # fields: state, ppid, pgrp, session, ...
            found.append(int(stat.parent.name))
    return found


# --- Docker: build both images, run a component and a prediction ---------------------------------

def _docker_env(sock: Path | None) -> dict[str, str]:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    if sock is not None:
        env["DOCKER_HOST"] = f"unix://{sock}"
    return env


@pytest.fixture(scope="module")
def docker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for `docker` commands: an engine that answers, started here if need be."""
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI (apt-get install docker.io)")
    if subprocess.run(["docker", "info"], capture_output=True, env=_docker_env(None)).returncode == 0:
        yield _docker_env(None)
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.skip("no Docker engine answers and dockerd cannot be started here (needs dockerd and root)")
    # A short path: unix socket paths are limited to ~100 characters.
    root = Path(os.environ.get("TEXTREC_DOCKER_ROOT", "/tmp/textrec-docker"))
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    log = root / "dockerd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["dockerd", "-H", f"unix://{sock}", "--data-root", f"{root}/data",
                                 "--exec-root", f"{root}/exec", "--pidfile", f"{root}/docker.pid",
                                 "--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-masq=false"],
                                stdout=out, stderr=subprocess.STDOUT)
    env = _docker_env(sock)
    try:
        wait_until(lambda: subprocess.run(["docker", "info"], capture_output=True, env=env).returncode == 0,
                   60, "dockerd", proc, log)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def images(docker: dict[str, str]) -> dict[str, str]:
    """Build both images (on a debootstrap base image unless TEXTREC_TEST_BASE_IMAGE names one)."""
    base = os.environ.get("TEXTREC_TEST_BASE_IMAGE", "textrec-base:bookworm")
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True, env=docker).returncode != 0:
        if shutil.which("debootstrap") is None:
            pytest.skip(f"no base image {base} and no debootstrap to make one (apt-get install debootstrap)")
        subprocess.run([str(ROOT / "docker/build-base-image.sh"), base], check=True, env=docker)
    env = {**docker, "BASE_IMAGE": base, "IMAGE_TAG": "test", "IMAGE_REGISTRY": "",
           # Only PyPI is reachable here; a local CPU torch wheel stands in for the PyTorch index.
           "TORCH_INDEX": os.environ.get("TEXTREC_TEST_TORCH_INDEX", "")}
    if Path("/opt/wheels").is_dir():
        env["WHEELS_DIR"] = "/opt/wheels"
    if os.environ.get("PIP_CERT") or Path("/etc/ssl/certs/ca-certificates.crt").exists():
        env["PIP_CERT"] = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    subprocess.run([str(ROOT / "docker/build-images.sh")], check=True, env=env, cwd=ROOT)
    return {"component": "textrec-component:test", "serving": "textrec-serving:test"}


def _run(docker: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=docker, timeout=timeout)


@pytest.mark.docker
def test_component_image_runs_a_compiled_kfp_component(docker: dict[str, str], images: dict[str, str],
                                                      tmp_path: Path) -> None:
    # The component lives in its own module: KFP reads its source, and this test module's postponed
    # annotations would reach KFP as strings.
    module = tmp_path / "encode_component.py"
    module.write_text(COMPONENT_SOURCE.format(image=images["component"]))
    loaded = importlib.util.spec_from_file_location("encode_component", module)
    mod = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(mod)
    from kfp import compiler

    compiler.Compiler().compile(mod.encode_text, str(tmp_path / "component.yaml"))
    spec = yaml.safe_load((tmp_path / "component.yaml").read_text())
    [executor] = spec["deploymentSpec"]["executors"].values()
    container = executor["container"]
    assert container["image"] == images["component"]
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)  # the image runs as uid 1000
    executor_input = {"inputs": {"parameterValues": {"text": "hello"}},
                      "outputs": {"parameters": {"Output": {"outputFile": "/out/Output"}},
                                  "outputFile": "/out/executor_output.json"}}
    args = [a.replace("{{$}}", json.dumps(executor_input)) for a in container["args"]]
    # What a pipeline pod runs: the compiled command and args, as the image's non-root user.
    proc = _run(docker, "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "-v", f"{out}:/out",
                "--entrypoint", container["command"][0], images["component"], *container["command"][1:], *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "executor_output.json").read_text())
    from textrec.charset import DEFAULT_CHARSET

    assert result["parameterValues"]["Output"] == f"0.1.0:{DEFAULT_CHARSET.encode('hello')}"
    whoami = _run(docker, "run", "--rm", "--network", "none", images["component"], "id", "-u")
    assert whoami.stdout.strip() == "1000"


@pytest.mark.docker
def test_serving_image_answers_a_real_prediction_and_stops_cleanly(docker: dict[str, str], images: dict[str, str],
                                                                  tmp_path: Path) -> None:
    from serving.archive import archive_model

    store = tmp_path / "store"
    mar = archive_model(str(make_model_pt(tmp_path / "model.pt")), store, version="1")
    ports = {k: free_port() for k in ("gateway", "inference", "management", "metrics", "grpc_inference",
                                      "grpc_management")}
    for p in (store, mar):
        p.chmod(0o755)  # readable by the image's uid 1000
    tmpfs = [f"{d}:uid=1000,gid=1000,mode=0755" for d in
             ("/tmp", "/home/model-server/run", "/home/model-server/logs", "/home/model-server/model-store")]
    name = f"textrec-serving-test-{os.getpid()}"
    # The chart's hardening: read-only root, writable emptyDir-like mounts, non-root, no capabilities.
    run = _run(docker, "run", "-d", "--name", name, "--network", "host", "--read-only",
               *[x for t in tmpfs for x in ("--tmpfs", t)], "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", "-v", f"{store}:/src:ro",
               "-e", f"TEXTREC_MODEL_ARCHIVE=/src/{mar.name}", "-e", f"TEXTREC_TOKEN={TOKEN}",
               *[x for k, v in torchserve_env(ports).items() for x in ("-e", f"{k}={v}")],
               "-e", "GATEWAY_HOST=127.0.0.1", "-e", f"GATEWAY_PORT={ports['gateway']}", images["serving"])
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{ports['gateway']}"
    try:
        def ready() -> bool:
            if _run(docker, "inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
                raise AssertionError(_run(docker, "logs", name).stderr[-3000:])
            return requests.get(url + "/ready", timeout=5).status_code == 200

        try:
            wait_until(ready, 180, "serving container ready")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{_run(docker, 'logs', name).stdout[-4000:]}") from None
        headers = {"Content-Type": "image/png", "Authorization": f"Bearer {TOKEN}"}
        r = requests.post(f"{url}/predictions/{MODEL}", data=line_png(), headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        assert isinstance(r.json()["text"], str) and 0.0 <= r.json()["confidence"] <= 1.0
        assert requests.post(f"{url}/predictions/{MODEL}", data=line_png(), timeout=30).status_code == 401
        metrics = requests.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10).text
        assert "ts_inference_requests_total" in metrics
        assert _run(docker, "stop", "-t", "60", name).returncode == 0
        # exit code 0, not 137: SIGTERM was handled, not the kill after the grace period
        assert _run(docker, "inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    finally:
        _run(docker, "rm", "-f", name)
