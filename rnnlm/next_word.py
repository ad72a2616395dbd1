"""The next word: the distribution after each context, read side by side in one compiled
call; the likeliest candidates (interpolated with an n-gram model if asked); `rnnlm next`
from a model file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.loading import open_model, tokenize_like_training
from rnnlm.model import Model
from rnnlm.vocab import Vocabulary

if TYPE_CHECKING:
    from rnnlm.compiled import FunctionCache
    from rnnlm.interpolation import Interpolation


def next_distribution(
    model: Model, vocab: Vocabulary, contexts: Sequence[Sequence[str]]
) -> np.ndarray:
    """(B, V) float64 probabilities of the token after SENTENCE_START and each context.

    The contexts are read side by side in one compiled call, left-padded like a batch of
    sentences (see `rnnlm.batches`), so every context ends at the last step:

        x     S    the  cat  sat     mask  1 1 1 1
              .    .    S    the           0 0 1 1    (a padded step leaves the state as is)
    """
    if model.config.bidirectional:
        raise RnnlmError(
            "a bidirectional model sees the words after each one, so it cannot predict the "
            "next word: use `rnnlm fill`"
        )
    rows = [np.concatenate([[vocab.start_id], vocab.ids(tokens)]) for tokens in contexts]
    steps = max(len(row) for row in rows)
    x = np.zeros((steps, len(rows)), dtype=np.int32)  # (T, B)
    mask = np.zeros(x.shape, dtype=model.config.dtype)
    for column, row in enumerate(rows):
        x[steps - len(row) :, column] = row
        mask[steps - len(row) :, column] = 1
    log_p = model.next_log_probs(x, mask).astype(np.float64)
    # Renormalised in float64, so a float32 model's row sums to 1 to the last bit we can.
    return np.exp(log_p - np.logaddexp.reduce(log_p, axis=1, keepdims=True))


def next_words(
    model: Model,
    vocab: Vocabulary,
    contexts: Sequence[Sequence[str]],
    top_k: int = 10,
    ngram: Interpolation | None = None,
) -> list[list[tuple[str, float]]]:
    """For each context, the `top_k` likeliest next tokens with their probabilities, best
    first. SENTENCE_END (the sentence ends here) and the unknown token are candidates like
    any word; SENTENCE_START is not. Probabilities are the model's (interpolated with
    `ngram`, if given), not renormalised over the list, so they sum to at most 1."""
    if top_k < 1:
        raise RnnlmError("--top-k must be at least 1")
    probs = next_distribution(model, vocab, contexts)
    if ngram is not None:
        for row, tokens in enumerate(contexts):
            probs[row] = ngram.next_probs(vocab, vocab.ids(tokens), probs[row])
    probs[:, vocab.start_id] = -1.0  # never offered
    count = min(top_k, len(vocab) - 1)
    best = np.argsort(-probs, axis=1, kind="stable")[:, :count]
    return [
        [(vocab.words[i], float(probs[row, i])) for i in best[row]] for row in range(len(probs))
    ]


@dataclass
class NextWords:
    context: str
    tokens: list[str]  # the context as the model read it
    unknown: list[bool]  # per token: not in the vocabulary (read as the unknown token)
    candidates: list[tuple[str, float]]  # the likeliest next tokens, best first

    def to_dict(self) -> dict:
        return {
            "context": self.context,
            "tokens": self.tokens,
            "unknown": self.unknown,
            "next": [{"token": word, "prob": prob} for word, prob in self.candidates],
        }


def next_from(
    path: str | Path,
    context: str,
    top_k: int = 10,
    cache: FunctionCache | None = None,
    ngram: Interpolation | None = None,
) -> NextWords:
    """`rnnlm next`: the likeliest tokens after `context` (text, tokenized as the training
    corpus was) by the language model in `path`, interpolated with `ngram` if given."""
    model, ckpt = open_model(path, left_to_right="predict the next word", cache=cache)
    tokens = tokenize_like_training(ckpt.config.data, context)
    (candidates,) = next_words(model, ckpt.vocab, [tokens], top_k, ngram)
    unknown = ckpt.vocab.is_unknown(ckpt.vocab.ids(tokens)).tolist()
    return NextWords(context, tokens, unknown, candidates)
