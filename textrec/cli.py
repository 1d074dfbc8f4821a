"""The ``textrec`` command. Thin: it parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _data_synth(a: argparse.Namespace) -> None:
    from textrec.data.synth import synthesize

    out = synthesize(a.n, a.out, seed=a.seed, fonts_dirs=a.fonts_dir, workers=a.workers, corpus=a.corpus)
    print(f"wrote {out}")


def _data_ingest_iam(a: argparse.Namespace) -> None:
    from textrec.data.iam import ingest_iam

    print(f"wrote {ingest_iam(a.source, a.out)}")


def _data_ingest_emnist(a: argparse.Namespace) -> None:
    from textrec.data.emnist import ingest_emnist

    print(f"wrote {ingest_emnist(a.source, a.out, sha256=a.sha256)}")


def _data_emnist_lines(a: argparse.Namespace) -> None:
    from textrec.data.emnist import compose_lines

    print(f"wrote {compose_lines(a.chars, a.n, a.out, seed=a.seed, corpus=a.corpus)}")


def _data_show(a: argparse.Namespace) -> None:
    from textrec.data.show import save_grid

    print(f"wrote {save_grid(a.store, a.out, n=a.n, split=a.split, seed=a.seed)}")


def _data_info(a: argparse.Namespace) -> None:
    from textrec.data.store import open_store

    info = open_store(a.store).info()
    if a.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{info['path']}: {info['n']} items, hash {info['content_hash'][:16]}")
    for key in ("splits", "sources"):
        if key in info:
            print(f"  {key}: " + ", ".join(f"{k}={v}" for k, v in info[key].items()))
    if "charset" in info:
        print(f"  charset ({len(info['charset'])}): {info['charset']}")
    if info.get("meta"):
        print(f"  meta: {json.dumps(info['meta'], sort_keys=True)[:400]}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="textrec", description="Handwritten text recognition.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build, ingest and inspect line stores").add_subparsers(
        dest="data_command", required=True)
    s = data.add_parser("synth", help="render synthetic handwriting lines into a line store")
    s.add_argument("--n", type=int, required=True, help="number of lines")
    s.add_argument("--out", type=Path, required=True, help="output .h5 line store")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fonts-dir", type=Path, action="append", default=[],
                   help="extra folder of .ttf/.otf handwriting fonts (repeatable)")
    s.add_argument("--corpus", type=Path, default=None, help="text file to draw lines from")
    s.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    s.set_defaults(func=_data_synth)

    ingest = data.add_parser("ingest", help="read an official dataset distribution").add_subparsers(
        dest="dataset", required=True)
    i = ingest.add_parser("iam", help="IAM lines or forms+xml layout, from a folder or s3:// URI")
    i.add_argument("--source", required=True)
    i.add_argument("--out", type=Path, required=True)
    i.set_defaults(func=_data_ingest_iam)
    e = ingest.add_parser("emnist", help="EMNIST from the NIST distribution (URL or local zip/folder)")
    e.add_argument("--source", required=True)
    e.add_argument("--out", type=Path, required=True)
    e.add_argument("--sha256", default=None, help="expected SHA-256 of the downloaded archive")
    e.set_defaults(func=_data_ingest_emnist)

    el = data.add_parser("emnist-lines", help="compose lines from EMNIST glyphs")
    el.add_argument("--chars", type=Path, required=True, help="character store from `ingest emnist`")
    el.add_argument("--n", type=int, required=True)
    el.add_argument("--out", type=Path, required=True)
    el.add_argument("--seed", type=int, default=0)
    el.add_argument("--corpus", type=Path, default=None)
    el.set_defaults(func=_data_emnist_lines)

    sh = data.add_parser("show", help="a PNG grid of line images with their texts")
    sh.add_argument("store", type=Path)
    sh.add_argument("--out", type=Path, required=True)
    sh.add_argument("--n", type=int, default=32)
    sh.add_argument("--split", default=None)
    sh.add_argument("--seed", type=int, default=0)
    sh.set_defaults(func=_data_show)

    inf = data.add_parser("info", help="counts per split and source, charset, hash")
    inf.add_argument("store", type=Path)
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(func=_data_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"textrec: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
