"""TorchServe handler for textrec: a thin wrapper over :class:`textrec.recognizer.Recognizer`.

One request = one line image (or, in an archive built for the ``page`` task, one page), sent as any of:

- a raw PNG/JPEG body (``curl -T line.png`` or ``--data-binary`` with ``Content-Type: image/png``),
- multipart form data with the image in a ``data`` (or ``file`` / ``image``) field,
- JSON ``{"image": "<base64 PNG/JPEG>"}``.

Each answer is JSON ``{"text": ..., "confidence": ..., "version": ...}``. TorchServe hands the handler a
batch of requests; the good ones are recognised together in one forward pass, and a bad one (empty,
not an image, truncated, too large, unsupported mode) gets its own 4xx JSON error while the rest of
its batch is answered normally. The image decoding and the preprocessing stem are the Recognizer's,
the same code that evaluation and ``textrec predict`` run, so serving cannot drift from training.

Pages: the archive's ``model-config.yaml`` says ``handler: {task: page}`` (``serving.archive``
writes it). The same model file then answers whole pages through
:meth:`~textrec.recognizer.Recognizer.recognise_page` (segmentation, then the line model):
``{"text": ..., "lines": [{"box": [x0, y0, x1, y1], "text": ..., "confidence": ...}], "confidence": ...,
"version": ...}``, the page's confidence being its weakest line's. A page is read on its own, so one
that cannot be read fails alone; the pixel limit is ``max_page_pixels`` (413 above it), the rest of the
bad-input contract is the line one.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from pathlib import Path
from typing import Any

import torch
from ts.torch_handler.base_handler import BaseHandler

from serving.capture import Capturer
from serving.images import (  # noqa: F401 (DEFAULT_MAX_*: the archive's defaults, named here too)
    DEFAULT_FORMATS,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_PIXELS,
    MAGIC,
    RequestError,
    check_image,
    unknown_formats,
)
from textrec.recognizer import DEFAULT_MAX_PAGE_PIXELS, PageReading, Recognizer

logger = logging.getLogger(__name__)

SOURCE_FILE = "textrec-source.json"  # provenance written by serving/archive.py
PAYLOAD_FIELDS = ("data", "body", "file", "image")  # TorchServe: multipart field name, or "body"
USAGE = 'send a PNG/JPEG body, multipart form data with a "data" field, or JSON {"image": "<base64>"}'
TASKS = ("line", "page")  # what one request is; the archive's handler.task picks one
DEFAULT_TASK = "line"


class TextrecHandler(BaseHandler):
    """Batch line (or page) recognition; see the module docstring for the request forms."""

    def initialize(self, context: Any) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        model_file = context.manifest["model"].get("serializedFile", "model.pt")
        self.manifest = context.manifest
        gpu = context.system_properties.get("gpu_id")
        # TorchServe assigns each worker a GPU when it has any; otherwise the worker runs on the CPU.
        self.device = f"cuda:{gpu}" if gpu is not None and torch.cuda.is_available() else "cpu"
        self.recognizer = Recognizer.load(model_dir / model_file, device=self.device)
        options = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        self.max_image_bytes = int(options.get("max_image_bytes", DEFAULT_MAX_IMAGE_BYTES))
        self.max_pixels = int(options.get("max_pixels", DEFAULT_MAX_PIXELS))
        self.max_page_pixels = int(options.get("max_page_pixels", DEFAULT_MAX_PAGE_PIXELS))
        self.task = str(options.get("task", DEFAULT_TASK))
        if self.task not in TASKS:
            raise ValueError(f"model-config.yaml handler.task: unknown {self.task!r}; known: {list(TASKS)}")
        self.formats = tuple(str(f).upper() for f in options.get("formats", DEFAULT_FORMATS))
        unknown = unknown_formats(self.formats)
        if unknown:
            raise ValueError(f"model-config.yaml handler.formats: unknown {unknown}; known: {sorted(MAGIC)}")
        self.version = str(context.manifest["model"].get("modelVersion", ""))
        source = model_dir / SOURCE_FILE
        self.source = json.loads(source.read_text()) if source.exists() else {}
        # Opt-in capture of unsure lines for review (serving.capture); off unless configured.
        self.capture = Capturer.from_env(str(context.manifest["model"].get("modelName", "")), options.get("capture"))
        self._payloads: dict[int, bytes] = {}
        self.initialized = True
        logger.info("textrec %s model %s version %s loaded from %s on %s", self.task,
                    context.manifest["model"].get("modelName"), self.version,
                    self.source.get("model_uri", model_dir / model_file), self.device)

    # --- the three steps -------------------------------------------------------------------------

    def preprocess(self, data: list[dict]) -> list[Any]:
        """Requests -> stem tensors (1, H, W) (pages: grey page arrays), or a RequestError in the place
        of a bad request.

        The stem is the Recognizer's, i.e. the artifact's: the preprocessing the model was trained
        with. Whatever goes wrong with one request is kept to that request."""
        out: list[Any] = []
        self._payloads = {}
        for idx, row in enumerate(data):
            try:
                payload = self._payload(row, idx)
                image = self._decode(payload)
                self._payloads[idx] = payload
                out.append(self.recognizer.page_grey(image) if self.task == "page"
                           else self.recognizer.preprocess(image))
            except RequestError as e:
                out.append(e)
            except Exception as e:  # noqa: BLE001 (a bug must not fail the whole batch)
                logger.exception("request %d of the batch could not be prepared", idx)
                out.append(RequestError(500, "InternalError", f"could not prepare the image: {e}"))
        return out

    def inference(self, data: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Recognise every good image of the batch in one forward pass (pages: one page at a time, its
        lines in one pass); errors pass through in place."""
        if self.task == "page":
            return [x if isinstance(x, RequestError) else self._read_page(i, x) for i, x in enumerate(data)]
        good = [i for i, x in enumerate(data) if not isinstance(x, RequestError)]
        results = list(data)
        if good:
            recs = self.recognizer.recognise_tensors([data[i] for i in good], batch_size=len(good))
            for i, rec in zip(good, recs, strict=True):
                results[i] = rec
                if i in self._payloads:
                    self.capture.offer(self._payloads[i], rec, self.version)
        return results

    def postprocess(self, data: list[Any]) -> list[str]:
        """One JSON string per request; a bad request's status code is set on its own response."""
        out = []
        for idx, r in enumerate(data):
            self._set_content_type(idx)
            if isinstance(r, RequestError):
                self.context.set_response_status(r.status, r.kind, idx)
                out.append(r.to_json())
            else:
                out.append(json.dumps(self._answer(r)))
        return out

    def _read_page(self, idx: int, grey: Any) -> PageReading | RequestError:
        """One page, read alone: a page that breaks segmentation or the model fails by itself."""
        try:
            return self.recognizer.recognise_page(grey, name=f"page {idx}")
        except Exception as e:  # noqa: BLE001 (a bug must not fail the whole batch)
            logger.exception("page %d of the batch could not be read", idx)
            return RequestError(500, "InternalError", f"could not read the page: {e}")

    def _answer(self, r: Any) -> dict:
        head = r.to_json() if isinstance(r, PageReading) else {"text": r.text}
        return {**head, "confidence": round(float(r.confidence), 6), "version": self.version}

    # --- request parsing -------------------------------------------------------------------------

    def _payload(self, row: dict, idx: int) -> bytes:
        """The image bytes of one request, whatever form it came in."""
        if not isinstance(row, dict) or not row:
            raise RequestError(400, "EmptyRequest", f"empty request: {USAGE}")
        key = next((k for k in PAYLOAD_FIELDS if k in row), None)
        if key is None:
            raise RequestError(400, "MissingImage",
                               f"no image field in the request (got {sorted(row)}): {USAGE}")
        value = row[key]
        if isinstance(value, dict):
            return _from_json(value)
        if isinstance(value, list):
            raise RequestError(400, "BadJson", f"JSON body is a list: expected one object; {USAGE}")
        if isinstance(value, str):
            return _from_base64(value, "text body")
        if isinstance(value, (bytes, bytearray)):
            if "json" in self._content_type(idx, key):
                raise RequestError(400, "BadJson", "request says application/json but its body is not "
                                   'valid JSON; expected {"image": "<base64 PNG/JPEG>"}')
            return bytes(value)
        raise RequestError(400, "BadRequest", f"unexpected request field type {type(value).__name__}")

    def _decode(self, payload: bytes) -> Any:
        page = self.task == "page"
        return check_image(payload, max_image_bytes=self.max_image_bytes,
                           max_pixels=self.max_page_pixels if page else self.max_pixels, formats=self.formats,
                           name="page" if page else "image", usage=USAGE)

    def _content_type(self, idx: int, key: str) -> str:
        header = self.context.get_request_header(idx, key) if self.context else None
        if isinstance(header, dict):
            return str(header.get("content-type", "")).lower()
        return str(header or "").lower()

    def _set_content_type(self, idx: int) -> None:
        if hasattr(self.context, "set_response_content_type"):
            self.context.set_response_content_type(idx, "application/json")


def _from_json(obj: dict) -> bytes:
    if "image" not in obj:
        raise RequestError(400, "MissingImage", f'JSON body has no "image" key (keys: {sorted(obj)}); '
                           'expected {"image": "<base64 PNG/JPEG>"}')
    if not isinstance(obj["image"], str):
        raise RequestError(400, "BadJson", f'JSON "image" must be a base64 string, got {type(obj["image"]).__name__}')
    return _from_base64(obj["image"], 'JSON "image"')


def _from_base64(text: str, what: str) -> bytes:
    if text.startswith("data:") and "," in text:  # a data: URL, as browsers produce
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(400, "BadBase64", f"{what} is not valid base64 ({e}); {USAGE}") from e


# TorchServe's entry point. A handler module may define only one class unless it names a function
# to call, and RequestError is a second class, so the worker calls this function instead.
_service = TextrecHandler()


def handle(data: list[dict] | None, context: Any) -> list[str] | None:
    """Called once with ``data=None`` to initialise the worker, then once per batch."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
