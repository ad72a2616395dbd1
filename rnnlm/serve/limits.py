"""What one request may ask of the service, and how requests are batched."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Bounds on every request; anything beyond them is a 4xx naming the bound."""

    max_body_bytes: int = 1_000_000  # a request body, as sent
    max_sentences: int = 100  # sentences in one /v1/score request
    max_chars: int = 2_000  # characters of one sentence, context or prompt
    max_tokens: int = 200  # tokens of one sentence, context or prompt, after tokenizing
    max_top_k: int = 1_000  # /v1/next candidates
    max_samples: int = 20  # /v1/sample sentences per request
    max_sample_length: int = 100  # /v1/sample tokens per sentence
    # Batching: a compiled call takes up to `max_batch` sentences (or contexts); when the
    # model is idle, the first request waits up to `max_wait_ms` for others to join it.
    max_batch: int = 256
    max_wait_ms: float = 2.0
    max_queue: int = 10_000  # sentences waiting per model; beyond it, 429 (try again)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value >= (0 if field.name == "max_wait_ms" else 1):
                raise ValueError(f"{field.name} must be positive (got {value})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
