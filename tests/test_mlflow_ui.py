"""The MLflow UI in a real headless browser (Debian's chromium), against a real MLflow server on
127.0.0.1: the link textrec prints opens the experiment on its training runs."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import pytest

from textrec import tracking

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")


def rendered(url: str) -> str:
    """The page's DOM once its scripts have run (virtual time: the UI's requests complete first)."""
    out = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,900",
                          "--virtual-time-budget=20000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_the_printed_link_opens_the_experiment_on_its_training_runs(mlflow_server) -> None:
    uri, name = mlflow_server.url, f"textrec-ui-{uuid.uuid4().hex[:8]}"
    experiment = tracking.ensure_experiment(name, tracking_uri=uri)
    client = tracking.mlflow_client(uri)
    assert client.get_experiment(experiment).tags[tracking.TAG_EXPERIMENT_KIND] == tracking.EXPERIMENT_KIND
    run_name = f"pipeline-{uuid.uuid4().hex[:6]}"
    run = client.create_run(experiment, run_name=run_name).info.run_id
    client.log_metric(run, "val_cer", 0.25)
    client.set_terminated(run)

    dom = rendered(tracking.experiment_url(uri, experiment))
    assert run_name in dom, dom[-3000:]
    assert "matching run" in dom
