"""The IAM Handwriting Database, from its official distribution, into a line store.

Two layouts of the distribution are read, from a local folder or an ``s3://`` prefix:

(a) **lines**: ``ascii/lines.txt`` (or ``lines.txt``) with one line a record::

        a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from

    (line id, segmentation ok/err, gray level, number of components, bounding box x y w h, the
    transcription with ``|`` between words; ``#`` starts a comment) and the cut line images
    ``lines/a01/a01-000u/a01-000u-00.png``. The transcription is taken as written: IAM tokenises
    punctuation as words, so ``Peers|.`` becomes ``Peers .``, exactly the reference most IAM line
    results are reported against.
(b) **forms + xml**: ``xml/a01-000u.xml`` (a ``form`` with ``writer-id``; ``line`` elements with
    ``id``, ``text`` and ``segmentation``; ``word``/``cmp`` elements with boxes) and the scanned forms
    ``formsA-D/a01-000u.png`` (any ``forms*/`` folder). Each line is cropped from its form by the
    union of its components' boxes plus :data:`MARGIN` pixels. Each form also gives one
    **paragraph**: the union of all its lines, stored in the same line store under the source
    ``iam_paragraphs`` with its line texts joined by single spaces.

When both layouts are present, lines come from (a) and paragraphs from (b).

Splits: the official Large Writer Independent Text Line Recognition Task files (``trainset.txt``,
``validationset1.txt``, ``validationset2.txt``, ``testset.txt``, in the root, ``task/``, or any
folder one level down) are honoured when present: val is validation sets 1 + 2, and lines the task
leaves out are kept under the split ``unlisted``, so train/val/test are exactly the official ones.
Without them, every writer (``ascii/forms.txt`` or the XML's ``writer-id``; the form id when
unknown) goes wholly to train, val or test by a hash of its id: 80/10/10, the same on every run.

Texts are normalised with :meth:`textrec.charset.Charset.normalise`; a character outside the
charset is an error naming the line and the character. IAM's segmentation flag is kept in the
store's ``ok`` column.
"""

from __future__ import annotations

import hashlib
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from textrec import storage
from textrec.charset import Charset
from textrec.data.store import LineWriter

SOURCE_LINES = "iam"
SOURCE_PARAGRAPHS = "iam_paragraphs"
MARGIN = 8
UNLISTED = "unlisted"
SPLIT_FILES = {"trainset.txt": "train", "validationset1.txt": "val", "validationset2.txt": "val",
               "testset.txt": "test"}
HASH_SPLIT = (("train", 80), ("val", 90), ("test", 100))  # cumulative percentages
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_XML_ENTITIES = {"&quot;": '"', "&apos;": "'", "&lt;": "<", "&gt;": ">", "&amp;": "&"}
EXPECTED_LAYOUT = ("expected either (a) ascii/lines.txt (or lines.txt) with line images in "
                   "lines/<a01>/<a01-000u>/<a01-000u-00>.png, or (b) xml/<form>.xml with form images in "
                   "formsA-D/, formsE-H/, formsI-Z/ or forms/")


class IAMError(ValueError):
    """An IAM source is missing, malformed, or holds a text outside the charset; names the file."""


@dataclass
class IamLine:
    """One text line: where its pixels are (a cut image or a box on its form) and what it says."""

    id: str
    text: str
    ok: bool = True
    writer: str = ""
    image_path: Path | None = None  # layout (a)
    box: tuple[int, int, int, int] | None = None  # layout (b): x0, y0, x1, y1 on the form

    @property
    def form(self) -> str:
        return form_of(self.id)


@dataclass
class IamForm:
    """One scanned form of layout (b): its lines in reading order."""

    id: str
    writer: str
    xml_path: Path
    lines: list[IamLine] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    root: Path
    lines_txt: Path | None
    lines_dir: Path | None
    xml_dir: Path | None
    form_images: dict[str, Path]

    @property
    def has_lines(self) -> bool:
        return self.lines_txt is not None and self.lines_dir is not None

    @property
    def has_forms(self) -> bool:
        return self.xml_dir is not None and bool(self.form_images)


def form_of(line_id: str) -> str:
    """``a01-000u-00`` -> ``a01-000u``."""
    return line_id.rsplit("-", 1)[0]


# -------------------------------------------------------------------------------------- parsing


def _records(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-comment, non-empty line of an IAM ascii file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise IAMError(f"{path}: cannot read ({e})") from e
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.startswith("#"):
            yield n, line.split()


def _clean_text(raw: str, line_id: str, where: Path, charset: Charset) -> str:
    for entity, ch in _XML_ENTITIES.items():
        raw = raw.replace(entity, ch)
    text = charset.normalise(raw)
    bad = charset.unknown(text)
    if bad:
        names = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in bad)
        raise IAMError(f"{where}: line {line_id}: {names} not in the charset, in text {text!r}")
    return text


def parse_lines_txt(path: Path, charset: Charset) -> list[IamLine]:
    """The records of ``lines.txt``; their image paths are set later from the layout."""
    lines = []
    for n, fields in _records(path):
        if len(fields) < 9 or fields[1] not in ("ok", "err"):
            raise IAMError(f"{path} line {n}: expected '<id> <ok|err> <gray> <components> <x> <y> <w> "
                           f"<h> <text>', got {' '.join(fields)!r}")
        lines.append(IamLine(fields[0], _clean_text(" ".join(fields[8:]), fields[0], path, charset),
                             ok=fields[1] == "ok"))
    return lines


def parse_forms_txt(path: Path) -> dict[str, str]:
    """``ascii/forms.txt`` -> {form id: writer id}."""
    writers = {}
    for n, fields in _records(path):
        if len(fields) < 2:
            raise IAMError(f"{path} line {n}: expected '<form id> <writer id> ...', got {' '.join(fields)!r}")
        writers[fields[0]] = fields[1]
    return writers


def _box(element: ET.Element) -> tuple[int, int, int, int] | None:
    try:
        x, y = int(element.attrib["x"]), int(element.attrib["y"])
        w, h = int(element.attrib["width"]), int(element.attrib["height"])
    except (KeyError, ValueError):
        return None
    return (x, y, x + w, y + h) if w > 0 and h > 0 else None


def union(boxes: Iterable[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """The smallest box holding all ``boxes``; None for none."""
    boxes = list(boxes)
    if not boxes:
        return None
    x0, y0, x1, y1 = zip(*boxes, strict=True)
    return min(x0), min(y0), max(x1), max(y1)


def parse_form_xml(path: Path, charset: Charset) -> IamForm:
    """One ``xml/<form>.xml``: writer, and each line's text, flag and component box."""
    try:
        root = ET.parse(path).getroot()  # expat in Python >= 3.11 refuses entity-expansion bombs
    except (ET.ParseError, OSError) as e:
        raise IAMError(f"{path}: not a readable IAM form XML ({e})") from e
    if root.tag != "form" or "id" not in root.attrib:
        raise IAMError(f"{path}: expected a <form id=...> root element, found <{root.tag}>")
    form = IamForm(root.attrib["id"], root.attrib.get("writer-id", ""), path)
    for el in root.iter("line"):
        line_id, raw = el.attrib.get("id"), el.attrib.get("text")
        if not line_id or raw is None:
            raise IAMError(f"{path}: a <line> lacks its id or text attribute")
        box = union(b for b in map(_box, el.iter()) if b is not None)  # word and cmp boxes
        if box is None:
            raise IAMError(f"{path}: line {line_id} has no word or cmp element with a box")
        form.lines.append(IamLine(line_id, _clean_text(raw, line_id, path, charset),
                                  ok=el.attrib.get("segmentation", "ok") == "ok", writer=form.writer, box=box))
    return form


# --------------------------------------------------------------------------------------- layout


def find_layout(root: Path) -> Layout:
    """Which of the two layouts ``root`` holds; raises :class:`IAMError` when neither."""
    if not root.is_dir():
        raise IAMError(f"{root}: no such IAM folder; {EXPECTED_LAYOUT}")
    lines_txt = next((p for p in (root / "ascii" / "lines.txt", root / "lines.txt") if p.is_file()), None)
    lines_dir = root / "lines" if (root / "lines").is_dir() else None
    xml_dir = root / "xml" if (root / "xml").is_dir() and any((root / "xml").glob("*.xml")) else None
    form_images = {p.stem: p for d in sorted(root.glob("forms*")) if d.is_dir()
                   for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    layout = Layout(root, lines_txt, lines_dir, xml_dir, form_images)
    if layout.has_lines or layout.has_forms:
        return layout
    found = [str(p.relative_to(root)) for p in (lines_txt, lines_dir, xml_dir) if p is not None]
    found += ["form images"] if form_images else []
    raise IAMError(f"{root}: not an IAM distribution: {EXPECTED_LAYOUT}; found "
                   f"{', '.join(found) if found else 'none of these'}")


def read_official_splits(root: Path) -> dict[str, str] | None:
    """{line or form id: split} from the writer-independent task files, or None without them."""
    folders = [root, root / "task"] + sorted(p for p in root.iterdir() if p.is_dir())
    folder = next((d for d in folders if (d / "trainset.txt").is_file()), None)
    if folder is None:
        return None
    missing = [name for name in SPLIT_FILES if not (folder / name).is_file()]
    if missing:
        raise IAMError(f"{folder}: has trainset.txt but lacks {', '.join(missing)} of the official split")
    splits: dict[str, str] = {}
    for name, split in SPLIT_FILES.items():
        for _, fields in _records(folder / name):
            splits[fields[0]] = split
    return splits


def hash_split(key: str) -> str:
    """train/val/test for a writer (or form) id, 80/10/10 by a stable hash."""
    bucket = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return next(split for split, upto in HASH_SPLIT if bucket < upto)


def split_of(line: IamLine, official: dict[str, str] | None) -> str:
    if official is None:
        return hash_split(line.writer or line.form)
    return official.get(line.id) or official.get(line.form) or UNLISTED


# --------------------------------------------------------------------------------------- images


def load_gray(path: Path) -> np.ndarray:
    """An image file as (H, W) uint8 grayscale; errors name the file."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return (np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise IAMError(f"{path}: image file is missing") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise IAMError(f"{path}: unreadable or truncated image ({e})") from e


def crop(image: np.ndarray, box: tuple[int, int, int, int] | None, margin: int, what: str) -> np.ndarray:
    """``box`` plus ``margin`` on every side, clipped to the image."""
    if box is None:
        raise IAMError(f"{what}: no box (no word or component with coordinates)")
    h, w = image.shape
    x0, y0 = max(box[0] - margin, 0), max(box[1] - margin, 0)
    x1, y1 = min(box[2] + margin, w), min(box[3] + margin, h)
    if x1 <= x0 or y1 <= y0:
        raise IAMError(f"{what}: box {box} lies outside its {w}x{h} form image")
    return image[y0:y1, x0:x1]


# --------------------------------------------------------------------------------------- ingest


def line_image_path(lines_dir: Path, line_id: str) -> Path:
    """``a01-000u-00`` -> ``lines/a01/a01-000u/a01-000u-00.png``."""
    return lines_dir / line_id.split("-")[0] / form_of(line_id) / f"{line_id}.png"


def _read_forms(layout: Layout, charset: Charset) -> list[IamForm]:
    if layout.xml_dir is None or not layout.has_forms:
        return []
    forms = [parse_form_xml(p, charset) for p in sorted(layout.xml_dir.glob("*.xml"))]
    return [f for f in forms if f.id in layout.form_images or not layout.has_lines]


def _writers(layout: Layout, forms: list[IamForm]) -> dict[str, str]:
    forms_txt = layout.root / "ascii" / "forms.txt"
    if forms_txt.is_file():
        return parse_forms_txt(forms_txt)
    return {f.id: f.writer for f in forms if f.writer}


def _write_cut_lines(writer: LineWriter, layout: Layout, writers: dict[str, str],
                     official: dict[str, str] | None, charset: Charset, progress: bool) -> None:
    if layout.lines_txt is None or layout.lines_dir is None:
        raise IAMError(f"{layout.root}: no lines.txt and lines/ folder to read cut lines from")
    lines = parse_lines_txt(layout.lines_txt, charset)
    for line in tqdm(lines, desc="IAM lines", unit="line", disable=not progress):
        line.writer = writers.get(line.form, "")
        image = load_gray(line_image_path(layout.lines_dir, line.id))
        writer.add(image, line.text, split=split_of(line, official), source=SOURCE_LINES,
                   writer=line.writer, ok=line.ok)


def _write_forms(writer: LineWriter, layout: Layout, forms: list[IamForm], official: dict[str, str] | None,
                 with_lines: bool, progress: bool) -> None:
    for form in tqdm(forms, desc="IAM forms", unit="form", disable=not progress):
        if form.id not in layout.form_images:
            raise IAMError(f"{form.xml_path}: no image of form {form.id} in the forms*/ folders")
        page = load_gray(layout.form_images[form.id])
        splits = [split_of(line, official) for line in form.lines]
        for line, split in zip(form.lines, splits, strict=True):
            if with_lines:
                writer.add(crop(page, line.box, MARGIN, f"{form.xml_path}: line {line.id}"), line.text,
                           split=split, source=SOURCE_LINES, writer=form.writer, ok=line.ok)
        if form.lines:
            box = union(line.box for line in form.lines)
            text = " ".join(line.text for line in form.lines)
            listed = [s for s in splits if s != UNLISTED] or splits
            split = Counter(listed).most_common(1)[0][0]  # a paragraph goes where its listed lines went
            writer.add(crop(page, box, MARGIN, f"{form.xml_path}: paragraph"), text, split=split,
                       source=SOURCE_PARAGRAPHS, writer=form.writer, ok=all(ln.ok for ln in form.lines))


def ingest_local(root: Path, out: Path, *, progress: bool = True, origin: str | None = None) -> Path:
    """:func:`ingest_iam` on a local folder."""
    charset = Charset()
    layout = find_layout(root)
    official = read_official_splits(root)
    forms = _read_forms(layout, charset)
    writers = _writers(layout, forms)
    for form in forms:  # forms.txt, when present, is the authority on writers
        form.writer = writers.get(form.id, form.writer)
        for line in form.lines:
            line.writer = form.writer
    meta = {"dataset": "iam", "source": origin or str(root),
            "layout": "lines" if layout.has_lines else "forms", "paragraphs": bool(forms),
            "splits": "official writer-independent task" if official else "hash of writer id (80/10/10)",
            "margin": MARGIN}
    with LineWriter(out, charset=charset, meta=meta) as writer:
        if layout.has_lines:
            _write_cut_lines(writer, layout, writers, official, charset, progress)
        _write_forms(writer, layout, forms, official, with_lines=not layout.has_lines, progress=progress)
    return out


def ingest_iam(source: str | os.PathLike, out: Path, *, progress: bool = True) -> Path:
    """Read IAM from a folder or ``s3://`` prefix (see the module doc) into the line store ``out``."""
    source = str(source)
    if not storage.is_s3(source):
        return ingest_local(Path(source), Path(out), progress=progress)
    if not re.match(r"s3://[^/]+", source):
        raise IAMError(f"{source}: expected s3://bucket/prefix")
    try:
        with storage.local_path(source) as root:
            return ingest_local(root, Path(out), progress=progress, origin=source)
    except storage.StorageError as e:
        raise IAMError(f"{source}: cannot read the IAM prefix ({e}); {EXPECTED_LAYOUT}") from e
