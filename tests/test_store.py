"""The HDF5 line and character stores: round trips, atomic writes, errors, lazy reads in workers."""

from __future__ import annotations

import json
import stat

import h5py
import numpy as np
import pytest
import torch
from fixtures.lines import line_image

from textrec.charset import Charset, UnknownCharacterError
from textrec.cli import main
from textrec.data.store import CharStore, LineStore, LineWriter, StoreError, open_store, write_chars

TEXTS = ["A MOVE to stop", "Mr. Gaitskell", "from nominating", "any more Labour", "life Peers", "is to be"]
SPLITS = ["train", "train", "val", "test", "train", "test"]


def write_sample(path, texts=TEXTS, splits=SPLITS, meta=None):
    with LineWriter(path, meta=meta or {"seed": 1}) as w:
        for k, (text, split) in enumerate(zip(texts, splits, strict=True)):
            w.add(line_image(text, seed=k), text, split=split, source="iam" if k % 2 else "synth",
                  writer=f"w{k % 3}", ok=k != 3)
    return path


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_round_trip_keeps_every_column(tmp_path):
    store = LineStore(write_sample(tmp_path / "s.h5"))
    assert len(store) == len(TEXTS)
    for k, line in enumerate(store.lines()):
        assert np.array_equal(line.image, line_image(TEXTS[k], seed=k))
        assert (line.text, line.split, line.writer, line.ok) == (TEXTS[k], SPLITS[k], f"w{k % 3}", k != 3)
        assert line.source == ("iam" if k % 2 else "synth")
    assert store.meta == {"seed": 1}
    assert store.charset == Charset()


def test_info_and_indices_count_by_split_source_and_flag(tmp_path):
    store = LineStore(write_sample(tmp_path / "s.h5"))
    info = store.info()
    assert info["n"] == 6 and info["splits"] == {"train": 3, "val": 1, "test": 2}
    assert info["sources"] == {"synth": 3, "iam": 3}
    assert list(store.indices("test")) == [3, 5]
    assert list(store.indices("test", ok_only=True)) == [5]
    assert list(store.indices(source="iam")) == [1, 3, 5]
    assert list(store.indices(source="nowhere")) == []
    with pytest.raises(KeyError, match="no split 'dev'"):
        store.indices("dev")


def test_more_lines_than_the_write_buffer_and_equal_widths(tmp_path):
    # 600 > the 512-line buffer, and every image has the same shape: h5py must still give 1-D rows.
    n = 600
    with LineWriter(tmp_path / "big.h5") as w:
        for k in range(n):
            w.add(np.full((4, 6), k % 256, np.uint8), f"line {k}", split="train", source="synth")
    store = LineStore(tmp_path / "big.h5")
    assert len(store) == n
    assert store.image(599).shape == (4, 6) and int(store.image(599)[0, 0]) == 599 % 256
    assert store.text(513) == "line 513"


def test_finished_stores_are_readable_by_others(tmp_path):
    # the temp file starts 0600 (mkstemp); pods running as other users must still read the store
    assert stat.S_IMODE(write_sample(tmp_path / "s.h5").stat().st_mode) == 0o644
    chars = write_chars(tmp_path / "c.h5", np.zeros((1, 2, 2)), np.zeros(1), np.zeros(1), mapping="a")
    assert stat.S_IMODE(chars.stat().st_mode) == 0o644


def test_an_error_mid_write_leaves_neither_target_nor_temp_file(tmp_path):
    with pytest.raises(RuntimeError, match="disk on fire"):
        with LineWriter(tmp_path / "s.h5") as w:
            w.add(line_image("one"), "one", split="train", source="synth")
            raise RuntimeError("disk on fire")
    assert leftovers(tmp_path) == []


def test_a_failed_rewrite_leaves_the_existing_store_intact(tmp_path):
    path = write_sample(tmp_path / "s.h5")
    before = LineStore(path).content_hash
    with pytest.raises(UnknownCharacterError):
        with LineWriter(path) as w:
            w.add(line_image("new"), "new", split="train", source="synth")
            w.add(line_image("bad"), "na\u00efve", split="train", source="synth")
    assert leftovers(tmp_path) == ["s.h5"]
    assert LineStore(path).content_hash == before and LineStore(path).text(0) == TEXTS[0]


def test_a_writer_never_closed_is_invisible_until_close(tmp_path):
    w = LineWriter(tmp_path / "s.h5")
    w.add(line_image("x"), "x", split="train", source="synth")
    assert not (tmp_path / "s.h5").exists()
    w.close()
    assert LineStore(tmp_path / "s.h5").text(0) == "x"
    assert leftovers(tmp_path) == ["s.h5"]
    w.abort()  # after close: nothing to drop, the store stays
    assert (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("image, match", [
    (np.zeros((3, 4, 3), np.uint8), "2-D uint8"),
    (np.zeros((3, 4), np.float32), "2-D uint8"),
    (np.zeros((0, 4), np.uint8), "non-empty"),
])
def test_bad_images_are_rejected_naming_the_text(tmp_path, image, match):
    with LineWriter(tmp_path / "s.h5") as w, pytest.raises(ValueError, match=match) as e:
        w.add(image, "the text", split="train", source="synth")
    assert "the text" in str(e.value)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(StoreError, match=r"nope\.h5: no such"):
        LineStore(tmp_path / "nope.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not HDF5" * 100)
    for opener in (LineStore, open_store, CharStore):
        with pytest.raises(StoreError, match=r"garbage\.h5: not a readable HDF5 file"):
            opener(garbage)


def test_a_truncated_store_is_named(tmp_path):
    path = write_sample(tmp_path / "s.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError, match=r"s\.h5"):
        store = LineStore(path)
        for i in range(len(store)):
            store.image(i)


def test_hdf5_files_of_other_formats_are_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something-else"
    with pytest.raises(StoreError, match=r"other\.h5: expected a 'textrec-lines' store, found format"):
        LineStore(other)
    with pytest.raises(StoreError, match="not a textrec store"):
        open_store(other)
    broken = tmp_path / "broken.h5"
    with h5py.File(broken, "w") as f:
        f.attrs["format"] = "textrec-lines"
    with pytest.raises(StoreError, match=r"broken\.h5: corrupt line store"):
        LineStore(broken)


def test_content_hash_is_stable_and_sees_content_changes(tmp_path):
    a = LineStore(write_sample(tmp_path / "a.h5")).content_hash
    b = LineStore(write_sample(tmp_path / "b.h5", meta={"seed": 99})).content_hash
    assert a == b and len(a) == 64  # metadata is not content
    texts = list(TEXTS)
    texts[2] = "from nominating!"
    assert LineStore(write_sample(tmp_path / "c.h5", texts=texts)).content_hash != a
    splits = list(SPLITS)
    splits[0] = "val"
    assert LineStore(write_sample(tmp_path / "d.h5", splits=splits)).content_hash != a


class _Lines(torch.utils.data.Dataset):
    def __init__(self, store: LineStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int):
        image, text = self.store[i]
        return torch.from_numpy(image.copy()).sum(), text, i


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_lazy_reading_works_in_dataloader_workers(tmp_path, context):
    store = LineStore(write_sample(tmp_path / "s.h5"))
    store.image(0)  # the parent's handle is open: workers must open their own
    loader = torch.utils.data.DataLoader(_Lines(store), batch_size=2, num_workers=2,
                                         multiprocessing_context=context)
    seen = {}
    for sums, texts, idx in loader:
        for s, t, i in zip(sums.tolist(), texts, idx.tolist(), strict=True):
            seen[i] = (s, t)
    assert seen == {i: (int(line_image(t, seed=i).astype(np.int64).sum()), t) for i, t in enumerate(TEXTS)}


def test_character_store_round_trip_and_splits(tmp_path):
    images = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    path = write_chars(tmp_path / "c.h5", images, np.array([0, 1, 2, 1, 0]), np.array([0, 0, 1, 2, 2]),
                       mapping="abc", meta={"dataset": "toy"})
    store = open_store(path)
    assert isinstance(store, CharStore) and len(store) == 5
    imgs, chars = store.images("test")
    assert np.array_equal(imgs, images[3:]) and list(chars) == ["b", "a"]
    all_imgs, all_chars = store.images()
    assert np.array_equal(all_imgs, images) and "".join(all_chars) == "abcba"
    assert store.info()["splits"] == {"train": 2, "val": 1, "test": 2}
    with pytest.raises(KeyError, match="no split 'dev'"):
        store.images("dev")


def test_character_store_rejects_mismatched_inputs_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        write_chars(tmp_path / "c.h5", np.zeros((3, 2, 2)), np.zeros(2), np.zeros(3), mapping="a")
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        write_chars(tmp_path / "c.h5", np.zeros((3, 2)), np.zeros(3), np.zeros(3), mapping="a")
    assert leftovers(tmp_path) == []


def test_open_store_dispatches_on_format(tmp_path):
    assert isinstance(open_store(write_sample(tmp_path / "s.h5")), LineStore)
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "none.h5")


def test_cli_info_prints_counts_and_json(tmp_path, capsys):
    path = write_sample(tmp_path / "s.h5")
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "6 items" in out and "train=3" in out and "iam=3" in out
    assert main(["data", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n"] == 6 and info["content_hash"] == LineStore(path).content_hash


def test_cli_info_on_a_missing_store_fails_with_a_message(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "missing.h5")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("textrec: error:") and "missing.h5" in err
