"""The prediction client against a real HTTP server on 127.0.0.1 that fails on purpose, and the
command-line pieces around it (--version, quiet progress bars off a terminal, package data)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from textrec import __version__
from textrec.cli import main
from textrec.client import Endpoint, EndpointError
from textrec.progress import MLFLOW_BARS, quiet_when_piped

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FlakyPredictor:
    """Answers the first ``failures`` POSTs with ``status`` (or drops the connection when status is 0, or
    cuts a 200 answer off after its headers when it is -1), then 200 with a JSON answer naming the body's length. Records every request it saw."""

    failures: int = 0
    status: int = 507
    seen: list[tuple[str, str | None, int]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    stopped: bool = False

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FlakyPredictor:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                owner.seen.append((self.path, self.headers.get("Authorization"), len(body)))
                if owner.failures > 0:
                    owner.failures -= 1
                    if owner.status == 0:
                        self.connection.shutdown(2)  # a worker that died mid-request
                        return
                    if owner.status == -1:  # a server that died while writing its answer
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", "191")
                        self.end_headers()
                        self.wfile.write(b'{"text": ')
                        self.wfile.flush()
                        self.connection.shutdown(2)
                        return
                    return self._answer(owner.status, {"code": owner.status, "message": "worker died"})
                if body == b"bad":
                    return self._answer(400, {"code": 400, "type": "NotAnImage", "message": "not an image"})
                self._answer(200, {"text": f"{len(body)} bytes", "confidence": 0.5, "version": "1"})

            def _answer(self, status: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky() -> Iterator[FlakyPredictor]:
    server = FlakyPredictor().start()
    yield server
    server.stop()


@pytest.mark.parametrize("status", [507, 503, 0, -1])
def test_a_failed_prediction_is_sent_again_until_it_succeeds(flaky: FlakyPredictor, status: int) -> None:
    flaky.failures, flaky.status = 3, status
    with Endpoint(flaky.url, "tok", retries=4, backoff_s=0.01) as endpoint:
        answer = endpoint.predict(b"12345", "textrec-line")
    assert answer["text"] == "5 bytes"
    assert len(flaky.seen) == 4
    assert all(s == ("/predictions/textrec-line", "Bearer tok", 5) for s in flaky.seen)


def test_retries_give_up_with_the_last_answer_named(flaky: FlakyPredictor) -> None:
    flaky.failures = 10
    with Endpoint(flaky.url, retries=2, backoff_s=0.01) as endpoint, pytest.raises(EndpointError) as e:
        endpoint.predict(b"x", "textrec-line", name="line.png")
    assert len(flaky.seen) == 3
    assert "line.png" in str(e.value) and "507" in str(e.value) and "2 retries" in str(e.value)


def test_an_answer_cut_off_every_time_gives_up_with_an_endpoint_error(flaky: FlakyPredictor) -> None:
    flaky.failures, flaky.status = 10, -1
    with Endpoint(flaky.url, retries=2, backoff_s=0.01) as endpoint, pytest.raises(EndpointError) as e:
        endpoint.predict(b"x", "textrec-line", name="line.png")
    assert len(flaky.seen) == 3
    assert "line.png" in str(e.value) and "cut its answer off" in str(e.value) and "2 retries" in str(e.value)


def test_a_client_error_is_not_retried_and_carries_the_servers_reason(flaky: FlakyPredictor) -> None:
    with Endpoint(flaky.url, backoff_s=0.01) as endpoint, pytest.raises(EndpointError) as e:
        endpoint.predict(b"bad", "textrec-line", name="scan.png")
    assert e.value.status == 400 and len(flaky.seen) == 1
    assert "scan.png" in str(e.value) and "not an image" in str(e.value)


def test_backoff_grows_between_attempts(flaky: FlakyPredictor) -> None:
    flaky.failures = 3
    t0 = time.perf_counter()
    with Endpoint(flaky.url, retries=3, backoff_s=0.1) as endpoint:
        endpoint.predict(b"x", "m")
    # urllib3 sleeps backoff * 2**(n-1) after the n-th consecutive failure (none after the first).
    assert time.perf_counter() - t0 >= 0.2 + 0.4 - 0.05


def test_an_unreachable_endpoint_is_named(flaky: FlakyPredictor) -> None:
    url = flaky.url
    flaky.stop()
    with Endpoint(url, retries=1, backoff_s=0.01) as endpoint, pytest.raises(EndpointError) as e:
        endpoint.predict(b"x", "textrec-line")
    assert "cannot reach" in str(e.value) and url in str(e.value)


def test_predict_endpoint_completes_a_batch_across_failures(flaky: FlakyPredictor, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    images = []
    for i in range(4):
        images.append(tmp_path / f"{i}.png")
        images[-1].write_bytes(b"p" * (i + 1))
    token = tmp_path / "token"
    token.write_text("secret\n")
    flaky.failures = 2
    assert main(["predict", "--endpoint", flaky.url, "--token-file", str(token), *map(str, images)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{i + 1} bytes\t0.5000" for i in range(4)]
    assert len(flaky.seen) == 6 and {s[1] for s in flaky.seen} == {"Bearer secret"}


def test_predict_endpoint_with_no_retries_fails_on_the_first_fault(flaky: FlakyPredictor, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    flaky.failures = 1
    monkey_token = tmp_path / "token"
    monkey_token.write_text("t")
    code = main(["predict", "--endpoint", flaky.url, "--token-file", str(monkey_token), "--retries", "0",
                 str(image)])
    assert code == 1 and "507" in capsys.readouterr().err


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValueError, match="retries"):
        Endpoint("http://127.0.0.1:1", retries=-1)


# --- the command line around it ---------------------------------------------------------------------


def test_version_is_the_packages_version() -> None:
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-c", "from textrec.cli import main; main(['--version'])"],
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.startswith(f"textrec {__version__} ")
    assert version("textrec") == __version__


def test_bars_are_turned_down_off_a_terminal_and_user_settings_win() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    env: dict[str, str] = {}
    assert quiet_when_piped(Tty(), env) is False and env == {}
    assert quiet_when_piped(io.StringIO(), env) is True
    assert env[MLFLOW_BARS] == "false" and int(env["TQDM_MININTERVAL"]) >= 1
    env = {MLFLOW_BARS: "true"}
    quiet_when_piped(io.StringIO(), env)
    assert env[MLFLOW_BARS] == "true"


_DOWNLOAD = """
import sys, mlflow
if sys.argv[1] == "quiet":
    from textrec.progress import quiet_when_piped
    quiet_when_piped()
mlflow.set_tracking_uri(sys.argv[2])
mlflow.artifacts.download_artifacts(run_id=sys.argv[3], artifact_path="files", dst_path=sys.argv[4])
"""


def test_a_piped_artifact_download_prints_no_progress_bar(mlflow_server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    for i in range(6):
        (tmp_path / "files").mkdir(exist_ok=True)
        (tmp_path / "files" / f"{i}.txt").write_text(str(i))
    monkeypatch.delenv(MLFLOW_BARS, raising=False)
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_experiment("progress-bars")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tmp_path / "files"), "files")
    stderr = {}
    for mode in ("loud", "quiet"):
        out = subprocess.run([sys.executable, "-c", _DOWNLOAD, mode, mlflow_server.url, run.info.run_id,
                              str(tmp_path / mode)], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert len(list((tmp_path / mode / "files").iterdir())) == 6
        stderr[mode] = out.stderr
    assert "Downloading artifacts" in stderr["loud"]  # what a pod's log showed before
    assert "Downloading artifacts" not in stderr["quiet"]


def test_package_data_names_files_that_exist() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, patterns in data.items():
        for pattern in patterns:
            assert list((ROOT / package).glob(pattern)), f"{package}/{pattern} matches no file"
