"""EMNIST from a tiny NIST-format distribution built by the tests, and EMNIST-lines."""

from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pytest
from fixtures.emnist_files import BYCLASS, build_emnist, idx_bytes
from fixtures.http_server import FileServer

from textrec.cli import main
from textrec.data.download import ChecksumError, sha256_of
from textrec.data.emnist import (
    EMNIST_SHA256,
    MAX_OVERLAP,
    EmnistError,
    LineComposer,
    compose_lines,
    fit_text,
    ingest_emnist,
    parse_mapping,
    read_idx,
    val_mask,
)
from textrec.data.store import CharStore, LineStore, write_chars


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_emnist(tmp_path_factory.mktemp("emnist"))


@pytest.fixture(scope="module")
def chars_store(tiny, tmp_path_factory):
    return ingest_emnist(str(tiny.zip_path), tmp_path_factory.mktemp("chars") / "chars.h5")


def test_read_idx_round_trips_and_names_bad_files():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(idx_bytes(a), "x"), a)
    with pytest.raises(EmnistError, match="f.idx: not an IDX file"):
        read_idx(b"\x01\x00\x08\x01", "f.idx")
    with pytest.raises(EmnistError, match=r"f.idx: IDX shape \(2, 3, 4\) needs 40 bytes, file has 39"):
        read_idx(idx_bytes(a)[:-1], "f.idx")
    with pytest.raises(EmnistError, match="type 0x0d"):
        read_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd", "f.idx")


def test_parse_mapping_checks_its_lines():
    assert parse_mapping("0 48\n1 65\n\n2 97\n", "m.txt") == "0Aa"
    with pytest.raises(EmnistError, match="m.txt line 2: expected '<label> <ASCII code>'"):
        parse_mapping("0 48\n1 A\n", "m.txt")
    with pytest.raises(EmnistError, match="without gaps"):
        parse_mapping("0 48\n2 65\n", "m.txt")


def test_ingest_undoes_transposition_and_inverts_to_dark_ink(tiny, chars_store):
    store = CharStore(chars_store)
    assert store.mapping == BYCLASS and len(store) == 62 * 4
    test_images, test_chars = store.images("test")
    assert np.array_equal(test_images, 255 - tiny.test_upright)  # upright, dark ink on light paper
    assert list(test_chars) == [BYCLASS[k] for k in tiny.test_labels]
    assert store.meta["ink"] == "dark" and store.meta["subset"] == "byclass"


def test_val_is_a_fixed_slice_of_train(tiny, chars_store):
    store = CharStore(chars_store)
    n_train = len(tiny.train_labels)
    counts = store.info()["splits"]
    assert counts == {"train": n_train - round(n_train * 0.1), "val": round(n_train * 0.1), "test": 62}
    train_val = np.concatenate([store.images("train")[0], store.images("val")[0]])
    assert sorted(map(bytes, train_val)) == sorted(map(bytes, 255 - tiny.train_upright))
    assert np.array_equal(val_mask(n_train), val_mask(n_train))
    assert np.array_equal(store.split_codes[:n_train] == 1, val_mask(n_train))


@pytest.mark.parametrize("where", ["folder", "gzip", "plain"])
def test_ingest_from_extracted_folders(tiny, chars_store, tmp_path, where):
    source = tiny.folder if where != "gzip" else tiny.folder / "gzip"
    if where == "plain":  # someone gunzipped the files
        source = tmp_path / "plain"
        source.mkdir()
        for gz in (tiny.folder / "gzip").iterdir():
            data = gz.read_bytes()
            name = gz.name.removesuffix(".gz")
            (source / name).write_bytes(gzip.decompress(data) if gz.suffix == ".gz" else data)
    out = ingest_emnist(str(source), tmp_path / "c.h5")
    assert CharStore(out).content_hash == CharStore(chars_store).content_hash


def test_checksums_are_checked_for_archives(tiny, tmp_path):
    good = sha256_of(tiny.zip_path)
    ingest_emnist(str(tiny.zip_path), tmp_path / "ok.h5", sha256=good)
    with pytest.raises(ChecksumError, match=rf"gzip\.zip: SHA-256 mismatch: expected {EMNIST_SHA256}"):
        ingest_emnist(str(tiny.zip_path), tmp_path / "bad.h5", sha256=EMNIST_SHA256)
    assert not (tmp_path / "bad.h5").exists() and tiny.zip_path.exists()
    with pytest.raises(EmnistError, match="applies to an archive, but this is a folder"):
        ingest_emnist(str(tiny.folder), tmp_path / "f.h5", sha256=good)


def test_ingest_downloads_over_http_into_the_cache(tiny, chars_store, tmp_path):
    with FileServer({"/cs_links/EMNIST/gzip.zip": tiny.zip_path.read_bytes()}) as server:
        url = f"{server.url}/cs_links/EMNIST/gzip.zip"
        out = ingest_emnist(url, tmp_path / "c.h5", sha256=sha256_of(tiny.zip_path), cache_dir=tmp_path / "cache")
        ingest_emnist(url, tmp_path / "again.h5", cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "gzip.zip").is_file()
    assert len(server.requests) == 1  # the second ingest used the cached archive
    assert CharStore(out).content_hash == CharStore(chars_store).content_hash


def test_ingest_from_s3_archive_and_folder(tiny, chars_store, tmp_path, s3):
    from textrec import storage

    storage.upload(tiny.zip_path, s3.uri("emnist/gzip.zip"))
    storage.upload(tiny.folder, s3.uri("emnist/extracted"))
    a = ingest_emnist(s3.uri("emnist/gzip.zip"), tmp_path / "a.h5", cache_dir=tmp_path / "cache")
    b = ingest_emnist(s3.uri("emnist/extracted"), tmp_path / "b.h5")
    expected = CharStore(chars_store).content_hash
    assert CharStore(a).content_hash == expected and CharStore(b).content_hash == expected


def test_missing_and_broken_sources_are_named(tiny, tmp_path):
    with pytest.raises(EmnistError, match=r"nowhere\.zip: no such file or folder"):
        ingest_emnist(str(tmp_path / "nowhere.zip"), tmp_path / "x.h5")
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(tiny.zip_path) as src, zipfile.ZipFile(partial, "w") as dst:
        for name in src.namelist():
            if "test-labels" not in name:
                dst.writestr(name, src.read(name))
    with pytest.raises(EmnistError, match=r"partial\.zip: no gzip/emnist-byclass-test-labels-idx1-ubyte\.gz"):
        ingest_emnist(str(partial), tmp_path / "x.h5")
    (tmp_path / "junk.zip").write_bytes(b"PK but not really")
    with pytest.raises(EmnistError, match=r"junk\.zip: not a readable zip archive"):
        ingest_emnist(str(tmp_path / "junk.zip"), tmp_path / "x.h5")
    bad = tmp_path / "badgz" / "gzip"
    bad.mkdir(parents=True)
    for f in (tiny.folder / "gzip").iterdir():
        (bad / f.name).write_bytes(f.read_bytes()[:40] if "train-images" in f.name else f.read_bytes())
    with pytest.raises(EmnistError, match=r"train-images-idx3-ubyte\.gz: not a valid gzip file"):
        ingest_emnist(str(bad.parent), tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_fit_text_cuts_at_word_boundaries():
    assert fit_text("short", 10) == "short"
    assert fit_text("one two three", 9) == "one two"
    assert fit_text("one two three", 7) == "one two"
    assert fit_text("incomprehensibilities", 8) == "incompre"


def test_composer_drops_characters_without_glyphs_and_overlaps_glyphs():
    glyphs = np.full((2, 28, 28), 255, np.uint8)
    glyphs[:, 4:24, 10:18] = 0
    composer = LineComposer(glyphs, np.array(["a", "b"]))
    assert composer.drawable("a, b!  ba?") == "a b ba"
    rng = np.random.default_rng(0)
    for text in ("ab", "a bab", "b"):
        image = composer.draw(text, rng)
        n = len(text)
        min_w = (n - 1) * round(28 * (1 - MAX_OVERLAP)) + 28
        assert image.shape[0] == 28 and min_w <= image.shape[1] <= n * 28
        assert (image == 0).any() and image.max() == 255


def test_compose_lines_splits_text_and_determinism(chars_store, tmp_path):
    a = LineStore(compose_lines(chars_store, 20, tmp_path / "a.h5", seed=3, progress=False))
    b = LineStore(compose_lines(chars_store, 20, tmp_path / "b.h5", seed=3, progress=False))
    c = LineStore(compose_lines(chars_store, 20, tmp_path / "c.h5", seed=4, progress=False))
    assert a.content_hash == b.content_hash != c.content_hash
    assert a.info()["splits"] == {"train": 16, "val": 2, "test": 2}
    assert a.info()["sources"] == {"emnist_lines": 20}
    for line in a.lines():
        assert set(line.text) <= set(BYCLASS + " ") and 0 < len(line.text) <= 32
        assert line.text == " ".join(line.text.split())
        assert line.image.shape[0] == 28 and line.image.mean() > 128  # dark ink on light paper


def test_compose_lines_draws_each_split_from_its_own_glyphs(tmp_path):
    # Glyph ink is 0 in train, 100 in val, 200 in test: a line's darkest pixel tells its glyphs' split.
    ink = {0: 0, 1: 100, 2: 200}
    splits = np.repeat([0, 1, 2], 6)
    labels = np.tile(np.arange(6) % 3, 3)
    images = np.full((18, 28, 28), 255, np.uint8)
    for k, s in enumerate(splits):
        images[k, 5:23, 8:20] = ink[s]
    store = write_chars(tmp_path / "c.h5", images, labels, splits, mapping="abc")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a cab, bad? abba! c'a'b. Zebra cab")
    lines = LineStore(compose_lines(store, 30, tmp_path / "l.h5", corpus=corpus, progress=False))
    for line in lines.lines():
        assert int(line.image.min()) == ink[["train", "val", "test"].index(line.split)]
        assert set(line.text) <= set("abc ")


def test_compose_lines_with_a_corpus_of_undrawable_text_fails_clearly(tmp_path):
    store = write_chars(tmp_path / "c.h5", np.zeros((3, 28, 28), np.uint8), np.zeros(3), np.zeros(3),
                       mapping="q")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("xyz, !!! 123")
    with pytest.raises(ValueError, match=r"c\.h5: 100 sentences in a row had no character with a glyph"):
        compose_lines(store, 2, tmp_path / "l.h5", corpus=corpus, progress=False)
    assert not (tmp_path / "l.h5").exists()


def test_cli_ingest_emnist_and_compose(tiny, tmp_path, capsys):
    chars, lines = tmp_path / "chars.h5", tmp_path / "lines.h5"
    assert main(["data", "ingest", "emnist", "--source", str(tiny.zip_path), "--out", str(chars),
                 "--sha256", sha256_of(tiny.zip_path)]) == 0
    assert main(["data", "emnist-lines", "--chars", str(chars), "--n", "10", "--out", str(lines)]) == 0
    assert f"wrote {lines}" in capsys.readouterr().out
    assert main(["data", "info", str(chars)]) == 0
    assert "248 items" in capsys.readouterr().out
    assert len(LineStore(lines)) == 10


def test_cli_ingest_emnist_reports_bad_input(tiny, tmp_path, capsys):
    assert main(["data", "ingest", "emnist", "--source", str(tmp_path / "gone.zip"), "--out",
                 str(tmp_path / "x.h5")]) == 1
    assert "gone.zip: no such file or folder" in capsys.readouterr().err
    assert main(["data", "ingest", "emnist", "--source", str(tiny.zip_path), "--out", str(tmp_path / "x.h5"),
                 "--sha256", "not-a-digest"]) == 1
    assert "64 hex digits" in capsys.readouterr().err
