"""TorchServe settings for textrec: one frozen dataclass rendered into ``config.properties``.

The template next to this file (``serving/config.properties``) holds the hardened choices; this module
only fills in what differs between a laptop and a cluster (address, ports, paths, limits).

    python -m serving.config --model-store /models --host 0.0.0.0 --out /etc/textrec/config.properties
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from string import Template

TEMPLATE = Path(__file__).with_name("config.properties")
MODEL_NAME = "textrec-line"

# Names the Python workers never see: they recognise images and need no credentials.
SECRET_ENV = r"AWS_.*|MLFLOW_TRACKING_.*|.*SECRET.*|.*PASSWORD.*|.*TOKEN.*|.*CREDENTIAL.*"


@dataclass(frozen=True)
class ServeConfig:
    """Everything that varies between TorchServe deployments of textrec."""

    model_store: Path
    host: str = "127.0.0.1"  # inference + metrics; management and gRPC are always loopback
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    enable_model_api: bool = False  # only a local deploy step turns this on
    token_expiration_min: int = 720
    workers_per_model: int = 1
    job_queue_size: int = 256
    max_request_size: int = 16 * 1024 * 1024  # a 10 MiB image in base64 JSON still fits
    max_response_size: int = 1024 * 1024
    response_timeout_s: int = 60
    java_heap_mb: int = 768

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_store", Path(self.model_store).absolute())
        ports = [self.inference_port, self.management_port, self.metrics_port,
                 self.grpc_inference_port, self.grpc_management_port]
        bad = [p for p in ports if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"ServeConfig: ports must be in 1..65535, got {bad}")
        if len(set(ports)) != len(ports):
            raise ValueError(f"ServeConfig: the five ports must differ, got {ports}")
        if not self.host or any(c in self.host for c in " /:"):
            raise ValueError(f"ServeConfig: host must be a bare address like 127.0.0.1, got {self.host!r}")
        for name in ("workers_per_model", "job_queue_size", "max_request_size", "max_response_size",
                     "response_timeout_s", "token_expiration_min", "java_heap_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeConfig: {name} must be at least 1, got {getattr(self, name)}")

    @property
    def inference_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.inference_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.metrics_port}"


def _client_host(host: str) -> str:
    # A server bound to every interface is still reached through loopback from this machine.
    return "127.0.0.1" if host == "0.0.0.0" else host


def allowed_urls(model_store: Path) -> str:
    """A regex that admits only files inside ``model_store`` (escaped twice: regex, then Java properties)."""
    pattern = "file://" + re.escape(str(model_store).rstrip("/")) + "/[^/]+"
    return pattern.replace("\\", "\\\\")


def render(cfg: ServeConfig, template: Path = TEMPLATE) -> str:
    """The text of ``config.properties`` for ``cfg``."""
    values = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    values["model_store"] = str(cfg.model_store)
    values["enable_model_api"] = str(cfg.enable_model_api).lower()
    values["allowed_urls"] = allowed_urls(cfg.model_store)
    values["blacklist_env_vars"] = SECRET_ENV
    try:
        return Template(template.read_text()).substitute(values)
    except KeyError as e:
        raise ValueError(f"{template}: placeholder ${{{e.args[0]}}} has no ServeConfig value") from e


def write_config(cfg: ServeConfig, path: str | os.PathLike) -> Path:
    """Write ``config.properties`` for ``cfg`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(cfg)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.config", description=__doc__.splitlines()[0])
    p.add_argument("--model-store", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1", help="inference + metrics address (0.0.0.0 in a pod)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--enable-model-api", action="store_true")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    cfg = ServeConfig(model_store=a.model_store, host=a.host, workers_per_model=a.workers,
                      enable_model_api=a.enable_model_api)
    print(f"wrote {write_config(cfg, a.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
