"""The registered model as an MLflow pyfunc, and its lineage, against a real MLflow server on 127.0.0.1:
``mlflow.pyfunc.load_model`` on a registry URI, ``mlflow models serve --env-manager local`` over HTTP,
and the training run, datasets and LoggedModel metrics a registered version points at."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import requests
from fixtures.lines import line_image
from fixtures.net import free_port
from fixtures.serving import line_png, make_model_pt

from textrec import tracking
from textrec.data.store import LineWriter, describe_stores
from textrec.recognizer import Recognizer
from textrec.tracking.lineage import DIGEST_CHARS, TAG_CONTENT_HASH
from textrec.tracking.pyfunc import SIGNATURE, PyfuncInputError

EVAL_HASH = "e" * 64


@pytest.fixture
def registered(tmp_path: Path, mlflow_server) -> dict:
    """A tiny model trained (so to speak) in a run with per-epoch val_cer, registered by the register step
    as the pipeline does it: logged from the training run, champion by the gate."""
    uri, name = mlflow_server.url, f"textrec-test-{uuid.uuid4().hex[:8]}"
    model_pt = make_model_pt(tmp_path / "model" / "model.pt")
    store = tmp_path / "lines.h5"
    with LineWriter(store) as w:
        for i, text in enumerate(["a line", "another one", "third"]):
            w.add(line_image(text, seed=i), text, split="test" if i else "train", source="unit")
    client = tracking.mlflow_client(uri)
    experiment = tracking.ensure_experiment(name, tracking_uri=uri)
    train = client.create_run(experiment, tags={tracking.TAG_STEP: "train"}).info.run_id
    for step, cer in enumerate([0.9, 0.4, 0.6]):
        client.log_metric(train, "val_cer", cer, step=step)
    client.set_terminated(train)
    decision = tracking.register_challenger(model_pt, [store], test_cer=0.35, eval_hash=EVAL_HASH,
                                            model_name=name, step=tracking.StepTracking("run-1", uri, name),
                                            decision_path=tmp_path / "decision.json", train_run_id=train)
    assert decision.promoted
    return {"uri": uri, "name": name, "model_pt": model_pt, "store": store, "train": train,
            "version": decision.version, "experiment": experiment}


def test_the_champion_loads_as_a_pyfunc_that_reads_images(registered: dict) -> None:
    import mlflow

    mlflow.set_tracking_uri(registered["uri"])
    model = mlflow.pyfunc.load_model(f"models:/{registered['name']}@champion")
    assert model.metadata.get_input_schema() == SIGNATURE.inputs
    assert model.metadata.get_output_schema() == SIGNATURE.outputs
    pngs = [line_png(1), line_png(2, width=240)]
    out = model.predict(pd.DataFrame({"image": [pngs[0], base64.b64encode(pngs[1]).decode()]}))
    expected = Recognizer.load(registered["model_pt"]).recognise(pngs)
    assert list(out["text"]) == [r.text for r in expected] and any(out["text"])
    assert list(out["confidence"]) == pytest.approx([r.confidence for r in expected], abs=1e-6)
    with pytest.raises(PyfuncInputError, match="row 1"):
        model.predict(pd.DataFrame({"image": [pngs[0], "not base64 !!"]}))
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"missing inputs \['image'\]"):  # the signature names it
        model.predict(pd.DataFrame({"picture": [pngs[0]]}))


def test_the_version_points_at_its_training_run_datasets_and_scores(registered: dict) -> None:
    client = tracking.mlflow_client(registered["uri"])
    version = client.get_model_version(registered["name"], registered["version"])
    assert version.run_id == registered["train"]  # not the register step's run
    train = client.get_run(registered["train"])
    [dataset] = train.inputs.dataset_inputs
    content_hash = describe_stores([registered["store"]])["content_hash"]
    assert dataset.dataset.digest == content_hash[:DIGEST_CHARS]
    assert {t.key: t.value for t in dataset.tags}[TAG_CONTENT_HASH] == content_hash
    [logged] = client.search_logged_models([registered["experiment"]],
                                           filter_string=f"source_run_id = '{registered['train']}'")
    assert version.source == f"models:/{logged.model_id}"
    assert logged.source_run_id == registered["train"]
    scores = {m.key: m for m in logged.metrics or []}
    assert scores["test_cer"].value == pytest.approx(0.35)
    assert scores["test_cer"].dataset_digest == EVAL_HASH[:DIGEST_CHARS]
    experiment = client.get_experiment(registered["experiment"])
    assert experiment.tags[tracking.TAG_EXPERIMENT_KIND] == tracking.EXPERIMENT_KIND
    # a model selected by val_cer is logged at the training run's best epoch (0.4, at step 1)
    from textrec.tracking.registry import best_step

    assert best_step(registered["train"], "val_cer", tracking_uri=registered["uri"]) == 1


def test_mlflow_models_serve_answers_invocations(registered: dict, tmp_path: Path) -> None:
    port = free_port()
    # the scoring server runs `uvicorn` from PATH: the one next to this Python
    env = {**os.environ, "MLFLOW_TRACKING_URI": registered["uri"],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                             f"models:/{registered['name']}@champion", "--env-manager", "local",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 120 s"
            time.sleep(0.5)
        png = line_png(3)
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(png).decode()]]}}
        r = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert r.status_code == 200, r.text
        [row] = r.json()["predictions"]
        expected = Recognizer.load(registered["model_pt"]).recognise([png])[0]
        assert row["text"] == expected.text and row["confidence"] == pytest.approx(expected.confidence, abs=1e-6)
        bad = requests.post(f"{url}/invocations", data=json.dumps({"dataframe_split": {
            "columns": ["image"], "data": [["%%%"]]}}), headers={"Content-Type": "application/json"}, timeout=60)
        assert 400 <= bad.status_code < 600 and "image" in bad.text
        assert requests.post(f"{url}/invocations", json=body, timeout=60).status_code == 200  # still up
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
