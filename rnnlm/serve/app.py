"""The service's routes: bound and tokenize each request, batch it, answer in JSON.

Every refusal is a 4xx with `{"error": "<one line>"}`: 400 malformed JSON, 404 unknown model
or path, 405 wrong method, 413 body too large, 415 not JSON, 422 wrong types or
out-of-bounds values, 429 too much waiting already. 503 only while shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rnnlm import __version__, checkpoint
from rnnlm.corpus import tokenize
from rnnlm.errors import RnnlmError
from rnnlm.generate import MIN_TEMPERATURE, corpus_perplexity, next_distribution, sample, score
from rnnlm.model import Model
from rnnlm.serve.batcher import Batcher, Busy, Closed
from rnnlm.serve.limits import Limits

log = logging.getLogger(__name__)


# -- requests ---------------------------------------------------------------------------------


class _Request(BaseModel):
    # Unknown fields and loose types ("true", "10") are errors, not guesses.
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(None, description="Which model (see /v1/info); default: the first.")


class ScoreRequest(_Request):
    sentences: list[str] = Field(
        ..., description="Sentences to score, each tokenized like the model's training corpus."
    )
    per_word: bool = Field(False, description="Also give every token's probability.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"sentences": ["the cat sat on the mat"]}]}
    )


class NextRequest(_Request):
    context: str = Field(..., description="Text so far; empty: the first word of a sentence.")
    top_k: int = Field(10, description="How many candidates.")

    model_config = ConfigDict(json_schema_extra={"examples": [{"context": "the cat sat on the"}]})


class SampleRequest(_Request):
    prompt: str = Field("", description="Words every sentence opens with.")
    n: int = Field(1, description="Sentences to draw.")
    max_length: int = Field(40, description="Stop a sentence after this many tokens.")
    min_length: int = Field(1, description="Never end a sentence before this many tokens.")
    temperature: float = Field(1.0, description="Below 1: safer choices; above 1: bolder.")
    top_k: int = Field(0, description="Draw only from the k likeliest tokens; 0 = all.")
    greedy: bool = Field(False, description="Always take the likeliest token.")
    seed: int | None = Field(None, description="Seed for reproducible samples.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"prompt": "the", "n": 3, "seed": 1}]}
    )


# -- the models -------------------------------------------------------------------------------


@dataclass
class Served:
    """One loaded model, its own thread for compiled calls, and its batchers."""

    name: str
    path: Path
    model: Model
    ckpt: checkpoint.Checkpoint
    executor: ThreadPoolExecutor
    batchers: dict[str, Batcher] = field(default_factory=dict)

    def tokens(self, text: str) -> list[str]:
        data = self.ckpt.config.data
        return tokenize(text, lowercase=data.lowercase, level=data.level)

    def joiner(self) -> str:
        return "" if self.ckpt.config.data.level == "char" else " "

    # These run in the model's thread, a batch at a time.

    def score_batch(self, items: Sequence[tuple[list[str], list[list[str]]]]) -> list:
        texts = [text for item_texts, _ in items for text in item_texts]
        tokens = [t for _, item_tokens in items for t in item_tokens]
        scores = score(self.model, self.ckpt.vocab, texts, tokens)
        results, start = [], 0
        for item_texts, _ in items:
            results.append(scores[start : start + len(item_texts)])
            start += len(item_texts)
        return results

    def next_batch(self, items: Sequence[tuple[list[str], int]]) -> list:
        vocab = self.ckpt.vocab
        probs = next_distribution(self.model, vocab, [tokens for tokens, _ in items])
        probs[:, vocab.start_id] = -1.0  # never offered (see generate.next_words)
        results = []
        for row, (_, top_k) in zip(probs, items, strict=True):
            best = np.argsort(-row, kind="stable")[: min(top_k, len(vocab) - 1)]
            results.append([(vocab.words[i], float(row[i])) for i in best])
        return results

    def describe(self) -> dict[str, Any]:
        config = self.ckpt.config
        return {
            "name": self.name,
            "file": str(self.path),
            "cell": config.model.cell,
            "layers": config.model.layers,
            "hidden_size": config.model.hidden_size,
            "embedding_size": config.model.embedding_size,
            "vocab_size": len(self.ckpt.vocab),
            "parameters": self.model.params.count(),
            "dtype": config.model.dtype,
            "level": config.data.level,
            "lowercase": config.data.lowercase,
            "end_token": self.ckpt.vocab.end,  # what /v1/next calls the end of a sentence
            "unknown_token": self.ckpt.vocab.unknown,  # and any word it does not know
        }


def load_models(
    paths: Mapping[str, str | Path], limits: Limits, cache: Any = None
) -> dict[str, Served]:
    """Each model file, loaded and its functions compiled (or found in `cache`), so the
    first request is as fast as the rest."""
    served = {}
    for name, path in paths.items():
        ckpt = checkpoint.load(path)
        if ckpt.config.model.bidirectional:
            raise RnnlmError(
                f"{path}: a bidirectional model cannot score or predict left to right; "
                "serve a left-to-right model"
            )
        model = Model(ckpt.config.model, params=ckpt.params, cache=cache, tables=ckpt.tables)
        # What every route needs, ready before the first request: scoring, next, sampling.
        for function in ("_log_probs_fn", "_next_fn", "_step_fn"):
            getattr(model, function)
        served[name] = Served(name, Path(path), model, ckpt, ThreadPoolExecutor(1, name))
    return served


# -- the application --------------------------------------------------------------------------


def create_app(served: Mapping[str, Served], limits: Limits = Limits()) -> FastAPI:  # noqa: B008
    """The ASGI application over already loaded models (the first is the default)."""
    if not served:
        raise ValueError("no models to serve")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for one in served.values():
            for kind, run in (("score", one.score_batch), ("next", one.next_batch)):
                one.batchers[kind] = Batcher(
                    run,
                    one.executor,
                    max_batch=limits.max_batch,
                    max_wait_s=limits.max_wait_ms / 1000,
                    max_queue=limits.max_queue,
                    name=f"{one.name}/{kind}",
                )
        yield
        # uvicorn has stopped taking connections and let the open requests finish.
        for one in served.values():
            for batcher in one.batchers.values():
                await batcher.close()
            one.executor.shutdown(wait=True)

    app = FastAPI(
        title="rnnlm",
        version=__version__,
        description=(
            "Recurrent neural network language models: score sentences, predict the next "
            f"word, sample text. Limits: {limits.to_dict()}."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _add_error_handlers(app)
    page = resources.files("rnnlm.serve").joinpath("static/index.html").read_text("utf-8")

    def pick(name: str | None) -> Served:
        if name is None:
            return next(iter(served.values()))
        if name not in served:
            raise HTTPException(404, f"no model named {name!r} (serving: {', '.join(served)})")
        return served[name]

    def bounded_tokens(one: Served, text: str, what: str, *, empty_ok: bool = False) -> list:
        if len(text) > limits.max_chars:
            raise HTTPException(
                422, f"{what} has {len(text)} characters; the limit is {limits.max_chars}"
            )
        tokens = one.tokens(text)
        if not tokens and not empty_ok:
            raise HTTPException(422, f"{what} has no words")
        if len(tokens) > limits.max_tokens:
            raise HTTPException(
                422, f"{what} has {len(tokens)} tokens; the limit is {limits.max_tokens}"
            )
        return tokens

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> str:
        return page

    @app.get("/v1/health")
    async def health() -> JSONResponse:
        """Up and ready: every model is loaded and compiled."""
        return JSONResponse({"status": "ok", "models": list(served)})

    @app.get("/v1/info")
    async def info() -> JSONResponse:
        """The models (the first is the default), the limits and the batching so far."""
        batches = {
            one.name: {
                kind: {"calls": b.batches, "requests": b.items} for kind, b in one.batchers.items()
            }
            for one in served.values()
        }
        models = [one.describe() for one in served.values()]
        limits_shown = limits.to_dict()
        return JSONResponse(
            {"version": __version__, "models": models, "limits": limits_shown, "batches": batches}
        )

    @app.post("/v1/score")
    async def score_sentences(request: ScoreRequest) -> JSONResponse:
        """Per sentence what `rnnlm score --json` gives: log-probability (natural log and
        log10), perplexity, token counts, and with `per_word` each token's probability."""
        one = pick(request.model)
        if not request.sentences:
            raise HTTPException(422, "sentences is empty: give at least one")
        if len(request.sentences) > limits.max_sentences:
            raise HTTPException(
                422,
                f"{len(request.sentences)} sentences; the limit is {limits.max_sentences} "
                "per request",
            )
        tokens = [
            bounded_tokens(one, text, f"sentence {i + 1}")
            for i, text in enumerate(request.sentences)
        ]
        item = (list(request.sentences), tokens)
        scores = await one.batchers["score"].submit(item, size=len(tokens))
        sentences = []
        for result in scores:
            entry = result.to_dict()
            if not request.per_word:
                del entry["tokens"]
            sentences.append(entry)
        response = {"model": one.name, "sentences": sentences}
        if len(scores) > 1:
            response["corpus_perplexity"] = corpus_perplexity(scores)
        return JSONResponse(response)

    @app.post("/v1/next")
    async def next_word(request: NextRequest) -> JSONResponse:
        """The likeliest next tokens after `context`, with the model's probabilities (over
        the whole vocabulary, so the list sums to at most 1). SENTENCE_END means the
        sentence ends here."""
        one = pick(request.model)
        if not 1 <= request.top_k <= limits.max_top_k:
            raise HTTPException(422, f"top_k must be in 1..{limits.max_top_k}")
        tokens = bounded_tokens(one, request.context, "context", empty_ok=True)
        candidates = await one.batchers["next"].submit((tokens, request.top_k))
        vocab = one.ckpt.vocab
        return JSONResponse(
            {
                "model": one.name,
                "context": request.context,
                "tokens": tokens,
                "unknown": vocab.is_unknown(vocab.ids(tokens)).tolist(),
                "next": [{"token": word, "prob": prob} for word, prob in candidates],
            }
        )

    @app.post("/v1/sample")
    async def sample_text(request: SampleRequest) -> JSONResponse:
        """Sentences drawn from the model, each token with the probability it had; the
        shape of `rnnlm sample --json`."""
        one = pick(request.model)
        checks = [
            (1 <= request.n <= limits.max_samples, f"n must be in 1..{limits.max_samples}"),
            (
                1 <= request.min_length <= request.max_length <= limits.max_sample_length,
                f"need 1 <= min_length <= max_length <= {limits.max_sample_length}",
            ),
            (
                math.isfinite(request.temperature) and request.temperature >= MIN_TEMPERATURE,
                f"temperature must be at least {MIN_TEMPERATURE} (for the likeliest token, greedy)",
            ),
            (request.top_k >= 0, "top_k must be 0 (all) or positive"),
            (request.seed is None or 0 <= request.seed < 2**63, "seed must be in 0..2**63-1"),
        ]
        for ok, message in checks:
            if not ok:
                raise HTTPException(422, message)
        prompt = bounded_tokens(one, request.prompt, "prompt", empty_ok=True)
        if len(prompt) >= request.max_length:
            raise HTTPException(422, "the prompt is already max_length tokens long")

        def draw() -> list:
            return sample(
                one.model,
                one.ckpt.vocab,
                np.random.default_rng(request.seed),
                request.n,
                max_length=request.max_length,
                min_length=request.min_length,
                temperature=request.temperature,
                top_k=request.top_k,
                greedy=request.greedy,
                prompt=prompt,
            )

        # Not batched with other requests (each has its own settings), but in the model's
        # thread like every compiled call.
        drawn = await asyncio.get_running_loop().run_in_executor(one.executor, draw)
        response = {
            "model": one.name,
            "prompt_tokens": len(prompt),  # every sample opens with them
            "samples": [
                {
                    "text": one.joiner().join(token for token, _ in sentence),
                    "tokens": [{"token": t, "prob": p} for t, p in sentence],
                }
                for sentence in drawn
            ],
        }
        return JSONResponse(response)

    return app


# -- errors and bounds ------------------------------------------------------------------------


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


def _add_error_handlers(app: FastAPI) -> None:
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
