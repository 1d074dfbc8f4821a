"""The review web app: one captured line at a time, its image, the model's reading (unsure characters
marked) and a field to correct it; every decision is saved the moment it is made.

    textrec review --queue s3://bucket/review/prod --store reviewed/ [--port 8095] [--token-file F]

It listens on 127.0.0.1 only and wants a token: open the URL it prints (``/?token=...`` sets a cookie),
or send ``Authorization: Bearer <token>``. Keys: Enter saves the text (accepted when unchanged,
corrected otherwise), Ctrl+S skips the line, Ctrl+U marks it unreadable.

JSON API (the page uses it; so can a script):

    GET  /api/next                    the next undecided item, or {"done": true}, with the progress
    GET  /api/items/{id}              one item (no image), 404 for an unknown id
    GET  /api/items/{id}/image        its image
    POST /api/items/{id}/decision     {"action": "save" | "skip" | "unreadable", "text": "..."}
    GET  /api/progress                {"reviewed": n, "total": m, "accepted": ..., "corrected": ...}

Bad input gets a JSON error naming the fault: 404 an unknown item, 413 a text longer than
``MAX_TEXT`` characters, 422 characters outside the model's charset (named) or an unknown action.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from textrec.charset import DEFAULT_CHARSET, Charset
from textrec.review.queue import CaptureQueue, QueueError, item_image
from textrec.review.store import ReviewStore

logger = logging.getLogger(__name__)

MAX_TEXT = 500  # characters in one reviewed line
MAX_BODY = 64 * 1024
LOW_CONFIDENCE = 0.6  # a character below this is marked on the page
COOKIE = "textrec_review"
ACTIONS = {"save": None, "skip": "skipped", "unreadable": "unreadable"}


class ReviewError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Review:
    """The queue being reviewed and the store the decisions go to."""

    def __init__(self, queue: CaptureQueue, store: ReviewStore, *, source: str = "",
                 charset: Charset = DEFAULT_CHARSET) -> None:
        self.queue, self.store, self.source, self.charset = queue, store, source, charset
        self._lock = threading.Lock()  # one decision at a time: the store is rebuilt after each
        self.store.rebuild()  # a decision whose rebuild was cut short is in the store now
        self.refresh()

    def refresh(self) -> None:
        self.ids = [e.id for e in self.queue.entries()]
        self.known = set(self.ids)

    def progress(self) -> dict[str, int]:
        decided = self.store.decisions()
        counts = {a: 0 for a in ("accepted", "corrected", "unreadable", "skipped")}
        for i in self.known:
            if i in decided:
                counts[decided[i].action] += 1
        return {"reviewed": sum(counts.values()), "total": len(self.ids), **counts}

    def item(self, item_id: str) -> dict[str, Any]:
        if item_id not in self.known:
            self.refresh()  # captured since the app started?
        if item_id not in self.known:
            raise ReviewError(404, f"no item {item_id!r} in the queue {self.queue.uri}")
        try:
            return self.queue.get(item_id)
        except KeyError as e:
            raise ReviewError(404, f"item {item_id!r} is no longer in the queue {self.queue.uri}") from e

    def public(self, item: dict[str, Any]) -> dict[str, Any]:
        """What the page shows of an item: everything but the image bytes."""
        keys = ("id", "time", "text", "confidence", "char_confidences", "model", "model_version", "deployment")
        return {k: item.get(k) for k in keys} | {"source": self.source_of(item)}

    def source_of(self, item: dict[str, Any]) -> str:
        return self.source or str(item.get("deployment") or item.get("model") or "review")

    def next(self) -> dict[str, Any]:
        decided = self.store.decisions()
        pending = [i for i in self.ids if i not in decided]
        if not pending:
            self.refresh()
            pending = [i for i in self.ids if i not in decided]
        if not pending:
            return {"done": True, "progress": self.progress()}
        return {"done": False, "item": self.public(self.item(pending[0])), "progress": self.progress()}

    def check_text(self, text: Any) -> str:
        if not isinstance(text, str):
            raise ReviewError(422, f'"text" must be a string, got {type(text).__name__}')
        if len(text) > MAX_TEXT:
            raise ReviewError(413, f"the text has {len(text)} characters; at most {MAX_TEXT} are accepted")
        text = self.charset.normalise(text)
        bad = self.charset.unknown(text)
        if bad:
            names = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in bad)
            raise ReviewError(422, f"characters outside the model's charset: {names}; the model can write only "
                              f"{self.charset.chars!r}")
        if not text:
            raise ReviewError(422, "empty text: to drop a line, mark it unreadable (or skip it)")
        return text

    def decide(self, item_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ReviewError(422, 'the body must be a JSON object {"action": ..., "text": ...}')
        item = self.item(item_id)
        action = body.get("action")
        if action not in ACTIONS:
            raise ReviewError(422, f"unknown action {action!r}; expected one of {list(ACTIONS)}")
        text = ""
        kind = ACTIONS[action]
        if kind is None:
            text = self.check_text(body.get("text"))
            kind = "accepted" if text == item.get("text") else "corrected"
        with self._lock:
            decision = self.store.decide(item, kind, text, self.source_of(item), item_image(item))
        return {"decision": decision.to_dict(), "progress": self.progress()}


def create_app(review: Review, token: str) -> FastAPI:
    app = FastAPI(title="textrec review", docs_url=None, redoc_url=None, openapi_url=None)
    expected = token.encode()

    def authorised(request: Request) -> bool:
        given = request.headers.get("authorization", "")
        given = given[7:] if given.startswith("Bearer ") else request.cookies.get(COOKIE, "")
        return hmac.compare_digest(given.encode(), expected)

    @app.middleware("http")
    async def require_token(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path == "/" and request.query_params.get("token"):
            if not hmac.compare_digest(request.query_params["token"].encode(), expected):
                return JSONResponse({"error": "a wrong token"}, status_code=401)
            redirect = RedirectResponse("/", status_code=303)  # the token leaves the address bar
            redirect.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return redirect
        if not authorised(request):
            return JSONResponse({"error": "no or a wrong token: open the URL `textrec review` printed "
                                 "(/?token=...) or send 'Authorization: Bearer <token>'"}, status_code=401)
        return await call_next(request)

    @app.exception_handler(ReviewError)
    async def review_error(_: Request, e: ReviewError) -> JSONResponse:
        return JSONResponse({"error": e.message}, status_code=e.status)

    @app.exception_handler(QueueError)
    async def queue_error(_: Request, e: QueueError) -> JSONResponse:
        return JSONResponse({"error": str(e)}, status_code=502)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {e}"}, status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.replace("__LOW__", str(LOW_CONFIDENCE)).replace("__MAX__", str(MAX_TEXT)).replace(
            "__QUEUE__", html.escape(review.queue.uri))

    @app.get("/api/progress")
    def progress() -> dict:
        return review.progress()

    @app.get("/api/next")
    def next_item() -> dict:
        return review.next()

    @app.get("/api/items/{item_id}")
    def get_item(item_id: str) -> dict:
        return review.public(review.item(item_id))

    @app.get("/api/items/{item_id}/image")
    def get_image(item_id: str) -> Response:
        item = review.item(item_id)
        return Response(item_image(item), media_type=f"image/{item.get('image_type', 'png')}",
                        headers={"Cache-Control": "no-store"})

    @app.post("/api/items/{item_id}/decision")
    async def decide(item_id: str, request: Request) -> dict:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise ReviewError(413, f"the request body is over {MAX_BODY} bytes")
        try:
            parsed = json.loads(body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ReviewError(422, f"the body is not JSON ({e})") from e
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(review.decide, item_id, parsed)

    return app


def read_token(token_file: Path | None) -> str:
    if token_file is None:
        return secrets.token_urlsafe(24)
    token = token_file.read_text().strip()
    if not token:
        raise ValueError(f"the token file {token_file} is empty")
    return token


def serve(queue: str, store: str | Path, *, port: int = 8095, token_file: Path | None = None,
          source: str = "") -> None:
    """Run the review app on 127.0.0.1:``port`` until interrupted."""
    import uvicorn

    token = read_token(token_file)
    review = Review(CaptureQueue(queue), ReviewStore(store), source=source)
    p = review.progress()
    print(f"reviewing {queue} ({p['reviewed']} of {p['total']} done) into {store}", flush=True)
    print(f"open http://127.0.0.1:{port}/?token={token}", flush=True)
    uvicorn.run(create_app(review, token), host="127.0.0.1", port=port, log_level="warning", server_header=False)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>textrec review</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
 header { display: flex; justify-content: space-between; align-items: baseline; }
 #progress { font-weight: 600; }
 #line { border: 1px solid #ccc; padding: 1em; background: #fafafa; margin: 1em 0; text-align: center; }
 #line img { max-width: 100%; image-rendering: pixelated; min-height: 48px; }
 #reading { font-family: ui-monospace, monospace; font-size: 1.4em; margin: .5em 0; white-space: pre; }
 #reading .low { background: #ffd24d; border-bottom: 2px solid #d33; }
 #text { font-family: ui-monospace, monospace; font-size: 1.4em; width: 100%; padding: .3em; box-sizing: border-box; }
 #error { color: #b00; min-height: 1.5em; }
 .meta, .keys { color: #666; font-size: .9em; }
 kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 .3em; background: #eee; }
</style></head>
<body>
<header><h1>textrec review</h1><span id="progress">…</span></header>
<div class="meta">queue __QUEUE__</div>
<div id="line"><img id="image" alt="line image"><div id="reading"></div>
 <div class="meta" id="about"></div></div>
<input id="text" autocomplete="off" spellcheck="false" maxlength="__MAX__" aria-label="reviewed text">
<div id="error" role="alert"></div>
<p class="keys"><kbd>Enter</kbd> save (accept or correct) &nbsp; <kbd>Ctrl</kbd>+<kbd>S</kbd> skip &nbsp;
 <kbd>Ctrl</kbd>+<kbd>U</kbd> unreadable &nbsp; characters below __LOW__ confidence are marked</p>
<script>
let current = null;
const $ = (id) => document.getElementById(id);
function showProgress(p) {
  $("progress").textContent = `${p.reviewed} of ${p.total} reviewed`;
  $("progress").dataset.reviewed = p.reviewed; $("progress").dataset.total = p.total;
}
function showReading(item) {
  const box = $("reading"); box.textContent = "";
  const conf = item.char_confidences;
  [...item.text].forEach((c, i) => {
    const s = document.createElement("span"); s.textContent = c;
    const low = conf ? conf[i] < __LOW__ : item.confidence < __LOW__;
    if (low) { s.className = "low"; s.title = conf ? `confidence ${conf[i]}` : "line confidence " + item.confidence; }
    box.appendChild(s);
  });
}
async function load() {
  const r = await fetch("/api/next"); const body = await r.json();
  if (!r.ok) { $("error").textContent = body.error; return; }
  showProgress(body.progress);
  if (body.done) { current = null; $("image").removeAttribute("src"); $("reading").textContent = "";
    $("about").textContent = "nothing left to review"; $("text").value = ""; $("text").disabled = true; return; }
  current = body.item;
  $("image").src = `/api/items/${current.id}/image`;
  showReading(current);
  $("about").textContent = `${current.model} v${current.model_version} · confidence ${current.confidence} · ` +
                           `${current.time} · source ${current.source}`;
  $("text").disabled = false; $("text").value = current.text; $("text").focus(); $("error").textContent = "";
}
async function decide(action) {
  if (!current) return;
  const r = await fetch(`/api/items/${current.id}/decision`, {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({action, text: $("text").value})});
  const body = await r.json();
  if (!r.ok) { $("error").textContent = body.error; return; }
  await load();
}
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.ctrlKey) { e.preventDefault(); decide("save"); }
  else if (e.ctrlKey && (e.key === "s" || e.key === "S")) { e.preventDefault(); decide("skip"); }
  else if (e.ctrlKey && (e.key === "u" || e.key === "U")) { e.preventDefault(); decide("unreadable"); }
});
load();
</script></body></html>
"""
