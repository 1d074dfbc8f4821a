"""One Open Inference Protocol server (``serving.oip``) on this machine, controlled through its folder.

The folder (``.textrec/serve/oip`` by default, beside TorchServe's) holds ``server.json`` (settings,
model path and version: what ``python -m serving.oip`` serves), ``key_file.json`` (the key the server
writes at each start), ``server.pid`` and ``logs/server.log``. ``OipServerProcess`` starts the server
in the background, waits for a real prediction, sends requests with the key and stops it;
``serve_oip`` is what ``python -m serving serve --runtime kserve`` runs.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from serving.oip import KEY_FILE, STATE_FILE, OipConfig, read_state, write_state
from serving.torchserve import ServeError, probe_png

DEFAULT_WORKDIR = Path(".textrec/serve/oip")


@dataclass
class OipServerProcess:
    """One ``python -m serving.oip`` process, controlled through its working folder."""

    config: OipConfig = field(default_factory=OipConfig)
    workdir: Path = DEFAULT_WORKDIR

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).absolute()

    @property
    def key_file(self) -> Path:
        return self.workdir / KEY_FILE

    @property
    def log_file(self) -> Path:
        return self.workdir / "logs" / "server.log"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "server.pid"

    @property
    def url(self) -> str:
        return self.config.url

    @classmethod
    def from_workdir(cls, workdir: str | os.PathLike = DEFAULT_WORKDIR) -> OipServerProcess:
        """The server whose settings ``start`` recorded in ``workdir/server.json``."""
        if not (Path(workdir) / STATE_FILE).exists():
            raise ServeError(f"{Path(workdir) / STATE_FILE}: no OIP server was started in {workdir}")
        return cls(read_state(Path(workdir).absolute())["config"], Path(workdir))

    # --- process control -------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The server's pid, if it is alive and still this folder's server (pids get reused)."""
        import psutil

        try:
            proc = psutil.Process(int(self.pid_file.read_text().strip()))
            cmd = proc.cmdline()
            ours = "serving.oip" in cmd and str(self.workdir) in cmd
            return proc.pid if ours and proc.status() != psutil.STATUS_ZOMBIE else None
        except (OSError, ValueError, psutil.Error):
            return None

    def start(self, model_path: str | os.PathLike, version: str, *, source: dict | None = None,
              timeout: float = 120.0, token_file: str | os.PathLike | None = None) -> None:
        """Start the server in the background with ``model_path`` served as ``version``; returns once it
        listens (``wait_ready`` then proves a prediction). ``token_file``: the key to take instead of a
        fresh one, so clients keep theirs across a restart (as the chart's replicas share one)."""
        if self.pid() is not None:
            raise ServeError(f"an OIP server from {self.workdir} is already running (pid {self.pid()}); "
                             "stop it first (python -m serving stop --runtime kserve)")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.key_file.unlink(missing_ok=True)  # a stale one would hand out a dead key
        write_state(self.workdir, self.config, Path(model_path).absolute(), version, source or {})
        # One OpenMP thread, as TorchServe's workers: the client and other servers share the cores.
        env = {**os.environ, "OMP_NUM_THREADS": str(self.config.threads)}
        with open(self.log_file, "ab") as log:
            token = ["--token-file", str(Path(token_file).absolute())] if token_file else []
            proc = subprocess.Popen([sys.executable, "-m", "serving.oip", "--workdir", str(self.workdir), *token],
                                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pid_file.write_text(f"{proc.pid}\n")
        self._proc = proc  # reaped by stop(); a server started from a shell outlives its starter
        self._wait(lambda: self.key_file.exists() and self._live(), timeout, "the OIP server to listen")

    def stop(self, *, timeout: float = 30.0) -> bool:
        """SIGTERM (uvicorn finishes the requests in flight), SIGKILL after ``timeout``; False if none ran."""
        import psutil

        pid = self.pid()
        if pid is None:
            return False
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            proc.kill()  # only our own server, found through our own pid file
            proc.wait(timeout=timeout)
        popen = getattr(self, "_proc", None)
        if popen is not None:
            popen.wait(timeout=timeout)
        self.key_file.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)
        return True

    def served(self) -> dict:
        """What the running server says it serves: ``{"name", "version", "state"}``."""
        r = self.request("POST", "/v2/repository/index", timeout=10)
        if r.status_code != 200:
            raise ServeError(f"POST /v2/repository/index -> {r.status_code}: {r.text.strip()}")
        return r.json()[0]

    def swap(self, model_path: str | os.PathLike, version: str, *, source: dict | None = None,
             timeout: float = 300.0) -> str:
        """Serve ``model_path`` as ``version`` without a restart; returns the version it replaced.

        Records the model in ``server.json`` (so a restart serves it too) and has the server load it
        (``POST /v2/repository/models/{name}/load``); the old version answers until the new one is in.
        If it does not load, ``server.json`` goes back to the old model and ServeError says why."""
        if self.pid() is None:
            raise ServeError(f"no OIP server is running from {self.workdir}; start one with "
                             "`make serve RUNTIME=kserve`")
        before = read_state(self.workdir)
        write_state(self.workdir, before["config"], Path(model_path).absolute(), version, source or {})
        try:
            r = self.request("POST", f"/v2/repository/models/{self.config.model_name}/load", timeout=timeout)
            error = "" if r.status_code == 200 else f"{r.status_code}: {r.text.strip()}"
        except requests.RequestException as e:
            error = f"the load request failed: {e}"
        if error:
            write_state(self.workdir, before["config"], Path(before["model_path"]), str(before["version"]),
                        before.get("source") or {})
            raise ServeError(f"version {version} was not served ({error})")
        return str(r.json().get("previous") or before["version"])

    def wait_ready(self, *, timeout: float = 120.0) -> dict:
        """Wait for a real prediction (a listening server proves little); returns its answer."""
        answer: dict = {}

        def predicted() -> bool:
            try:
                answer.update(self.predict(probe_png()))
                return True
            except (ServeError, requests.RequestException):
                return False

        self._wait(predicted, timeout, f"a prediction from {self.config.model_name}")
        return answer

    def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if self.pid() is None:
                raise ServeError(f"the OIP server exited while waiting for {what}; {self._log_tail()}")
            time.sleep(0.2)
        raise ServeError(f"timed out after {timeout:.0f} s waiting for {what}; {self._log_tail()}")

    def _log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(0, self.log_file.stat().st_size - 16384))
                lines = f.read().decode(errors="replace").splitlines()[-n:]
        except OSError:
            return f"no log at {self.log_file}"
        return f"last lines of {self.log_file}:\n" + "\n".join(lines)

    # --- requests --------------------------------------------------------------------------------

    def token(self) -> str:
        try:
            return json.loads(self.key_file.read_text())["inference"]["key"]
        except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
            raise ServeError(f"{self.key_file}: no inference key ({e}); is the OIP server running here?") from e

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", **kw.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=kw.pop("timeout", 60), **kw)

    def _live(self) -> bool:
        try:
            return self.request("GET", "/v2/health/live", timeout=2).ok
        except (requests.RequestException, ServeError):
            return False

    def infer(self, images: Sequence[bytes], *, model: str | None = None) -> dict:
        """POST images as one BYTES tensor; the inference response (ServeError on a non-200 answer)."""
        name = model or self.config.model_name
        r = self.request("POST", f"/v2/models/{name}/infer", json=infer_request(images))
        if r.status_code != 200:
            raise ServeError(f"POST /v2/models/{name}/infer -> {r.status_code}: {r.text.strip()}")
        return r.json()

    def predict(self, image: bytes) -> dict:
        """One line, answered like TorchServe's handler: ``{"text", "confidence", "version"}``."""
        answer = self.infer([image])
        out = {o["name"]: o["data"][0] for o in answer["outputs"]}
        return {**out, "version": answer["model_version"]}


def infer_request(images: Sequence[bytes]) -> dict:
    """The OIP inference request for line images: one BYTES tensor, one base64 element per image."""
    return {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [len(images)],
                        "data": [base64.b64encode(i).decode("ascii") for i in images]}]}


def serve_oip(model: str | None = None, *, workdir: str | os.PathLike = DEFAULT_WORKDIR,
              config: OipConfig | None = None, version: str | None = None,
              timeout: float = 180.0) -> OipServerProcess:
    """Start the OIP server with ``model`` (default: the registry's champion) and wait for a prediction.

    A registered model is downloaded into ``workdir/model`` (the server loads it from there)."""
    from serving.archive import resolve_model

    server = OipServerProcess(config or OipConfig(), Path(workdir))
    if server.pid() is not None:
        raise ServeError(f"an OIP server from {server.workdir} is already running (pid {server.pid()}); "
                         "stop it first (python -m serving stop --runtime kserve)")
    source = resolve_model(model or _champion(), server.workdir / "model", version=version)
    server.start(source.model_path, source.version, source=source.to_dict(), timeout=timeout)
    try:
        server.wait_ready(timeout=timeout)
    except ServeError:
        server.stop()
        raise
    return server


def _champion() -> str:
    """The champion URI, with the tracking server ``make serve`` uses for TorchServe."""
    from serving.champion import CHAMPION_URI, use_champion_registry

    use_champion_registry()
    return CHAMPION_URI
