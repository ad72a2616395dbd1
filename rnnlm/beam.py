"""Beam search: the likeliest completions of a prompt, hypotheses stepped side by side.

A completion is the words after the prompt, then SENTENCE_END; its log-probability is
ln p(words, SENTENCE_END | SENTENCE_START, prompt) under the model, unrenormalised. As in
`generate.sample`, the unknown token and SENTENCE_START are never proposed, SENTENCE_END
not before `min_length` words and always at `max_length` (both count the prompt's words).

Ranking: by log-probability, or (`normalize`) by log-probability per predicted token, which
stops favouring short sentences. Without normalisation the search stops as soon as no
hypothesis still growing can beat the completions in hand (a longer one only loses
probability), so a beam as wide as every prefix finds exactly what exhaustive search finds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnlm.errors import SettingError
from rnnlm.generate import check_lengths
from rnnlm.loading import open_model, tokenize_like_training
from rnnlm.vocab import Vocabulary

if TYPE_CHECKING:
    from rnnlm.compiled import FunctionCache
    from rnnlm.model import Model


@dataclass
class Completion:
    words: list[str]  # after the prompt; SENTENCE_END not included
    log_probs: list[float]  # ln p of each word, then of SENTENCE_END
    text: str = ""  # the prompt and the words, joined as the training text was

    @property
    def log_prob(self) -> float:
        return math.fsum(self.log_probs)

    @property
    def per_token(self) -> float:
        """The log-probability per predicted token (words + SENTENCE_END): what
        length-normalised ranking sorts by."""
        return self.log_prob / len(self.log_probs)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "words": self.words,
            "log_prob": self.log_prob,
            "log_prob_per_token": self.per_token,
            "tokens": len(self.log_probs),
        }


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise ln softmax in float64."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def beam_search(
    model: Model,
    vocab: Vocabulary,
    beams: int = 5,
    *,
    prompt: Sequence[str] = (),
    max_length: int = 40,
    min_length: int = 1,
    normalize: bool = False,
) -> list[Completion]:
    """The `beams` likeliest completions of `prompt` found with a beam of that width, best
    first (see the module docstring for what is scored and how)."""
    if beams < 1:
        raise SettingError("the beam must hold at least 1 hypothesis:", {"beam": None})
    check_lengths(prompt, min_length, max_length)
    states = model.initial_states(1)
    for token_id in [vocab.start_id, *vocab.ids(prompt)]:
        logits, states = model.step(np.array([token_id], dtype=np.int32), states)
    # The hypotheses still growing: their ids, per-token log-probs and summed log-probs.
    alive: list[list[int]] = [[]]
    alive_log_probs: list[list[float]] = [[]]
    totals = np.zeros(1)
    finished: list[tuple[float, list[int], list[float]]] = []
    never = [vocab.unknown_id, vocab.start_id]
    for words in range(len(prompt), max_length + 1):
        step = log_softmax(logits)  # (B, V)
        step[:, never] = -np.inf
        for row in range(len(alive)):  # ending here
            if words >= min_length:
                end = float(step[row, vocab.end_id])
                finished.append((totals[row] + end, alive[row], [*alive_log_probs[row], end]))
        if words == max_length:
            break
        step[:, vocab.end_id] = -np.inf
        scores = totals[:, None] + step  # (B, V): each hypothesis, grown by each token
        flat = np.argsort(-scores, axis=None, kind="stable")[:beams]
        flat = flat[np.isfinite(scores.ravel()[flat])]
        if not normalize and len(finished) >= beams:
            kept = sorted(score for score, _, _ in finished)[-beams]
            flat = flat[scores.ravel()[flat] > kept]  # cannot overtake: the rest only shrinks
        if not len(flat):
            break
        rows, ids = np.unravel_index(flat, scores.shape)
        alive = [[*alive[r], int(i)] for r, i in zip(rows, ids, strict=True)]
        alive_log_probs = [
            [*alive_log_probs[r], float(step[r, i])] for r, i in zip(rows, ids, strict=True)
        ]
        totals = scores[rows, ids]
        states = [np.asarray(state)[rows] for state in states]
        logits, states = model.step(ids.astype(np.int32), states)
    if normalize:
        finished.sort(key=lambda item: -item[0] / len(item[2]))
    else:
        finished.sort(key=lambda item: -item[0])
    return [
        Completion([vocab.words[i] for i in ids], log_probs)
        for _, ids, log_probs in finished[:beams]
    ]


def beam_from(
    path: str | Path,
    beams: int,
    prompt: str = "",
    cache: FunctionCache | None = None,
    **options,
) -> list[Completion]:
    """`rnnlm sample --beam N`: the likeliest completions of `prompt` (text, tokenized as the
    training corpus was) by the language model in `path`; `options` are `beam_search`'s."""
    model, ckpt = open_model(path, left_to_right="search left to right", cache=cache)
    data = ckpt.config.data
    tokens = tokenize_like_training(data, prompt)
    joiner = "" if data.level == "char" else " "
    found = beam_search(model, ckpt.vocab, beams, prompt=tokens, **options)
    for completion in found:
        completion.text = joiner.join([*tokens, *completion.words])
    return found
