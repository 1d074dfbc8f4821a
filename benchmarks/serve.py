"""Serving throughput and latency: TorchServe (batching on and off) and the Open Inference Protocol v2
server (``serving.oip``), against the same model in-process.

    python benchmarks/serve.py                        # the default line_cnn_lstm, untrained weights
    python benchmarks/serve.py --model runs/cpu/model.pt --requests 600 --json

One TorchServe on 127.0.0.1 serves the model twice: ``textrec-line`` with TorchServe batching (batch
``--batch-size``, ``--max-batch-delay-ms``) and ``textrec-line-nobatch`` with batch 1, one worker each
with one OpenMP thread; beside it, the OIP server (``oip/textrec-line``: one process, one thread, one
line per request, base64 in JSON; the request bodies are encoded before the clock starts). For each
concurrency, ``--requests`` PNG line images are posted by that many
client threads; lines/s is requests over wall time, latencies are per request as the client saw them.
In-process figures run the same model on the same PNG bytes (decoding included) with one thread,
one line at a time and in batches of ``--batch-size``. Untrained weights cost the same as trained
ones. Prints a table, or with ``--json`` one object; nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

from serving.archive import ArchiveOptions, archive_model
from serving.config import ServeConfig
from serving.oip import OipConfig
from serving.oip_process import OipServerProcess, infer_request
from serving.torchserve import TorchServeProcess
from textrec.artifact import save_artifact
from textrec.charset import DEFAULT_CHARSET
from textrec.models import create_model
from textrec.recognizer import Recognizer
from textrec.stem import LineStem, StemConfig
from textrec.tracking import MODEL_NAME

NOBATCH = f"{MODEL_NAME}-nobatch"
OIP = f"oip/{MODEL_NAME}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def line_pngs(n: int, seed: int = 0) -> list[bytes]:
    """Line-like PNGs, 64 px high and 300-1000 px wide (the stem scales them to 40 x 190-625)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        w = int(rng.integers(300, 1000))
        img = np.full((64, w), 235, np.uint8)
        for x in range(8, w - 12, int(rng.integers(9, 15))):  # letter-sized strokes with gaps
            top, bottom = int(rng.integers(8, 24)), int(rng.integers(40, 56))
            img[top:bottom, x:x + int(rng.integers(2, 5))] = int(rng.integers(0, 60))
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def default_model(path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("line_cnn_lstm", num_classes=DEFAULT_CHARSET.num_classes, height=StemConfig().height)
    return save_artifact(path, model.eval(), charset=DEFAULT_CHARSET, stem=LineStem(StemConfig()),
                         decoder={"kind": "greedy"}, metrics={})


def in_process(model_pt: Path, images: list[bytes], batch_size: int, repeat: int) -> dict:
    """Lines/s of Recognizer.recognise on PNG bytes with one thread: one by one, then batched."""
    torch.set_num_threads(1)
    rec = Recognizer.load(model_pt)
    rec.recognise(images[:batch_size], batch_size=batch_size)  # warm-up
    out = {}
    for name, bs in (("one_by_one", 1), ("batched", batch_size)):
        t0 = time.perf_counter()
        for _ in range(repeat):
            for i in range(0, len(images), bs):
                rec.recognise(images[i:i + bs], batch_size=bs)
        out[name] = repeat * len(images) / (time.perf_counter() - t0)
    return out


def load_test(server: TorchServeProcess, model: str, images: list[bytes], requests_n: int, concurrency: int) -> dict:
    url = f"{server.config.inference_url}/predictions/{model}"
    headers = {"Authorization": f"Bearer {server.token()}", "Content-Type": "image/png"}
    return measure(model, url, images, headers, requests_n, concurrency)


def load_test_oip(server: OipServerProcess, images: list[bytes], requests_n: int, concurrency: int) -> dict:
    url = f"{server.url}/v2/models/{server.config.model_name}/infer"
    headers = {"Authorization": f"Bearer {server.token()}", "Content-Type": "application/json"}
    bodies = [json.dumps(infer_request([im])).encode() for im in images]
    return measure(OIP, url, bodies, headers, requests_n, concurrency)


def measure(model: str, url: str, bodies: list[bytes], headers: dict, requests_n: int, concurrency: int) -> dict:
    """``requests_n`` POSTs of ``bodies`` (in turn) from ``concurrency`` threads: lines/s, p50, p99."""
    local = threading.local()

    def one(i: int) -> tuple[float, bool]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        t0 = time.perf_counter()
        try:
            ok = local.session.post(url, data=bodies[i % len(bodies)], headers=headers, timeout=120).ok
        except requests.RequestException:
            ok = False
        return time.perf_counter() - t0, ok

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(2 * concurrency)))  # warm-up: connections, first batches
        t0 = time.perf_counter()
        results = list(pool.map(one, range(requests_n)))
        wall = time.perf_counter() - t0
    lat = sorted(1000 * t for t, _ in results)
    return {"model": model, "concurrency": concurrency, "requests": requests_n,
            "errors": sum(not ok for _, ok in results), "lines_per_s": requests_n / wall,
            "p50_ms": statistics.median(lat), "p99_ms": lat[min(len(lat) - 1, int(0.99 * len(lat)))]}


def start_server(root: Path, model_pt: Path, batch_size: int, delay_ms: int) -> TorchServeProcess:
    cfg = ServeConfig(model_store=root / "store", inference_port=free_port(), management_port=free_port(),
                      metrics_port=free_port(), grpc_inference_port=free_port(), grpc_management_port=free_port())
    batched = archive_model(model_pt, cfg.model_store, version="1",
                            options=ArchiveOptions(batch_size=batch_size, max_batch_delay_ms=delay_ms))
    single = archive_model(model_pt, cfg.model_store, version="1", model_name=NOBATCH,
                           options=ArchiveOptions(batch_size=1, max_batch_delay_ms=0))
    server = TorchServeProcess(cfg, root / "work")
    server.start({MODEL_NAME: batched.name, NOBATCH: single.name})
    try:
        server.wait_ready(MODEL_NAME)
        server.wait_ready(NOBATCH)
    except BaseException:
        server.stop()
        raise
    return server


def start_oip(root: Path, model_pt: Path) -> OipServerProcess:
    server = OipServerProcess(OipConfig(port=free_port()), root / "oip")
    server.start(model_pt, "1")
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model.pt (default: untrained line_cnn_lstm)")
    ap.add_argument("--requests", type=int, default=400, help="requests per setting")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-batch-delay-ms", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    images = line_pngs(64)
    with tempfile.TemporaryDirectory(prefix="textrec-bench-serve-") as tmp:
        root = Path(tmp)
        model_pt = a.model or default_model(root / "model.pt")
        local = in_process(model_pt, images, a.batch_size, repeat=max(1, a.requests // len(images)))
        server = start_server(root, model_pt, a.batch_size, a.max_batch_delay_ms)
        try:
            oip = start_oip(root, model_pt)
            try:
                # Interleaved, so that load from elsewhere on the machine hits every setting alike.
                rows = [load_test_oip(oip, images, a.requests, c) if m == OIP
                        else load_test(server, m, images, a.requests, c)
                        for c in a.concurrency for m in (MODEL_NAME, NOBATCH, OIP)]
            finally:
                oip.stop()
        finally:
            server.stop()
    report(rows, local, a)
    return 0


def report(rows: list[dict], local: dict, a: argparse.Namespace) -> None:
    headline = next((r for r in rows if r["model"] == MODEL_NAME and r["concurrency"] == 8), rows[0])
    best = max(r["lines_per_s"] for r in rows)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
               f"load average {os.getloadavg()[0]:.1f}")
    summary = {"served_lines_per_s": best, "inprocess_lines_per_s": local["batched"],
               "p50_ms": headline["p50_ms"], "p99_ms": headline["p99_ms"],
               "served_over_inprocess": best / local["batched"], "inprocess": local,
               "headline": {"model": headline["model"], "concurrency": headline["concurrency"]},
               "settings": rows, "machine": machine, "date": time.strftime("%Y-%m-%d"),
               "model": str(a.model or "line_cnn_lstm (default config, untrained)"), "batch_size": a.batch_size,
               "max_batch_delay_ms": a.max_batch_delay_ms}
    if a.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"# {machine}, {summary['date']}, model {summary['model']}")
    print(f"in-process (1 thread, PNG decode included): {local['one_by_one']:.1f} lines/s one by one, "
          f"{local['batched']:.1f} lines/s in batches of {a.batch_size}")
    print("served model            concurrency  lines/s   p50 ms   p99 ms  errors")
    for r in rows:
        print(f"{r['model']:<24}{r['concurrency']:>11}{r['lines_per_s']:>9.1f}{r['p50_ms']:>9.1f}"
              f"{r['p99_ms']:>9.1f}{r['errors']:>8}")
    print(f"best served / in-process batched: {summary['served_over_inprocess']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
