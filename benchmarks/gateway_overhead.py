"""What the serving pod's token gateway adds to a request's latency.

Starts the serving image's entrypoint on this machine (TorchServe + gateway on 127.0.0.1, free ports)
with a stand-in model that answers at once, so the figures are the HTTP path alone, then sends the
same small request N times straight to TorchServe (with its own key) and N times through the gateway
(with the shared token), one at a time, and prints p50 / p95 / mean for both.

    python benchmarks/gateway_overhead.py [--n 300]

Needs Java 17 and the serving stack (torchserve, torch-model-archiver) in this environment.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
SERVING = ROOT / "docker" / "serving"
BIN = Path(sys.executable).parent
TOKEN = "benchmark-token-0123456789abcdef"
HANDLER = "def handle(data, context):\n    return None if not data else [{'text': 'x'} for _ in data]\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    (root / "h.py").write_text(HANDLER)
    subprocess.run([str(BIN / "torch-model-archiver"), "--model-name", "textrec-line", "--version", "1",
                    "--handler", str(root / "h.py"), "--export-path", str(root)], check=True)
    ports = {k: free_port() for k in ("gw", "inf", "mgmt", "metrics", "g1", "g2")}
    (root / "tmp").mkdir()
    # The entrypoint renders TorchServe's config (serving/config.py) with these ports.
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TMPDIR": str(root / "tmp"),
           "TEMP": str(root / "tmp"), "TEXTREC_HOME": str(SERVING), "TEXTREC_MODEL_ARCHIVE": str(root / "textrec-line.mar"),
           "TEXTREC_MODEL_STORE": str(root / "store"), "TEXTREC_RUN_DIR": str(root / "run"),
           "LOG_LOCATION": str(root / "logs"), "TEXTREC_TOKEN": TOKEN, "GATEWAY_HOST": "127.0.0.1",
           "GATEWAY_PORT": str(ports["gw"]), "TEXTREC_TS_INFERENCE_PORT": str(ports["inf"]),
           "TEXTREC_TS_MANAGEMENT_PORT": str(ports["mgmt"]), "TEXTREC_TS_METRICS_PORT": str(ports["metrics"]),
           "TEXTREC_TS_METRICS_HOST": "127.0.0.1", "TEXTREC_TS_GRPC_INFERENCE_PORT": str(ports["g1"]),
           "TEXTREC_TS_GRPC_MANAGEMENT_PORT": str(ports["g2"])}
    proc = subprocess.Popen(["bash", str(SERVING / "entrypoint.sh")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{ports['gw']}/ready", timeout=2).status_code == 200:
                return proc, ports
        except requests.RequestException:
            pass
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the model never became ready")


def timed(session: requests.Session, url: str, token: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = session.post(url, data=b"x" * 2000, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def summary(ms: list[float]) -> str:
    q = statistics.quantiles(ms, n=20)
    return f"p50 {statistics.median(ms):6.2f} ms   p95 {q[18]:6.2f} ms   mean {statistics.mean(ms):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        proc, ports = start(Path(tmp))
        try:
            direct_key = json.loads((Path(tmp) / "run" / "key_file.json").read_text())["inference"]["key"]
            with requests.Session() as s:
                timed(s, f"http://127.0.0.1:{ports['gw']}/predictions/textrec-line", TOKEN, 20)  # warm-up
                direct = timed(s, f"http://127.0.0.1:{ports['inf']}/predictions/textrec-line", direct_key, n)
                gateway = timed(s, f"http://127.0.0.1:{ports['gw']}/predictions/textrec-line", TOKEN, n)
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"{n} sequential requests, 2 kB body, stand-in model")
    print(f"TorchServe directly  {summary(direct)}")
    print(f"through the gateway  {summary(gateway)}")
    print(f"gateway adds         {statistics.median(gateway) - statistics.median(direct):6.2f} ms at p50")


if __name__ == "__main__":
    main()
