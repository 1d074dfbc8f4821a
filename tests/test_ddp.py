"""Distributed data parallel on CPU: two gloo ranks on 127.0.0.1, launched by torchrun and by hand
(the way a Kubernetes job sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.net import free_port
from fixtures.procs import wait_ok

from textrec.training.distributed import detect

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["--data.train_lines=64", "--data.val_lines=8", "--data.test_lines=8", "--data.unseen_font_lines=8",
        "--loop.epochs=3", "--loop.threads=1"]

SCRIPT = r'''
import json, sys
from pathlib import Path
import torch
from textrec.training import Callback, load_config
from textrec.training import distributed
from textrec.training.loop import Trainer

class StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, epoch, metrics):
        trainer.request_stop("test: rank 0 alone decides to stop")

cfg = load_config(sys.argv[1], sys.argv[3:])
out = Path(sys.argv[2])
trainer = Trainer(cfg, out, callbacks=[StopAfterFirstEpoch()])
trainer.fit()
metrics = trainer.finish()
torch.save({k: v.cpu() for k, v in trainer.model.state_dict().items()}, out / f"rank{trainer.rank}.pt")
(out / f"rank{trainer.rank}.json").write_text(json.dumps({
    "rank": trainer.rank, "world_size": trainer.world_size, "epoch": trainer.epoch, "step": trainer.step,
    "steps_per_epoch": trainer.steps_per_epoch, "callbacks": len(trainer.callbacks),
    "backend": torch.distributed.get_backend(), "val_cer": metrics["val_cer"], "val_n": metrics["val_n"]}))
trainer.close()
distributed.cleanup()
'''


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    # one thread per rank on a small machine; gloo on the loopback interface only
    env.update(OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pool-cache")


def _args(tmp_path: Path, out: Path, cache: Path) -> list[str]:
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    return [str(script), str(CONFIGS / "smoke.yaml"), str(out), f"--data.cache_dir={cache}", *TINY]


def _check(out: Path) -> None:
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [i["rank"] for i in infos] == [0, 1] and {i["world_size"] for i in infos} == {2}
    assert {i["backend"] for i in infos} == {"gloo"}
    # each rank ran half of the 4 batches per epoch, and both stopped after epoch 1 although only
    # rank 0 ran the callback that asked for it
    assert [i["steps_per_epoch"] for i in infos] == [2, 2]
    assert [i["epoch"] for i in infos] == [1, 1] and [i["step"] for i in infos] == [2, 2]
    assert [i["callbacks"] > 0 for i in infos] == [True, False]
    assert infos[0]["val_cer"] == infos[1]["val_cer"] and infos[0]["val_n"] == 8  # summed over both shards
    w0, w1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    assert (out / "model.pt").is_file() and (out / "checkpoints" / "last.pt").is_file()


def test_torchrun_two_cpu_ranks_end_with_equal_weights(tmp_path, cache):
    out = tmp_path / "run"
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nnodes=1", "--nproc-per-node=2", "--rdzv-backend=c10d",
           f"--rdzv-endpoint=127.0.0.1:{free_port()}", *_args(tmp_path, out, cache)]
    wait_ok([subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)])
    _check(out)


def test_ranks_started_by_hand_like_a_kubernetes_job(tmp_path, cache):
    out = tmp_path / "run"
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = _env()
        env.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, *_args(tmp_path, out, cache)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    wait_ok(procs)
    _check(out)


def test_environment_detection():
    assert detect({}) == (0, 1, 0)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    assert detect(env) == (3, 4, 1)
    with pytest.raises(RuntimeError, match="MASTER_ADDR, MASTER_PORT not set"):
        detect({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(RuntimeError, match="outside 0..1"):
        detect({**env, "RANK": "2", "WORLD_SIZE": "2"})
