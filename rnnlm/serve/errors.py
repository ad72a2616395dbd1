"""How the service refuses: every refusal is a 4xx with `{"error": "<one line>"}`.

400 malformed JSON, 404 unknown model or path, 405 wrong method, 413 body too large (the
`BodyLimit` middleware, before any route), 415 not JSON, 422 wrong types or out-of-bounds
values, 429 too much waiting already. 503 only while shutting down.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rnnlm.errors import RnnlmError
from rnnlm.serve.batcher import Busy, Closed

log = logging.getLogger(__name__)


def _one_line(request: Request, error: RequestValidationError) -> tuple[int, str]:
    """(status, message) for the first problem pydantic found."""
    problems = error.errors()
    first = problems[0] if problems else {}
    if first.get("type") == "json_invalid":
        return 400, f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
    if not where:
        kind = request.headers.get("content-type", "")
        if "json" not in kind:
            return 415, f"send a JSON object with Content-Type: application/json (not {kind!r})"
        return 422, "the body must be a JSON object"
    message = {"extra_forbidden": "unknown field", "missing": "required"}.get(
        first.get("type"), first.get("msg", "invalid")
    )
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return 422, " ".join(f"{where}: {message}{more}".split())[:300]


def add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(*_one_line(request, exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RnnlmError)
    async def refused(request: Request, exc: RnnlmError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        return error(429, str(exc), {"Retry-After": "1"})

    @app.exception_handler(Closed)
    async def closed(request: Request, exc: Closed) -> JSONResponse:
        return error(503, str(exc))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error(500, f"internal error: {type(exc).__name__}")


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets a 413 before any route sees it.

    A body up to DRAIN times the limit is read to its end first (and dropped), so a client
    still sending it gets the 413 rather than a broken connection; a bigger one is cut off.
    """

    DRAIN = 16

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (
            not declared.isdigit() or int(declared) > self.DRAIN * self.max_bytes
        ):
            await self._refuse(scope, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_bytes:
                chunks.append(chunk)
            more = message.get("more_body", False)
            if size > self.DRAIN * self.max_bytes:
                break
        if size > self.max_bytes:
            await self._refuse(scope, send)
            return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, send: Any) -> None:
        response = JSONResponse(
            {"error": f"request body over {self.max_bytes} bytes"}, status_code=413
        )
        await response(scope, None, send)
