"""A lean MLflow tracking server on this machine: what ``make local`` and the tests run.

One worker, no job runner, runs in ``root/mlflow.db`` and artifacts under ``root/artifacts``
(proxied by the server, so clients need only its URL); ``root/server.json`` records it so later
commands find it again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from textrec.io import write_json
from textrec.tracking.runs import TrackingError


@dataclass(frozen=True)
class MlflowServer:
    """A lean MLflow server on 127.0.0.1 (sqlite + proxied artifacts under ``root``)."""

    url: str
    pid: int
    root: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_local_server(root: str | os.PathLike, *, port: int = 0, timeout: float = 90.0) -> MlflowServer:
    """Start ``mlflow server`` in its own process group, one worker, no job runner; wait until healthy.

    The server keeps runs in ``root/mlflow.db`` and artifacts under ``root/artifacts`` (clients send
    them through the server, so nothing but the URL needs sharing). ``root/server.json`` records it.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port or _free_port()}"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
           "--port", url.rsplit(":", 1)[1], "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(root / "server.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=root)
    deadline = time.monotonic() + timeout
    while not server_healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _kill_group(proc.pid)
            tail = (root / "server.log").read_text(errors="replace")[-2000:]
            raise TrackingError(f"MLflow server at {url} did not start (see {root / 'server.log'}):\n{tail}")
        time.sleep(0.3)
    server = MlflowServer(url, proc.pid, root)
    write_json(root / "server.json", {"url": url, "pid": proc.pid})
    return server


def running_local_server(root: str | os.PathLike) -> MlflowServer | None:
    """The server recorded in ``root/server.json`` if it still answers, else None."""
    root = Path(root).resolve()
    try:
        rec = json.loads((root / "server.json").read_text())
    except (OSError, ValueError):
        return None
    if not server_healthy(rec.get("url", "")):
        return None
    return MlflowServer(rec["url"], int(rec["pid"]), root)


def _kill_group(pid: int, timeout: float = 15.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        _reap(pid)
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop_local_server(server: MlflowServer | str | os.PathLike) -> bool:
    """Stop a server started by :func:`start_local_server` (by its object or its root folder)."""
    if not isinstance(server, MlflowServer):
        root = Path(server).resolve()
        try:
            rec = json.loads((root / "server.json").read_text())
        except (OSError, ValueError):
            return False
        server = MlflowServer(rec["url"], int(rec["pid"]), root)
    _kill_group(server.pid)
    (server.root / "server.json").unlink(missing_ok=True)
    return True
