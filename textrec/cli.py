"""The ``textrec`` command. Thin: it parses arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from textrec.rundir import RunDir
from textrec.tracking.registry import MODEL_NAME, PAGE_MODEL_NAME


def _data_synth(a: argparse.Namespace) -> None:
    from textrec.data.synth import synthesize

    if a.pages:
        from textrec.data.pages import synthesize_pages

        print(f"wrote {synthesize_pages(a.pages, a.out, seed=a.seed, fonts_dirs=a.fonts_dir, workers=a.workers, corpus=a.corpus)}")
        return
    if a.n is None:
        raise ValueError("data synth: give --n LINES (a line store) or --pages PAGES (a page store)")
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
    from textrec.data.show import save_grid, save_pages
    from textrec.data.store import PAGES_FORMAT, store_format

    if Path(a.store).is_file() and store_format(a.store) == PAGES_FORMAT:
        print(f"wrote {save_pages(a.store, a.out, n=a.n or 4, split=a.split, seed=a.seed)}")
        return

    print(f"wrote {save_grid(a.store, a.out, n=a.n or 32, split=a.split, seed=a.seed)}")


def _data_info(a: argparse.Namespace) -> None:
    from textrec.data.pages import PageStore
    from textrec.data.store import PAGES_FORMAT, open_store, store_format

    paged = Path(a.store).is_file() and store_format(a.store) == PAGES_FORMAT
    info = PageStore(a.store).info() if paged else open_store(a.store).info()
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


def _train(a: argparse.Namespace) -> None:
    from textrec.training import load_config, train

    cfg = load_config(a.config, a.overrides)
    metrics = train(cfg, a.out, resume=a.resume)
    shown = {k: v for k, v in metrics.items() if k.endswith(("_cer", "_wer")) or k in ("epochs", "wall_s")}
    print(json.dumps(shown, indent=2, default=str))
    print(f"wrote {a.out / 'model.pt'} and {a.out / 'metrics.json'}")


def _evaluate(a: argparse.Namespace) -> None:
    from textrec import evaluate as ev

    if a.pages is not None:
        return _evaluate_pages(a)
    if a.data is not None:
        report = ev.evaluate_store(a.model, a.data, a.split, limit=a.limit, batch_size=a.batch_size)
    elif a.labels is not None:
        report = ev.evaluate_tsv(a.model, a.labels, batch_size=a.batch_size)
    else:
        report = ev.evaluate_iam_lines(a.model, a.iam_lines, batch_size=a.batch_size)
    if a.report is not None:
        page = ev.write_report(report, a.report, worst=a.worst)
        print(f"wrote {page}", file=sys.stderr if a.json else sys.stdout)
    if a.json:
        print(json.dumps({"cer": report.cer, "wer": report.wer, "n": report.n}))
    else:
        print(f"{report.source}: {report.n} lines, CER {report.cer:.4f}, WER {report.wer:.4f}")


def _evaluate_pages(a: argparse.Namespace) -> None:
    from textrec import evaluate_pages as ep

    report = ep.evaluate_page_source(a.model, a.pages, split=a.split)
    if a.report is not None:
        page = ep.write_page_report(report, a.report)
        print(f"wrote {page}", file=sys.stderr if a.json else sys.stdout)
    s = report.summary()
    if a.json:
        print(json.dumps({k: s[k] for k in ("cer", "wer", "n", "lines_true", "lines_found", "line_count_exact")}))
    else:
        print(f"{report.source}: {report.n} pages, CER {report.cer:.4f}, WER {report.wer:.4f}, line count exact "
              f"on {s['line_count_exact']}/{report.n} ({s['lines_found']} lines found, {s['lines_true']} true)")


def _print_page(image: Path, answer: dict, as_json: bool, several: bool) -> None:
    if as_json:
        print(json.dumps({"image": str(image), **answer}))
        return
    if several:
        print(f"# {image}")
    for line in answer["lines"]:
        print(f"{line['text']}\t{line['confidence']:.4f}")


def _predict(a: argparse.Namespace) -> None:
    missing = [p for p in a.images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such image file")
    if a.endpoint:
        return _predict_endpoint(a)
    from textrec.recognizer import Recognizer

    rec = Recognizer.load(a.model)
    if a.page:
        for image, reading in zip(a.images, rec.recognise_pages(a.images, batch_size=a.batch_size), strict=True):
            _print_page(image, reading.to_json(), a.json, len(a.images) > 1)
        return
    for image, result in zip(a.images, rec.recognise(a.images, batch_size=a.batch_size), strict=True):
        if a.json:
            print(json.dumps({"image": str(image), "text": result.text, "confidence": round(result.confidence, 6)}))
        else:
            print(f"{result.text}\t{result.confidence:.4f}")


def _endpoint_token(token_file: Path | None) -> str:
    """--token-file (a TorchServe key_file.json or a file holding the token), else TEXTREC_TOKEN, else
    the local server's .textrec/serve/key_file.json."""
    import os

    if token_file is None and os.environ.get("TEXTREC_TOKEN"):
        return os.environ["TEXTREC_TOKEN"].strip()
    path = token_file or Path(".textrec/serve/key_file.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no token file (pass --token-file or set TEXTREC_TOKEN)")
    text = path.read_text().strip()
    try:
        return json.loads(text)["inference"]["key"]
    except (ValueError, KeyError, TypeError):
        return text  # a plain token file, e.g. a mounted Kubernetes Secret


def _predict_endpoint(a: argparse.Namespace) -> None:
    from textrec.client import Endpoint

    name = PAGE_MODEL_NAME if a.page and a.model_name == MODEL_NAME else a.model_name
    if a.protocol == "v2" and a.page:
        raise ValueError("--protocol v2 reads lines: the OIP server has no page model (use TorchServe's)")
    token_file = a.token_file
    if token_file is None and a.protocol == "v2":
        token_file = Path(".textrec/serve/oip/key_file.json") if Path(".textrec/serve/oip/key_file.json").is_file() \
            else None
    with Endpoint(a.endpoint, _endpoint_token(token_file), retries=a.retries) as endpoint:
        send = endpoint.predict_v2 if a.protocol == "v2" else endpoint.predict
        for image in a.images:
            answer = send(image.read_bytes(), name, name=str(image))
            if a.page:
                _print_page(image, answer, a.json, len(a.images) > 1)
            elif a.json:
                print(json.dumps({"image": str(image), **answer}))
            else:
                print(f"{answer['text']}\t{answer['confidence']:.4f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="textrec", description="Handwritten text recognition.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build, ingest and inspect line stores").add_subparsers(
        dest="data_command", required=True)
    s = data.add_parser("synth", help="render synthetic handwriting lines (or pages) into a store")
    s.add_argument("--n", type=int, default=None, help="number of lines")
    s.add_argument("--pages", type=int, default=None,
                   help="render this many pages (paragraphs with their line boxes) into a page store instead")
    s.add_argument("--out", type=Path, required=True, help="output .h5 line store")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--fonts-dir", type=Path, action="append", default=[],
                   help="extra folder of .ttf/.otf handwriting fonts (repeatable)")
    s.add_argument("--corpus", default=None,
                   help="where the words come from: wordfreq (default), fortunes (Debian's fortune "
                        "collections), a text file, a line store (.h5) whose train transcriptions to "
                        "reuse, or several joined by + with optional *WEIGHT (wordfreq+fortunes)")
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
    el.add_argument("--corpus", default=None, help="as for `data synth --corpus`")
    el.set_defaults(func=_data_emnist_lines)

    sh = data.add_parser("show", help="a PNG grid of line images with their texts (pages: with their boxes)")
    sh.add_argument("store", type=Path)
    sh.add_argument("--out", type=Path, required=True)
    sh.add_argument("--n", type=int, default=None, help="lines (default 32) or pages (default 4) shown")
    sh.add_argument("--split", default=None)
    sh.add_argument("--seed", type=int, default=0)
    sh.set_defaults(func=_data_show)

    inf = data.add_parser("info", help="counts per split and source, charset, hash")
    inf.add_argument("store", type=Path)
    inf.add_argument("--json", action="store_true")
    inf.set_defaults(func=_data_info)

    t = sub.add_parser("train", help="train a model: --config FILE --out DIR [--section.key=value ...]")
    t.add_argument("--config", type=Path, default=None, help="YAML recipe (configs/cpu.yaml, ...)")
    t.add_argument("--out", type=Path, required=True, help="run folder: model.pt, metrics.json, checkpoints/")
    t.add_argument("--resume", default=None,
                   help=f"'auto' (OUT/{RunDir.CHECKPOINT_FILES[0]} if present) or a checkpoint path")
    t.set_defaults(func=_train, accepts_overrides=True)

    ev = sub.add_parser("evaluate", help="score a model on labelled lines (CER, WER, HTML report)")
    ev.add_argument("--model", required=True, help="model.pt, a run folder, or an s3:// URI")
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", default=None, help="line store (.h5 path or s3:// URI)")
    src.add_argument("--labels", default=None,
                     help="TSV of 'image path<TAB>transcription' rows (a path or s3:// URI; images relative to it)")
    src.add_argument("--iam-lines", default=None, help="folder in the IAM lines layout (a path or s3:// URI)")
    src.add_argument("--pages", default=None,
                     help="TSV of 'page image<TAB>text' rows (the page's lines joined by a literal \\n) or a page "
                          "store (--split): page CER, WER and line-count errors (the report draws the boxes)")
    ev.add_argument("--split", default="test", help="split of --data or of a page store (default: test)")
    ev.add_argument("--limit", type=int, default=None, help="score at most this many lines of --data")
    ev.add_argument("--json", action="store_true", help="print one JSON object: cer, wer, n")
    ev.add_argument("--report", type=Path, default=None, help="write report.html and report.json here")
    ev.add_argument("--worst", type=int, default=20, help="lines shown in the report")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.set_defaults(func=_evaluate)

    pr = sub.add_parser("predict", help="read line images (or pages): prints text<TAB>confidence per line")
    where = pr.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="model.pt, a run folder, or an s3:// URI")
    where.add_argument("--endpoint", help="a TorchServe URL, e.g. http://127.0.0.1:8080 (see `make serve`)")
    pr.add_argument("--token-file", type=Path, default=None,
                    help="with --endpoint: key_file.json or a token file (default: TEXTREC_TOKEN, "
                         "else .textrec/serve/key_file.json)")
    pr.add_argument("--protocol", choices=("torchserve", "v2"), default="torchserve",
                    help="with --endpoint: TorchServe's /predictions (default), or v2: the Open Inference "
                         "Protocol (make serve RUNTIME=kserve, KServe; its key: .textrec/serve/oip/key_file.json)")
    pr.add_argument("--retries", type=int, default=5,
                    help="with --endpoint: tries again after a 5xx or a lost connection, with backoff (default 5)")
    pr.add_argument("--model-name", default=MODEL_NAME, help=f"with --endpoint: the served model (with --page: {PAGE_MODEL_NAME})")
    pr.add_argument("images", type=Path, nargs="+", help="line image files (page images with --page)")
    pr.add_argument("--page", action="store_true",
                    help="each image is a page or paragraph: find its lines, read them top to bottom")
    pr.add_argument("--json", action="store_true",
                    help="one JSON object per image (with --page: its text and each line's box, text, confidence)")
    pr.add_argument("--batch-size", type=int, default=16)
    pr.set_defaults(func=_predict)

    from textrec.sweep.cli import add_parser as add_sweep_parser

    add_sweep_parser(sub)

    from textrec.review.cli import add_parser as add_review_parser

    add_review_parser(sub)

    from textrec.sweep.pbt import add_parser as add_pbt_parser

    add_pbt_parser(sub)
    return p


def _version() -> str:
    import platform

    from textrec import __version__

    return f"textrec {__version__} (Python {platform.python_version()})"


def main(argv: list[str] | None = None) -> int:
    from textrec.progress import quiet_when_piped

    quiet_when_piped()
    parser = build_parser()
    # Unknown --section.key=value options are config overrides, for the commands that take them.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    try:
        args.func(args)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        print(f"textrec: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
