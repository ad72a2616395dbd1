"""Sampling, filling a blank and scoring on a trained model's compiled functions.

`sample_from`, `fill_in` and `score_texts` do what the commands of the same names do, from a
model file; `sample`, `fill` and `score` work on a model already built. The next word is
predicted in `next_word`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnlm.errors import RnnlmError, SettingError
from rnnlm.evaluate import BatchCallback, sentence_log_probs
from rnnlm.loading import open_model, tokenize_like_training
from rnnlm.model import Model
from rnnlm.terminal import TokenProgress
from rnnlm.vocab import Vocabulary

if TYPE_CHECKING:
    from rnnlm.compiled import FunctionCache
    from rnnlm.interpolation import Interpolation

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
    top_p: float = 1.0,
    greedy: bool = False,
    prompt: Sequence[str] = (),
) -> list[list[tuple[str, float]]]:
    """`n` sentences from SENTENCE_START on, drawn side by side as one batch.

    Each is a list of (token, probability the model gave it); a `prompt` primes the state and
    opens every sentence (its probabilities are the model's too). UNKNOWN_TOKEN and
    SENTENCE_START are never drawn, SENTENCE_END not before `min_length` words: the tutorial
    resamples until it gets another word, which is the same as drawing from the renormalised
    rest. `top_k` keeps the k likeliest words, `top_p` the nucleus (see `nucleus`) of what
    is left, `greedy` takes the likeliest. A sentence stops at `max_length` words.
    """
    if not 0 < top_p <= 1:
        raise SettingError("top-p is a probability mass in (0, 1]:", {"top_p": None})
    if not MIN_TEMPERATURE <= temperature < math.inf:
        raise SettingError(
            f"the temperature must be a number of at least {MIN_TEMPERATURE}; for the "
            "likeliest word, use",
            {"greedy": None},
        )
    check_lengths(prompt, min_length, max_length)
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
        probs = nucleus(softmax(logits), top_p) if top_p < 1 else softmax(logits)
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


def check_lengths(prompt: Sequence[str], min_length: int, max_length: int) -> None:
    """Refuse sentence-length bounds that no sentence can meet (sampling and beam search)."""
    if not 1 <= min_length <= max_length:
        raise SettingError(
            "a sentence's minimum length must be at least 1 and at most its maximum:",
            {"min_length": None, "max_length": None},
        )
    if len(prompt) >= max_length:
        raise SettingError(
            "the prompt is already as long as a sentence may be:", {"max_length": None}
        )


def nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Rows of `probs` (B, V) cut to their nucleus and renormalised: the likeliest tokens,
    fewest first, whose mass reaches `top_p` (Holtzman et al. 2020); ties go to lower ids."""
    order = np.argsort(-probs, axis=1, kind="stable")
    ranked = np.take_along_axis(probs, order, axis=1)
    before = np.cumsum(ranked, axis=1) - ranked  # the mass of the likelier tokens
    keep = np.zeros(probs.shape, dtype=bool)
    np.put_along_axis(keep, order, before < top_p, axis=1)
    cut = np.where(keep, probs, 0.0)
    return cut / cut.sum(axis=1, keepdims=True)


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
    progress: BatchCallback | None = None,
    ngram: Interpolation | None = None,
) -> list[SentenceScore]:
    """Score tokenized sentences (without markers): each alone, or in stream mode as one text;
    interpolated with an n-gram model when `ngram` is given."""
    for text, tokens in zip(texts, sentences, strict=True):
        if not tokens:
            raise RnnlmError(f"nothing to score: {text!r} has no words")
    encoded = [vocab.encode(tokens) for tokens in sentences]
    log_probs = sentence_log_probs(model, encoded, mode, progress)
    if ngram is not None:
        log_probs = ngram.apply(vocab, encoded, log_probs)
    return [
        SentenceScore(text, [*tokens, vocab.end], lp.tolist(), vocab.is_unknown(ids[1:]).tolist())
        for text, tokens, ids, lp in zip(texts, sentences, encoded, log_probs, strict=True)
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


def split_blank(text: str, tokenize) -> list[str]:
    """The tokens of `text` with its blanks kept whole (the tokenizer would split `___`)."""
    tokens: list[str] = []
    for i, part in enumerate(text.split(BLANK)):
        if i:
            tokens.append(BLANK)
        tokens += tokenize(part)
    return tokens


# -- from a model file: what the commands do -------------------------------------------------


@dataclass
class Sampled:
    text: str  # the tokens joined as the training text was (no spaces between characters)
    tokens: list[tuple[str, float]]  # each with the probability the model gave it

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": [{"token": t, "prob": p} for t, p in self.tokens]}


def sample_from(
    path: str | Path,
    n: int,
    prompt: str = "",
    seed: int | None = None,
    cache: FunctionCache | None = None,
    **options,
) -> list[Sampled]:
    """`n` sentences from the language model in `path`; `prompt` is text, tokenized as the
    training corpus was; `options` are `sample`'s; `cache` as `open_model` takes it."""
    model, ckpt = open_model(path, left_to_right="sample left to right", cache=cache)
    data = ckpt.config.data
    tokens = tokenize_like_training(data, prompt)
    drawn = sample(model, ckpt.vocab, np.random.default_rng(seed), n, prompt=tokens, **options)
    joiner = "" if data.level == "char" else " "
    return [Sampled(joiner.join(token for token, _ in s), s) for s in drawn]


def fill_in(
    path: str | Path, text: str, top_k: int = 10, cache: FunctionCache | None = None
) -> list[tuple[str, float]]:
    """The likeliest words for the blank in `text`, by the model in `path`."""
    model, ckpt = open_model(path, cache=cache)
    tokens = split_blank(text, lambda part: tokenize_like_training(ckpt.config.data, part))
    return fill(model, ckpt.vocab, tokens, top_k)


@dataclass
class Scores:
    sentences: list[SentenceScore]
    unknown: str  # the token unknown words are predicted as

    @property
    def corpus_perplexity(self) -> float:
        return corpus_perplexity(self.sentences)


def score_texts(
    path: str | Path,
    texts: Sequence[str],
    mode: str = "sentence",
    show_progress: bool = False,
    cache: FunctionCache | None = None,
    ngram: Interpolation | None = None,
) -> Scores:
    """Each text scored as one sentence by the language model in `path` (interpolated with
    `ngram`, if given), tokenized as the training corpus was; a bar of tokens on stderr when
    `show_progress`."""
    model, ckpt = open_model(path, left_to_right="score sentences", cache=cache)
    tokens = [tokenize_like_training(ckpt.config.data, text) for text in texts]
    with TokenProgress(sum(len(t) + 1 for t in tokens), show_progress) as progress:
        scores = score(model, ckpt.vocab, texts, tokens, mode, progress=progress, ngram=ngram)
    return Scores(scores, ckpt.vocab.unknown)
