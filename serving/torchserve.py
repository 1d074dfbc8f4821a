"""One TorchServe process tree on this machine, controlled through its working folder.

Everything a running server needs lives in that folder (``.textrec/serve`` by default):
``config.properties`` (rendered by ``serving.config``), ``server.json`` (the settings, so other
commands find the ports), ``key_file.json`` (TorchServe writes its tokens to its working directory),
``model-store/``, ``logs/`` and ``tmp/`` (TorchServe's pid file goes to ``$TMPDIR``, so two servers
never share one). ``TorchServeProcess`` starts and stops it, reads its tokens, talks to its inference
and management APIs, and swaps model versions with no failed request, for several served names at
once (the line and page models are one model file under two names).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import requests

from serving.config import ServeConfig, write_config
from textrec.io import write_json
from textrec.tracking import MODEL_NAME

DEFAULT_WORKDIR = Path(".textrec/serve")
LOG_CONFIG = Path(__file__).with_name("log4j2.xml")  # one access-log line per request, not a dozen


class ServeError(RuntimeError):
    """TorchServe did not start, answer or accept a change; the message says which and where to look."""


def probe_png() -> bytes:
    """A small line image (dark strokes on light paper) used to check that a real prediction works."""
    import numpy as np
    from PIL import Image

    img = np.full((40, 160), 235, np.uint8)
    for x in range(12, 150, 14):  # a row of short strokes, roughly letter-sized
        img[10:30, x:x + 3] = 20
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class TorchServeProcess:
    """One TorchServe process tree, controlled through its working folder."""

    config: ServeConfig
    workdir: Path = DEFAULT_WORKDIR

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).absolute()

    # --- paths -----------------------------------------------------------------------------------

    @property
    def key_file(self) -> Path:
        return self.workdir / "key_file.json"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.workdir / "tmp" / ".model_server.pid"

    @classmethod
    def from_workdir(cls, workdir: str | os.PathLike = DEFAULT_WORKDIR) -> TorchServeProcess:
        """The server whose settings ``start`` recorded in ``workdir/server.json``."""
        state = Path(workdir) / "server.json"
        if not state.exists():
            raise ServeError(f"{state}: no server was started in {workdir} (run `make serve`)")
        data = json.loads(state.read_text())
        known = {f.name for f in fields(ServeConfig)}
        return cls(ServeConfig(**{k: v for k, v in data.items() if k in known}), workdir)

    # --- process control -------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        tmp = self.workdir / "tmp"
        # One OpenMP thread per worker: several workers (and the batching thread) share the cores,
        # and oversubscribed threads cost far more tail latency than they gain.
        return {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp), "TEMP": str(tmp),
                "LOG_LOCATION": str(self.log_dir), "METRICS_LOCATION": str(self.log_dir)}

    def _torchserve(self, *args: str, log: Any = subprocess.DEVNULL) -> subprocess.CompletedProcess:
        exe = Path(sys.executable).with_name("torchserve")
        cmd = [str(exe) if exe.exists() else "torchserve", *args]
        return subprocess.run(cmd, cwd=self.workdir, env=self._env(), stdout=log, stderr=subprocess.STDOUT,
                              text=True, timeout=120)

    def pid(self) -> int | None:
        """The Java frontend's pid, if it is alive (and still TorchServe: pids get reused)."""
        import psutil

        try:
            proc = psutil.Process(int(self.pid_file.read_text().split()[0]))
            alive = proc.status() != psutil.STATUS_ZOMBIE and "org.pytorch.serve.ModelServer" in proc.cmdline()
            return proc.pid if alive else None
        except (OSError, ValueError, IndexError, psutil.Error):
            return None

    def start(self, models: dict[str, str] | None = None, *, timeout: float = 120.0) -> None:
        """Start TorchServe in the background with ``models`` ({name: archive in the store}) loaded."""
        if self.pid() is not None:
            raise ServeError(f"a TorchServe from {self.workdir} is already running (pid {self.pid()})")
        for d in (self.workdir / "tmp", self.log_dir, self.config.model_store):
            d.mkdir(parents=True, exist_ok=True)
        self.key_file.unlink(missing_ok=True)  # a stale one would hand out dead tokens
        config = write_config(self.config, self.workdir / "config.properties")
        write_json(self.workdir / "server.json", asdict(self.config))
        args = ["--start", "--ncs", "--model-store", str(self.config.model_store), "--ts-config", str(config),
                "--log-config", str(LOG_CONFIG)]
        if models:
            args += ["--models", *(f"{name}={archive}" for name, archive in models.items())]
        with open(self.log_dir / "console.log", "a") as log:
            proc = self._torchserve(*args, log=log)
        if proc.returncode != 0:
            raise ServeError(f"torchserve --start failed (exit {proc.returncode}); see {self.log_dir}/console.log")
        self._wait(lambda: self.key_file.exists() and self._pinged(), timeout, "TorchServe to answer /ping")

    def stop(self, *, timeout: float = 60.0) -> bool:
        """``torchserve --stop`` and wait for the Java process to exit; False if none was running."""
        import psutil

        pid = self.pid()
        if pid is None:
            return False
        proc = psutil.Process(pid)
        self._torchserve("--stop")
        try:
            proc.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            proc.kill()  # only our own frontend, found through our own pid file
        self.key_file.unlink(missing_ok=True)
        return True

    def _wait(self, ready: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if self.pid() is None:
                raise ServeError(f"TorchServe exited while waiting for {what}; {self._log_tail()}")
            time.sleep(0.25)
        raise ServeError(f"timed out after {timeout:.0f} s waiting for {what}; {self._log_tail()}")

    def _log_tail(self, n: int = 15) -> str:
        tails = []
        for name in ("model_log.log", "ts_log.log", "console.log"):
            p = self.log_dir / name
            if p.exists():
                with open(p, "rb") as f:  # logs grow to 100 MB: read only the end
                    f.seek(max(0, p.stat().st_size - 16384))
                    lines = f.read().decode(errors="replace").splitlines()[-n:]
                tails.append(f"--- {p} ---\n" + "\n".join(lines))
        return "last log lines:\n" + "\n".join(tails) if tails else f"no logs in {self.log_dir}"

    def _model_log_size(self) -> int:
        try:
            return (self.log_dir / "model_log.log").stat().st_size
        except OSError:
            return 0

    def _check_crash_loop(self, since: int) -> None:
        """TorchServe restarts a worker that dies while loading, forever: give up after the second
        death and show the Python traceback instead of waiting out the timeout."""
        log = self.log_dir / "model_log.log"
        try:
            with open(log, "rb") as f:
                f.seek(since)
                text = f.read().decode(errors="replace")
        except OSError:
            return
        if text.count("Backend worker process died") < 2:
            return
        lines = [line.split("MODEL_LOG - ", 1)[1] for line in text.splitlines() if "MODEL_LOG - " in line]
        # TorchServe logs "Failed to load model ..., exception <message>", then the traceback, whose
        # end (before TorchServe's own wrapper) is the handler's exception.
        died = next((i for i, line in enumerate(lines) if "Backend worker process died" in line), len(lines))
        first = next((i for i, line in enumerate(lines[:died]) if line.startswith("Failed to load")), 0)
        block = lines[first:died]
        shown = block if len(block) <= 24 else [block[0], "..."] + block[-20:]
        raise ServeError(f"the model's worker keeps dying while it loads (see {log}):\n" + "\n".join(shown))

    # --- tokens and HTTP -------------------------------------------------------------------------

    def token(self, kind: str = "inference") -> str:
        """A key from ``key_file.json``: ``inference``, ``management`` or ``API``."""
        try:
            return json.loads(self.key_file.read_text())[kind]["key"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise ServeError(f"{self.key_file}: no {kind} key ({e}); is TorchServe running here?") from e

    def _request(self, method: str, url: str, kind: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token(kind)}", **kw.pop("headers", {})}
        return requests.request(method, url, headers=headers, timeout=kw.pop("timeout", 60), **kw)

    def _manage(self, method: str, path: str, **kw: Any) -> Any:
        r = self._request(method, f"{self.config.management_url}{path}", "management", **kw)
        if r.status_code >= 300:
            raise ServeError(f"{method} {path} -> {r.status_code}: {r.text.strip()}")
        return r.json() if r.content else None

    def _pinged(self) -> bool:
        try:
            return self._request("GET", f"{self.config.inference_url}/ping", "inference", timeout=2).ok
        except (requests.RequestException, ServeError):
            return False

    def predict(self, image: bytes, *, model: str = MODEL_NAME, version: str | None = None,
                content_type: str = "image/png") -> dict:
        """POST one image; returns the JSON answer (raises ServeError on a non-2xx answer)."""
        path = f"/predictions/{model}" + (f"/{version}" if version else "")
        r = self._request("POST", self.config.inference_url + path, "inference", data=image,
                          headers={"Content-Type": content_type})
        if r.status_code != 200:
            raise ServeError(f"POST {path} -> {r.status_code}: {r.text.strip()}")
        return r.json()

    # --- model management ------------------------------------------------------------------------

    def describe(self, model: str = MODEL_NAME, version: str = "all") -> list[dict]:
        return self._manage("GET", f"/models/{model}/{version}")

    def versions(self, model: str = MODEL_NAME) -> list[str]:
        try:
            return [str(m["modelVersion"]) for m in self.describe(model)]
        except ServeError as e:
            if "404" in str(e):
                return []
            raise

    def default_version(self, model: str = MODEL_NAME) -> str | None:
        """The version that ``/predictions/<model>`` answers with, or None if the model is not loaded."""
        try:
            return str(self.describe(model, "")[0]["modelVersion"]) if self.versions(model) else None
        except (ServeError, IndexError, KeyError):
            return None

    def ready_workers(self, model: str = MODEL_NAME, version: str | None = None) -> int:
        try:
            info = self.describe(model, version or "")[0]
        except (ServeError, IndexError):
            return 0
        return sum(w.get("status") == "READY" for w in info.get("workers", []))

    def wait_ready(self, model: str = MODEL_NAME, version: str | None = None, *, workers: int = 1,
                   timeout: float = 120.0) -> dict:
        """Wait for READY workers, then for a real prediction to succeed (``/ping`` alone says Healthy
        while a worker crash-loops). Returns that prediction."""
        mark = self._model_log_size()

        def workers_ready() -> bool:
            self._check_crash_loop(mark)
            return self.ready_workers(model, version) >= workers

        self._wait(workers_ready, timeout, f"{workers} READY worker(s) of {model} {version or '(default)'}")
        answer: dict = {}

        def predicted() -> bool:
            try:
                answer.update(self.predict(probe_png(), model=model, version=version))
                return True
            except (ServeError, requests.RequestException):
                return False

        self._wait(predicted, timeout, f"a prediction from {model} {version or '(default)'}")
        return answer

    def register(self, archive: str, *, workers: int = 1, timeout: float = 120.0) -> None:
        """Load an archive from the model store and start its workers (waits for them)."""
        self._manage("POST", "/models", params={"url": archive, "initial_workers": workers,
                                                 "synchronous": "true"}, timeout=timeout)

    def scale(self, model: str, version: str, workers: int, *, timeout: float = 120.0) -> None:
        self._manage("PUT", f"/models/{model}/{version}",
                     params={"min_worker": workers, "max_worker": workers, "synchronous": "true"},
                     timeout=timeout)

    def set_default(self, model: str, version: str) -> None:
        self._manage("PUT", f"/models/{model}/{version}/set-default")

    def unregister(self, model: str, version: str, *, timeout: float = 120.0, quiet_s: float = 2.0) -> None:
        """Unload ``version`` once no request has been waiting for it for ``quiet_s`` seconds."""
        self._wait_drained(model, version, timeout, quiet_s)
        self._manage("DELETE", f"/models/{model}/{version}", timeout=timeout)

    def _wait_drained(self, model: str, version: str, timeout: float, quiet_s: float) -> None:
        """Requests routed to ``version`` before the default moved must finish before it goes away.

        TorchServe shows queued requests but not the batch a worker is running, and unloading
        drops that batch unanswered. New requests stop arriving once the default has moved, so an
        empty queue for ``quiet_s`` seconds means the last batch (milliseconds long) has finished."""
        quiet_since: float | None = None

        def drained() -> bool:
            nonlocal quiet_since
            try:
                queue = self.describe(model, version)[0].get("jobQueueStatus", {})
            except (ServeError, IndexError):
                return True
            now = time.monotonic()
            if int(queue.get("pendingRequests", 0)) > 0:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            return quiet_since is not None and now - quiet_since >= quiet_s

        self._wait(drained, timeout, f"{model} {version} to finish its queued requests")

    def swap(self, archive: str, version: str, *, model: str = MODEL_NAME, workers: int = 1,
             timeout: float = 120.0) -> str | None:
        """Roll ``model`` to ``version`` (already in the store as ``archive``) with no failed request:
        register, scale up, check a real prediction, make it the default, then drop the old versions.
        Returns the previous default version."""
        return self.swap_models({model: archive}, version, workers=workers, timeout=timeout)[model]

    def swap_models(self, archives: Mapping[str, str], version: str, *, workers: int = 1,
                    timeout: float = 120.0) -> dict[str, str | None]:
        """``swap`` for several names ({model name: archive in the store}) rolled to one ``version``.

        Every new version is loaded and answers before any default moves, and the defaults then move
        back to back, so the names change over together; a name that fails to load leaves every name on
        its old version. Old versions are dropped last. Returns each name's previous default version."""
        previous = {model: self.default_version(model) for model in archives}
        for model, archive in archives.items():
            if version not in self.versions(model):
                self.register(archive, workers=workers, timeout=timeout)
            self.scale(model, version, workers, timeout=timeout)
        for model in archives:
            self.wait_ready(model, version, workers=workers, timeout=timeout)
        for model in archives:
            self.set_default(model, version)
        for model in archives:
            for old in self.versions(model):
                if old != version:
                    self.unregister(model, old, timeout=timeout)
        return previous
