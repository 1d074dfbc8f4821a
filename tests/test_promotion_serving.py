"""The promise of the pipeline, end to end: a run whose model the gate promotes changes what the running
TorchServe answers, with no failed request while it rolls; a run the gate refuses leaves it alone.

Real parts only: an MLflow server, `make serve`'s TorchServe and kfp.local pipeline runs (smoke profile)
on 127.0.0.1. The pipeline runs where the server's working folder is (``.textrec/serve`` in its current
folder), as `make local` does after `make serve`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests
from fixtures.net import free_port
from fixtures.serving import line_png

from serving.config import ServeConfig
from serving.torchserve import TorchServeProcess
from textrec.tracking import MODEL_NAME

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java 17 (java on PATH)")


def _pipeline(cwd: Path, uri: str, name: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFP_", "TEXTREC_"))}
    env.update(MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "pipelines.local", "--profile", "smoke", "--synth-lines", "150",
           "--root", str(cwd / ".textrec"), "--model-name", name, *extra]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    return out


class Traffic:
    """Predictions sent one after another from a thread while a pipeline runs; every answer is kept."""

    def __init__(self, server: TorchServeProcess) -> None:
        self.url = f"{server.config.inference_url}/predictions/{MODEL_NAME}"
        self.headers = {"Authorization": f"Bearer {server.token()}", "Content-Type": "image/png"}
        self.answers: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        image = line_png(3)
        with requests.Session() as s:
            while not self._stop.is_set():
                try:
                    r = s.post(self.url, data=image, headers=self.headers, timeout=60)
                    self.answers.append((r.status_code, r.json().get("version", "") if r.ok else r.text[:200]))
                except requests.RequestException as e:
                    self.answers.append((0, str(e)[:200]))
                self._stop.wait(0.2)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=90)


def test_a_promoted_run_reaches_the_running_server_and_a_refused_one_does_not(tmp_path, mlflow_server, monkeypatch):
    from serving.deploy import serve

    name = f"textrec-line-{uuid.uuid4().hex[:6]}"
    first = _pipeline(tmp_path, mlflow_server.url, name, "--serving-target", "none")
    assert "serving_target is 'none'" in first.stdout  # the deploy step ran and said why it served nothing

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    cfg = ServeConfig(model_store=tmp_path / ".textrec" / "serve" / "model-store", inference_port=free_port(),
                      management_port=free_port(), metrics_port=free_port(), grpc_inference_port=free_port(),
                      grpc_management_port=free_port(), enable_model_api=True)
    server = serve(f"models:/{name}@champion", workdir=tmp_path / ".textrec" / "serve", config=cfg)
    try:
        assert server.predict(line_png(1))["version"] == "1"
        with Traffic(server) as during_promotion:
            promoted = _pipeline(tmp_path, mlflow_server.url, name, "--margin", "-1")  # any CER wins
        assert "now serving models:/" in promoted.stdout, promoted.stdout[-2000:]
        assert server.predict(line_png(1))["version"] == "2"
        codes = [c for c, _ in during_promotion.answers]
        assert codes and all(c == 200 for c in codes), during_promotion.answers[-5:]
        assert {v for _, v in during_promotion.answers} <= {"1", "2"}

        with Traffic(server) as during_refusal:
            refused = _pipeline(tmp_path, mlflow_server.url, name, "--margin", "1.0")  # cannot be beaten
        assert "was not promoted: the served champion stays" in refused.stdout
        assert server.predict(line_png(1))["version"] == "2"
        assert {v for _, v in during_refusal.answers} == {"2"} and all(c == 200 for c, _ in during_refusal.answers)
    finally:
        server.stop()
