"""``python -m serving serve|deploy|stop``: the local TorchServe (or the OIP v2 server) from the command line.

    python -m serving serve [--model PATH|models:/textrec-line@champion]   # what `make serve` runs
    python -m serving serve --runtime kserve   # the Open Inference Protocol v2 server (serving.oip)
    python -m serving deploy [--model URI]     # roll the running server to the champion if it moved
    python -m serving stop                     # what `make serve-stop` runs
    python -m serving stop --runtime kserve
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serving.champion import CHAMPION_URI
from serving.deploy import deploy_model, serve
from serving.torchserve import DEFAULT_WORKDIR, ServeError, TorchServeProcess
from textrec.progress import quiet_when_piped
from textrec.tracking import MODEL_NAME

RUNTIMES = ("torchserve", "kserve")  # kserve: the Open Inference Protocol v2 server, serving.oip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving", description="Local TorchServe for textrec.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="start TorchServe with the champion (or --model) and wait until it answers")
    s.add_argument("--model", default=None, help="model.pt, or models:/NAME@ALIAS (default: the champion)")
    s.add_argument("--version", default=None, help="served version label for a local model.pt")
    s.add_argument("--batch-size", type=int, default=None,
                   help="TorchServe batch size (default 8; 1 turns batching off, see docs/benchmarks.md)")
    d = sub.add_parser("deploy", help="roll the running servers to the champion if it moved")
    d.add_argument("--model", default=CHAMPION_URI)
    d.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help="roll only this one (default: every server running from WORKDIR)")
    t = sub.add_parser("stop", help="torchserve --stop")
    for command in (s, d, t):
        command.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    for command in (s, t):
        command.add_argument("--runtime", choices=RUNTIMES, default="torchserve",
                             help="torchserve, or kserve: the Open Inference Protocol v2 server "
                                  "(the protocol of KServe; in WORKDIR/oip, port 8090)")
    return p


def main(argv: list[str] | None = None) -> int:
    quiet_when_piped()  # `make serve` downloads a model: one line, not a bar per file
    a = _parser().parse_args(argv)
    try:
        return _COMMANDS[a.command](a)
    except (ServeError, OSError, ValueError, RuntimeError) as e:
        print(f"serving: error: {e}", file=sys.stderr)
        return 1


def _cmd_serve(a: argparse.Namespace) -> int:
    from serving.archive import ArchiveOptions

    if a.runtime == "kserve":
        return _serve_oip(a)
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


def _serve_oip(a: argparse.Namespace) -> int:
    from serving.oip_process import serve_oip

    server = serve_oip(a.model, workdir=Path(a.workdir) / "oip", version=a.version)
    answer = server.wait_ready()
    name = server.config.model_name
    print(f"the OIP v2 server is serving {name} version {answer['version']}")
    print(f"  infer:    POST {server.url}/v2/models/{name}/infer")
    print(f"  ready:    {server.url}/v2/health/ready")
    print(f"  token:    'inference' key in {server.key_file}")
    print(f"  logs:     {server.log_file}    stop: python -m serving stop --runtime kserve")
    return 0


def _cmd_deploy(a: argparse.Namespace) -> int:
    print(json.dumps(deploy_model(a.model, workdir=a.workdir, runtime=a.runtime).to_dict(), indent=2))
    return 0


def _cmd_stop(a: argparse.Namespace) -> int:
    if a.runtime == "kserve":
        from serving.oip_process import OipServerProcess

        oip = Path(a.workdir) / "oip"
        stopped = (oip / "server.json").exists() and OipServerProcess.from_workdir(oip).stop()
        print("the OIP server has stopped" if stopped else f"no OIP server running from {oip}")
        return 0
    state = Path(a.workdir) / "server.json"
    stopped = state.exists() and TorchServeProcess.from_workdir(a.workdir).stop()
    print("TorchServe has stopped" if stopped else f"no TorchServe running from {a.workdir}")
    return 0


_COMMANDS = {"serve": _cmd_serve, "deploy": _cmd_deploy, "stop": _cmd_stop}
