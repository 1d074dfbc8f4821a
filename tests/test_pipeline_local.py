"""The whole pipeline with kfp.local (what ``make local PROFILE=smoke`` runs), tracked by a real MLflow
server on 127.0.0.1.

The smoke profile trains a tiny model for two epochs: it proves the plumbing, not that the model reads.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from textrec import tracking

REPO = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"tracking_uri", "model_name", "version", "aliases", "cer", "model_uri"}


def run_local(root: Path, uri: str, model_name: str, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFP_", "TEXTREC_"))}
    env.update(MLFLOW_TRACKING_URI=uri, TEXTREC_SYSTEM_METRICS_INTERVAL="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pipelines.local", "--profile", "smoke", "--synth-lines", "150",
           "--root", str(root), "--model-name", model_name, *extra]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    assert "textrec pipeline finished" in out.stdout and "test CER" in out.stdout
    return json.loads((root / "last-run.json").read_text())


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, mlflow_server) -> tuple[Path, dict, str]:
    root = tmp_path_factory.mktemp("local") / ".textrec"
    name = f"textrec-line-{uuid.uuid4().hex[:6]}"
    return root, run_local(root, mlflow_server.url, name), name


def test_smoke_run_registers_the_first_version_as_champion(first_run, mlflow_server):
    root, summary, name = first_run
    assert SUMMARY_KEYS <= set(summary)
    assert summary["tracking_uri"] == mlflow_server.url and summary["model_name"] == name
    assert summary["version"] == "1" and summary["model_uri"] == f"models:/{name}/1"
    assert set(summary["aliases"]) == {"champion", "challenger"}
    assert math.isfinite(summary["cer"]) and summary["cer"] >= 0


def test_smoke_run_is_one_mlflow_run_with_a_child_per_step(first_run, mlflow_server):
    _, summary, _ = first_run
    client = tracking.mlflow_client(mlflow_server.url)
    exp = client.get_experiment_by_name("textrec")
    runs = client.search_runs([exp.experiment_id],
                              f"tags.`{tracking.TAG_PIPELINE_RUN}` = '{summary['pipeline_run_id']}'")
    by_step = {r.data.tags[tracking.TAG_STEP]: r for r in runs}
    assert set(by_step) == {"pipeline", "train", "evaluate", "register"}
    parent = by_step["pipeline"].info.run_id
    assert all(by_step[s].data.tags[tracking.TAG_PARENT] == parent for s in ("train", "evaluate", "register"))

    train = by_step["train"]
    assert train.data.params["model.name"] == "line_cnn_lstm" and train.data.params["data.mode"] == "store"
    epochs = int(train.data.params["loop.epochs"])
    assert [m.step for m in client.get_metric_history(train.info.run_id, "val_cer")] == list(range(1, epochs + 1))
    assert any(k.startswith("system/") for k in train.data.metrics), sorted(train.data.metrics)
    assert len(train.data.tags[tracking.TAG_DATASET]) == 64
    assert {"config.yaml", "metrics.json"} <= {a.path for a in client.list_artifacts(train.info.run_id)}

    evaluate = by_step["evaluate"]
    assert {"report.html", "report.json", "predictions.png"} <= \
        {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    assert evaluate.data.metrics["test_cer"] == pytest.approx(summary["cer"])
    assert by_step["pipeline"].data.metrics["test_cer"] == pytest.approx(summary["cer"])
    assert by_step["pipeline"].data.tags["textrec.model_version"] == summary["version"]


def test_smoke_run_champion_downloads_and_reads_lines(first_run, mlflow_server, tmp_path):
    from textrec.recognizer import Recognizer

    _, summary, name = first_run
    tags = tracking.version_info(name, summary["version"], tracking_uri=mlflow_server.url)["tags"]
    assert len(tags[tracking.TAG_EVAL_SET]) == 64 and float(tags[tracking.TAG_TEST_CER]) == summary["cer"]
    model_pt = tracking.download_champion(name, dest=tmp_path, tracking_uri=mlflow_server.url)
    import numpy as np

    line = np.full((40, 200), 255, np.uint8)
    line[15:25, 20:180] = 0
    (result,) = Recognizer.load(model_pt).recognise([line])
    assert isinstance(result.text, str) and 0.0 <= result.confidence <= 1.0


def test_smoke_run_keeps_checkpoints_by_pipeline_run(first_run):
    root, _, _ = first_run
    assert list((root / "checkpoints").glob("run-*/checkpoints/last.pt"))


@pytest.mark.slow
def test_a_second_run_adds_a_version_and_the_gate_keeps_the_champion(first_run, mlflow_server):
    root, first, name = first_run
    # A margin of 1.0 cannot be beaten by a CER difference, so the champion must stay.
    second = run_local(root, mlflow_server.url, name, "--margin", "1.0")
    assert second["version"] == "2" and second["aliases"] == ["challenger"]
    assert not second["promoted"] and "champion stays" in second["reason"]
    assert tracking.version_info(name, first["version"], tracking_uri=mlflow_server.url)["aliases"] == ["champion"]


def test_old_local_runs_are_pruned_newest_kept(tmp_path):
    from pipelines.local import prune

    for i in range(5):
        (tmp_path / f"run-{i}").mkdir()
        os.utime(tmp_path / f"run-{i}", (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "notes.txt").write_text("not a run")
    removed = prune(tmp_path, keep=2)
    assert sorted(p.name for p in removed) == ["run-0", "run-1", "run-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run-3", "run-4"]
