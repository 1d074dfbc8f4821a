"""EMNIST from the official NIST distribution, and EMNIST-lines composed from its glyphs.

NIST publishes EMNIST as ``gzip.zip``, holding ``gzip/emnist-<subset>-<train|test>-<images|labels>-
idx<3|1>-ubyte.gz`` files in the IDX format of MNIST plus ``gzip/emnist-<subset>-mapping.txt`` (one
``<label> <ASCII code>`` pair a line). We read the ``byclass`` subset: 62 classes, digits and both
letter cases, 697,932 training and 116,323 test glyphs of 28 x 28 pixels.

Two quirks of the distribution are undone at ingest, so every store holds glyphs the way people see
them and the way line stores hold lines: the IDX images are transposed (column-major), and they are
light ink on a dark background. The character store therefore holds upright glyphs with dark ink
on light paper (``meta["ink"] == "dark"``).

EMNIST-lines (as in the Full Stack Deep Learning course) writes sentences with these glyphs. EMNIST
has no glyphs for space or punctuation: a space is drawn as a gap of one glyph advance, and any
other character without a glyph (punctuation, accents) is dropped from the sentence before
drawing, so a line's text is always exactly what its image shows.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from textrec import storage
from textrec.charset import Charset
from textrec.data.download import fetch
from textrec.data.store import CharStore, LineWriter, write_chars
from textrec.data.text import TextSource, open_text_source

EMNIST_URL = "https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip"
# SHA-256 of the 561,753,746-byte gzip.zip above; it agrees with the checksum tensorflow-datasets
# registers for the same archive.
EMNIST_SHA256 = "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e"
SUBSET = "byclass"
VAL_FRACTION = 0.1
VAL_SEED = 0
SPLIT_NAMES = ("train", "val", "test")
LINE_SPLIT_SHARE = {"train": 0.8, "val": 0.1, "test": 0.1}
MAX_OVERLAP = 0.33
MAX_CHARS = 32


class EmnistError(ValueError):
    """An EMNIST source is missing files or holds malformed ones; the message names them."""


# --------------------------------------------------------------------------------------- reading


def read_idx(data: bytes, name: str) -> np.ndarray:
    """Parse an IDX file (the MNIST format): 2 zero bytes, a type code, the number of dimensions,
    one big-endian uint32 per dimension, then the values. Only unsigned bytes (0x08) occur in EMNIST."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise EmnistError(f"{name}: not an IDX file (bad magic number)")
    if data[2] != 0x08:
        raise EmnistError(f"{name}: expected unsigned-byte IDX data (type 0x08), found type 0x{data[2]:02x}")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise EmnistError(f"{name}: IDX header is truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(data) != expected:
        raise EmnistError(f"{name}: IDX shape {shape} needs {expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def parse_mapping(text: str, name: str) -> str:
    """``emnist-*-mapping.txt`` -> a string whose i-th character is label i's character."""
    pairs: dict[int, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise EmnistError(f"{name} line {n}: expected '<label> <ASCII code>', got {line!r}")
        pairs[int(parts[0])] = chr(int(parts[1]))
    if sorted(pairs) != list(range(len(pairs))) or not pairs:
        raise EmnistError(f"{name}: labels must run 0..N-1 without gaps, got {sorted(pairs)[:5]}...")
    return "".join(pairs[i] for i in range(len(pairs)))


Reader = Callable[[str], bytes]


def _file_names(subset: str) -> dict[str, str]:
    return {f"{part}_{kind}": f"emnist-{subset}-{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
            for part in ("train", "test") for kind in ("images", "labels")} | {
        "mapping": f"emnist-{subset}-mapping.txt"}


@contextmanager
def _zip_reader(path: Path) -> Iterator[Reader]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise EmnistError(f"{path}: not a readable zip archive ({e})") from e
    members = {Path(m).name: m for m in zf.namelist()}

    def read(name: str) -> bytes:
        for candidate in (name + ".gz", name):
            if candidate in members:
                try:
                    data = zf.read(members[candidate])
                except (zipfile.BadZipFile, OSError, EOFError) as e:
                    raise EmnistError(f"{path}: cannot read {members[candidate]} ({e})") from e
                return _gunzip(data, f"{path}:{members[candidate]}") if candidate.endswith(".gz") else data
        raise EmnistError(f"{path}: no gzip/{name}.gz in the archive")

    with zf:
        yield read


def _folder_reader(root: Path) -> Reader:
    folders = [root / "gzip", root]

    def read(name: str) -> bytes:
        for folder in folders:
            for candidate in (folder / (name + ".gz"), folder / name):
                if candidate.is_file():
                    data = candidate.read_bytes()
                    return _gunzip(data, str(candidate)) if candidate.suffix == ".gz" else data
        raise EmnistError(f"{root}: no {name}.gz (or {name}) in {root}/gzip/ or {root}/")

    return read


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise EmnistError(f"{name}: not a valid gzip file ({e})") from e


@contextmanager
def open_emnist(source: str | os.PathLike, *, sha256: str | None = None,
                cache_dir: str | os.PathLike | None = None) -> Iterator[Reader]:
    """A reader of EMNIST's files by name, from a URL, an ``s3://`` URI, a zip, or a folder.

    Archives (``http(s)://``, ``s3://...zip``, a local ``.zip``) go through
    :func:`textrec.data.download.fetch` (resumable, checksummed); folders (extracted ``gzip.zip``
    or its ``gzip/`` folder, local or ``s3://``) are read in place or via a temporary download.
    """
    src = str(source)
    if src.startswith(("http://", "https://")) or (storage.is_s3(src) and src.endswith(".zip")):
        with _zip_reader(fetch(src, _cache_dir(cache_dir), sha256=sha256)) as read:
            yield read
        return
    if not storage.is_s3(src) and not Path(src).exists():
        raise EmnistError(f"{src}: no such file or folder; expected EMNIST's gzip.zip, the folder it "
                          "extracts to, or its gzip/ folder")
    with storage.local_path(src) as path:
        if path.is_dir():
            if sha256:
                raise EmnistError(f"{src}: a SHA-256 applies to an archive, but this is a folder")
            yield _folder_reader(path)
        else:
            with _zip_reader(fetch(path, path.parent, sha256=sha256)) as read:
                yield read


def _cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("TEXTREC_CACHE", Path.home() / ".cache" / "textrec")) / "downloads"


def load_subset(read: Reader, subset: str = SUBSET) -> dict[str, np.ndarray | str]:
    """Upright, dark-ink images and labels of one EMNIST subset, plus its mapping string."""
    names = _file_names(subset)
    mapping = parse_mapping(read(names["mapping"]).decode("ascii"), names["mapping"])
    out: dict[str, np.ndarray | str] = {"mapping": mapping}
    for part in ("train", "test"):
        images = read_idx(read(names[f"{part}_images"]), names[f"{part}_images"])
        labels = read_idx(read(names[f"{part}_labels"]), names[f"{part}_labels"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise EmnistError(f"{names[f'{part}_images']}: {images.shape} images do not match "
                              f"{labels.shape} labels in {names[f'{part}_labels']}")
        if len(labels) and int(labels.max()) >= len(mapping):
            raise EmnistError(f"{names[f'{part}_labels']}: label {int(labels.max())} is outside the "
                              f"{len(mapping)} classes of {names['mapping']}")
        upright = np.ascontiguousarray(images.transpose(0, 2, 1))  # IDX stores glyphs column-major
        np.subtract(255, upright, out=upright)  # light-on-dark -> dark ink on light paper
        out[f"{part}_images"], out[f"{part}_labels"] = upright, labels.astype(np.int32)
    return out


def val_mask(n_train: int, fraction: float = VAL_FRACTION, seed: int = VAL_SEED) -> np.ndarray:
    """Which training glyphs form the validation slice: a fixed random ``fraction``, same every run."""
    chosen = np.random.default_rng(seed).permutation(n_train)[: round(n_train * fraction)]
    mask = np.zeros(n_train, dtype=bool)
    mask[chosen] = True
    return mask


def ingest_emnist(source: str, out: Path, *, sha256: str | None = None, val_fraction: float = VAL_FRACTION,
                  cache_dir: str | os.PathLike | None = None) -> Path:
    """Read EMNIST ``byclass`` from ``source`` and write a character store to ``out``.

    ``source``: :data:`EMNIST_URL` (or any URL / ``s3://`` URI of ``gzip.zip``), a local ``gzip.zip``,
    the folder it extracts to, or its ``gzip/`` folder. ``sha256`` is checked for archives; pass
    :data:`EMNIST_SHA256` for the official one (the default for :data:`EMNIST_URL`).
    Splits: ``train`` and ``test`` from the official files, ``val`` a fixed slice of ``train``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if sha256 is None and str(source) == EMNIST_URL:
        sha256 = EMNIST_SHA256
    with open_emnist(source, sha256=sha256, cache_dir=cache_dir) as read:
        data = load_subset(read)
    train_images, test_images = data["train_images"], data["test_images"]
    is_val = val_mask(len(train_images), val_fraction)
    splits = np.concatenate([np.where(is_val, 1, 0), np.full(len(test_images), 2)]).astype(np.uint8)
    meta = {"dataset": "emnist", "subset": SUBSET, "source": str(source), "sha256": sha256,
            "val_fraction": val_fraction, "val_seed": VAL_SEED, "ink": "dark", "orientation": "upright"}
    return write_chars(out, np.concatenate([train_images, test_images]),
                       np.concatenate([data["train_labels"], data["test_labels"]]), splits,
                       mapping=str(data["mapping"]), split_names=SPLIT_NAMES, meta=meta)


# ------------------------------------------------------------------------------------ EMNIST-lines


class LineComposer:
    """Draws a text with glyphs of a character store: one random glyph per character, each
    overlapping the previous one by a random 0..``max_overlap`` of its width. ``indices`` limits the
    glyphs to one split without copying the image array."""

    def __init__(self, images: np.ndarray, chars: np.ndarray, indices: np.ndarray | None = None,
                 max_overlap: float = MAX_OVERLAP) -> None:
        self.images = images
        self.glyph_h, self.glyph_w = images.shape[1:]
        idx = np.arange(len(chars)) if indices is None else np.asarray(indices)
        self.by_char = {str(c): idx[chars[idx] == c] for c in np.unique(chars[idx])}
        self.max_overlap = max_overlap

    def drawable(self, text: str) -> str:
        """``text`` without the characters that have no glyph, spaces collapsed."""
        kept = "".join(c for c in text if c == " " or c in self.by_char)
        return " ".join(kept.split())

    def draw(self, text: str, rng: np.random.Generator) -> np.ndarray:
        """An (H, W) uint8 line image of ``text`` (already :meth:`drawable`), dark ink on light paper."""
        h, w = self.glyph_h, self.glyph_w
        steps = [round(w * (1 - rng.uniform(0, self.max_overlap))) for _ in text]
        canvas = np.full((h, sum(steps[:-1]) + w), 255, dtype=np.uint8)
        x = 0
        for ch, step in zip(text, steps, strict=True):
            if ch != " ":
                glyph = self.images[rng.choice(self.by_char[ch])]
                np.minimum(canvas[:, x:x + w], glyph, out=canvas[:, x:x + w])  # darker ink wins
            x += step
        return canvas


def fit_text(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` at a word boundary (mid-word only for one long word)."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1].rsplit(" ", 1)[0]
    return cut if cut and len(cut) <= max_chars else text[:max_chars]


def _split_counts(n: int, splits: list[str]) -> dict[str, int]:
    shares = {s: LINE_SPLIT_SHARE.get(s, 0.0) for s in splits}
    total = sum(shares.values()) or 1.0
    counts = {s: int(n * v / total) for s, v in shares.items()}
    counts[max(shares, key=shares.__getitem__)] += n - sum(counts.values())
    return counts


def compose_lines(chars_store: Path, n: int, out: Path, *, seed: int = 0,
                  corpus: str | os.PathLike | None = None, max_chars: int = MAX_CHARS,
                  max_overlap: float = MAX_OVERLAP, progress: bool = True) -> Path:
    """Write ``n`` EMNIST-lines to a line store (source ``emnist_lines``).

    Each line is a sentence from :func:`textrec.data.text.open_text_source` (``corpus``: a text file
    or a line store whose transcriptions to reuse; None: English word statistics), normalised to
    the charset, stripped of characters without a glyph (EMNIST has none for punctuation) and cut
    to ``max_chars`` at a word boundary. Lines are drawn with glyphs of the split they go to
    (80/10/10 of ``n`` over train/val/test), so no glyph appears in two splits.
    """
    if n < 1 or max_chars < 1 or not 0.0 <= max_overlap < 1.0:
        raise ValueError(f"compose_lines: need n >= 1, max_chars >= 1 and 0 <= max_overlap < 1; got n={n}, "
                         f"max_chars={max_chars}, max_overlap={max_overlap}")
    store = CharStore(chars_store)
    charset = Charset()
    sentences = open_text_source(corpus, charset=charset)
    rng = np.random.default_rng(seed)
    present = [s for s in store.splits if np.any(store.split_codes == store.splits.index(s))]
    meta = {"generator": "emnist_lines", "chars_store": str(chars_store), "chars_hash": store.content_hash,
            "seed": seed, "corpus": str(corpus) if corpus else None, "max_chars": max_chars,
            "max_overlap": max_overlap, "text_source": sentences.describe()}
    images, chars = store.images()  # one read; each split's composer indexes into it
    with LineWriter(out, charset=charset, meta=meta) as writer, \
            tqdm(total=n, desc="emnist-lines", unit="line", disable=not progress) as bar:
        for split, count in _split_counts(n, present).items():
            if count == 0:
                continue
            composer = LineComposer(images, chars, np.flatnonzero(store.split_codes == store.splits.index(split)),
                                    max_overlap)
            for _ in range(count):
                text = _next_text(sentences, composer, charset, rng, max_chars, chars_store)
                writer.add(composer.draw(text, rng), text, split=split, source="emnist_lines",
                           writer="emnist")
                bar.update()
    return out


def _next_text(sentences: TextSource, composer: LineComposer, charset: Charset,
               rng: np.random.Generator, max_chars: int, where: Path) -> str:
    for _ in range(100):
        text = fit_text(composer.drawable(charset.normalise(sentences.sample(rng))), max_chars)
        if text.strip() and not charset.unknown(text):
            return text
    raise ValueError(f"{where}: 100 sentences in a row had no character with a glyph in this store")
