"""fetch(): http(s) with resume and checksum against a real local server, local paths, s3://."""

from __future__ import annotations

import hashlib
import os

import pytest
from fixtures.http_server import FileServer

from textrec.data.download import ChecksumError, DownloadError, fetch, sha256_of

DATA = os.urandom(300_000)
DIGEST = hashlib.sha256(DATA).hexdigest()
WRONG = "0" * 64


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr("textrec.data.download.RETRY_WAIT_S", 0.01)


def test_downloads_a_file_and_checks_its_digest(tmp_path):
    with FileServer({"/gzip.zip": DATA}) as server:
        path = fetch(f"{server.url}/gzip.zip", tmp_path, sha256=DIGEST, progress=False)
    assert path == tmp_path / "gzip.zip"
    assert path.read_bytes() == DATA
    assert not (tmp_path / "gzip.zip.part").exists()


def test_resumes_from_a_part_file_with_a_range_request(tmp_path):
    (tmp_path / "gzip.zip.part").write_bytes(DATA[:100_000])
    with FileServer({"/gzip.zip": DATA}) as server:
        path = fetch(f"{server.url}/gzip.zip", tmp_path, sha256=DIGEST, progress=False)
    assert path.read_bytes() == DATA
    [req] = server.requests
    assert (req.range, req.status, req.sent) == ("bytes=100000-", 206, len(DATA) - 100_000)


def test_resumes_within_one_call_when_the_connection_drops(tmp_path):
    with FileServer({"/gzip.zip": DATA}, drop_after=70_000, drops=2) as server:
        path = fetch(f"{server.url}/gzip.zip", tmp_path, sha256=DIGEST, progress=False)
    assert sha256_of(path) == DIGEST
    assert [r.range for r in server.requests] == [None, "bytes=70000-", "bytes=140000-"]


def test_gives_up_after_repeated_drops_but_keeps_the_part_for_next_time(tmp_path):
    url_path = "/gzip.zip"
    with FileServer({url_path: DATA}, drop_after=50_000, drops=3) as server:
        with pytest.raises(DownloadError, match="run again to resume"):
            fetch(server.url + url_path, tmp_path, progress=False)
        assert (tmp_path / "gzip.zip.part").stat().st_size == 150_000
        assert not (tmp_path / "gzip.zip").exists()
        path = fetch(server.url + url_path, tmp_path, sha256=DIGEST, progress=False)  # the next run resumes
    assert path.read_bytes() == DATA
    assert server.requests[-1].range == "bytes=150000-"


def test_restarts_when_the_server_ignores_range(tmp_path):
    (tmp_path / "gzip.zip.part").write_bytes(b"x" * 1000)  # stale bytes that must not survive
    with FileServer({"/gzip.zip": DATA}, ignore_range=True) as server:
        path = fetch(f"{server.url}/gzip.zip", tmp_path, sha256=DIGEST, progress=False)
    assert path.read_bytes() == DATA
    assert server.requests[0].status == 200


def test_a_complete_part_file_is_finished_on_a_416_answer(tmp_path):
    (tmp_path / "gzip.zip.part").write_bytes(DATA)
    with FileServer({"/gzip.zip": DATA}) as server:
        path = fetch(f"{server.url}/gzip.zip", tmp_path, sha256=DIGEST, progress=False)
    assert path.read_bytes() == DATA
    assert [r.status for r in server.requests] == [416]


def test_checksum_mismatch_names_file_and_digests_and_leaves_no_file(tmp_path):
    with FileServer({"/gzip.zip": DATA}) as server:
        with pytest.raises(ChecksumError) as e:
            fetch(f"{server.url}/gzip.zip", tmp_path, sha256=WRONG, progress=False)
    message = str(e.value)
    assert "gzip.zip" in message and WRONG in message and DIGEST in message
    assert list(tmp_path.iterdir()) == []  # neither a final file nor a .part to resume from


def test_an_existing_complete_file_is_not_downloaded_again(tmp_path):
    (tmp_path / "gzip.zip").write_bytes(DATA)
    with FileServer({"/gzip.zip": DATA}) as server:
        fetch(f"{server.url}/gzip.zip", tmp_path, sha256=DIGEST, progress=False)
    assert server.requests == []


def test_an_existing_file_with_the_wrong_digest_is_replaced(tmp_path):
    (tmp_path / "gzip.zip").write_bytes(b"an old, different file")
    with FileServer({"/gzip.zip": DATA}) as server:
        path = fetch(f"{server.url}/gzip.zip", tmp_path, sha256=DIGEST, progress=False)
    assert path.read_bytes() == DATA and len(server.requests) == 1


def test_http_errors_name_the_url_and_status(tmp_path):
    with FileServer({}) as server:
        with pytest.raises(DownloadError, match=r"/missing\.zip: HTTP 404"):
            fetch(f"{server.url}/missing.zip", tmp_path, progress=False)


def test_an_unreachable_server_is_a_download_error(tmp_path):
    from fixtures.net import free_port

    with pytest.raises(DownloadError, match="download failed"):
        fetch(f"http://127.0.0.1:{free_port()}/gzip.zip", tmp_path, progress=False)


def test_local_files_are_used_in_place_and_checked(tmp_path):
    src = tmp_path / "src" / "gzip.zip"
    src.parent.mkdir()
    src.write_bytes(DATA)
    assert fetch(src, tmp_path / "dest", sha256=DIGEST.upper()) == src
    assert fetch(f"file://{src}", tmp_path / "dest") == src
    with pytest.raises(ChecksumError, match="expected 0000"):
        fetch(src, tmp_path / "dest", sha256=WRONG)
    assert src.exists()  # a local file that is not ours is never deleted
    with pytest.raises(DownloadError, match="no such file"):
        fetch(tmp_path / "nope.zip", tmp_path)


def test_a_malformed_digest_is_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="64 hex digits"):
        fetch(tmp_path / "whatever.zip", tmp_path, sha256="abc")


def test_fetches_from_s3_and_checks_the_digest(tmp_path, s3):
    s3.client().put_object(Bucket=s3.bucket, Key="archives/gzip.zip", Body=DATA)
    path = fetch(s3.uri("archives/gzip.zip"), tmp_path, sha256=DIGEST)
    assert path == tmp_path / "gzip.zip" and path.read_bytes() == DATA
    with pytest.raises(ChecksumError):
        fetch(s3.uri("archives/gzip.zip"), tmp_path / "other", sha256=WRONG)
    assert not (tmp_path / "other" / "gzip.zip").exists()
    with pytest.raises(DownloadError, match="no such object"):
        fetch(s3.uri("archives/missing.zip"), tmp_path)
