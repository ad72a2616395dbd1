"""The service's routes: bound and tokenize each request, batch it, answer in JSON.

The request bodies are in `schemas`, the loaded models in `served`, the refusals (every one
a 4xx with `{"error": "<one line>"}`) in `errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Mapping
from importlib import resources

import numpy as np
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse

from rnnlm import __version__
from rnnlm.generate import MIN_TEMPERATURE, corpus_perplexity, sample
from rnnlm.serve.batcher import Batcher
from rnnlm.serve.errors import BodyLimit, add_error_handlers
from rnnlm.serve.limits import Limits
from rnnlm.serve.schemas import NextRequest, SampleRequest, ScoreRequest
from rnnlm.serve.served import Served


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
    add_error_handlers(app)
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
