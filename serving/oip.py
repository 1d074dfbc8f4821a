"""textrec over the Open Inference Protocol v2 (the REST data plane KServe, Triton and MLServer speak).

A second serving runtime next to TorchServe: the same :class:`~textrec.recognizer.Recognizer`, the same
image checks as the TorchServe handler (``serving.images``: size, format by its leading bytes, decoding limits, and the
status each failure gets), answered in the protocol's JSON:

    POST /v2/models/textrec-line/infer
    {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["<base64 PNG>", "<base64 PNG>"]}]}
    -> {"model_name": "textrec-line", "model_version": "4", "outputs": [
          {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["...", "..."]},
          {"name": "confidence", "datatype": "FP32", "shape": [2], "data": [0.93, 0.88]}]}

One element of the ``image`` tensor is one encoded line image, base64 in JSON (images are binary; the
``text`` output is plain UTF-8). All images of a request are read in one forward pass; requests are
recognised one at a time. Any bad part of a request fails the whole request with a 4xx and
``{"error": "..."}`` naming the element and the problem; the server stays up. Every endpoint needs
``Authorization: Bearer <key>`` (the key is in the working folder's ``key_file.json``, written fresh
at each start, readable by its owner only).

Also served: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2/models/{name}/ready``, ``/v2`` and
``/v2/models/{name}`` (metadata), each with an optional ``/versions/{version}``, and the model
repository extension's ``POST /v2/repository/index`` and ``POST /v2/repository/models/{name}/load``:
``load`` swaps to the model ``server.json`` names now (a deploy writes it, then calls ``load``); the
old version answers until the new one has loaded, and keeps serving if it fails to. Not served: the
binary tensor data extension, ``unload`` (the server has one model) and gRPC.

    python -m serving.oip --workdir DIR     # runs the server that DIR/server.json describes
                                            # (written by serving.oip_process.OipServerProcess)
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hmac
import json
import logging
import os
import secrets
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.capture import Capturer
from serving.config import ServeConfig
from serving.images import (
    DEFAULT_FORMATS,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_PIXELS,
    MAGIC,
    RequestError,
    check_image,
)
from textrec.io import atomic_path, write_json
from textrec.recognizer import Recognizer
from textrec.tracking import MODEL_NAME

logger = logging.getLogger(__name__)

INPUT = "image"
OUTPUTS = {"text": "BYTES", "confidence": "FP32"}
KEY_FILE = "key_file.json"  # the same name and shape TorchServe gives its tokens
STATE_FILE = "server.json"
PLATFORM = "pytorch_textrec"


class OipError(Exception):
    """A request the server refuses: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class OipConfig:
    """What may differ between deployments of the OIP server; each default is written once, here
    (image limits are the TorchServe handler's (``serving.images``), the body limit is TorchServe's ``max_request_size``)."""

    host: str = "127.0.0.1"
    port: int = 8090  # beside TorchServe's 8080-8082 on one machine
    model_name: str = MODEL_NAME
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    formats: tuple[str, ...] = DEFAULT_FORMATS
    max_images: int = 64  # per request: all of them go through the model in one pass
    max_request_bytes: int = ServeConfig.max_request_size
    threads: int = 1  # torch intra-op threads, as TorchServe's OMP_NUM_THREADS=1

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", tuple(str(f).upper() for f in self.formats))
        unknown = [f for f in self.formats if f not in MAGIC]
        if unknown:
            raise ValueError(f"OipConfig.formats: unknown {unknown}; known: {sorted(MAGIC)}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"OipConfig.port must be in 1..65535, got {self.port}")
        if not self.host or any(c in self.host for c in " /:"):
            raise ValueError(f"OipConfig.host must be a bare address like 127.0.0.1, got {self.host!r}")
        for name in ("max_image_bytes", "max_pixels", "max_images", "max_request_bytes", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"OipConfig.{name} must be at least 1, got {getattr(self, name)}")

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"

    @classmethod
    def from_dict(cls, data: dict) -> OipConfig:
        return cls(**{**data, "formats": tuple(data.get("formats", DEFAULT_FORMATS))})


@dataclass
class OipModel:
    """One recogniser served under one name and version."""

    recognizer: Recognizer
    name: str
    version: str
    config: OipConfig = field(default_factory=OipConfig)
    source: dict = field(default_factory=dict)
    capture: Capturer | None = None  # opt-in capture of unsure lines for review (serving.capture)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # one forward pass at a time: requests share one model and its threads
        self._served = (self.recognizer, self.version)  # what a request reads, as one pair; swap() sets it
        self._loading = threading.Lock()  # one reload at a time

    def metadata(self) -> dict:
        return {"name": self.name, "versions": [self.version], "platform": PLATFORM,
                "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": n, "datatype": d, "shape": [-1]} for n, d in OUTPUTS.items()]}

    def check_name(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise OipError(404, f"unknown model {name!r}; this server serves {self.name!r}")
        if version is not None and version != self.version:
            raise OipError(404, f"model {name!r} has no version {version!r}; it serves version {self.version!r}")

    def infer(self, request: Any) -> dict:
        """An inference request (parsed JSON) -> the inference response; raises OipError for bad input.

        The request is read by one version from start to end: a swap while it runs (``swap``) affects
        the next request, never half of this one."""
        wanted = requested_outputs(request)
        images = image_elements(request, self.config.max_images)
        recognizer, version = self._served  # one consistent pair, whatever a swap does meanwhile
        tensors = [self._prepare(recognizer, i, data) for i, data in enumerate(images)]
        with self._lock:
            recs = recognizer.recognise_tensors(tensors, batch_size=len(tensors))
        if self.capture is not None:
            for image, rec in zip(images, recs, strict=True):
                self.capture.offer(image, rec, version)
        values = {"text": [r.text for r in recs], "confidence": [round(float(r.confidence), 6) for r in recs]}
        answer: dict[str, Any] = {"model_name": self.name, "model_version": version,
                                  "outputs": [{"name": n, "datatype": OUTPUTS[n], "shape": [len(recs)],
                                               "data": values[n]} for n in wanted]}
        if isinstance(request.get("id"), str):
            answer["id"] = request["id"]
        return answer

    def swap(self, recognizer: Recognizer, version: str, source: dict) -> str:
        """Serve ``recognizer`` as ``version`` from the next request on; returns the version it replaced.
        Taken under the forward-pass lock, so no request sees one version's stem and another's model."""
        with self._lock:
            previous = self.version
            self.recognizer, self.version, self.source = recognizer, version, source
            self._served = (recognizer, version)  # one assignment: a reader sees the old pair or the new
        return previous

    def reload(self, workdir: Path) -> dict:
        """Load the model ``workdir/server.json`` names now and swap to it (``POST
        /v2/repository/models/{name}/load``). A model that does not load raises OipError 422 and the
        served one stays; the same version again changes nothing."""
        with self._loading:
            try:
                state = read_state(workdir)
            except ValueError as e:
                raise OipError(422, f"{e}; still serving version {self.version}") from e
            version = str(state["version"])
            if version == self.version:
                return {"name": self.name, "version": version, "changed": False}
            try:
                recognizer = Recognizer.load(state["model_path"], max_pixels=self.config.max_pixels)
            except Exception as e:  # whatever the artifact's fault, the old version keeps serving
                raise OipError(422, f"version {version} ({state['model_path']}) did not load: {e}; "
                               f"still serving version {self.version}") from e
            previous = self.swap(recognizer, version, state.get("source") or {})
        logger.info("textrec %s now version %s (was %s) from %s", self.name, version, previous,
                    self.source.get("model_uri", state["model_path"]))
        return {"name": self.name, "version": version, "previous": previous, "changed": True}

    def _prepare(self, recognizer: Recognizer, index: int, data: bytes) -> Any:
        where = f"input {INPUT!r} element {index}"
        try:
            return recognizer.preprocess(check_image(
                data, max_image_bytes=self.config.max_image_bytes, max_pixels=self.config.max_pixels,
                formats=self.config.formats))
        except RequestError as e:
            raise OipError(e.status, f"{where}: {e.message}") from e
        except Exception as e:  # noqa: BLE001 (answered as 500, the server stays up)
            logger.exception("%s could not be prepared", where)
            raise OipError(500, f"{where}: could not prepare the image: {e}") from e


# --- the request's parts --------------------------------------------------------------------------


def requested_outputs(request: Any) -> list[str]:
    """The outputs asked for (``"outputs": [{"name": ...}]``), by default all of them."""
    if not isinstance(request, dict):
        raise OipError(400, f"the request must be a JSON object with \"inputs\", got a {type(request).__name__}")
    asked = request.get("outputs")
    if asked is None:
        return list(OUTPUTS)
    if not isinstance(asked, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in asked):
        raise OipError(400, '"outputs" must be a list of objects with a "name"')
    names = [o["name"] for o in asked]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise OipError(400, f"unknown output tensor(s) {unknown}; this model has {list(OUTPUTS)}")
    return names or list(OUTPUTS)


def image_elements(request: dict, max_images: int) -> list[bytes]:
    """The encoded images of the request's one ``image`` tensor (BYTES, base64 strings)."""
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OipError(400, f'the request has no "inputs" list; send one tensor {INPUT!r} of datatype BYTES')
    if not all(isinstance(t, dict) for t in inputs):
        raise OipError(400, '"inputs" must be a list of tensor objects')
    names = [t.get("name") for t in inputs]
    unknown = [n for n in names if n != INPUT]
    if unknown or len(inputs) != 1:
        raise OipError(400, f"unknown or repeated input tensor(s) {unknown or names}; this model takes one "
                       f"input, {INPUT!r} (BYTES, one base64 image per element)")
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise OipError(400, f"input {INPUT!r} has datatype {tensor.get('datatype')!r}; expected 'BYTES' "
                       "(one base64-encoded PNG/JPEG per element)")
    data = _flatten(tensor.get("data"))
    if not data:
        raise OipError(400, f"input {INPUT!r} has no data: expected one base64 image per element")
    _check_shape(tensor.get("shape"), len(data))
    if len(data) > max_images:
        raise OipError(413, f"input {INPUT!r} has {len(data)} images; at most {max_images} per request")
    return [_from_base64(i, e) for i, e in enumerate(data)]


def _flatten(data: Any) -> list[Any]:
    """Tensor data in row-major order (the protocol allows nested lists)."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise OipError(400, f"input {INPUT!r}: \"data\" must be a list, got a {type(data).__name__}")
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _check_shape(shape: Any, n: int) -> None:
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise OipError(400, f"input {INPUT!r}: \"shape\" must be a list of sizes like [{n}], got {shape!r}")
    size = 1
    for d in shape:
        size *= d
    if size != n:
        raise OipError(400, f"input {INPUT!r}: shape {shape} holds {size} elements but data has {n}")


def _from_base64(index: int, element: Any) -> bytes:
    where = f"input {INPUT!r} element {index}"
    if not isinstance(element, str):
        raise OipError(400, f"{where} is a {type(element).__name__}; expected a base64 string of a PNG/JPEG")
    if element.startswith("data:") and "," in element:  # a data: URL, as browsers produce
        element = element.split(",", 1)[1]
    try:
        return base64.b64decode(element.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise OipError(400, f"{where} is not valid base64 ({e})") from e


# --- the HTTP application -------------------------------------------------------------------------


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (uvicorn sets no limit)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise OipError(413, f"the request body is {declared} bytes; at most {limit} are accepted")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise OipError(413, f"the request body is over {limit} bytes; at most {limit} are accepted")
    return bytes(body)


def parse_json(body: bytes) -> Any:
    if not body:
        raise OipError(400, "the request body is empty; expected an inference request JSON object")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OipError(400, f"the request body is not valid JSON ({e})") from e


def create_app(model: OipModel, token: str, key_file: Path | str = KEY_FILE,
               workdir: Path | None = None) -> FastAPI:
    """The OIP v2 REST endpoints for ``model``, every one behind ``Authorization: Bearer <token>``;
    with ``workdir`` also the model repository's ``load`` (a swap to what ``workdir/server.json``
    names now) and ``index``."""
    app = FastAPI(title="textrec OIP v2", docs_url=None, redoc_url=None, openapi_url=None)
    expected = f"Bearer {token}".encode()

    @app.middleware("http")
    async def require_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: no guessing the key byte by byte
            what = "a wrong" if given else "no"
            return _error(401, f"{what} token: send 'Authorization: Bearer <key>' with the inference key "
                          f"in {key_file}", {"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(OipError)
    async def oip_error(_: Request, e: OipError) -> JSONResponse:
        return _error(e.status, e.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return _error(e.status_code, f"{request.method} {request.url.path}: {e.detail}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return _error(500, f"internal error: {e}")

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}  # the model loads before the server listens

    @app.get("/v2")
    async def server_metadata() -> dict:
        from textrec import __version__

        return {"name": "textrec", "version": __version__,
                "extensions": ["model_repository"] if workdir is not None else []}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict:
        model.check_name(name, version)
        return model.metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> dict:
        model.check_name(name, version)
        return {"name": model.name, "version": model.version, "ready": True}

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None) -> dict:
        model.check_name(name, version)
        payload = parse_json(await read_body(request, model.config.max_request_bytes))
        return await run_in_threadpool(model.infer, payload)  # decoding and the model off the event loop

    if workdir is not None:
        @app.post("/v2/repository/index")
        async def repository_index() -> list[dict]:
            return [{"name": model.name, "version": model.version, "state": "READY"}]

        @app.post("/v2/repository/models/{name}/load")
        async def repository_load(name: str) -> dict:
            model.check_name(name)
            return await run_in_threadpool(model.reload, workdir)  # the old version answers meanwhile

    return app


# --- the server process ---------------------------------------------------------------------------


def write_key_file(path: Path, token: str) -> Path:
    """The key, readable by its owner only (a secret, unlike the project's other files)."""
    with atomic_path(path) as tmp:
        os.chmod(tmp, 0o600)
        tmp.write_text(json.dumps({"inference": {"key": token}}) + "\n")
    return path


def read_state(workdir: Path) -> dict:
    state = workdir / STATE_FILE
    try:
        data = json.loads(state.read_text())
        data["config"] = OipConfig.from_dict(data["config"])
        return data
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{state}: not an OIP server state file ({e}); start the server with "
                         "serving.oip_process.OipServerProcess") from e


def write_state(workdir: Path, config: OipConfig, model_path: Path, version: str, source: dict) -> Path:
    return write_json(workdir / STATE_FILE, {"config": asdict(config), "model_path": str(model_path),
                                              "version": version, "source": source})


def run(workdir: Path, token_file: Path | None = None) -> None:
    """Load the model ``workdir/server.json`` names, write a fresh key (or take the one in
    ``token_file``: every replica of a Deployment then accepts one client token), and serve until
    SIGTERM."""
    import torch
    import uvicorn

    state = read_state(workdir)
    config: OipConfig = state["config"]
    torch.set_num_threads(config.threads)
    recognizer = Recognizer.load(state["model_path"], max_pixels=config.max_pixels)
    model = OipModel(recognizer, config.model_name, str(state["version"]), config, state.get("source") or {},
                     capture=Capturer.from_env(config.model_name))
    token = secrets.token_urlsafe(32)
    if token_file is not None:
        token = token_file.read_text().strip()
        if not token:
            raise ValueError(f"the token file {token_file} is empty")
    key_file = write_key_file(workdir / KEY_FILE, token)
    logger.info("textrec %s version %s from %s on %s", model.name, model.version,
                model.source.get("model_uri", state["model_path"]), config.url)
    uvicorn.run(create_app(model, token, key_file, workdir), host=config.host, port=config.port, log_level="info",
                access_log=True, server_header=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serving.oip", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, required=True, help="the folder holding server.json")
    p.add_argument("--token-file", type=Path, default=None,
                   help="take the bearer token from this file (default: a fresh random one per start)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(a.workdir.absolute(), a.token_file)
    except (OSError, ValueError) as e:
        print(f"serving.oip: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
