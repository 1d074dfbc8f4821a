"""A client for a served textrec model: one image in, its answer out, surviving a restarting worker.

A prediction changes nothing on the server, so sending it again is safe. When a worker dies, TorchServe
fails the requests it held with 507 (or 5xx from a gateway) and restarts it within seconds; a rolling
Deployment drops a connection or two. The client retries those answers with exponential backoff, so a
batch of thousands of lines completes across such faults. A 4xx is the caller's mistake (a bad image, a
wrong token) and is raised at once, with the server's explanation.
"""

from __future__ import annotations

import json
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
    that, and so on (capped at ``max_backoff_s``).
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
        try:
            r = self.session.post(url, data=image, timeout=self.timeout_s,
                                  headers={"Content-Type": "application/octet-stream"})
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
