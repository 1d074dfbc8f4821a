"""``python -m serving serve|deploy|stop``: the local TorchServe from the command line.

    python -m serving serve [--model PATH|models:/textrec-line@champion]   # what `make serve` runs
    python -m serving deploy [--model URI]     # roll the running server to the champion if it moved
    python -m serving stop                     # what `make serve-stop` runs
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serving.deploy import CHAMPION_URI, deploy_model, serve
from serving.torchserve import DEFAULT_WORKDIR, ServeError, TorchServeProcess
from textrec.tracking import MODEL_NAME


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving", description="Local TorchServe for textrec.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="start TorchServe with the champion (or --model) and wait until it answers")
    s.add_argument("--model", default=None, help="model.pt, or models:/NAME@ALIAS (default: the champion)")
    s.add_argument("--version", default=None, help="served version label for a local model.pt")
    s.add_argument("--batch-size", type=int, default=None,
                   help="TorchServe batch size (default 8; 1 turns batching off, see docs/benchmarks.md)")
    d = sub.add_parser("deploy", help="roll the running server to the champion if it moved")
    d.add_argument("--model", default=CHAMPION_URI)
    t = sub.add_parser("stop", help="torchserve --stop")
    for command in (s, d, t):
        command.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        return _COMMANDS[a.command](a)
    except (ServeError, OSError, ValueError, RuntimeError) as e:
        print(f"serving: error: {e}", file=sys.stderr)
        return 1


def _cmd_serve(a: argparse.Namespace) -> int:
    from serving.archive import ArchiveOptions

    options = ArchiveOptions(batch_size=a.batch_size) if a.batch_size else None
    server = serve(a.model, workdir=a.workdir, version=a.version, options=options)
    version = server.default_version()
    print(f"TorchServe is serving {MODEL_NAME} version {version}")
    print(f"  predict:  {server.config.inference_url}/predictions/{MODEL_NAME}")
    print(f"  metrics:  {server.config.metrics_url}/metrics")
    print(f"  token:    'inference' key in {server.key_file}")
    print(f"  try:      textrec predict --endpoint {server.config.inference_url} LINE.png")
    print(f"  logs:     {server.log_dir}    stop: make serve-stop")
    return 0


def _cmd_deploy(a: argparse.Namespace) -> int:
    print(json.dumps(deploy_model(a.model, workdir=a.workdir).to_dict(), indent=2))
    return 0


def _cmd_stop(a: argparse.Namespace) -> int:
    state = Path(a.workdir) / "server.json"
    stopped = state.exists() and TorchServeProcess.from_workdir(a.workdir).stop()
    print("TorchServe has stopped" if stopped else f"no TorchServe running from {a.workdir}")
    return 0


_COMMANDS = {"serve": _cmd_serve, "deploy": _cmd_deploy, "stop": _cmd_stop}
