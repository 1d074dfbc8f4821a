"""``textrec review``: the review app's command line (wired into ``textrec.cli``)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_PORT = 8095


def _review(a: argparse.Namespace) -> None:
    from textrec.review.app import serve

    serve(a.queue, a.store, port=a.port, token_file=a.token_file, source=a.source)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("review", help="review captured lines in a browser (127.0.0.1, token) into a "
                              "labelled line store")
    p.add_argument("--queue", required=True, help="the capture queue: a folder or s3://bucket/prefix")
    p.add_argument("--store", type=Path, default=Path("reviewed"),
                   help="the reviewed store folder (decisions, reviewed.h5, train.tsv, val.tsv); default ./reviewed")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.add_argument("--token-file", type=Path, default=None,
                   help="take the access token from this file (default: a fresh random one, printed)")
    p.add_argument("--source", default="",
                   help="the source tag of the reviewed lines (default: each item's deployment); "
                   "a source's lines all land in one split")
    p.set_defaults(func=_review)
    return p
