"""Labelled real lines (``data.real_val``): one reader for a TSV, an IAM lines folder or either on S3;
scored every epoch, picking the best checkpoint; scored by the evaluate step; compared by the gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.lines import line_image
from fixtures.models import tiny_model_artifact
from fixtures.net import free_port
from fixtures.procs import wait_ok
from PIL import Image

from textrec import storage, tracking
from textrec.data.store import LineWriter
from textrec.evaluate import (
    EvalDataError,
    eval_set_hash,
    evaluate,
    evaluate_split,
    labelled_rows,
    real_samples,
)
from textrec.training import load_config, train
from textrec.training.checkpoint import load_checkpoint
from textrec.training.loop import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEXTS = ["A MOVE to stop", "Mr. Gaitskell from", "nominating any more", "Labour life Peers", "is to be made",
         "at a meeting"]


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


def tsv_set(root: Path, texts: list[str] = TEXTS) -> Path:
    """``root/labels.tsv`` with images under ``root/img/``, one rendered line per text."""
    rows = []
    for i, text in enumerate(texts):
        write_png(root / "img" / f"{i}.png", line_image(text, seed=i))
        rows.append(f"img/{i}.png\t{text}")
    (root / "labels.tsv").write_text("# image\ttext\n" + "\n".join(rows) + "\n")
    return root / "labels.tsv"


def iam_set(root: Path, texts: list[str] = TEXTS) -> Path:
    """The same lines as :func:`tsv_set`, in the IAM lines layout."""
    listing = []
    for i, text in enumerate(texts):
        line_id = f"a01-000u-{i:02d}"
        write_png(root / "lines" / "a01" / "a01-000u" / f"{line_id}.png", line_image(text, seed=i))
        listing.append(f"{line_id} ok 154 19 408 746 1661 89 {text.replace(' ', '|')}")
    (root / "lines.txt").write_text("#--- IAM lines\n" + "\n".join(listing) + "\n")
    return root


def tiny_config(cache: Path, *overrides: str):
    """The smoke recipe on a 160-line pool, 4 steps per epoch."""
    return load_config(CONFIGS / "smoke.yaml", [
        f"--data.cache_dir={cache}", "--data.train_lines=64", "--data.val_lines=8", "--data.test_lines=8",
        "--data.unseen_font_lines=8", "--loop.epochs=2", "--loop.threads=1", *overrides])


ONLINE = ("--data.mode=online", "--data.train_lines=16", "--data.val_lines=4", "--data.test_lines=4",
          "--data.unseen_font_lines=4", "--loop.epochs=1")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pool-cache")


@pytest.fixture
def tsv(tmp_path) -> Path:
    return tsv_set(tmp_path / "tsvset")


# --- one reader for every kind of labelled set -------------------------------------------------------


def test_a_tsv_and_an_iam_folder_of_the_same_lines_read_as_the_same_set(tmp_path, tsv):
    a, b = list(real_samples(tsv)), list(real_samples(iam_set(tmp_path / "iam")))
    assert [s[1] for s in a] == [s[1] for s in b] == TEXTS
    assert [s[2] for s in a] == [f"img/{i}.png" for i in range(6)]
    assert [s[2] for s in b] == [f"a01-000u-{i:02d}" for i in range(6)]
    assert np.array_equal(a[3][0], line_image(TEXTS[3], seed=3))
    assert eval_set_hash(a) == eval_set_hash(b) != eval_set_hash(a[:-1])


def _missing_image(root: Path) -> tuple[Path, str]:
    tsv = tsv_set(root, TEXTS[:1])
    tsv.write_text(tsv.read_text() + "img/9.png\tgone\n")
    return tsv, r"row 3: image 'img/9.png' not found"


def _unreadable_image(root: Path) -> tuple[Path, str]:
    tsv = tsv_set(root, TEXTS[:2])
    (root / "img" / "1.png").write_bytes(b"not a png at all")
    return tsv, r"1.png: not an image"


def _empty_tsv(root: Path) -> tuple[Path, str]:
    root.mkdir()
    (root / "labels.tsv").write_text("# nothing yet\n")
    return root / "labels.tsv", "no labelled rows"


def _plain_folder(root: Path) -> tuple[Path, str]:
    write_png(root / "a.png", line_image("abc"))
    return root, "a folder without lines.txt or ascii/lines.txt; expected a TSV"


def _line_store(root: Path) -> tuple[Path, str]:
    root.mkdir()
    (root / "lines.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    return root / "lines.h5", "a line store, not a labelled set of images"


def _nothing(root: Path) -> tuple[Path, str]:
    return root / "labels.tsv", "no such file or folder; expected a TSV"


@pytest.mark.parametrize("make", [_missing_image, _unreadable_image, _empty_tsv, _plain_folder, _line_store,
                                  _nothing])
def test_a_bad_real_set_fails_naming_the_source_and_what_is_wrong(tmp_path, make):
    source, message = make(tmp_path / "set")
    with pytest.raises((EvalDataError, FileNotFoundError), match=message) as e:
        list(real_samples(source))
    assert str(source.name) in str(e.value)


# --- training ------------------------------------------------------------------------------------------


def test_training_scores_real_val_every_epoch_and_keeps_the_best_checkpoint_by_it(tmp_path, cache, tsv):
    out = tmp_path / "run"
    metrics = train(tiny_config(cache, f"--data.real_val={tsv}"), out)
    history = load_checkpoint(out / "checkpoints" / "last.pt")["history"]
    assert len(history) == 2
    assert all({"val_cer", "real_val_cer", "real_val_wer"} <= set(h) for h in history)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics, default=str))
    assert saved["selected_by"] == "real_val_cer" and saved["real_val_source"] == str(tsv)
    assert saved["real_val_n"] == len(TEXTS) and saved["real_val_hash"] == eval_set_hash(real_samples(tsv))
    cers = [h["real_val_cer"] for h in history]
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert len(best["history"]) == cers.index(min(cers)) + 1  # saved at the epoch of the lowest real CER
    assert best["callbacks"]["BestCheckpoint"]["monitor"] == "real_val_cer"
    # the final greedy score is that of the reloaded best weights on the same lines
    assert saved["real_val_cer"] == pytest.approx(min(cers))


def test_a_bad_real_val_fails_before_anything_is_rendered_or_trained(tmp_path):
    source, _ = _missing_image(tmp_path / "set")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=rf"data.real_val={source}: .*row 3: image 'img/9.png' not found"):
        Trainer(tiny_config(cache, f"--data.real_val={source}"), tmp_path / "run")
    assert not list(cache.glob("pool-*.h5")) and not (tmp_path / "run" / "checkpoints").exists()


def test_a_real_text_the_charset_cannot_write_is_named_before_training(tmp_path):
    tsv = tsv_set(tmp_path / "set", ["plain", "un café noir"])
    with pytest.raises(ValueError, match=r"1 of 2 lines hold characters the model cannot write \('é'\), "
                                         r"e.g. img/1.png: 'un café noir'"):
        Trainer(tiny_config(tmp_path / "cache", f"--data.real_val={tsv}"), tmp_path / "run")


def test_real_val_config_is_a_path_or_uri():
    assert load_config(None).data.real_val == ""
    assert load_config(None, ["--data.real_val=s3://b/real/labels.tsv"]).data.real_val == "s3://b/real/labels.tsv"
    with pytest.raises(ValueError, match="data.real_val must be a path or s3:// URI"):
        load_config({"data": {"real_val": "  "}})


@pytest.mark.parametrize("mode", ["online", "store"])
def test_real_val_is_an_eval_set_in_every_data_mode_through_the_plain_stem(tmp_path, mode):
    root = iam_set(tmp_path / "iam")
    extra: tuple[str, ...] = ONLINE
    if mode == "store":
        store = tmp_path / "lines.h5"
        with LineWriter(store) as w:
            for i in range(12):
                w.add(line_image("abc de"[: 1 + i % 6], seed=i), "abc de"[: 1 + i % 6].strip() or "a",
                      split=["train", "train", "val", "test"][i % 4], source="test")
        extra = ("--data.mode=store", f"--data.stores=[{store}]", "--loop.epochs=1")
    trainer = Trainer(tiny_config(tmp_path / "cache", *extra, f"--data.real_val={root}"), tmp_path / "run")
    try:
        real = trainer.data.evals["real_val"]
        assert len(real) == len(TEXTS) and trainer.monitor == "real_val_cer"
        image, text = real[(3, 2)]
        assert text == TEXTS[2] and image.shape[:2] == (1, 32)
        assert torch.equal(image, trainer.stem(line_image(TEXTS[2], seed=2)))  # never augmented
        assert torch.equal(image, real[(0, 2)][0])
        assert real.lengths(0).tolist() == [real[(0, i)][0].shape[-1] for i in range(len(real))]  # the stem's
    finally:
        trainer.close()


DDP_SCRIPT = r'''
import json, sys
from pathlib import Path
from textrec.training import distributed, load_config
from textrec.training.loop import Trainer

cfg = load_config(sys.argv[1], sys.argv[3:])
out = Path(sys.argv[2])
trainer = Trainer(cfg, out)
trainer.fit()
metrics = trainer.finish()
(out / f"rank{trainer.rank}.json").write_text(json.dumps({
    "epoch_real_val_cer": trainer.history[-1]["real_val_cer"], "real_val_cer": metrics["real_val_cer"],
    "real_val_n": metrics["real_val_n"], "real_val_hash": metrics["real_val_hash"]}))
trainer.close()
distributed.cleanup()
'''


def test_two_ranks_score_the_real_set_together(tmp_path, tsv):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out, port = tmp_path / "run", str(free_port())
    args = [sys.executable, str(script), str(CONFIGS / "smoke.yaml"), str(out), f"--data.cache_dir={tmp_path}",
            *ONLINE, "--loop.threads=1", f"--data.real_val={tsv}"]
    procs = []
    for rank in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    wait_ok(procs)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in range(2))
    assert r0 == r1 and r0["real_val_n"] == len(TEXTS)  # every line counted once, over both shards
    assert r0["real_val_hash"] == eval_set_hash(real_samples(tsv))
    assert json.loads((out / "metrics.json").read_text())["selected_by"] == "real_val_cer"


# --- S3 ------------------------------------------------------------------------------------------------


def test_a_real_set_on_s3_reads_as_its_local_copy(tmp_path, tsv, s3, capsys):
    expected = eval_set_hash(real_samples(tsv))
    storage.upload(tsv.parent, s3.uri("real/tsvset"))
    (tmp_path / "unrelated.bin").write_bytes(b"x" * 100)
    storage.upload(tmp_path / "unrelated.bin", s3.uri("real/tsvset/unrelated.bin"))
    storage.upload(iam_set(tmp_path / "iam"), s3.uri("real/iam"))
    tsv_uri = s3.uri("real/tsvset/labels.tsv")

    assert eval_set_hash(real_samples(tsv_uri)) == expected  # into a temporary folder
    assert eval_set_hash(real_samples(s3.uri("real/iam"))) == expected
    cache = tmp_path / "cache"
    rows = labelled_rows(tsv_uri, cache_dir=cache)
    assert [r[2] for r in rows] == [f"img/{i}.png" for i in range(6)]
    assert all(cache in r[0].parents for r in rows)
    fetched = {p.name for p in cache.rglob("*") if p.is_file()}
    assert fetched == {"labels.tsv", *(f"{i}.png" for i in range(6))}  # only what the TSV names

    # `textrec evaluate --labels` takes the same URI
    from textrec.cli import main

    model_pt = tiny_model_artifact(tmp_path / "model" / "model.pt")
    assert main(["evaluate", "--model", str(model_pt), "--labels", tsv_uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cer"] == pytest.approx(evaluate(model_pt, real_samples(tsv)).cer)

    # training fetches it into its cache, as the run's eval set of the same hash
    trainer = Trainer(tiny_config(tmp_path / "run-cache", *ONLINE, f"--data.real_val={tsv_uri}"), tmp_path / "run")
    try:
        assert trainer.data.evals["real_val"].hash == expected
        assert list((tmp_path / "run-cache" / "labelled").rglob("labels.tsv"))
    finally:
        trainer.close()


def test_a_missing_image_of_a_tsv_on_s3_is_named_with_its_row(tmp_path, s3):
    (tmp_path / "labels.tsv").write_text("img/0.png\tgone\n")
    uri = storage.upload(tmp_path / "labels.tsv", s3.uri(f"broken-{uuid.uuid4().hex[:6]}/labels.tsv"))
    with pytest.raises(EvalDataError, match=rf"{uri}, row 1: image 'img/0.png' could not be fetched"):
        list(real_samples(uri))
    with pytest.raises(EvalDataError, match="no such object or prefix; expected a TSV"):
        list(real_samples(s3.uri("nothing/here.tsv")))


# --- the evaluate step and the register step -------------------------------------------------------------


def test_evaluate_step_scores_the_real_set_and_the_gate_decides_on_it(tmp_path, tsv, mlflow_server):
    uri, name = mlflow_server.url, f"textrec-test-{uuid.uuid4().hex[:8]}"
    model_pt = tiny_model_artifact(tmp_path / "model" / "model.pt")
    store = tmp_path / "lines.h5"
    with LineWriter(store) as w:
        for i, text in enumerate(TEXTS):
            w.add(line_image(text, seed=i), text, split="test", source="unit")
    step = tracking.StepTracking("run-1", uri, name)

    result = evaluate_split(model_pt, [store], tmp_path / "eval", step=step, real_val=str(tsv))
    real_hash = eval_set_hash(real_samples(tsv))
    assert result["real_val_hash"] == real_hash and result["real_val_n"] == len(TEXTS)
    assert result["real_val_cer"] == pytest.approx(evaluate(model_pt, real_samples(tsv)).cer)
    assert (tmp_path / "eval" / "real_val" / "report.html").is_file()
    client = tracking.mlflow_client(uri)
    [run] = client.search_runs([client.get_experiment_by_name(name).experiment_id],
                               f"tags.`{tracking.TAG_STEP}` = 'evaluate'")
    assert run.data.tags[tracking.TAG_REAL_VAL_SET] == real_hash
    assert run.data.metrics["real_val_cer"] == pytest.approx(result["real_val_cer"])

    def register(test_cer: float, real_cer: float, run_id: str) -> dict:
        path = tmp_path / f"{run_id}.json"
        tracking.register_challenger(model_pt, [store], test_cer=test_cer, eval_hash=result["eval_set_hash"],
                                     model_name=name, step=tracking.StepTracking(run_id, uri, name),
                                     decision_path=path, real_val_cer=real_cer, real_val_hash=real_hash)
        return json.loads(path.read_text())

    first = register(0.30, 0.50, "run-1")
    assert first["promoted"] and first["metric"] == "real_val_cer"
    # worse on the synthetic test lines, better on the real ones: the real lines decide
    second = register(0.40, 0.20, "run-2")
    assert second["promoted"] and second["metric"] == "real_val_cer"
    assert second["challenger_cer"] == pytest.approx(0.20) and second["champion_cer"] == pytest.approx(0.50)


# --- the pipeline's entry points -------------------------------------------------------------------------


def test_local_and_submit_pass_real_val_to_the_pipeline(tmp_path, tsv, monkeypatch):
    from pipelines import local, submit

    assert submit.arguments("smoke", {"real_val": "s3://b/real/labels.tsv"})["real_val"] == "s3://b/real/labels.tsv"
    monkeypatch.setenv("REAL_VAL", "s3://b/from-env")
    assert local._parse([]).real_val == "s3://b/from-env"
    assert local._parse(["--real-val", str(tsv)]).real_val == str(tsv)
    monkeypatch.chdir(tsv.parent)
    assert local._real_val_arg("labels.tsv") == str(tsv.resolve())
    with pytest.raises(ValueError, match="--real-val nope.tsv: no such file or folder"):
        local._real_val_arg("nope.tsv")


def test_the_train_step_sets_real_val_and_multi_node_needs_it_on_s3(tmp_path):
    from textrec.training.job import TrainRequest, _train_multi_node, train_config

    assert train_config("", ["/d/synth.h5"], real_val="s3://b/real/labels.tsv").data.real_val == "s3://b/real/labels.tsv"
    recipe = "data:\n  real_val: /mnt/real/labels.tsv\n"
    assert train_config(recipe, ["/d/synth.h5"]).data.real_val == "/mnt/real/labels.tsv"  # the recipe's own
    cfg = train_config("", ["/d/synth.h5"], real_val=str(tmp_path / "labels.tsv"))
    req = TrainRequest(stores=("/d/synth.h5",), store_uris=("s3://b/synth.h5",), nodes=2, real_val=cfg.data.real_val)

    def never(launch):
        raise AssertionError("the launcher must not be called")

    with pytest.raises(ValueError, match="nodes > 1 needs data.real_val on S3"):
        _train_multi_node(req, cfg, "s3://b/ckpt/run-x", "run", tmp_path, never)
