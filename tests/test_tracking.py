"""MLflow tracking, registry and the promotion gate, against a real MLflow server on 127.0.0.1.

Models are tiny hand-built CRNNs with random weights: the gate only compares the CERs it is given
(or measures through ``reevaluate``), so no training is needed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from textrec import tracking
from textrec.artifact import read_artifact, save_artifact
from textrec.charset import DEFAULT_CHARSET
from textrec.config import read_yaml
from textrec.evaluate import eval_set_hash
from textrec.models import create_model
from textrec.stem import StemConfig
from textrec.tracking.callback import MlflowCallback

SMOKE = read_yaml(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")  # the smallest model
HEIGHT = int(SMOKE.get("stem", {}).get("height", StemConfig().height))
HASH_A, HASH_B = "a" * 64, "b" * 64


def tiny_model_pt(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = create_model(SMOKE["model"]["name"], num_classes=DEFAULT_CHARSET.num_classes, height=HEIGHT,
                         **SMOKE["model"].get("options", {}))
    return save_artifact(path, model, charset=DEFAULT_CHARSET, stem=StemConfig(height=HEIGHT),
                         metrics={"seed": seed})


@pytest.fixture
def uri(mlflow_server) -> str:
    return mlflow_server.url


@pytest.fixture
def name() -> str:
    """A registered model name of this test's own, so tests never see each other's versions."""
    return f"textrec-test-{uuid.uuid4().hex[:8]}"


def register(tmp_path: Path, uri: str, name: str, seed: int, pipeline_run: str) -> str:
    model_pt = tiny_model_pt(tmp_path / f"m{seed}" / "model.pt", seed)
    with tracking.step_run("register", pipeline_run, tracking_uri=uri, experiment=name) as run_id:
        return tracking.log_model_version(model_pt, run_id, model_name=name, tracking_uri=uri)


def aliases(uri: str, name: str) -> dict[str, str]:
    client = tracking.mlflow_client(uri)
    return {a: client.get_model_version_by_alias(name, a).version for a in ("champion", "challenger")}


def test_first_version_becomes_champion_and_a_worse_challenger_does_not_take_over(tmp_path, uri, name):
    v1 = register(tmp_path, uri, name, 1, "run-1")
    first = tracking.promote(name, v1, challenger_cer=0.20, eval_hash=HASH_A, tracking_uri=uri)
    assert first.promoted and "no champion yet" in first.reason

    v2 = register(tmp_path, uri, name, 2, "run-2")
    worse = tracking.promote(name, v2, challenger_cer=0.25, eval_hash=HASH_A, margin=0.0, tracking_uri=uri)
    assert not worse.promoted
    assert worse.champion_version == v1 and worse.champion_cer == pytest.approx(0.20)
    assert "champion stays" in worse.reason
    assert aliases(uri, name) == {"champion": v1, "challenger": v2}
    tags = tracking.version_info(name, v2, tracking_uri=uri)["tags"]
    assert tags["textrec.promoted"] == "false" and tags[tracking.TAG_EVAL_SET] == HASH_A


def test_a_better_challenger_takes_champion_only_beyond_the_margin(tmp_path, uri, name):
    v1 = register(tmp_path, uri, name, 1, "run-1")
    tracking.promote(name, v1, challenger_cer=0.20, eval_hash=HASH_A, tracking_uri=uri)
    v2 = register(tmp_path, uri, name, 2, "run-2")
    small = tracking.promote(name, v2, challenger_cer=0.19, eval_hash=HASH_A, margin=0.02, tracking_uri=uri)
    assert not small.promoted and aliases(uri, name)["champion"] == v1

    v3 = register(tmp_path, uri, name, 3, "run-3")
    big = tracking.promote(name, v3, challenger_cer=0.10, eval_hash=HASH_A, margin=0.02, tracking_uri=uri)
    assert big.promoted and "beats" in big.reason
    assert aliases(uri, name) == {"champion": v3, "challenger": v3}


def test_champion_scored_on_another_set_is_not_compared_without_reevaluation(tmp_path, uri, name):
    v1 = register(tmp_path, uri, name, 1, "run-1")
    tracking.promote(name, v1, challenger_cer=0.50, eval_hash=HASH_A, tracking_uri=uri)
    v2 = register(tmp_path, uri, name, 2, "run-2")
    d = tracking.promote(name, v2, challenger_cer=0.01, eval_hash=HASH_B, tracking_uri=uri)
    assert not d.promoted
    assert "different set" in d.reason and "not comparable" in d.reason
    assert aliases(uri, name)["champion"] == v1


def test_champion_scored_on_another_set_is_reevaluated_on_the_challengers_set(tmp_path, uri, name):
    v1 = register(tmp_path, uri, name, 1, "run-1")
    tracking.promote(name, v1, challenger_cer=0.50, eval_hash=HASH_A, tracking_uri=uri)
    v2 = register(tmp_path, uri, name, 2, "run-2")
    seen: list[dict] = []

    def reevaluate(model_pt: Path) -> float:
        seen.append(read_artifact(model_pt)["metrics"])
        return 0.05  # on the new set the champion is better than the challenger

    d = tracking.promote(name, v2, challenger_cer=0.10, eval_hash=HASH_B, reevaluate=reevaluate, tracking_uri=uri)
    assert seen == [{"seed": 1}]  # the champion's own model.pt was measured
    assert not d.promoted and d.champion_cer == pytest.approx(0.05)
    assert "re-evaluated" in d.reason


REAL_A, REAL_B = "r" * 64, "s" * 64  # hashes of two labelled real sets


def test_gate_compares_real_val_cer_when_both_were_scored_on_the_same_real_set(tmp_path, uri, name):
    v1 = register(tmp_path, uri, name, 1, "run-1")
    first = tracking.promote(name, v1, challenger_cer=0.20, eval_hash=HASH_A, real_val_cer=0.30,
                             real_val_hash=REAL_A, tracking_uri=uri)
    assert first.promoted and first.metric == "real_val_cer"
    v2 = register(tmp_path, uri, name, 2, "run-2")
    # worse on the synthetic test set, better on the real lines: the real lines decide
    d = tracking.promote(name, v2, challenger_cer=0.25, eval_hash=HASH_A, real_val_cer=0.10,
                         real_val_hash=REAL_A, margin=0.05, tracking_uri=uri)
    assert d.promoted and d.metric == "real_val_cer" and "real set" in d.reason
    assert d.challenger_cer == pytest.approx(0.10) and d.champion_cer == pytest.approx(0.30)
    v3 = register(tmp_path, uri, name, 3, "run-3")
    d3 = tracking.promote(name, v3, challenger_cer=0.01, eval_hash=HASH_A, real_val_cer=0.12,
                          real_val_hash=REAL_A, tracking_uri=uri)
    assert not d3.promoted and d3.metric == "real_val_cer" and aliases(uri, name)["champion"] == v2
    tags = tracking.version_info(name, v3, tracking_uri=uri)["tags"]
    assert tags[tracking.TAG_REAL_VAL_SET] == REAL_A and float(tags[tracking.TAG_REAL_VAL_CER]) == 0.12
    assert tags["textrec.promotion_metric"] == "real_val_cer"


@pytest.mark.parametrize("champion_real", [(0.30, REAL_B), (None, "")], ids=["another-real-set", "none"])
def test_gate_falls_back_to_test_cer_without_a_common_real_set(tmp_path, uri, name, champion_real):
    v1 = register(tmp_path, uri, name, 1, "run-1")
    real_cer, real_hash = champion_real
    tracking.promote(name, v1, challenger_cer=0.20, eval_hash=HASH_A, real_val_cer=real_cer,
                     real_val_hash=real_hash, tracking_uri=uri)
    v2 = register(tmp_path, uri, name, 2, "run-2")
    d = tracking.promote(name, v2, challenger_cer=0.25, eval_hash=HASH_A, real_val_cer=0.01,
                         real_val_hash=REAL_A, tracking_uri=uri)
    assert not d.promoted and d.metric == "test_cer" and d.champion_cer == pytest.approx(0.20)
    assert "no CER on the real set" in d.reason and d.to_dict()["metric"] == "test_cer"
    assert tracking.version_info(name, v2, tracking_uri=uri)["tags"]["textrec.promotion_metric"] == "test_cer"


def test_download_champion_returns_the_champions_model_pt_and_version(tmp_path, uri, name):
    v1 = register(tmp_path, uri, name, 1, "run-1")
    tracking.promote(name, v1, challenger_cer=0.3, eval_hash=HASH_A, tracking_uri=uri)
    register(tmp_path, uri, name, 2, "run-2")  # a challenger that is not promoted

    path = tracking.download_champion(name, dest=tmp_path / "serve", tracking_uri=uri)
    assert path == tmp_path / "serve" / "model.pt"
    assert path.read_bytes() == (tmp_path / "m1" / "model.pt").read_bytes()
    meta = json.loads((tmp_path / "serve" / "model-version.json").read_text())
    assert meta["version"] == v1 and meta["alias"] == "champion" and meta["model_uri"] == f"models:/{name}/{v1}"


def test_download_champion_without_a_champion_names_the_model(tmp_path, uri, name):
    with pytest.raises(tracking.TrackingError, match=f"models:/{name}@champion"):
        tracking.download_champion(name, dest=tmp_path, tracking_uri=uri)


def test_registered_model_reads_images_without_textrec_installed(tmp_path, uri, name):
    """The pyfunc travels with the textrec source, so a machine without textrec loads it and reads
    line images of any width, given as bytes or base64."""
    v1 = register(tmp_path, uri, name, 1, "run-1")
    tracking.promote(name, v1, challenger_cer=0.3, eval_hash=HASH_A, tracking_uri=uri)
    script = f"""
import base64, io, sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in str(getattr(f, "__module__", ""))]
try:
    import textrec
    raise SystemExit("textrec is still importable")
except ImportError:
    pass
import mlflow, numpy as np, pandas as pd
from PIL import Image
mlflow.set_tracking_uri({uri!r})
model = mlflow.pyfunc.load_model("models:/{name}@champion")
pngs = []
for width in (40, 123):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(width).integers(0, 255, ({HEIGHT}, width), dtype=np.uint8)).save(buf, "PNG")
    pngs.append(buf.getvalue())
out = model.predict(pd.DataFrame({{"image": [pngs[0], base64.b64encode(pngs[1]).decode()]}}))
assert list(out.columns) == ["text", "confidence"] and len(out) == 2, out
assert all(0.0 <= c <= 1.0 for c in out["confidence"]), out
print("read", len(out), "lines")
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "read 2 lines" in out.stdout


def test_steps_of_one_pipeline_run_are_children_of_one_parent_run(uri, name):
    with tracking.step_run("train", "pipe-1", tracking_uri=uri, experiment=name) as train_id:
        pass
    with tracking.step_run("evaluate", "pipe-1", tracking_uri=uri, experiment=name) as eval_id:
        pass
    with tracking.step_run("train", "pipe-1", tracking_uri=uri, experiment=name, resume=True) as again:
        pass
    client = tracking.mlflow_client(uri)
    parents = {client.get_run(r).data.tags[tracking.TAG_PARENT] for r in (train_id, eval_id)}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.data.tags[tracking.TAG_PIPELINE_RUN] == "pipe-1" and parent.info.status == "FINISHED"
    assert again == train_id  # a retried step continues its own run
    assert client.get_run(train_id).data.tags[tracking.TAG_GIT]


def test_a_failing_step_marks_its_run_and_the_parent_failed(uri, name):
    with pytest.raises(RuntimeError, match="boom"), \
            tracking.step_run("train", "pipe-2", tracking_uri=uri, experiment=name) as run_id:
        raise RuntimeError("boom")
    client = tracking.mlflow_client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert client.get_run(run.data.tags[tracking.TAG_PARENT]).info.status == "FAILED"


def test_mlflow_callback_logs_params_and_per_epoch_metrics(tmp_path, uri, name):
    from textrec.training.config import TrainConfig

    (tmp_path / "metrics.json").write_text("{}")
    trainer = SimpleNamespace(config=TrainConfig(), out_dir=tmp_path, world_size=1)
    with tracking.step_run("train", "pipe-3", tracking_uri=uri, experiment=name) as run_id:
        cb = MlflowCallback(run_id, uri)
        cb.on_train_start(trainer)
        for epoch, cer in enumerate([0.9, 0.5, 0.3]):
            cb.on_epoch_end(trainer, epoch, {"val_cer": cer, "real_val_cer": cer + 0.1, "train_loss": 2.0 - epoch,
                                             "note": "text"})
        cb.on_train_end(trainer, {"test_cer": 0.31, "stopped": "completed", "real_val_hash": "r" * 64})
    client = tracking.mlflow_client(uri)
    run = client.get_run(run_id)
    assert run.data.params["loop.epochs"] == str(TrainConfig().loop.epochs)
    assert run.data.params["model.name"] == "line_cnn_lstm"
    history = client.get_metric_history(run_id, "val_cer")
    assert [(m.step, m.value) for m in history] == [(1, 0.9), (2, 0.5), (3, 0.3)]
    real = client.get_metric_history(run_id, "real_val_cer")
    assert [(m.step, round(m.value, 6)) for m in real] == [(1, 1.0), (2, 0.6), (3, 0.4)]
    assert run.data.tags[tracking.TAG_REAL_VAL_SET] == "r" * 64
    assert run.data.metrics["final_test_cer"] == pytest.approx(0.31)
    assert "note" not in run.data.metrics
    assert [f.path for f in client.list_artifacts(run_id)] == ["metrics.json"]


def test_mlflow_callback_warns_instead_of_failing_when_mlflow_is_down(tmp_path, monkeypatch):
    from textrec.training.config import TrainConfig

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    cb = MlflowCallback("0" * 32, "http://127.0.0.1:9")  # nothing listens on the discard port
    trainer = SimpleNamespace(config=TrainConfig(), out_dir=tmp_path, world_size=1)
    with pytest.warns(UserWarning, match="training goes on"):
        cb.on_epoch_end(trainer, 0, {"val_cer": 0.5})


def test_artifacts_go_to_s3_when_the_experiment_says_so(tmp_path, uri, name, s3):
    location = s3.uri(f"mlflow/{name}")
    model_pt = tiny_model_pt(tmp_path / "model.pt", 7)
    with tracking.step_run("register", "pipe-s3", tracking_uri=uri, experiment=name,
                           artifact_location=location) as run_id:
        version = tracking.log_model_version(model_pt, run_id, model_name=name, tracking_uri=uri)
    tracking.promote(name, version, challenger_cer=0.2, eval_hash=HASH_A, tracking_uri=uri)

    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=f"mlflow/{name}/")
            .get("Contents", [])]
    assert any(k.endswith("artifacts/artifacts/model.pt") for k in keys), keys
    assert any(k.endswith("MLmodel") for k in keys)
    served = tracking.download_champion(name, dest=tmp_path / "serve", tracking_uri=uri)
    assert served.read_bytes() == model_pt.read_bytes()


def test_no_tracking_uri_says_what_to_set(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(tracking.TrackingError, match="MLFLOW_TRACKING_URI"):
        tracking.resolve_tracking_uri(None)


def test_eval_set_hash_changes_with_any_line():
    import numpy as np

    img = np.full((8, 20), 255, np.uint8)
    base = eval_set_hash([(img, "a b"), (img, "c")])
    assert base == eval_set_hash([(img.copy(), "a b"), (img, "c")])
    assert base != eval_set_hash([(img, "a b"), (img, "d")])
    assert base != eval_set_hash([(img, "c"), (img, "a b")])
    darker = img.copy()
    darker[0, 0] = 0
    assert base != eval_set_hash([(darker, "a b"), (img, "c")])


def test_a_training_step_logs_system_metrics_and_gpu_ones_where_cuda_is(uri, name, monkeypatch):
    """MLflow's system metrics (NVML through nvidia-ml-py for GPUs): on a CUDA machine the run gets GPU
    utilisation and memory beside CPU and memory; without one, the same run logs without them."""
    import importlib.util
    import time

    assert importlib.util.find_spec("pynvml") is not None  # nvidia-ml-py, which MLflow's GPU monitor needs
    monkeypatch.setenv("TEXTREC_SYSTEM_METRICS_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    with tracking.step_run("train", "pipe-sys", tracking_uri=uri, experiment=name, system_metrics=True) as run_id:
        time.sleep(2.0)
    keys = set(tracking.mlflow_client(uri).get_run(run_id).data.metrics)
    assert "system/cpu_utilization_percentage" in keys, keys
    assert any(k.startswith("system/gpu_") for k in keys) == torch.cuda.is_available(), keys
