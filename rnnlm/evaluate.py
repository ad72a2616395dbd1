"""Corpus evaluation: per-sentence log-probabilities, perplexity with its conventions, bootstrap.

Conventions: every word and each SENTENCE_END is predicted and counted; SENTENCE_START is
given, never predicted. Unknown words are predicted as the unknown token and counted;
the perplexity without them leaves their predictions out of both the sum and the count.
Sentence mode resets the state at every sentence; stream mode reads the corpus as one
sequence (SENTENCE_END then the next sentence's first word), carrying the state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rnnlm import checkpoint
from rnnlm.batches import length_batches, stream_batches, stream_ids
from rnnlm.errors import RnnlmError
from rnnlm.loading import open_model, read_like_training
from rnnlm.terminal import TokenProgress
from rnnlm.vocab import Vocabulary

if TYPE_CHECKING:
    from rnnlm.compiled import FunctionCache
    from rnnlm.interpolation import Interpolation, WeightFit

BATCH_SIZE = 64
STREAM_BPTT = 100

# progress(tokens, nll): called after each batch with its predicted tokens and their summed NLL.
BatchCallback = Callable[[int, float], None]


def sentence_log_probs(
    model,
    sentences: Sequence[np.ndarray],
    mode: str = "sentence",
    progress: BatchCallback | None = None,
) -> list[np.ndarray]:
    """For each encoded sentence, ln p of its predicted tokens (words, SENTENCE_END), float64.

    `progress(tokens, nll)` hears about each batch as it is done.
    """
    dtype = model.config.dtype
    if mode == "stream":
        # One column, so no token is dropped and each maps back to its sentence.
        ids = stream_ids(sentences)[:, None]
        states = model.initial_states(1)
        pieces = []
        for x, y, mask in stream_batches(ids, STREAM_BPTT, dtype):
            log_p, states = model.log_probs_and_states(x, y, mask, states)
            pieces.append(log_p[:, 0].astype(np.float64))
            if progress:
                progress(int(mask.sum()), -float(pieces[-1].sum()))
        flat = np.concatenate(pieces)
        ends = np.cumsum([len(s) - 1 for s in sentences])
        return np.split(flat, ends[:-1])
    result: list[np.ndarray] = [np.empty(0)] * len(sentences)
    for rows, x, y, mask in length_batches(sentences, BATCH_SIZE, dtype):
        log_p = model.log_probs(x, y, mask).astype(np.float64)
        for column, index in enumerate(rows):
            result[index] = log_p[-(len(sentences[index]) - 1) :, column]
        if progress:
            progress(int(mask.sum()), -float(log_p.sum()))  # padding has log p = 0
    return result


def eval_loss(model, sentences: Sequence[np.ndarray], mode: str) -> float:
    """Cross-entropy per predicted token, in nats, without dropout (training's evaluations)."""
    log_probs = sentence_log_probs(model, sentences, mode)
    return -math.fsum(lp.sum() for lp in log_probs) / sum(len(lp) for lp in log_probs)


@dataclass
class Evaluation:
    """Totals over a corpus; every derived number is a property."""

    mode: str
    sentences: int
    tokens: int  # predicted: words + SENTENCE_END
    unknown: int  # predicted tokens that were unknown words (`Vocabulary.is_unknown`)
    nll: float  # -sum ln p, nats
    nll_unknown: float  # the part of `nll` spent on unknown tokens
    interval: tuple[float, float] | None = None  # bootstrap 95 % interval of the perplexity
    unknown_token: str | None = None  # what unknown words were predicted as
    ngram: dict | None = None  # the n-gram model interpolated in, and its weight

    @property
    def cross_entropy(self) -> float:
        return self.nll / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.cross_entropy)

    @property
    def perplexity_without_unknown(self) -> float | None:
        known = self.tokens - self.unknown
        return math.exp((self.nll - self.nll_unknown) / known) if known else None

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "cross_entropy_nats": self.cross_entropy,
            "cross_entropy_bits": self.cross_entropy / math.log(2),
            "perplexity": self.perplexity,
            "perplexity_without_unknown": self.perplexity_without_unknown,
            "unknown_rate": self.unknown / self.tokens,
        }


def summarize(
    sentences: Sequence[np.ndarray],
    log_probs: Sequence[np.ndarray],
    vocab: Vocabulary,
    mode: str,
    bootstrap: int = 0,
    seed: int = 0,
) -> Evaluation:
    """Totals over the corpus, and a bootstrap interval when `bootstrap` > 0."""
    is_unknown = [vocab.is_unknown(s[1:]) for s in sentences]
    nll = np.array([-lp.sum() for lp in log_probs])
    counts = np.array([len(lp) for lp in log_probs])
    result = Evaluation(
        mode=mode,
        sentences=len(sentences),
        tokens=int(counts.sum()),
        unknown=int(sum(u.sum() for u in is_unknown)),
        nll=float(math.fsum(nll)),
        nll_unknown=float(
            math.fsum(-lp[u].sum() for lp, u in zip(log_probs, is_unknown, strict=True))
        ),
    )
    if bootstrap:
        result.interval = bootstrap_interval(nll, counts, bootstrap, seed)
    return result


def evaluate_corpus(
    path: str | Path,
    corpus: str | Path,
    *,
    format: str | None = None,
    column: str | None = None,
    mode: str = "sentence",
    bootstrap: int = 0,
    seed: int = 0,
    show_progress: bool = False,
    cache: FunctionCache | None = None,
    ngram: Interpolation | None = None,
) -> Evaluation:
    """`rnnlm eval`: the language model in `path` (interpolated with `ngram`, if given) on
    `corpus`, read as its training corpus was (see `read_like_training`); a bar of tokens on
    stderr when `show_progress`."""
    model, ckpt = open_model(path, left_to_right="report a perplexity", cache=cache)
    sentences = read_like_training(ckpt.config.data, corpus, format, column)
    encoded = [ckpt.vocab.encode(tokens) for tokens in sentences]
    with TokenProgress(sum(len(s) - 1 for s in encoded), show_progress) as progress:
        log_probs = sentence_log_probs(model, encoded, mode, progress=progress)
    if ngram is not None:
        log_probs = ngram.apply(ckpt.vocab, encoded, log_probs)
    result = summarize(encoded, log_probs, ckpt.vocab, mode, bootstrap, seed)
    result.unknown_token = ckpt.vocab.unknown
    result.ngram = ngram.to_dict() if ngram is not None else None
    return result


def tune_weight(
    path: str | Path,
    ngram: Interpolation,
    corpus: str | Path,
    *,
    format: str | None = None,
    column: str | None = None,
    mode: str = "sentence",
    show_progress: bool = False,
    cache: FunctionCache | None = None,
) -> WeightFit:
    """`rnnlm tune-weight`: the n-gram weight λ that maximises the likelihood of `corpus`
    (held-out text, read as the training corpus was) under λ·p_ngram + (1 − λ)·p_rnn, by EM
    from `ngram.weight`; with the perplexities of both models and of their mixture."""
    from rnnlm.interpolation import fit_on

    model, ckpt = open_model(path, left_to_right="report a perplexity", cache=cache)
    sentences = read_like_training(ckpt.config.data, corpus, format, column)
    encoded = [ckpt.vocab.encode(tokens) for tokens in sentences]
    if not encoded:
        raise RnnlmError(f"{corpus}: no sentences to fit the n-gram weight on")
    with TokenProgress(sum(len(s) - 1 for s in encoded), show_progress) as progress:
        rnn = sentence_log_probs(model, encoded, mode, progress=progress)
    fit = fit_on(rnn, ngram.ngram_log_probs(ckpt.vocab, encoded), start=ngram.weight)
    fit.ngram_unknown = ngram.unknown_tokens(ckpt.vocab, encoded)
    return fit


def bootstrap_interval(
    nll: np.ndarray, counts: np.ndarray, samples: int, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of the perplexity, resampling sentences with replacement."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(nll), size=(samples, len(nll)))
    perplexities = np.exp(nll[picks].sum(axis=1) / counts[picks].sum(axis=1))
    low, high = np.percentile(perplexities, [2.5, 97.5])
    return float(low), float(high)


@dataclass
class Comparison:
    """Model A against model B on the same sentences: a paired bootstrap test."""

    perplexity_a: float
    perplexity_b: float
    interval: tuple[float, float]  # 95 % interval of perplexity_b - perplexity_a
    p_value: float  # share of resamples in which the better model is not better
    samples: int
    sentences: int = 0  # resampled, each with all its tokens

    @property
    def p_text(self) -> str:
        """`p = 0.031`; when no resample went against the order, `p < 1/samples`."""
        if self.p_value == 0:
            return f"p < {1 / self.samples:.2g}"
        return f"p = {self.p_value:.3f}"

    @property
    def verdict(self) -> str:
        if self.p_value >= 0.05:
            return f"no significant difference ({self.p_text})"
        if 1 / self.samples > 0.05:
            # Too few resamples to put p below 0.05, even when none of them disagrees.
            return f"too few resamples for a verdict ({self.p_text}): take 100 or more"
        better = "A" if self.perplexity_a < self.perplexity_b else "B"
        return f"model {better} is better ({self.p_text})"

    def to_dict(self) -> dict:
        return {**asdict(self), "verdict": self.verdict}


def compare_models(
    paths: Sequence[str | Path],
    corpus: str | Path,
    mode: str = "sentence",
    samples: int = 1000,
    seed: int = 0,
    cache: FunctionCache | None = None,
    ngram: Interpolation | None = None,
    ngram_on: Sequence[bool] = (True, True),
) -> Comparison:
    """`rnnlm compare`: models A and B (`paths`) scored on the same sentences of `corpus`,
    read as A's training corpus was, then a paired bootstrap. `ngram`, if given, is
    interpolated into A, B or both, as `ngram_on` says (A alone against A with the n-gram
    model: the same path twice, `ngram_on` (False, True))."""
    loaded = [open_model(path, left_to_right="report a perplexity", cache=cache) for path in paths]
    check_comparable([ckpt for _, ckpt in loaded])
    sentences = read_like_training(loaded[0][1].config.data, corpus)
    nll = []
    for (model, ckpt), mixed in zip(loaded, ngram_on, strict=True):
        encoded = [ckpt.vocab.encode(tokens) for tokens in sentences]
        log_probs = sentence_log_probs(model, encoded, mode)
        if ngram is not None and mixed:
            log_probs = ngram.apply(ckpt.vocab, encoded, log_probs)
        nll.append(np.array([-lp.sum() for lp in log_probs]))
    counts = np.array([len(tokens) + 1 for tokens in sentences])
    return paired_bootstrap(nll[0], nll[1], counts, samples, seed)


def check_comparable(ckpts: Sequence[checkpoint.Checkpoint]) -> None:
    """Perplexities compare only between models that tokenize alike, on the same vocabulary."""
    data = [ckpt.config.data for ckpt in ckpts]
    if len({(d.level, d.lowercase) for d in data}) > 1:
        raise RnnlmError("the two models tokenize text differently: their scores do not compare")
    words = [set(ckpt.vocab.words) for ckpt in ckpts]
    if any(w != words[0] for w in words):
        # A word one model knows is an unknown token to the other: different prediction tasks.
        raise RnnlmError(
            f"the two models have different vocabularies ({len(words[0])} and {len(words[1])} "
            f"tokens, {len(words[0] ^ words[1])} in only one): their perplexities do not compare"
        )


def paired_bootstrap(
    nll_a: np.ndarray,
    nll_b: np.ndarray,
    counts: np.ndarray,
    samples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Resample sentences (the same ones for both models) and count how often the order flips.

    `nll_a`, `nll_b`: each sentence's summed NLL under A and B; `counts`: its tokens.
    """
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(samples, len(counts)))
    tokens = counts[picks].sum(axis=1)
    ppl_a = np.exp(nll_a[picks].sum(axis=1) / tokens)
    ppl_b = np.exp(nll_b[picks].sum(axis=1) / tokens)
    point_a = math.exp(nll_a.sum() / counts.sum())
    point_b = math.exp(nll_b.sum() / counts.sum())
    if point_a == point_b:
        p_value = 1.0
    else:
        flips = (ppl_a >= ppl_b) if point_a < point_b else (ppl_b >= ppl_a)
        p_value = float(flips.mean())
    low, high = np.percentile(ppl_b - ppl_a, [2.5, 97.5])
    return Comparison(point_a, point_b, (float(low), float(high)), p_value, samples, len(counts))
