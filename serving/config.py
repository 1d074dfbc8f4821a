"""TorchServe settings for textrec: the one source of every ``config.properties`` textrec runs.

The template next to this file (``serving/config.properties``) holds the hardened choices; the frozen
``ServeConfig`` holds what may differ between deployments (addresses, ports, paths, limits), each
default written once, here. Three places render it and none keeps a copy:

- the local server (``serving.torchserve``) writes it into its working folder;
- the serving image's entrypoint renders it when the container starts, with the image's layout
  (``--pod``) and ``TEXTREC_TS_*`` variables from its environment;
- the Helm chart sets only the ``TEXTREC_TS_*`` variables a release changes (empty values leave the
  defaults below).

    python -m serving.config --out FILE [--pod] [--model-store DIR] [--job-queue-size N] ...

Every flag is a ``ServeConfig`` field; an unset flag falls back to ``TEXTREC_TS_<FIELD>`` in the
environment (``TEXTREC_TS_JOB_QUEUE_SIZE=512``), then to the ``--pod`` layout, then to the default.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from string import Template
from typing import Any

from textrec.config import parse_text
from textrec.io import atomic_write

TEMPLATE = Path(__file__).with_name("config.properties")
ENV_PREFIX = "TEXTREC_TS_"

# Names the Python workers never see: they recognise images and need no credentials.
SECRET_ENV = r"AWS_.*|MLFLOW_TRACKING_.*|.*SECRET.*|.*PASSWORD.*|.*TOKEN.*|.*CREDENTIAL.*"

# The serving image (docker/serving.Dockerfile): the token gateway owns the public port 8080 and
# forwards to TorchServe's inference API on loopback 8085; Prometheus scrapes metrics on the pod's
# address. The entrypoint passes the model store.
POD = {"host": "127.0.0.1", "inference_port": 8085, "metrics_host": "0.0.0.0"}


@dataclass(frozen=True)
class ServeConfig:
    """Everything that varies between TorchServe deployments of textrec."""

    model_store: Path
    host: str = "127.0.0.1"  # inference (and metrics, unless metrics_host); management and gRPC: loopback
    metrics_host: str | None = None  # None = host
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    enable_model_api: bool = False  # only a local deploy step turns this on
    token_expiration_min: float = 720
    workers_per_model: int = 1
    job_queue_size: int = 256
    max_request_size: int = 16 * 1024 * 1024  # a 10 MiB image in base64 JSON still fits
    max_response_size: int = 1024 * 1024
    response_timeout_s: int = 60
    java_opts: str = "-Xmx768m"  # -XX:+ExitOnOutOfMemoryError is always added
    gpus: int | None = None  # number_of_gpu; None = TorchServe counts them

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_store", Path(self.model_store).absolute())
        ports = [self.inference_port, self.management_port, self.metrics_port,
                 self.grpc_inference_port, self.grpc_management_port]
        bad = [p for p in ports if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"ServeConfig: ports must be in 1..65535, got {bad}")
        if len(set(ports)) != len(ports):
            raise ValueError(f"ServeConfig: the five ports must differ, got {ports}")
        for name in ("host", "metrics_host"):
            value = getattr(self, name)
            if value is not None and (not value or any(c in value for c in " /:")):
                raise ValueError(f"ServeConfig: {name} must be a bare address like 127.0.0.1, got {value!r}")
        for name in ("workers_per_model", "job_queue_size", "max_request_size", "max_response_size",
                     "response_timeout_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeConfig: {name} must be at least 1, got {getattr(self, name)}")
        if not self.token_expiration_min > 0:
            raise ValueError(f"ServeConfig: token_expiration_min must be positive, got {self.token_expiration_min}")
        if self.gpus is not None and self.gpus < 0:
            raise ValueError(f"ServeConfig: gpus must be 0 or more, got {self.gpus}")
        for f in fields(self):  # one value, one line: nothing may smuggle in another setting
            if any(c in str(getattr(self, f.name)) for c in "\r\n"):
                raise ValueError(f"ServeConfig: {f.name} must be one line, got {getattr(self, f.name)!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **defaults: Any) -> ServeConfig:
        """A config from ``TEXTREC_TS_<FIELD>`` variables in ``env``; ``defaults`` fill the fields it
        leaves unset, then the dataclass defaults."""
        return _build({**defaults, **env_values(env)})

    @property
    def inference_url(self) -> str:
        return f"http://{_client_host(self.host)}:{self.inference_port}"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{_client_host(self.metrics_host or self.host)}:{self.metrics_port}"


def _client_host(host: str) -> str:
    # A server bound to every interface is still reached through loopback from this machine.
    return "127.0.0.1" if host == "0.0.0.0" else host


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(ServeConfig)
    return {f.name: hints[f.name] for f in fields(ServeConfig)}


def env_values(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``ServeConfig`` fields that ``TEXTREC_TS_<FIELD>`` variables in ``env`` set (empty = unset)."""
    values = {}
    for name, kind in _field_types().items():
        var = ENV_PREFIX + name.upper()
        if env.get(var, "").strip():
            values[name] = parse_text(env[var].strip(), kind, key=var)
    return values


def _build(values: dict[str, Any]) -> ServeConfig:
    if not str(values.get("model_store") or ""):
        raise ValueError(f"ServeConfig: no model store (pass --model-store or set {ENV_PREFIX}MODEL_STORE)")
    return ServeConfig(**values)


def allowed_urls(model_store: Path) -> str:
    """A regex that admits only files inside ``model_store`` (escaped twice: regex, then Java properties)."""
    pattern = "file://" + re.escape(str(model_store).rstrip("/")) + "/[^/]+"
    return pattern.replace("\\", "\\\\")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 720, not 720.0
    return str(value)


def render(cfg: ServeConfig, template: Path = TEMPLATE) -> str:
    """The text of ``config.properties`` for ``cfg``."""
    values = {f.name: _text(getattr(cfg, f.name)) for f in fields(cfg)}
    values["metrics_host"] = cfg.metrics_host or cfg.host
    values["allowed_urls"] = allowed_urls(cfg.model_store)
    values["blacklist_env_vars"] = SECRET_ENV
    try:
        text = Template(template.read_text()).substitute(values)
    except KeyError as e:
        raise ValueError(f"{template}: placeholder ${{{e.args[0]}}} has no ServeConfig value") from e
    if cfg.gpus is not None:  # left out, TorchServe uses every GPU it finds
        text += f"number_of_gpu={cfg.gpus}\n"
    return text


def write_config(cfg: ServeConfig, path: str | os.PathLike) -> Path:
    """Write ``config.properties`` for ``cfg`` atomically; returns the path."""
    return atomic_write(path, render(cfg))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.config", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="where to write config.properties")
    p.add_argument("--pod", action="store_true", help="the serving image's layout: " +
                   ", ".join(f"{k}={v}" for k, v in POD.items()))
    for name in _field_types():
        p.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="VALUE",
                       help=f"(env {ENV_PREFIX}{name.upper()}; default {getattr(ServeConfig, name, 'required')})")
    return p


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    a = _parser().parse_args(argv)
    types = _field_types()
    try:
        given = {name: parse_text(getattr(a, name), types[name], key="--" + name.replace("_", "-"))
                 for name in types if getattr(a, name) is not None}
        env_set = env_values(os.environ if env is None else env)
        cfg = _build({**(POD if a.pod else {}), **env_set, **given})  # flags, then env, then the layout
        path = write_config(cfg, a.out)
    except (ValueError, OSError) as e:
        print(f"serving.config: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
