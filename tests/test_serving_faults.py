"""A TorchServe worker killed (SIGKILL) in the middle of a batch of requests: TorchServe starts a new
one, and the client's retries carry every request through. Real TorchServe on 127.0.0.1."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "benchmarks"))
pytest.importorskip("ts")
pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="TorchServe needs Java 17 (java on PATH)")

from faults import run_under_fault, start_server, wait_for_workers, worker_pids  # noqa: E402
from fixtures.serving import line_png, make_model_pt  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    root = tmp_path_factory.mktemp("faults")
    proc = start_server(str(make_model_pt(root / "model.pt")), root)
    try:
        yield proc
    finally:
        proc.stop()


def test_with_retries_a_killed_worker_fails_no_request(server) -> None:
    before = worker_pids(server)
    run = run_under_fault(server, [line_png(i) for i in range(60)], retries=5, concurrency=4, kill_after=10)
    assert run.killed_pid in before  # the worker really was killed under load
    assert run.failed == 0, run
    wait_for_workers(server)
    assert worker_pids(server) and run.killed_pid not in worker_pids(server)  # a new worker serves


def test_without_retries_the_same_fault_fails_requests_and_names_their_status(server) -> None:
    wait_for_workers(server)
    run = run_under_fault(server, [line_png(i) for i in range(60)], retries=0, concurrency=4, kill_after=10)
    assert run.killed_pid and run.failed >= 1, run
    assert set(run.statuses) <= {"0", "500", "502", "503", "504", "507"}, run.statuses
    wait_for_workers(server)
