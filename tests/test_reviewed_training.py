"""Reviewed lines back into the pipeline: a reviewed store (written by the review app's own store code)
as the real validation set of a kfp.local run, and mixed into its training with a weight; MLflow
records the store and how many lines the run used. Real MLflow server on 127.0.0.1, real kfp.local run.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from textrec.data.synth import LineRenderer, SynthConfig
from textrec.review.store import ReviewStore, reviewed_inputs, split_of
from textrec.training.data import _Weighted

REPO = Path(__file__).resolve().parents[1]


class _Items(torch.utils.data.Dataset):
    """n items whose value is (augmentation epoch, index), with lengths."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def lengths(self, epoch: int = 0) -> np.ndarray:
        return np.arange(self.n, dtype=np.float64) + 10

    @property
    def texts(self) -> list[str]:
        return [str(i) for i in range(self.n)]

    def __getitem__(self, key):
        return key


def test_a_weight_above_one_shows_every_item_that_often_each_time_augmented_anew():
    w = _Weighted(_Items(10), 3.0, seed=1)
    assert len(w) == 30
    keys = [w[(4, i)] for i in range(len(w))]
    assert Counter(j for _, j in keys) == {j: 3 for j in range(10)}
    assert len(set(keys)) == 30  # the repeats differ in their augmentation epoch
    assert list(w.lengths(4)) == [10.0 + j for _, j in keys]


def test_a_weight_below_one_takes_a_fresh_part_each_epoch():
    w = _Weighted(_Items(10), 0.5, seed=1)
    assert len(w) == 5
    first, second = ({w[(e, i)][1] for i in range(5)} for e in (0, 1))
    assert not first & second and first | second == set(range(10))  # every item once before any twice


def _reviewed_store(root: Path, n: int) -> Path:
    """A reviewed store with lines of a training source and a validation source, made as the review
    app makes it: decisions through ReviewStore."""
    sources = {split_of(f"desk-{k}"): f"desk-{k}" for k in range(40)}
    assert set(sources) == {"train", "val"}
    renderer = LineRenderer(SynthConfig(pen_p=0.0))
    store = ReviewStore(root / "reviewed")
    rng = np.random.default_rng(0)
    texts = ["the quick fox", "over a lazy dog", "seven pale lines", "read by hand"]
    for i in range(n):
        text = texts[i % len(texts)]
        buf = io.BytesIO()
        image, text = renderer.render(text, rng)
        Image.fromarray(image).save(buf, format="PNG")
        source = sources["val"] if i % 4 == 0 else sources["train"]
        store.decide({"id": f"item-{i:03d}", "text": text, "confidence": 0.4}, "accepted", text, source,
                     buf.getvalue(), rebuild=False)
    store.rebuild()
    return root / "reviewed"


def test_reviewed_inputs_name_the_stores_parts_and_count_its_lines(tmp_path):
    path = _reviewed_store(tmp_path, 12)
    r = reviewed_inputs(str(path))
    assert (r.train_lines, r.val_lines) == (9, 3)
    assert r.real_val == f"{path}/val.tsv" and r.store == f"{path}/reviewed.h5"
    with pytest.raises(FileNotFoundError, match="no reviewed store here"):
        reviewed_inputs(str(tmp_path))


def test_a_run_validates_on_the_reviewed_lines_and_trains_on_them_with_their_weight(tmp_path, mlflow_server):
    from textrec.tracking import TAG_REAL_VAL_CER, mlflow_client

    store = _reviewed_store(tmp_path, 16)
    name = f"textrec-line-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFP_", "TEXTREC_"))}
    env.update(MLFLOW_TRACKING_URI=mlflow_server.url, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "pipelines.local", "--profile", "smoke", "--synth-lines", "150",
                          "--root", str(tmp_path / ".textrec"), "--model-name", name, "--serving-target", "none",
                          "--reviewed-store", str(store), "--reviewed-weight", "2"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    client = mlflow_client(mlflow_server.url)
    version = client.get_model_version(name, "1")
    assert TAG_REAL_VAL_CER in version.tags  # evaluated (and gated) on the reviewed validation lines
    train = client.get_run(version.run_id)
    assert train.data.tags["textrec.reviewed_store"] == str(store)
    assert train.data.metrics["reviewed_train_lines"] == 12 and train.data.metrics["reviewed_val_lines"] == 4
    assert train.data.params["data.optional_weight"] == "2.0"
    assert str(store / "reviewed.h5") in train.data.params["data.optional_stores"]
    assert "real_val_cer" in train.data.metrics  # scored every epoch on the reviewed validation lines
