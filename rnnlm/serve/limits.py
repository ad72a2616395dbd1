"""What one request may ask of the service, and how requests are batched."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


def _limit(default: float, text: str) -> float:
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class Limits:
    """Bounds on every request; anything beyond them is a 4xx naming the bound. Each field
    is also a `rnnlm serve` option (max_tokens: --max-tokens)."""

    max_body_bytes: int = _limit(1_000_000, "Bytes in one request body.")
    max_sentences: int = _limit(100, "Sentences in one /v1/score request.")
    max_chars: int = _limit(2_000, "Characters in one sentence, context or prompt.")
    max_tokens: int = _limit(200, "Tokens in one sentence, context or prompt.")
    max_top_k: int = _limit(1_000, "Candidates one /v1/next request may ask for.")
    max_samples: int = _limit(20, "Sentences one /v1/sample request may draw.")
    max_sample_length: int = _limit(100, "Tokens in one sampled sentence.")
    # Batching: a compiled call takes up to `max_batch` sentences (or contexts); when the
    # model is idle, the first request waits up to `max_wait_ms` for others to join it.
    max_batch: int = _limit(256, "Sentences (or contexts) in one compiled call.")
    max_wait_ms: float = _limit(
        2.0, "When a model is idle, how long a request waits for others to share its call."
    )
    max_queue: int = _limit(10_000, "Sentences waiting per model; beyond it, 429 (retry).")

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if not value >= (0 if item.name == "max_wait_ms" else 1):
                raise ValueError(f"{item.name} must be positive (got {value})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
