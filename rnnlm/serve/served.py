"""The models a service holds: each loaded once, with its own thread for compiled calls and
its batchers, and the batch functions that thread runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm import checkpoint
from rnnlm.corpus import tokenize
from rnnlm.errors import RnnlmError
from rnnlm.generate import score
from rnnlm.model import Model
from rnnlm.next_word import next_distribution
from rnnlm.serve.batcher import Batcher
from rnnlm.serve.limits import Limits


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
        probs[:, vocab.start_id] = -1.0  # never offered (see next_word.next_words)
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
