"""A client for a served textrec model: one image in, its answer out, surviving a restarting worker.

A prediction changes nothing on the server, so sending it again is safe. When a worker dies, TorchServe
fails the requests it held with 507 (or 5xx from a gateway) and restarts it within seconds; a rolling
Deployment drops a connection or two. The client retries those answers with exponential backoff, so a
batch of thousands of lines completes across such faults. A 4xx is the caller's mistake (a bad image, a
wrong token) and is raised at once, with the server's explanation.

Both runtimes: ``predict`` speaks TorchServe's ``/predictions/{model}`` (``make serve``), ``predict_v2``
the Open Inference Protocol's ``/v2/models/{model}/infer`` (``make serve RUNTIME=kserve``, KServe),
with the same retries and an answer of the same shape.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

# Server-side trouble worth another try: 507 is TorchServe's "worker died with the request".
RETRY_STATUSES = (500, 502, 503, 504, 507)


class EndpointError(RuntimeError):
    """A prediction the endpoint refused (4xx), or kept failing after every retry."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Endpoint:
    """``Endpoint("http://127.0.0.1:8080", token).predict(png_bytes)`` -> the server's JSON answer.

    ``retries`` further attempts follow a 5xx or a lost connection, waiting ``backoff_s``, then twice
    that, and so on (capped at ``max_backoff_s``). An answer cut off after its headers (the server died
    while writing it) is sent again the same way, up to ``retries`` times more.
    """

    url: str
    token: str | None = None
    retries: int = 5
    backoff_s: float = 0.25
    max_backoff_s: float = 8.0
    timeout_s: float = 60.0
    session: requests.Session = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        retry = Retry(total=self.retries, connect=self.retries, read=self.retries, status=self.retries,
                      other=0, allowed_methods=frozenset({"POST"}), status_forcelist=RETRY_STATUSES,
                      backoff_factor=self.backoff_s, backoff_max=self.max_backoff_s,
                      raise_on_status=False, respect_retry_after_header=True)
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        if self.token:
            self.session.headers["Authorization"] = f"Bearer {self.token}"

    def predictions_url(self, model: str) -> str:
        return f"{self.url.rstrip('/')}/predictions/{model}"

    def predict(self, image: bytes, model: str, *, name: str = "image") -> dict[str, Any]:
        """POST one image (PNG/JPEG bytes) to ``/predictions/{model}``; ``name`` labels errors."""
        url = self.predictions_url(model)
        return self._post(url, name, data=image, headers={"Content-Type": "application/octet-stream"})

    def predict_v2(self, image: bytes, model: str, *, name: str = "image") -> dict[str, Any]:
        """POST one image as an Open Inference Protocol v2 request; answered like :meth:`predict`:
        ``{"text", "confidence", "version"}``."""
        url = f"{self.url.rstrip('/')}/v2/models/{model}/infer"
        body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                            "data": [base64.b64encode(image).decode("ascii")]}]}
        answer = self._post(url, name, json=body)
        try:
            out = {o["name"]: o["data"][0] for o in answer["outputs"]}
            return {"text": out["text"], "confidence": out["confidence"], "version": answer.get("model_version")}
        except (KeyError, IndexError, TypeError) as e:
            raise EndpointError(f"{name}: {url} answered 200 but not an inference response with text and "
                                f"confidence ({e!r})") from e

    def _post(self, url: str, name: str, **kw: Any) -> Any:
        # urllib3's Retry covers failures up to the response's headers; a body cut off after them
        # surfaces from requests as ChunkedEncodingError and is retried here.
        for attempt in range(self.retries + 1):
            try:
                return self._post_once(url, name, **kw)
            except requests.exceptions.ChunkedEncodingError as e:
                if attempt == self.retries:
                    raise EndpointError(f"{name}: {url} cut its answer off, also after {self.retries} retries "
                                        f"({e})") from e
                time.sleep(min(self.backoff_s * 2 ** attempt, self.max_backoff_s))
        raise AssertionError("unreachable")

    def _post_once(self, url: str, name: str, **kw: Any) -> Any:
        try:
            r = self.session.post(url, timeout=self.timeout_s, **kw)
        except requests.exceptions.RetryError as e:
            raise EndpointError(f"{name}: {url} kept failing after {self.retries} retries ({e})") from e
        except requests.ConnectionError as e:
            raise EndpointError(f"{url}: cannot reach the endpoint after {self.retries} retries ({e})") from e
        except requests.Timeout as e:
            raise EndpointError(f"{name}: {url} did not answer within {self.timeout_s:g} s") from e
        if r.status_code != 200:
            tried = f" after {self.retries} retries" if r.status_code in RETRY_STATUSES else ""
            raise EndpointError(f"{name}: {url} answered {r.status_code}{tried}: {r.text[:300]}", r.status_code)
        try:
            return json.loads(r.content)
        except ValueError as e:
            raise EndpointError(f"{name}: {url} answered 200 but not JSON: {r.text[:200]!r}") from e

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
