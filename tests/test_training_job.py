"""The pipeline's training step (textrec.training.job) and its checkpoint location, without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from textrec.training.job import TrainRequest, _train_multi_node, store_uris, train_config
from textrec.training.remote import checkpoint_location

REPO = Path(__file__).resolve().parents[1]


def test_stores_of_a_minio_artifact_are_read_over_s3_and_local_ones_stay_local():
    stores = ["/minio/mlpipeline/v2/artifacts/x/lines/synth.h5", "/minio/mlpipeline/v2/artifacts/x/lines/iam.h5"]
    assert store_uris("minio://mlpipeline/v2/artifacts/x/lines", stores) == (
        "s3://mlpipeline/v2/artifacts/x/lines/synth.h5", "s3://mlpipeline/v2/artifacts/x/lines/iam.h5")
    assert store_uris("/tmp/root/lines", ["/tmp/root/lines/synth.h5"]) == ("/tmp/root/lines/synth.h5",)


def test_checkpoints_live_under_a_stable_key_of_the_pipeline_run(tmp_path):
    a = checkpoint_location("s3://b/ckpt/", "run-1")
    assert a == checkpoint_location("s3://b/ckpt", "run-1") and a.startswith("s3://b/ckpt/run-")
    assert a != checkpoint_location("s3://b/ckpt", "run-2")
    assert checkpoint_location(str(tmp_path), "run-1").startswith(str(tmp_path))
    assert checkpoint_location("", "run-1") == ""


def test_the_pipeline_trains_on_its_stores_whatever_the_profile_says():
    cfg = train_config((REPO / "configs/cpu.yaml").read_text(), ["/d/synth.h5", "/d/iam.h5"], epochs=3,
                       overrides=["optim.lr=0.01"])
    assert cfg.data.mode == "store" and cfg.data.stores == ("/d/synth.h5", "/d/iam.h5")
    assert cfg.loop.epochs == 3 and cfg.optim.lr == 0.01
    with pytest.raises(ValueError, match="training config: .*loop.epoch"):
        train_config("", ["/d/synth.h5"], overrides=["loop.epoch=3"])
    with pytest.raises(ValueError, match="expected a YAML mapping"):
        train_config("- a\n- b\n", ["/d/synth.h5"])


def _never(launch):
    raise AssertionError(f"the launcher must not be called for {launch.request}")


def test_multi_node_training_refuses_local_checkpoints_and_stores(tmp_path):
    cfg = train_config("", ["/d/synth.h5"])
    req = TrainRequest(stores=("/d/synth.h5",), store_uris=("/d/synth.h5",), nodes=2, gpus_per_node=8)
    with pytest.raises(ValueError, match="checkpoint_root to be an s3:// prefix"):
        _train_multi_node(req, cfg, str(tmp_path), "run", tmp_path, _never)
    with pytest.raises(ValueError, match="line stores on S3"):
        _train_multi_node(req, cfg, "s3://b/ckpt/run-x", "run", tmp_path, _never)


def test_multi_node_training_without_a_launcher_says_what_is_missing(tmp_path):
    cfg = train_config("", ["/d/synth.h5"])
    req = TrainRequest(stores=("/d/synth.h5",), store_uris=("s3://b/synth.h5",), nodes=2, gpus_per_node=8)
    with pytest.raises(ValueError, match="nodes > 1 needs a multi-node launcher"):
        _train_multi_node(req, cfg, "s3://b/ckpt/run-x", "run", tmp_path, None)


def test_the_launcher_gets_the_s3_stores_and_the_per_rank_entry_arguments(tmp_path, monkeypatch):
    import yaml

    import textrec.training.job as job

    seen = []
    monkeypatch.setattr(job, "download_outputs", lambda remote, out: seen.append(("download", remote)))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    cfg = train_config("", ["/d/synth.h5"])
    req = TrainRequest(stores=("/d/synth.h5",), store_uris=("s3://b/lines/synth.h5",), nodes=2, gpus_per_node=1)
    _train_multi_node(req, cfg, "s3://b/ckpt/run-x", "run-7", tmp_path, seen.append)
    launch = seen[0]
    args = dict(zip(launch.args[::2], launch.args[1::2], strict=True))
    assert launch.request is req and args["--checkpoint-uri"] == "s3://b/ckpt/run-x" and args["--run-id"] == "run-7"
    assert yaml.safe_load(args["--config-yaml"])["data"]["stores"] == ["s3://b/lines/synth.h5"]
    assert seen[1] == ("download", "s3://b/ckpt/run-x")  # the model comes back from where rank 0 put it


@pytest.mark.parametrize(("gpus", "nodes"), [(-1, 1), (1, 0)])
def test_an_impossible_placement_is_refused_with_both_numbers(gpus, nodes):
    from textrec.training.job import pod_plan

    with pytest.raises(ValueError, match=f"nodes={nodes}, gpus_per_node={gpus}"):
        pod_plan(gpus, nodes, {})
