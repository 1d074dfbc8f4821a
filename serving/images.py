"""The checks every serving runtime makes of one encoded image before the model sees it, with the
statuses it answers: empty (400), over the byte or pixel limit (413), a format not accepted by its
leading bytes or a mode the recogniser cannot convert (415), unreadable (400).

TorchServe's handler (``serving.handler``) and the Open Inference Protocol server (``serving.oip``)
both call :func:`check_image`, so the runtimes refuse the same inputs the same way; this module
imports neither runtime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from textrec.recognizer import ImageError, decode_image

DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 10_000_000
DEFAULT_FORMATS = ("PNG", "JPEG")
# Leading bytes of the formats a server can be told to accept. Anything else is refused before
# an image parser sees it: fewer decoders exposed to the network, fewer parser bugs reachable.
MAGIC = {"PNG": (b"\x89PNG\r\n\x1a\n",), "JPEG": (b"\xff\xd8\xff",), "TIFF": (b"II*\x00", b"MM\x00*"),
         "GIF": (b"GIF87a", b"GIF89a"), "BMP": (b"BM",)}


@dataclass
class RequestError(Exception):
    """A problem with one request: answered with ``status`` and a JSON body."""

    status: int
    kind: str
    message: str

    def to_json(self) -> str:
        return json.dumps({"code": self.status, "type": self.kind, "message": self.message})


def unknown_formats(formats: Sequence[str]) -> list[str]:
    return [f for f in formats if f not in MAGIC]


def check_image(payload: bytes, *, max_image_bytes: int, max_pixels: int, formats: Sequence[str],
                name: str = "image", usage: str = "") -> Any:
    """Decode one encoded image within the limits, or raise the :class:`RequestError` to answer
    (``name``: what the decoder's messages call it, e.g. ``"page"``)."""
    if not payload:
        raise RequestError(400, "EmptyImage", "the image is empty (0 bytes)" + (f": {usage}" if usage else ""))
    if len(payload) > max_image_bytes:
        raise RequestError(413, "ImageTooLarge", f"the image is {len(payload)} bytes; "
                           f"at most {max_image_bytes} bytes are accepted")
    found = next((f for f, sigs in MAGIC.items() if payload.startswith(sigs)), None)
    if found not in formats:
        what = f"a {found} image" if found else f"not a known image format (starts {payload[:8]!r})"
        raise RequestError(415, "UnsupportedImage", f"the body is {what}; accepted: {', '.join(formats)}")
    try:
        return decode_image(payload, name=name, max_pixels=max_pixels)
    except ImageError as e:
        status, kind = _classify(str(e))
        raise RequestError(status, kind, str(e)) from e


def _classify(message: str) -> tuple[int, str]:
    """HTTP status for a decode_image error: too big -> 413, not a usable format or mode -> 415."""
    m = message.lower()
    if "more than the limit" in m or "too many pixels" in m:
        return 413, "ImageTooLarge"
    if "unsupported" in m or "not an image" in m:
        return 415, "UnsupportedImage"
    return 400, "BadImage"
