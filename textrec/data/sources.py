"""Where a dataset's lines come from: parse a data source, ingest it, and merge it with synthetic lines.

A data source names real handwriting to read: ``none`` (synthetic lines only), ``emnist:<uri>``
(EMNIST characters, composed into lines) or ``iam:<uri>`` (IAM lines); the uri is a local path, an
``https://`` URL (EMNIST) or an ``s3://`` URI. :func:`ingest` reads it into a folder (``chars.h5`` or
``iam.h5`` plus ``source.json``); :func:`synthesize_dataset` renders synthetic lines beside it and
returns the merged dataset's description, and with ``n_pages`` synthetic pages (``pages.h5``, a page
store: what page models train and are scored on).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from textrec.io import write_json

DATA_KINDS = ("none", "emnist", "iam")
CHARS_FILE, IAM_FILE, SOURCE_FILE = "chars.h5", "iam.h5", "source.json"
PAGES_FILE = "pages.h5"  # the dataset folder's page store, when pages were asked for


def parse_source(data_source: str) -> tuple[str, str]:
    """``"emnist:s3://b/gzip.zip"`` -> ``("emnist", "s3://b/gzip.zip")``; ``"none"`` -> ``("none", "")``."""
    kind, _, uri = data_source.strip().partition(":")
    if kind not in DATA_KINDS or (kind != "none" and not uri) or (kind == "none" and uri):
        raise ValueError(f"data_source {data_source!r}: expected 'none', 'emnist:<uri>' or 'iam:<uri>' "
                         "(uri: a local path, an https:// URL for EMNIST, or an s3:// URI)")
    return kind, uri


def ingest(data_source: str, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Read the real handwriting named by ``data_source`` into ``out_dir`` (``chars.h5`` or ``iam.h5``)."""
    kind, uri = parse_source(data_source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"kind": kind, "uri": uri}
    if kind == "emnist":
        from textrec.data.emnist import ingest_emnist
        from textrec.data.store import CharStore

        info["content_hash"] = CharStore(ingest_emnist(uri, out / CHARS_FILE)).content_hash
    elif kind == "iam":
        from textrec.data.iam import ingest_iam
        from textrec.data.store import LineStore

        info["content_hash"] = LineStore(ingest_iam(uri, out / IAM_FILE)).content_hash
    write_json(out / SOURCE_FILE, info)
    return info


def synthesize_dataset(n_lines: int, source_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                       seed: int = 0, emnist_lines: int = 0, synth: Mapping[str, Any] | None = None,
                       n_pages: int = 0, page: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Synthetic lines, plus EMNIST-lines when EMNIST was ingested and IAM when IAM was: the merged data.
    ``synth`` overrides the renderer's settings (a training config's ``data.synth``). With ``n_pages``
    also that many synthetic pages in the page store ``pages.h5`` (described under ``pages``), ``page``
    overriding their layout (a training config's ``data.page``)."""
    from textrec.data.store import describe_stores
    from textrec.data.synth import SynthConfig, synthesize

    src, out = Path(source_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stores = [synthesize(n_lines, out / "synth.h5", seed=seed, config=SynthConfig.from_mapping(synth or {}))]
    if (src / CHARS_FILE).is_file():
        from textrec.data.emnist import compose_lines

        stores.append(compose_lines(src / CHARS_FILE, emnist_lines or n_lines, out / "emnist_lines.h5", seed=seed))
    if (src / IAM_FILE).is_file():
        shutil.copyfile(src / IAM_FILE, out / IAM_FILE)
        stores.append(out / IAM_FILE)
    described = describe_stores(stores)
    if n_pages > 0:
        from textrec.data.pages import PageConfig, PageStore, synthesize_pages

        synthesize_pages(n_pages, out / PAGES_FILE, seed=seed, config=SynthConfig.from_mapping(synth or {}),
                         page_config=PageConfig.from_mapping(dict(page or {})), progress=False)
        info = PageStore(out / PAGES_FILE).info()
        described["pages"] = {k: info[k] for k in ("n", "splits", "lines", "content_hash")}
    return described


TASKS = ("line", "page")


def task_stores(dataset_dir: str | os.PathLike, task: str) -> list[Path]:
    """The stores of a dataset folder a ``task`` is scored on: its line stores, or for ``page`` its
    page store (a clear error when the run rendered no pages)."""
    from textrec.data.store import find_line_stores

    if task not in TASKS:
        raise ValueError(f"task must be 'line' or 'page', got {task!r}")
    if task == "line":
        return find_line_stores(dataset_dir)
    pages = Path(dataset_dir) / PAGES_FILE
    if not pages.is_file():
        raise ValueError(f"task 'page': the dataset {dataset_dir} has no {PAGES_FILE}; set synth_pages > 0")
    return [pages]
