"""``make pipeline-run`` (pipelines.submit): fails fast and clearly without a reachable endpoint, and
submits a compiled run through ``kfp.Client``.

No Kubeflow Pipelines can run here, so the submission test talks to a stand-in of the Pipelines REST
API on 127.0.0.1 (healthz, experiments, runs): a mock that records what the real client sends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from fixtures.http_server import JsonHandler
from fixtures.net import free_port as pick_port

from pipelines import submit

REPO = Path(__file__).resolve().parents[1]


def run_submit(env_changes: dict[str, str | None], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KFP_")}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    # A hang here (the kfp client retrying a dead endpoint) would be the bug under test.
    return subprocess.run([sys.executable, "-m", "pipelines.submit", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_without_kfp_host_it_fails_at_once_saying_what_to_set():
    out = run_submit({})
    assert out.returncode == 2
    assert "KFP_HOST is not set" in out.stderr and "KFP_TOKEN" in out.stderr


def test_unreachable_endpoint_fails_with_the_host_named(free_port):
    host = f"http://127.0.0.1:{free_port}"
    out = run_submit({"KFP_HOST": host})
    assert out.returncode == 2
    assert f"cannot reach Kubeflow Pipelines at KFP_HOST={host}" in out.stderr


def test_host_without_scheme_is_rejected():
    with pytest.raises(submit.SubmitError, match="http:// or https://"):
        submit.settings({"KFP_HOST": "kubeflow.example.com"})


def test_unknown_parameter_is_rejected_with_the_known_ones():
    with pytest.raises(submit.SubmitError, match="unknown pipeline parameter.*'nodes'"):
        submit.arguments("smoke", {"node": 2})


@pytest.fixture
def free_port() -> int:
    return pick_port()  # bound and released: nothing listens there afterwards


class FakeKfp:
    """What the stand-in API received, and how it answers."""

    def __init__(self, token: str, status: int = 200) -> None:
        self.token, self.status = token, status
        self.requests: list[tuple[str, str, dict]] = []


def _handler(state: FakeKfp):
    class Handler(JsonHandler):
        def _reply(self, body: dict, status: int = 200) -> None:
            self.reply_json(status, body)

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {state.token}":
                return True
            self._reply({"error": "unauthenticated"}, 401)
            return False

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path, {}))
            if state.status != 200:
                self._reply({}, state.status)
            elif self._authorised():
                self._reply({"multi_user": False} if "healthz" in self.path else {})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            state.requests.append(("POST", self.path, body))
            if not self._authorised():
                return
            if self.path.startswith("/apis/v2beta1/experiments"):
                self._reply({"experiment_id": "exp-7", "display_name": body.get("display_name")})
            else:
                self._reply({"run_id": "run-42", "display_name": body.get("display_name")})

    return Handler


@pytest.fixture
def fake_kfp() -> Iterator[tuple[str, FakeKfp]]:
    state = FakeKfp(token="secret-token")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def test_endpoint_refusing_the_token_asks_for_kfp_token(fake_kfp):
    host, _ = fake_kfp
    with pytest.raises(submit.SubmitError, match="set KFP_TOKEN"):
        submit.check_endpoint(host, token="wrong")


def test_submits_the_compiled_pipeline_with_the_profile_and_prints_the_run_url(fake_kfp, capsys, monkeypatch):
    host, state = fake_kfp
    monkeypatch.chdir(REPO)
    for k, v in {"KFP_HOST": host, "KFP_TOKEN": "secret-token", "KFP_EXPERIMENT": "htr"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("KFP_NAMESPACE", raising=False)
    monkeypatch.delenv("KFP_UI_HOST", raising=False)

    assert submit.main(["--profile", "smoke", "--param", "epochs=3", "--run-name", "try-1"]) == 0
    assert f"{host}/#/runs/details/run-42" in capsys.readouterr().out

    (_, _, experiment), = [r for r in state.requests if r[0] == "POST" and "experiments" in r[1]]
    assert experiment["display_name"] == "htr"
    (_, _, run), = [r for r in state.requests if r[0] == "POST" and r[1].startswith("/apis/v2beta1/runs")]
    assert run["display_name"] == "try-1" and run["experiment_id"] == "exp-7"
    spec = run["pipeline_spec"]  # with a platform spec both travel together
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "textrec"
    train = spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-model"]
    assert train["tolerations"][0]["key"] == "nvidia.com/gpu"
    params = run["runtime_config"]["parameters"]
    assert params["epochs"] == 3
    assert yaml.safe_load(params["train_config"]) == yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
    assert params["gpus_per_node"] == 0  # the smoke profile trains on the CPU
