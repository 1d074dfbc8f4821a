"""A TorchServe worker killed (SIGKILL) in the middle of a batch of requests: TorchServe starts a new
one, and the client's retries carry every request through. Real TorchServe on 127.0.0.1. The same
fault on the OIP server kills the server; a supervisor starts it again (as the kubelet would) and the
retries carry the requests across the restart."""

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


def test_the_oip_server_killed_under_load_is_carried_through_by_retries(tmp_path: Path) -> None:
    from faults import run_oip_under_fault
    from fixtures.net import free_port

    from serving.oip import OipConfig
    from serving.oip_process import OipServerProcess

    model_pt, token_file = make_model_pt(tmp_path / "model.pt"), tmp_path / "token"
    token_file.write_text("faults-test-token\n")
    server = OipServerProcess(OipConfig(port=free_port()), tmp_path / "oip")
    server.start(model_pt, "1", token_file=token_file)
    try:
        server.wait_ready()
        first = server.pid()
        run = run_oip_under_fault(server, model_pt, token_file, [line_png(i) for i in range(60)], retries=5,
                                  kill_after=10)
        assert run.killed_pid == first and run.restart_s is not None and server.pid() not in (None, first)
        assert run.failed == 0, run
        server.wait_ready()
        lost = run_oip_under_fault(server, model_pt, token_file, [line_png(i) for i in range(60)], retries=0,
                                   kill_after=10)
        assert lost.failed >= 1 and set(lost.statuses) == {"0"}, lost  # no answer while it was down
    finally:
        server.stop()
