"""A serving worker killed under load: how many requests fail, with and without client retries.

    python benchmarks/faults.py                      # 400 requests at concurrency 4, untrained weights
    python benchmarks/faults.py --requests 800 --json

One TorchServe on 127.0.0.1 serves a line model with one worker. For each client setting
(``retries=0``: one try per request; ``retries=5``: ``textrec.client.Endpoint``'s default, 5xx and
dropped connections sent again with backoff), ``--requests`` PNG lines are posted by ``--concurrency``
threads, and once a quarter of them are answered the worker process is killed (SIGKILL, as the kernel's
out-of-memory killer does). TorchServe starts a new worker; requests in flight on the dead one are
answered 5xx. Prints, for each setting, failed requests, the longest answer and wall time; nothing is
asserted.

    python benchmarks/faults.py --runtime kserve     # the same fault on the OIP server

The Open Inference Protocol server (``serving.oip``) is one process: the same fault kills the server
itself. On Kubernetes the kubelet then restarts the container; here a supervisor thread does what the
kubelet does (start it again at once, with the same token, as the chart's token Secret keeps it), and
the figures include how long the restart took.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))

from serve import default_model, free_port, line_pngs  # noqa: E402 (benchmarks/serve.py: same model, same lines)

from serving.archive import ArchiveOptions, archive_model  # noqa: E402
from serving.config import ServeConfig  # noqa: E402
from serving.oip import OipConfig  # noqa: E402
from serving.oip_process import OipServerProcess  # noqa: E402
from serving.torchserve import TorchServeProcess  # noqa: E402
from textrec.client import Endpoint, EndpointError  # noqa: E402
from textrec.tracking import MODEL_NAME  # noqa: E402


@dataclass
class FaultRun:
    retries: int
    requests: int
    failed: int
    statuses: dict[str, int]  # failed requests by the last answer's status ("0": no answer)
    max_latency_s: float
    wall_s: float
    killed_pid: int
    runtime: str = "torchserve"
    restart_s: float | None = None  # the OIP server: from the kill until it listened again


def worker_pids(server: TorchServeProcess) -> list[int]:
    """The Python worker processes under the TorchServe frontend."""
    pid = server.pid()
    if pid is None:
        return []
    return [p.pid for p in psutil.Process(pid).children(recursive=True)
            if "model_service_worker" in " ".join(p.cmdline())]


def run_under_fault(server: TorchServeProcess, images: list[bytes], *, retries: int, concurrency: int = 4,
                    kill_after: int | None = None, model: str = MODEL_NAME) -> FaultRun:
    """Post ``images`` with ``concurrency`` threads and kill the worker once ``kill_after`` are answered."""
    endpoint = Endpoint(server.config.inference_url, server.token(), retries=retries, backoff_s=0.25)

    def kill() -> int:
        pids = worker_pids(server)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
        return pids[0] if pids else 0

    with endpoint:
        return _load(lambda image: endpoint.predict(image, model), kill, images, retries=retries,
                     concurrency=concurrency, kill_after=kill_after)


def run_oip_under_fault(server: OipServerProcess, model_pt: Path, token_file: Path, images: list[bytes], *,
                        retries: int, concurrency: int = 4, kill_after: int | None = None) -> FaultRun:
    """The same load on the OIP server; the kill takes the whole server, and a supervisor starts it again
    at once with the same model and token (what the kubelet does for a container that died)."""
    endpoint = Endpoint(server.url, token_file.read_text().strip(), retries=retries, backoff_s=0.25)
    restart: list[float] = []

    def supervise(pid: int, t0: float) -> None:
        psutil.Process(pid).wait(timeout=30)
        old = getattr(server, "_proc", None)
        if old is not None:
            old.wait(timeout=30)  # reap the dead server
        server.start(model_pt, "1", token_file=token_file, timeout=120)
        restart.append(time.perf_counter() - t0)

    threads: list[threading.Thread] = []

    def kill() -> int:
        pid = server.pid() or 0
        if pid:
            os.kill(pid, signal.SIGKILL)
            threads.append(threading.Thread(target=supervise, args=(pid, time.perf_counter()), daemon=True))
            threads[-1].start()
        return pid

    with endpoint:
        run = _load(lambda image: endpoint.predict_v2(image, MODEL_NAME), kill, images, retries=retries,
                    concurrency=concurrency, kill_after=kill_after)
    for t in threads:
        t.join(timeout=150)
    return FaultRun(**{**asdict(run), "runtime": "kserve", "restart_s": round(restart[0], 2) if restart else None})


def _load(predict: Callable[[bytes], Any], kill: Callable[[], int], images: list[bytes], *, retries: int,
          concurrency: int, kill_after: int | None) -> FaultRun:
    kill_after = len(images) // 4 if kill_after is None else kill_after
    done, lock, killed = [0], threading.Lock(), [0]
    statuses: dict[str, int] = {}
    latencies: list[float] = []

    def one(image: bytes) -> bool:
        t0 = time.perf_counter()
        try:
            predict(image)
            ok = True
        except EndpointError as e:
            with lock:
                statuses[str(e.status or 0)] = statuses.get(str(e.status or 0), 0) + 1
            ok = False
        with lock:
            latencies.append(time.perf_counter() - t0)
            done[0] += 1
            if done[0] == kill_after and not killed[0]:
                killed[0] = kill()
        return ok

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, images))
    wall = time.perf_counter() - t0
    return FaultRun(retries, len(images), results.count(False), statuses, round(max(latencies), 3),
                    round(wall, 2), killed[0])


def wait_for_workers(server: TorchServeProcess, timeout: float = 120.0) -> None:
    """Until the restarted worker answers again (so the next setting starts from a healthy server)."""
    server.wait_ready(MODEL_NAME, timeout=timeout)


def start_server(model: str | None, root: Path, batch_size: int = 1) -> TorchServeProcess:
    model = model or str(default_model(root / "model" / "model.pt"))
    cfg = ServeConfig(model_store=root / "store", inference_port=free_port(), management_port=free_port(),
                      metrics_port=free_port(), grpc_inference_port=free_port(),
                      grpc_management_port=free_port(), enable_model_api=True)
    mar = archive_model(model, cfg.model_store, version="1", options=ArchiveOptions(batch_size=batch_size))
    server = TorchServeProcess(cfg, root / "work")
    server.start({MODEL_NAME: mar.name}, timeout=180)
    server.wait_ready(MODEL_NAME, timeout=180)
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a model.pt (default: an untrained line_cnn_lstm)")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=1, help="TorchServe batch (make serve: 8)")
    p.add_argument("--runtime", choices=("torchserve", "kserve"), default="torchserve",
                   help="kserve: the Open Inference Protocol server, restarted by a supervisor")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    images = line_pngs(a.requests)
    if a.runtime == "kserve":
        return _main_oip(a, images)
    with tempfile.TemporaryDirectory(prefix="textrec-faults-") as tmp:
        server = start_server(a.model, Path(tmp), a.batch_size)
        try:
            runs = []
            for retries in (0, 5):
                runs.append(run_under_fault(server, images, retries=retries, concurrency=a.concurrency))
                wait_for_workers(server)
        finally:
            server.stop()
    return _report(a, runs, f"batch {a.batch_size}, worker killed after a quarter")


def _main_oip(a: argparse.Namespace, images: list[bytes]) -> int:
    with tempfile.TemporaryDirectory(prefix="textrec-faults-") as tmp:
        root = Path(tmp)
        model_pt = Path(a.model) if a.model else default_model(root / "model" / "model.pt")
        token_file = root / "token"
        token_file.write_text("faults-benchmark-token\n")
        server = OipServerProcess(OipConfig(port=free_port()), root / "oip")
        server.start(model_pt, "1", token_file=token_file, timeout=120)
        try:
            server.wait_ready()
            runs = []
            for retries in (0, 5):
                runs.append(run_oip_under_fault(server, model_pt, token_file, images, retries=retries,
                                                concurrency=a.concurrency))
                server.wait_ready()
        finally:
            server.stop()
    return _report(a, runs, "OIP server killed after a quarter and started again by a supervisor")


def _report(a: argparse.Namespace, runs: list[FaultRun], what: str) -> int:
    report = {"machine": f"{platform.node()} ({os.cpu_count()} cores)", "date": time.strftime("%Y-%m-%d"),
              "runtime": a.runtime, "runs": [asdict(r) for r in runs]}
    if a.json:
        print(json.dumps(report))
        return 0
    print(f"{report['machine']}, {report['date']}: {a.requests} requests at concurrency {a.concurrency}, "
          f"{a.runtime}, {what}")
    print(f"{'retries':>7} {'failed':>6} {'statuses':>16} {'max latency s':>13} {'wall s':>7} {'restart s':>9}")
    for r in runs:
        print(f"{r.retries:>7} {r.failed:>6} {json.dumps(r.statuses):>16} {r.max_latency_s:>13} {r.wall_s:>7} "
              f"{r.restart_s if r.restart_s is not None else '':>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
