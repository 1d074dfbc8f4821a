"""textrec.storage: local paths and s3:// URIs against a real S3 server on 127.0.0.1."""

from __future__ import annotations

import pytest

from textrec import storage
from textrec.storage import StorageError


def make_tree(root):
    (root / "ascii").mkdir(parents=True)
    (root / "ascii" / "lines.txt").write_text("a01-000u-00 ok 154 1 0 0 5 5 A\n")
    (root / "lines" / "a01").mkdir(parents=True)
    (root / "lines" / "a01" / "x.png").write_bytes(b"\x89PNG fake bytes")
    return root


def tree_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_split_s3_and_its_errors():
    assert storage.split_s3("s3://bucket/a/b/") == ("bucket", "a/b/")
    assert storage.split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(StorageError, match="not an s3://bucket/key URI"):
        storage.split_s3("s3:///key-without-bucket")
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/s3://b")


def test_local_copies_of_files_and_folders(tmp_path):
    src = make_tree(tmp_path / "src")
    storage.download(str(src), tmp_path / "copy")
    assert tree_files(tmp_path / "copy") == tree_files(src)
    storage.upload(src / "ascii" / "lines.txt", str(tmp_path / "one" / "lines.txt"))
    assert (tmp_path / "one" / "lines.txt").read_text().startswith("a01-000u-00")
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["lines.txt"]  # no temp file left
    with storage.local_path(src) as p:
        assert p == src
    assert storage.exists(str(src)) and not storage.exists(str(tmp_path / "none"))


def test_missing_local_sources_are_named(tmp_path):
    for call in (lambda: storage.download(str(tmp_path / "gone"), tmp_path / "x"),
                 lambda: storage.upload(tmp_path / "gone", str(tmp_path / "x"))):
        with pytest.raises(StorageError, match=r"gone: no such file or folder"):
            call()
    with pytest.raises(StorageError, match="gone"):
        with storage.local_path(tmp_path / "gone"):
            pass


def test_folder_round_trip_through_s3(tmp_path, s3):
    src = make_tree(tmp_path / "src")
    storage.upload(src, s3.uri("trees/iam"))
    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="trees/")["Contents"])
    assert keys == ["trees/iam/ascii/lines.txt", "trees/iam/lines/a01/x.png"]
    storage.download(s3.uri("trees/iam"), tmp_path / "back")
    assert tree_files(tmp_path / "back") == tree_files(src)
    storage.download(s3.uri("trees/iam/ascii/lines.txt"), tmp_path / "single.txt")
    assert (tmp_path / "single.txt").read_bytes() == (src / "ascii" / "lines.txt").read_bytes()


def test_local_path_of_an_s3_prefix_is_a_temporary_copy(tmp_path, s3):
    storage.upload(make_tree(tmp_path / "src"), s3.uri("lp/iam/"))
    with storage.local_path(s3.uri("lp/iam")) as p:
        assert p.name == "iam" and (p / "ascii" / "lines.txt").is_file()
        kept = p
    assert not kept.exists()


def test_exists_matches_objects_and_folders_not_name_prefixes(tmp_path, s3):
    s3.client().put_object(Bucket=s3.bucket, Key="ex/database/file.txt", Body=b"x")
    assert storage.exists(s3.uri("ex/database"))
    assert storage.exists(s3.uri("ex/database/file.txt"))
    assert not storage.exists(s3.uri("ex/data"))  # only a prefix of a name, not a folder
    assert not storage.exists(s3.uri("ex/database/file"))


def test_upload_to_a_bucket_root_makes_no_leading_slash(tmp_path, s3_server, monkeypatch):
    import boto3

    s3_server.env(monkeypatch)
    boto3.client("s3", endpoint_url=s3_server.endpoint_url).create_bucket(Bucket="rootbucket")
    storage.upload(make_tree(tmp_path / "src"), "s3://rootbucket")
    keys = sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket="rootbucket")["Contents"])
    assert keys == ["ascii/lines.txt", "lines/a01/x.png"]


def test_missing_s3_objects_and_bad_credentials_are_named(tmp_path, s3, monkeypatch):
    with pytest.raises(StorageError, match=r"s3://.*/nothing/here: no such object or prefix"):
        storage.download(s3.uri("nothing/here"), tmp_path / "x")
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-xyz/k"):
        storage.download("s3://no-such-bucket-xyz/k", tmp_path / "x")
    if s3.kind == "moto":
        pytest.skip("moto accepts any credentials")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageError, match=r"s3://.*/k: .*(SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId)"):
        storage.exists(s3.uri("k"))
