"""Token gateway in front of TorchServe's inference API, and the pod's health answers.

Why it exists: TorchServe 0.12 invents its own random keys in each process (``key_file.json``) and
lets them expire after ``token_expiration_min``. Replicas behind one Service would each want a
different key, and no client could be handed one. So the public port checks one shared token (from
a Kubernetes Secret) and forwards to TorchServe on 127.0.0.1 with that pod's current inference key,
renewing it through TorchServe's token API when it expires. TorchServe keeps its own token
authorization on: nothing in the pod talks to it without a key.

    POST /predictions/<model>[/<version>]   token required; forwarded to TorchServe
    GET  /ping                              token required; forwarded to TorchServe
    GET  /ready   no token: 200 when the management API lists a READY worker for the model, else 503
    GET  /live    no token: 200 when TorchServe's /ping answers Healthy, else 503

Configuration (environment): TEXTREC_TOKEN_FILE or TEXTREC_TOKEN (the client token), TEXTREC_MODEL_NAME
(required; the entrypoint passes it on), GATEWAY_HOST, GATEWAY_PORT, TS_KEY_FILE, and TS_CONFIG_FILE:
the TorchServe config.properties the entrypoint rendered (serving/config.py). The gateway fronts that
TorchServe, so it takes TorchServe's addresses and limits from that file: ``inference_address``,
``management_address``, ``max_request_size`` (the largest body it accepts) and
``default_response_timeout`` (plus 5 s, so TorchServe's own timeout answers first). TS_INFERENCE_URL,
TS_MANAGEMENT_URL, GATEWAY_MAX_BODY (bytes) and GATEWAY_UPSTREAM_TIMEOUT (seconds) override them.
Standard library only.
"""

from __future__ import annotations

import hmac
import http.client
import json
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

PREDICT_PATH = re.compile(r"^/predictions/[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)?$")
# Headers passed on to TorchServe; everything else (cookies, auth, hop-by-hop headers) stays here.
FORWARDED_HEADERS = ("content-type", "accept", "x-request-id")
RENEW_MARGIN_S = 30.0  # renew a key this long before TorchServe says it expires
TIMEOUT_MARGIN_S = 5.0  # wait this much longer than TorchServe's response timeout


class ConfigError(RuntimeError):
    """The gateway's environment is incomplete; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    token: str
    model_name: str
    host: str
    port: int
    max_body: int
    inference: tuple[str, int]
    management: tuple[str, int]
    key_file: Path
    timeout_s: float

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Settings:
        token = _read_token(env)
        ts = _torchserve_config(env)

        def setting(var: str, key: str) -> str:
            value = env.get(var) or ts.get(key)
            if not value:
                raise ConfigError(f"{var} is not set and no TS_CONFIG_FILE gives TorchServe's {key}")
            return value

        if not env.get("TEXTREC_MODEL_NAME"):
            raise ConfigError("TEXTREC_MODEL_NAME (the TorchServe model to front) is not set")
        if env.get("GATEWAY_UPSTREAM_TIMEOUT"):
            timeout = float(env["GATEWAY_UPSTREAM_TIMEOUT"])
        else:
            timeout = float(setting("GATEWAY_UPSTREAM_TIMEOUT", "default_response_timeout")) + TIMEOUT_MARGIN_S
        return cls(
            token=token,
            model_name=env["TEXTREC_MODEL_NAME"],
            host=env.get("GATEWAY_HOST", "0.0.0.0"),
            port=int(env.get("GATEWAY_PORT", "8080")),
            max_body=int(setting("GATEWAY_MAX_BODY", "max_request_size")),
            inference=_host_port(setting("TS_INFERENCE_URL", "inference_address"), "TS_INFERENCE_URL"),
            management=_host_port(setting("TS_MANAGEMENT_URL", "management_address"), "TS_MANAGEMENT_URL"),
            key_file=Path(env.get("TS_KEY_FILE", "key_file.json")),
            timeout_s=timeout,
        )


def _torchserve_config(env: dict[str, str]) -> dict[str, str]:
    """``key=value`` lines of the config.properties named by TS_CONFIG_FILE (none: empty)."""
    if not env.get("TS_CONFIG_FILE"):
        return {}
    path = Path(env["TS_CONFIG_FILE"])
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"TS_CONFIG_FILE={path}: cannot read TorchServe's config: {e}") from e
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _read_token(env: dict[str, str]) -> str:
    if env.get("TEXTREC_TOKEN_FILE"):
        path = Path(env["TEXTREC_TOKEN_FILE"])
        try:
            token = path.read_text().strip()
        except OSError as e:
            raise ConfigError(f"TEXTREC_TOKEN_FILE={path}: cannot read the client token: {e}") from e
    else:
        token = env.get("TEXTREC_TOKEN", "").strip()
    if len(token) < 16:
        raise ConfigError("the client token (TEXTREC_TOKEN_FILE or TEXTREC_TOKEN) must be at least "
                          "16 characters")
    return token


def _host_port(url: str, name: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ConfigError(f"{name}={url!r}: expected http://HOST:PORT")
    return parts.hostname, parts.port


def _expired(entry: dict, now: float) -> bool:
    stamp = entry.get("expiration time")
    if not stamp:
        return False
    # TorchServe writes nanoseconds ("...T14:03:01.432358317Z"); keep microseconds for fromisoformat.
    stamp = re.sub(r"(\.\d{6})\d*", r"\1", stamp.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(stamp).timestamp() - RENEW_MARGIN_S <= now
    except ValueError:
        return False


class TorchServeKeys:
    """The pod's TorchServe keys, read from key_file.json and renewed through the token API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()

    def _load(self) -> dict:
        try:
            return json.loads(self.settings.key_file.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{self.settings.key_file}: TorchServe key file not readable yet: {e}") from e

    def get(self, kind: str, *, renew: bool = False) -> str:
        """The current ``inference`` or ``management`` key, renewed when expired or when asked."""
        with self._lock:
            keys = self._load()
            if renew or _expired(keys[kind], time.time()):
                self._renew(kind, keys["API"]["key"])
                keys = self._load()
            return keys[kind]["key"]

    def _renew(self, kind: str, api_key: str) -> None:
        # TorchServe rewrites key_file.json with a fresh key of this kind.
        status, _, body = _request(self.settings.management, "POST", f"/token?type={kind}", b"",
                                   {"Authorization": f"Bearer {api_key}"}, self.settings.timeout_s)
        if status != 200:
            raise ConfigError(f"TorchServe refused to renew the {kind} key ({status}): {body[:200]!r}")


def _request(addr: tuple[str, int], method: str, path: str, body: bytes, headers: dict[str, str],
             timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*addr, timeout=timeout_s)
    try:
        conn.request(method, path, body=body if method == "POST" else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _key_rejected(status: int, body: bytes) -> bool:
    return status in (400, 401) and b"InvalidKeyException" in body


class InFlight:
    """Counts requests being answered, so a stopping gateway waits for them and no longer."""

    def __init__(self) -> None:
        self._n = 0
        self._cond = threading.Condition()
        self.stopping = False

    def __enter__(self) -> None:
        with self._cond:
            self._n += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._n -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._n == 0, timeout_s)


class Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "textrec-gateway"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this long
    settings: Settings
    keys: TorchServeKeys
    inflight: InFlight

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm holds the body back
        # until the client's delayed ACK (~40 ms on Linux) on every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        with self.inflight:
            self._get()

    def do_POST(self) -> None:  # noqa: N802
        with self.inflight:
            self._post()

    def _get(self) -> None:
        if self.path == "/ready":
            return self._ready()
        if self.path == "/live":
            return self._live()
        if self.path == "/ping":
            if self._authorised():
                self._forward(b"")
            return
        self._json(404, {"code": 404, "error": f"no such path: {self.path}"})

    def _post(self) -> None:
        if not PREDICT_PATH.match(self.path):
            return self._json(404, {"code": 404, "error": f"no such path: {self.path}"})
        if not self._authorised():
            return
        body = self._read_body()
        if body is not None:
            self._forward(body)

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if token and hmac.compare_digest(token.encode(), self.settings.token.encode()):
            return True
        self._json(401, {"code": 401, "error": "missing or wrong token: send 'Authorization: Bearer <token>'"},
                   {"WWW-Authenticate": "Bearer"})
        return False

    def _read_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._json(411, {"code": 411, "error": "a Content-Length header is required"})
            return None
        if int(length) > self.settings.max_body:
            self.close_connection = True  # the unread body must not be parsed as the next request
            self._json(413, {"code": 413, "error": f"request body over {self.settings.max_body} bytes"})
            return None
        return self.rfile.read(int(length))

    def _forward(self, body: bytes) -> None:
        method = "POST" if self.command == "POST" else "GET"
        headers = {k: self.headers[k] for k in FORWARDED_HEADERS if self.headers.get(k)}
        try:
            for renew in (False, True):  # one retry with a renewed key if TorchServe rejects ours
                headers["Authorization"] = f"Bearer {self.keys.get('inference', renew=renew)}"
                status, up_headers, data = _request(self.settings.inference, method, self.path, body,
                                                    headers, self.settings.timeout_s)
                if not _key_rejected(status, data):
                    break
        except (OSError, http.client.HTTPException, ConfigError) as e:
            return self._json(503, {"code": 503, "error": f"model server unavailable: {e}"})
        self._send(status, data, up_headers.get("content-type", "application/octet-stream"))

    def _ready(self) -> None:
        path = f"/models/{self.settings.model_name}"
        try:
            key = self.keys.get("management")
            status, _, data = _request(self.settings.management, "GET", path, b"",
                                       {"Authorization": f"Bearer {key}"}, 5.0)
            models = json.loads(data) if status == 200 else []
        except (OSError, http.client.HTTPException, ConfigError, ValueError) as e:
            return self._json(503, {"ready": False, "error": str(e)})
        ready = sum(w.get("status") == "READY" for m in models for w in m.get("workers", []))
        self._json(200 if ready else 503, {"ready": bool(ready), "model": self.settings.model_name,
                                           "ready_workers": ready})

    def _live(self) -> None:
        try:
            key = self.keys.get("inference")
            status, _, data = _request(self.settings.inference, "GET", "/ping", b"",
                                       {"Authorization": f"Bearer {key}"}, 5.0)
            healthy = status == 200 and json.loads(data).get("status") == "Healthy"
        except (OSError, http.client.HTTPException, ConfigError, ValueError) as e:
            return self._json(503, {"live": False, "error": str(e)})
        self._json(200 if healthy else 503, {"live": healthy})

    def _json(self, status: int, obj: dict, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", extra)

    def _send(self, status: int, data: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if self.inflight.stopping:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        # Probes every few seconds would drown the log; keep requests that clients made.
        if self.path not in ("/ready", "/live"):
            sys.stderr.write(f"gateway: {self.address_string()} {format % args}\n")


def serve(settings: Settings) -> ThreadingHTTPServer:
    handler = type("BoundGateway", (Gateway,), {"settings": settings, "keys": TorchServeKeys(settings),
                                                "inflight": InFlight()})
    server = ThreadingHTTPServer((settings.host, settings.port), handler)
    server.daemon_threads = True  # idle keep-alive connections must not hold up the exit
    return server


def main() -> int:
    try:
        settings = Settings.from_env(dict(os.environ))
    except (ConfigError, ValueError) as e:
        print(f"gateway: {e}", file=sys.stderr)
        return 2
    server = serve(settings)
    inflight = server.RequestHandlerClass.inflight
    # SIGTERM: stop accepting, let the requests in flight finish (up to the upstream timeout), exit 0.
    def stop(*_: object) -> None:
        inflight.stopping = True
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"gateway: listening on {settings.host}:{settings.port} for model {settings.model_name}",
          file=sys.stderr)
    server.serve_forever()
    inflight.wait_idle(settings.timeout_s)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
