"""The pipeline's page task end to end: a kfp.local run (smoke profile, task page) renders synthetic
pages, scores the model by page CER on their test split, registers it as its own page model whose
pyfunc reads pages, and its deploy step moves the running TorchServe's page endpoint only.

Real parts only: an MLflow server, `make serve`'s TorchServe and a kfp.local pipeline run on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pandas as pd
import pytest
from fixtures.net import free_port
from fixtures.page_images import page_png
from fixtures.serving import line_png, make_model_pt
from test_promotion_serving import _pipeline

from serving.config import ServeConfig
from textrec.recognizer import Recognizer
from textrec.tracking import MODEL_NAME, PAGE_MODEL_NAME, TAG_TEST_CER
from textrec.tracking.registry import download_model

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java 17 (java on PATH)")


def test_a_page_run_registers_a_page_model_and_moves_only_the_page_endpoint(tmp_path, mlflow_server,
                                                                            monkeypatch):
    import mlflow

    from serving.deploy import serve
    from textrec.tracking import mlflow_client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    cfg = ServeConfig(model_store=tmp_path / ".textrec" / "serve" / "model-store", inference_port=free_port(),
                      management_port=free_port(), metrics_port=free_port(), grpc_inference_port=free_port(),
                      grpc_management_port=free_port(), enable_model_api=True)
    server = serve(str(make_model_pt(tmp_path / "line.pt")), version="L1", workdir=tmp_path / ".textrec" / "serve",
                   config=cfg)
    name = f"{PAGE_MODEL_NAME}-{uuid.uuid4().hex[:6]}"
    try:
        assert server.predict(page_png()[0], model=PAGE_MODEL_NAME)["version"] == "L1"
        run = _pipeline(tmp_path, mlflow_server.url, name, "--task", "page", "--synth-pages", "24",
                        "--serving-target", "local")
        assert "(page CER)" in run.stdout and f"as version 1 ({PAGE_MODEL_NAME})" in run.stdout, run.stdout[-2000:]
        # The page endpoint now serves the page model's registry version; lines keep their model.
        assert server.predict(page_png()[0], model=PAGE_MODEL_NAME)["version"] == "1"
        assert server.predict(line_png(1), model=MODEL_NAME)["version"] == "L1"
    finally:
        server.stop()

    client = mlflow_client(mlflow_server.url)
    version = client.get_model_version_by_alias(name, "champion")
    assert version.version == "1" and TAG_TEST_CER in version.tags
    evaluate = [r for r in client.search_runs([client.get_run(version.run_id).info.experiment_id],
                                              f"tags.`textrec.pipeline_run_id` = '{version.tags['textrec.pipeline_run_id']}'")
                if r.data.tags.get("textrec.step") == "evaluate"]
    assert evaluate and "test_line_count_exact" in evaluate[0].data.metrics  # scored as pages

    reader = mlflow.pyfunc.load_model(f"models:/{name}/1")
    png, _ = page_png(seed=3)
    out = reader.predict(pd.DataFrame({"image": [png]}))
    assert list(out.columns) == ["text", "lines"]
    # What the registered model.pt reads on that page, through the same Recognizer as the page endpoint
    # (a smoke model may read a blob line as nothing, and such a line is dropped: compare, do not count).
    expected = Recognizer.load(download_model(name, "1", tmp_path / "v1")).recognise_page(png)
    assert json.loads(out["lines"][0]) == expected.to_json()["lines"]
    assert out["text"][0] == expected.text
    with pytest.raises(Exception, match="image"):
        reader.predict(pd.DataFrame({"picture": [png]}))  # the wrong column is named


def test_a_page_run_trains_the_paragraph_model_on_the_runs_pages(tmp_path, mlflow_server, monkeypatch):
    from test_promotion_serving import REPO

    from textrec.tracking import mlflow_client

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    name = f"{PAGE_MODEL_NAME}-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFP_", "TEXTREC_"))}
    env.update(MLFLOW_TRACKING_URI=mlflow_server.url, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.local", "--profile", "paragraph-smoke", "--task", "page",
         "--synth-lines", "30", "--synth-pages", "16", "--root", str(tmp_path / ".textrec"), "--model-name", name,
         "--serving-target", "none"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    model_pt = download_model(name, "1", tmp_path / "v1")
    reader = Recognizer.load(model_pt)
    assert reader.task == "page"  # the paragraph model, trained on the run's pages.h5
    client = mlflow_client(mlflow_server.url)
    info = client.get_model_version(name, "1")
    train = client.get_run(info.run_id)
    assert train.data.tags.get("textrec.step") == "train"  # the version's source run trained it
    assert train.data.params["data.kind"] == "pages" and train.data.params["model.name"] == "paragraph_transformer"
    png, _ = page_png(seed=4)
    assert isinstance(reader.recognise_page(png).text, str)


def test_the_page_evaluate_step_scores_the_test_pages_and_a_real_page_set(tmp_path, mlflow_server):
    from PIL import Image

    from textrec.data.pages import PageStore, synthesize_pages
    from textrec.evaluate_pages import evaluate_page_split, page_set_hash
    from textrec.tracking import StepTracking, mlflow_client

    store = synthesize_pages(8, tmp_path / "pages.h5", workers=1, progress=False)
    pages = PageStore(store)
    rows = []
    for i in range(2):  # a page TSV as users write one: image<TAB>lines joined by a literal \n
        Image.fromarray(pages.image(i)).save(tmp_path / f"p{i}.png")
        rows.append(f"p{i}.png\t" + pages.text(i).replace("\n", "\\n") + "\n")
    (tmp_path / "pages.tsv").write_text("".join(rows))
    run = f"page-eval-{uuid.uuid4().hex[:6]}"
    result = evaluate_page_split(make_model_pt(tmp_path / "model.pt"), store, tmp_path / "out",
                                 step=StepTracking(run, mlflow_server.url, "textrec-page-eval"),
                                 real_val=str(tmp_path / "pages.tsv"))
    assert result["eval_set_hash"] == page_set_hash(store) != page_set_hash(store, "val")
    assert result["real_val_n"] == 2 and 0 <= result["real_val_cer"] and result["real_val_hash"]
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "real_val" / "report.html").is_file()
    client = mlflow_client(mlflow_server.url)
    [step] = [r for r in client.search_runs([client.get_experiment_by_name("textrec-page-eval").experiment_id])
              if r.data.tags.get("textrec.step") == "evaluate"]
    assert {"test_cer", "test_line_count_exact", "real_val_cer"} <= set(step.data.metrics)
