"""The HDF5 line store: one file format for every source of text lines.

Layout of a line store (``format = "textrec-lines"``)::

    /lines/image   vlen uint8   each line's grayscale pixels, row-major, flattened (ink dark, paper light)
    /lines/height  int32        image heights
    /lines/width   int32        image widths
    /lines/text    vlen utf-8   transcriptions, already in the charset
    /lines/split   uint8        index into attrs["splits"]   (e.g. train, val, test, test_unseen_font)
    /lines/source  uint8        index into attrs["sources"]  (e.g. synth, iam, emnist_lines)
    /lines/writer  vlen utf-8   who wrote it: an IAM writer id, or the font that rendered it
    /lines/ok      bool         IAM's segmentation flag (True for sources without one)
    attrs: format, version, charset, splits, sources, meta (JSON: generator config, seed, ...),
           content_hash (SHA-256 over every line's pixels, shape, text, split and source), n

The sibling character store (``format = "textrec-chars"``) holds fixed-size glyphs such as EMNIST::

    /chars/image (N, H, W) uint8, /chars/label int32 (index into attrs["mapping"]), /chars/split uint8

Writes are atomic: everything goes to a temporary file in the target folder that is renamed over the
target only when complete, so a crash never leaves a half-written store. Reading is lazy: the small
columns load at open, pixels load per line, and the HDF5 handle is reopened in each process, so a
store can be handed to DataLoader workers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from textrec.charset import Charset
from textrec.io import atomic_path, publish, temp_beside

LINES_FORMAT = "textrec-lines"
CHARS_FORMAT = "textrec-chars"
PAGES_FORMAT = "textrec-pages"  # textrec.data.pages
FORMAT_VERSION = 1
DEFAULT_SPLITS = ("train", "val", "test")
_BUFFER = 512


class StoreError(RuntimeError):
    """A line store is missing, corrupt, or not a textrec store; the message names the file."""


@dataclass(frozen=True)
class Line:
    image: np.ndarray  # (H, W) uint8
    text: str
    split: str
    source: str
    writer: str = ""
    ok: bool = True


class LineWriter:
    """Write a line store atomically; use as a context manager.

    >>> import numpy as np, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "lines.h5"
    >>> with LineWriter(out, meta={"seed": 1}) as w:
    ...     w.add(np.full((8, 20), 255, np.uint8), "a line", split="train", source="doc")
    >>> LineStore(out).text(0)
    'a line'
    """

    def __init__(self, path: str | os.PathLike, *, charset: Charset | None = None,
                 meta: dict[str, Any] | None = None, splits: tuple[str, ...] = DEFAULT_SPLITS) -> None:
        self.path = Path(path)
        self.charset = charset or Charset()
        self.meta = dict(meta or {})
        self.splits = list(splits)
        self.sources: list[str] = []
        self._hash = hashlib.sha256()
        self._buf: list[Line] = []
        self._n = 0
        self._tmp = temp_beside(self.path)
        self._f: h5py.File | None = None
        try:
            self._f = h5py.File(self._tmp, "w")
            g = self._f.create_group("lines")
            vbytes, vstr = h5py.vlen_dtype(np.uint8), h5py.string_dtype("utf-8")
            for name, dt in [("image", vbytes), ("height", np.int32), ("width", np.int32), ("text", vstr),
                             ("split", np.uint8), ("source", np.uint8), ("writer", vstr), ("ok", np.bool_)]:
                g.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dt, chunks=(_BUFFER,))
        except BaseException:
            self.abort()  # no temp file may outlive a writer that never started
            raise

    def __enter__(self) -> LineWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(self, image: np.ndarray, text: str, *, split: str, source: str, writer: str = "",
            ok: bool = True) -> None:
        """Append one line; its text must already be normalised and inside the charset."""
        image = np.asarray(image)
        if image.ndim != 2 or image.dtype != np.uint8 or image.size == 0:
            raise ValueError(f"line image must be a non-empty 2-D uint8 array, got {image.dtype} "
                             f"{image.shape} for text {text!r}")
        self.charset.encode(text, normalise=False)  # raises UnknownCharacterError naming the text
        if split not in self.splits:
            if len(self.splits) >= 255:
                raise ValueError("too many split names")
            self.splits.append(split)
        if source not in self.sources:
            self.sources.append(source)
        line = Line(np.ascontiguousarray(image), text, split, source, writer, bool(ok))
        for part in (str(image.shape).encode(), line.image.tobytes(), text.encode(),
                     split.encode(), source.encode()):
            self._hash.update(len(part).to_bytes(8, "little"))
            self._hash.update(part)
        self._buf.append(line)
        if len(self._buf) >= _BUFFER:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        if self._f is None:
            raise StoreError(f"{self.path}: the writer is closed")
        g, k, n = self._f["lines"], len(self._buf), self._n
        cols = {
            "image": [ln.image.ravel() for ln in self._buf],
            "height": [ln.image.shape[0] for ln in self._buf],
            "width": [ln.image.shape[1] for ln in self._buf],
            "text": [ln.text for ln in self._buf],
            "split": [self.splits.index(ln.split) for ln in self._buf],
            "source": [self.sources.index(ln.source) for ln in self._buf],
            "writer": [ln.writer for ln in self._buf],
            "ok": [ln.ok for ln in self._buf],
        }
        for name, values in cols.items():
            ds = g[name]
            ds.resize((n + k,))
            if name == "image":
                for j, v in enumerate(values):  # one by one: h5py reads equal-length rows as 2-D
                    ds[n + j] = v
            else:
                ds[n:n + k] = values
        self._n += k
        self._buf.clear()

    def close(self) -> Path:
        """Finish the file and move it into place. Returns the store's path."""
        if self._f is None:
            return self.path
        try:
            self._flush()
            a = self._f.attrs
            a.update(format=LINES_FORMAT, version=FORMAT_VERSION, charset=self.charset.chars,
                     splits=json.dumps(self.splits), sources=json.dumps(self.sources),
                     meta=json.dumps(self.meta, sort_keys=True, default=str),
                     content_hash=self._hash.hexdigest(), n=self._n)
            self._f.close()
            self._f = None
            publish(self._tmp, self.path)
        except BaseException:
            self.abort()  # e.g. a full disk: drop the temp file, leave the target as it was
            raise
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the target path is left as it was."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self._tmp.unlink(missing_ok=True)


def _open_h5(path: Path, expected_format: str) -> h5py.File:
    if not path.exists():
        raise StoreError(f"{path}: no such line store")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise StoreError(f"{path}: not a readable HDF5 file ({e})") from e
    fmt = f.attrs.get("format")
    if fmt != expected_format:
        f.close()
        raise StoreError(f"{path}: expected a {expected_format!r} store, found format {fmt!r}")
    return f


class LineStore:
    """Read a line store lazily. Picklable: each process opens its own HDF5 handle."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        f = _open_h5(self.path, LINES_FORMAT)
        try:
            a = f.attrs
            self.charset = Charset(str(a["charset"]))
            self.splits: list[str] = json.loads(a["splits"])
            self.sources: list[str] = json.loads(a["sources"])
            self.meta: dict[str, Any] = json.loads(a["meta"])
            self.content_hash = str(a["content_hash"])
            g = f["lines"]
            self.heights = g["height"][:]
            self.widths = g["width"][:]
            self.split_codes = g["split"][:]
            self.source_codes = g["source"][:]
            self.texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in g["text"][:]]
            self.writers = [t.decode("utf-8") if isinstance(t, bytes) else t for t in g["writer"][:]]
            self.ok = g["ok"][:]
        except (KeyError, OSError, ValueError) as e:
            raise StoreError(f"{self.path}: corrupt line store ({e})") from e
        finally:
            f.close()
        if not (len(self.texts) == len(self.heights) == len(self.widths)):
            raise StoreError(f"{self.path}: corrupt line store (column lengths differ)")
        self._f: h5py.File | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_f"], state["_pid"] = None, -1
        return state

    def __len__(self) -> int:
        return len(self.texts)

    def _handle(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            self._f = _open_h5(self.path, LINES_FORMAT)
            self._pid = os.getpid()
        return self._f

    def image(self, i: int) -> np.ndarray:
        """Line ``i``'s pixels as an (H, W) uint8 array."""
        try:
            flat = self._handle()["lines/image"][i]
        except (OSError, KeyError) as e:
            raise StoreError(f"{self.path}: cannot read line {i} ({e})") from e
        return np.asarray(flat, dtype=np.uint8).reshape(int(self.heights[i]), int(self.widths[i]))

    def text(self, i: int) -> str:
        return self.texts[i]

    def split(self, i: int) -> str:
        return self.splits[self.split_codes[i]]

    def source(self, i: int) -> str:
        return self.sources[self.source_codes[i]]

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        return self.image(i), self.texts[i]

    def indices(self, split: str | None = None, *, source: str | None = None,
                ok_only: bool = False) -> np.ndarray:
        """Indices of the lines in ``split`` (all splits when None), optionally of one source."""
        mask = np.ones(len(self), dtype=bool)
        if split is not None:
            if split not in self.splits:
                raise KeyError(f"{self.path}: no split {split!r}; it has {self.splits}")
            mask &= self.split_codes == self.splits.index(split)
        if source is not None:
            mask &= self.source_codes == (self.sources.index(source) if source in self.sources else -1)
        if ok_only:
            mask &= self.ok
        return np.flatnonzero(mask)

    def lines(self, indices=None) -> Iterator[Line]:
        for i in range(len(self)) if indices is None else indices:
            i = int(i)
            yield Line(self.image(i), self.texts[i], self.split(i), self.source(i), self.writers[i],
                       bool(self.ok[i]))

    def info(self) -> dict[str, Any]:
        """Counts per split and source, charset, hash and metadata, as a JSON-able dict."""
        per_split = Counter(self.splits[c] for c in self.split_codes)
        per_source = Counter(self.sources[c] for c in self.source_codes)
        return {
            "path": str(self.path), "n": len(self), "splits": dict(per_split), "sources": dict(per_source),
            "charset": self.charset.chars, "content_hash": self.content_hash, "meta": self.meta,
            "mean_width": float(self.widths.mean()) if len(self) else 0.0,
            "mean_height": float(self.heights.mean()) if len(self) else 0.0,
        }

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def write_chars(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, splits: np.ndarray,
                *, mapping: str, split_names: tuple[str, ...] = DEFAULT_SPLITS,
                meta: dict[str, Any] | None = None) -> Path:
    """Write a character store (fixed-size glyphs, e.g. EMNIST) atomically."""
    path = Path(path)
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim != 3:
        raise ValueError(f"glyph images must be (N, H, W), got {images.shape}")
    if not (len(images) == len(labels) == len(splits)):
        raise ValueError("images, labels and splits must have the same length")
    h = hashlib.sha256(images.tobytes())
    h.update(np.asarray(labels, np.int32).tobytes())
    h.update(np.asarray(splits, np.uint8).tobytes())
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        g = f.create_group("chars")
        # whole-glyph chunks: h5py's automatic guess for (N, 28, 28) slices glyphs into 2x2 tiles,
        # which makes reading EMNIST several times slower
        packed = {"chunks": (min(len(images), 4096), *images.shape[1:]), "compression": "gzip",
                  "compression_opts": 1} if len(images) else {}
        g.create_dataset("image", data=images, **packed)
        g.create_dataset("label", data=np.asarray(labels, np.int32))
        g.create_dataset("split", data=np.asarray(splits, np.uint8))
        f.attrs.update(format=CHARS_FORMAT, version=FORMAT_VERSION, mapping=mapping,
                       splits=json.dumps(list(split_names)),
                       meta=json.dumps(meta or {}, sort_keys=True, default=str),
                       content_hash=h.hexdigest(), n=len(images))
    return path


class CharStore:
    """Read a character store; small enough (EMNIST is ~0.8 GB raw) to load by split on demand."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with _open_h5(self.path, CHARS_FORMAT) as f:
            try:
                self.mapping = str(f.attrs["mapping"])
                self.splits: list[str] = json.loads(f.attrs["splits"])
                self.meta = json.loads(f.attrs["meta"])
                self.content_hash = str(f.attrs["content_hash"])
                self.labels = f["chars/label"][:]
                self.split_codes = f["chars/split"][:]
            except (KeyError, OSError, ValueError) as e:
                raise StoreError(f"{self.path}: corrupt character store ({e})") from e

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(images, label characters) of one split, or of all."""
        if split is None:
            idx = np.arange(len(self))
        elif split in self.splits:
            idx = np.flatnonzero(self.split_codes == self.splits.index(split))
        else:
            raise KeyError(f"{self.path}: no split {split!r}; it has {self.splits}")
        with _open_h5(self.path, CHARS_FORMAT) as f:
            imgs = f["chars/image"][:]
        if split is not None:
            imgs = imgs[idx]
        chars = np.array([self.mapping[i] for i in self.labels[idx]])
        return imgs, chars

    def info(self) -> dict[str, Any]:
        per_split = Counter(self.splits[c] for c in self.split_codes)
        return {"path": str(self.path), "n": len(self), "splits": dict(per_split),
                "mapping": self.mapping, "content_hash": self.content_hash, "meta": self.meta}


def store_format(path: str | os.PathLike) -> str:
    """The format attribute of a store file ("" when it has none)."""
    try:
        with h5py.File(path, "r") as f:
            return str(f.attrs.get("format", ""))
    except OSError as e:
        raise StoreError(f"{path}: not a readable HDF5 file ({e})") from e


def open_store(path: str | os.PathLike) -> LineStore | CharStore:
    """Open a line or character store by its format attribute."""
    p = Path(path)
    if not p.exists():
        raise StoreError(f"{p}: no such store")
    try:
        with h5py.File(p, "r") as f:
            fmt = f.attrs.get("format")
    except OSError as e:
        raise StoreError(f"{p}: not a readable HDF5 file ({e})") from e
    if fmt == LINES_FORMAT:
        return LineStore(p)
    if fmt == CHARS_FORMAT:
        return CharStore(p)
    if fmt == PAGES_FORMAT:
        raise StoreError(f"{p}: a page store; open it with textrec.data.pages.PageStore")
    raise StoreError(f"{p}: not a textrec store (format {fmt!r})")


# ------------------------------------------------------------------------------ a folder of stores

def find_line_stores(folder: str | os.PathLike) -> list[Path]:
    """The line stores (``*.h5`` of format textrec-lines) in a dataset folder, by name."""
    found = []
    for p in sorted(Path(folder).glob("*.h5")):
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") == LINES_FORMAT:
                found.append(p)
    if not found:
        raise FileNotFoundError(f"{folder}: no line stores (*.h5 of format {LINES_FORMAT!r})")
    return found


def combine_hashes(hashes: Iterable[str]) -> str:
    """One hash for several stores' content hashes, independent of their order."""
    h = hashlib.sha256()
    for part in sorted(hashes):
        h.update(part.encode())
    return h.hexdigest()


def _store_info(path: str | os.PathLike) -> dict[str, Any]:
    """A line store's info, or the counts and hash of a page store (read here: textrec.data.pages
    builds on this module)."""
    if store_format(path) != PAGES_FORMAT:
        return LineStore(path).info()
    f = _open_h5(Path(path), PAGES_FORMAT)
    with f:
        names = json.loads(f.attrs["splits"])
        per_split = Counter(names[c] for c in f["pages"]["split"][:])
        return {"path": str(path), "n": int(sum(per_split.values())), "splits": dict(per_split),
                "content_hash": str(f.attrs["content_hash"])}


def describe_stores(stores: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Names, item counts per split, and one content hash over all the stores (a dataset's identity).
    Page stores count pages (``lines`` is then the number of pages)."""
    infos = [_store_info(p) for p in stores]
    splits: dict[str, int] = {}
    for info in infos:
        for k, v in info["splits"].items():
            splits[k] = splits.get(k, 0) + v
    return {"stores": [Path(p).name for p in stores], "lines": sum(i["n"] for i in infos), "splits": splits,
            "content_hash": combine_hashes(i["content_hash"] for i in infos)}
