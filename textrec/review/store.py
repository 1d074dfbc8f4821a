"""The reviewed store: what people decided about captured lines, and the labelled real lines it yields.

Layout of a reviewed store folder::

    OUT/decisions/<item id>.json   one per decision, written atomically the moment it is made: the source
                                   of truth (a restart resumes from these; a closed browser loses nothing)
    OUT/images/<item id>.png|jpg   the line image of every accepted or corrected line, as it was served
    OUT/reviewed.h5                a line store (textrec.data.store) of the accepted and corrected lines,
                                   split train/val by source, source column = the source tag
    OUT/train.tsv, OUT/val.tsv     the same lines as labelled sets (``images/<id>.png<TAB>text``), the
                                   form ``textrec evaluate --labels`` and ``data.real_val`` read

Every line of one source (a deployment, or the reviewer's ``--source``) lands in one split, chosen by a
hash of the source's name (:func:`split_of`), so a validation set never shares a source with training.
The line store and the TSVs are rebuilt from the decisions after each one (all files atomically).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from textrec.charset import DEFAULT_CHARSET, Charset
from textrec.data.store import LineWriter
from textrec.io import atomic_write, write_json
from textrec.recognizer import decode_image

DECISIONS = "decisions"
IMAGES = "images"
STORE = "reviewed.h5"
SPLITS = ("train", "val")
VAL_PERCENT = 20  # of sources (not of lines): about one source in five is validation
ACTIONS = ("accepted", "corrected", "unreadable", "skipped")
LABELLED = ("accepted", "corrected")  # the decisions that give a labelled line


def split_of(source: str) -> str:
    """``val`` for about VAL_PERCENT % of source names, ``train`` for the rest; the same name, the same split."""
    bucket = int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "big") % 100
    return "val" if bucket < VAL_PERCENT else "train"


@dataclass(frozen=True)
class Decision:
    id: str
    action: str
    text: str  # the reviewed text ("" for unreadable / skipped)
    model_text: str
    source: str
    split: str
    time: str
    model: str = ""
    model_version: str = ""
    confidence: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ReviewStore:
    """A reviewed store folder (see the module docstring)."""

    def __init__(self, out: str | os.PathLike, charset: Charset = DEFAULT_CHARSET) -> None:
        self.out = Path(out)
        self.charset = charset
        self._grey: dict[str, np.ndarray] = {}  # decoded line images, so a rebuild decodes each once

    @property
    def store_path(self) -> Path:
        return self.out / STORE

    def tsv(self, split: str) -> Path:
        return self.out / f"{split}.tsv"

    def decisions(self) -> dict[str, Decision]:
        folder = self.out / DECISIONS
        out: dict[str, Decision] = {}
        if folder.is_dir():
            for p in sorted(folder.glob("*.json")):
                d = json.loads(p.read_text())
                out[d["id"]] = Decision(**d)
        return out

    def decide(self, item: dict[str, Any], action: str, text: str, source: str, image: bytes, *,
               rebuild: bool = True) -> Decision:
        """Record one decision (image first, then the decision, then the rebuilt store), atomically.
        ``rebuild=False`` leaves the store to one :meth:`rebuild` after many decisions (a bulk import)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown decision {action!r}; expected one of {ACTIONS}")
        decision = Decision(id=str(item["id"]), action=action, text=text if action in LABELLED else "",
                            model_text=str(item.get("text", "")), source=source, split=split_of(source),
                            time=datetime.now(UTC).isoformat(), model=str(item.get("model", "")),
                            model_version=str(item.get("model_version", "")),
                            confidence=float(item.get("confidence", 0.0)))
        if action in LABELLED:
            self.charset.encode(decision.text, normalise=False)  # the caller checked; a store never holds less
            atomic_write(self._image_path(decision.id, item.get("image_type", "png")), image)
        write_json(self.out / DECISIONS / f"{decision.id}.json", decision.to_dict())
        if rebuild:
            self.rebuild()
        return decision

    def _image_path(self, item_id: str, image_type: str) -> Path:
        return self.out / IMAGES / f"{item_id}.{'jpg' if image_type == 'jpeg' else 'png'}"

    def _find_image(self, item_id: str) -> Path:
        for ext in ("png", "jpg"):
            p = self.out / IMAGES / f"{item_id}.{ext}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"{self.out / IMAGES}: no image for reviewed line {item_id}")

    def rebuild(self) -> Path:
        """Write ``reviewed.h5`` and the two TSVs from the decisions (each file atomically)."""
        labelled = [d for d in self.decisions().values() if d.action in LABELLED]
        rows: dict[str, list[str]] = {s: [] for s in SPLITS}
        meta = {"generator": "textrec.review", "val_percent": VAL_PERCENT,
                "sources": sorted({d.source for d in labelled})}
        with LineWriter(self.store_path, charset=self.charset, meta=meta, splits=SPLITS) as w:
            for d in labelled:
                path = self._find_image(d.id)
                if d.id not in self._grey:
                    self._grey[d.id] = decode_image(path.read_bytes(), name=str(path))
                w.add(self._grey[d.id], d.text, split=d.split, source=d.source, writer=d.source)
                rows[d.split].append(f"{path.relative_to(self.out).as_posix()}\t{d.text}\n")
        for split, lines in rows.items():
            atomic_write(self.tsv(split), "".join(lines))
        return self.store_path


# --- a reviewed store as a pipeline input -----------------------------------------------------------


@dataclass(frozen=True)
class ReviewedInputs:
    """What a training run takes from a reviewed store (a folder or an s3:// prefix laid out as above)."""

    uri: str
    real_val: str  # its val.tsv, or "" when no source landed in validation
    store: str  # its reviewed.h5 (line store), for mixing into training
    train_lines: int
    val_lines: int

    def tags(self) -> dict[str, str]:
        return {"textrec.reviewed_store": self.uri}

    def metrics(self) -> dict[str, float]:
        return {"reviewed_train_lines": float(self.train_lines), "reviewed_val_lines": float(self.val_lines)}


def reviewed_inputs(uri: str) -> ReviewedInputs:
    """Read a reviewed store's counts (fetching ``reviewed.h5`` from S3 if need be) and name its parts;
    a clear error if ``uri`` holds no reviewed store."""
    import tempfile

    from textrec import storage
    from textrec.data.store import LineStore

    base = str(uri).rstrip("/")
    store = f"{base}/{STORE}"
    if not storage.exists(store):
        raise FileNotFoundError(f"{uri}: no reviewed store here (no {STORE}; `textrec review --store` writes one)")
    with tempfile.TemporaryDirectory(prefix="textrec-reviewed-") as tmp:
        local = Path(store)
        if storage.is_s3(store):
            local = Path(tmp) / STORE
            storage.download(store, local)
        splits = LineStore(local).info()["splits"]
    val = int(splits.get("val", 0))
    return ReviewedInputs(base, f"{base}/val.tsv" if val else "", store, int(splits.get("train", 0)), val)
