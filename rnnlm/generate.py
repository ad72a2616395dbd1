"""Sampling and scoring on a trained model's compiled functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from rnnlm.errors import RnnlmError
from rnnlm.evaluate import Progress, sentence_log_probs
from rnnlm.model import Model
from rnnlm.vocab import Vocabulary

MIN_TEMPERATURE = 1e-3  # below it, logits / T overflows float64


def sample(
    model: Model,
    vocab: Vocabulary,
    rng: np.random.Generator,
    n: int = 5,
    *,
    max_length: int = 40,
    min_length: int = 1,
    temperature: float = 1.0,
    top_k: int = 0,
    greedy: bool = False,
    prompt: Sequence[str] = (),
) -> list[list[tuple[str, float]]]:
    """`n` sentences from SENTENCE_START on, drawn side by side as one batch.

    Each is a list of (token, probability the model gave it); a `prompt` primes the state and
    opens every sentence (its probabilities are the model's too). UNKNOWN_TOKEN and
    SENTENCE_START are never drawn, SENTENCE_END not before `min_length` words: the tutorial
    resamples until it gets another word, which is the same as drawing from the renormalised
    rest. `top_k` keeps the k likeliest words, `greedy` takes the likeliest. A sentence stops
    at `max_length` words.
    """
    if not MIN_TEMPERATURE <= temperature < math.inf:
        raise RnnlmError(
            f"--temperature must be at least {MIN_TEMPERATURE} (for the likeliest word, --greedy)"
        )
    if not 1 <= min_length <= max_length:
        raise RnnlmError("need 1 <= --min-length <= --max-length")
    if len(prompt) >= max_length:
        raise RnnlmError("the prompt is already --max-length words long")
    states = model.initial_states(n)
    sentences: list[list[tuple[str, float]]] = [[] for _ in range(n)]
    forced = [vocab.start_id, *vocab.ids(prompt)]
    done = np.zeros(n, dtype=bool)
    for position in range(max_length + 1):
        if position < len(forced):
            ids = np.full(n, forced[position], dtype=np.int32)
        logits, states = model.step(ids, states)
        model_probs = softmax(logits.astype(np.float64))
        if position + 1 < len(forced):  # still reading the prompt
            for row in range(n):
                word = forced[position + 1]
                sentences[row].append((prompt[position], float(model_probs[row, word])))
            continue
        if position == max_length:
            break
        logits = logits.astype(np.float64) / temperature
        logits[:, [vocab.unknown_id, vocab.start_id]] = -np.inf
        if position < min_length:
            logits[:, vocab.end_id] = -np.inf
        if top_k:
            kth = -np.sort(-logits, axis=1)[:, min(top_k, logits.shape[1]) - 1 : top_k]
            logits[logits < kth] = -np.inf
        probs = softmax(logits)
        for row in np.flatnonzero(~done):
            if greedy:
                word = int(np.argmax(probs[row]))
            else:
                word = int(rng.choice(len(vocab), p=probs[row]))
            ids[row] = word
            if word == vocab.end_id:
                done[row] = True
            else:
                sentences[row].append((vocab.words[word], float(model_probs[row, word])))
        if done.all():
            break
    return sentences


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64; rows may hold -inf (excluded words)."""
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class SentenceScore:
    """Log-probabilities of one sentence's tokens: its words, then SENTENCE_END."""

    text: str
    tokens: list[str]
    log_probs: list[float]  # natural log, one per token
    unknown: list[bool] = field(default_factory=list)

    @property
    def total(self) -> float:
        return math.fsum(self.log_probs)

    @property
    def perplexity(self) -> float:
        return math.exp(-self.total / len(self.log_probs))

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "log_prob": self.total,
            "log10_prob": self.total / math.log(10),
            "tokens": [
                {"token": t, "prob": math.exp(lp), "log_prob": lp, "unknown": unk}
                for t, lp, unk in zip(self.tokens, self.log_probs, self.unknown, strict=True)
            ],
            "n_tokens": len(self.tokens),
            "n_unknown": sum(self.unknown),
            "perplexity": self.perplexity,
        }


def score(
    model: Model,
    vocab: Vocabulary,
    texts: Sequence[str],
    sentences: Sequence[Sequence[str]],
    mode: str = "sentence",
    progress: Progress | None = None,
) -> list[SentenceScore]:
    """Score tokenized sentences (without markers): each alone, or in stream mode as one text."""
    for text, tokens in zip(texts, sentences, strict=True):
        if not tokens:
            raise RnnlmError(f"nothing to score: {text!r} has no words")
    encoded = [vocab.encode(tokens) for tokens in sentences]
    log_probs = sentence_log_probs(model, encoded, mode, progress)
    return [
        SentenceScore(
            text, [*tokens, vocab.end], lp.tolist(), [t not in vocab for t in tokens] + [False]
        )
        for text, tokens, lp in zip(texts, sentences, log_probs, strict=True)
    ]


def corpus_perplexity(scores: Sequence[SentenceScore]) -> float:
    """exp of the mean negative log-probability over every scored token."""
    total = math.fsum(lp for s in scores for lp in s.log_probs)
    return math.exp(-total / sum(len(s.log_probs) for s in scores))


BLANK = "___"


def fill(
    model: Model, vocab: Vocabulary, tokens: Sequence[str], top_k: int = 10
) -> list[tuple[str, float]]:
    """The `top_k` likeliest words for the one blank (`___`) in `tokens`, with probabilities.

    Meant for a bidirectional model, which reads the words on both sides of the blank.
    Markers and UNKNOWN_TOKEN are left out of the list (their probabilities are not).
    """
    blanks = [i for i, token in enumerate(tokens) if token == BLANK]
    if len(blanks) != 1:
        raise RnnlmError(f"put exactly one {BLANK} in the sentence (found {len(blanks)})")
    ids = vocab.encode([vocab.unknown if t == BLANK else t for t in tokens])
    x, y = ids[:-1, None], ids[1:, None]
    log_p = model.distribution(x, y, np.ones(x.shape))[blanks[0], 0].astype(np.float64)
    probs = np.exp(log_p - np.logaddexp.reduce(log_p))
    skip = {vocab.start_id, vocab.end_id, vocab.unknown_id}
    order = [i for i in np.argsort(-probs) if i not in skip][:top_k]
    return [(vocab.words[i], float(probs[i])) for i in order]
