"""An n-gram model's linear interpolation with the RNN: p = λ·p_ngram + (1 − λ)·p_rnn per
token, λ found on held-out text by EM.

Both models predict the same events: the n-gram model reads the words as the RNN's
vocabulary sees them, with its markers renamed the way KenLM names them

    SENTENCE_START -> <s>    SENTENCE_END -> </s>    the RNN's unknown token -> <unk>

so a word the RNN does not know is `<unk>` to the n-gram model too. The n-gram model starts
every sentence afresh from `<s>` (in stream mode the RNN carries its state; the n-gram does
not).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlm.arpa import BOS, EOS, UNK
from rnnlm.errors import RnnlmError, SettingError
from rnnlm.ngram import NgramModel, open_ngram
from rnnlm.vocab import Vocabulary

LN_10 = math.log(10)


def ngram_words(vocab: Vocabulary) -> list[str]:
    """For each RNN token id, the word the n-gram model reads for it (see the module doc).
    A token holding whitespace (a char model's space) cannot be an n-gram word: <unk>."""
    renamed = {vocab.start: BOS, vocab.end: EOS, vocab.unknown: UNK}
    return [renamed.get(w, w if w.split() == [w] else UNK) for w in vocab.words]


def mix(log_p_rnn: np.ndarray, log_p_ngram: np.ndarray, weight: float) -> np.ndarray:
    """ln(λ·p_ngram + (1 − λ)·p_rnn), elementwise, from natural logs; λ = 0 gives ln p_rnn
    and λ = 1 gives ln p_ngram exactly."""
    log_p_rnn = np.asarray(log_p_rnn, dtype=np.float64)
    log_p_ngram = np.asarray(log_p_ngram, dtype=np.float64)
    if weight == 0:
        return log_p_rnn.copy()
    if weight == 1:
        return log_p_ngram.copy()
    return np.logaddexp(math.log(weight) + log_p_ngram, math.log1p(-weight) + log_p_rnn)


@dataclass
class Interpolation:
    """An n-gram model and its weight λ, mixed into an RNN's per-token probabilities."""

    lm: NgramModel
    weight: float
    _words: tuple[Vocabulary | None, list[str]] = field(default=(None, []), repr=False)

    @classmethod
    def open(cls, path: str | Path, weight: float, engine: str = "auto") -> Interpolation:
        check_weight(weight)
        return cls(open_ngram(path, engine), weight)

    def words_for(self, vocab: Vocabulary) -> list[str]:
        """`ngram_words(vocab)`, kept for the last vocabulary asked about."""
        if self._words[0] is not vocab:
            self._words = (vocab, ngram_words(vocab))
        return self._words[1]

    def unknown_tokens(self, vocab: Vocabulary, encoded: Sequence[np.ndarray]) -> int:
        """Predicted tokens the n-gram model reads as <unk> (the RNN's unknown token, and
        words of the RNN's vocabulary that the n-gram model does not list)."""
        words = self.words_for(vocab)
        unknown = np.array([w == UNK or w not in self.lm for w in words])
        return int(sum(unknown[ids[1:]].sum() for ids in encoded))

    def ngram_log_probs(self, vocab: Vocabulary, encoded: Sequence[np.ndarray]) -> list[np.ndarray]:
        """ln p_ngram of each predicted token (words, then SENTENCE_END) of each encoded
        sentence ([start, ids..., end]), aligned with `evaluate.sentence_log_probs`."""
        words = self.words_for(vocab)
        return [self.lm.sentence_log10([words[i] for i in ids[1:-1]]) * LN_10 for ids in encoded]

    def apply(
        self,
        vocab: Vocabulary,
        encoded: Sequence[np.ndarray],
        log_probs: Sequence[np.ndarray],
    ) -> list[np.ndarray]:
        """The RNN's per-token ln p (`log_probs`) mixed with the n-gram model's."""
        return [
            mix(rnn, ngram, self.weight)
            for rnn, ngram in zip(log_probs, self.ngram_log_probs(vocab, encoded), strict=True)
        ]

    def next_probs(
        self, vocab: Vocabulary, context: Sequence[int], probs: np.ndarray
    ) -> np.ndarray:
        """The RNN's next-token probabilities `probs` (V,) after SENTENCE_START and the ids
        `context`, mixed with the n-gram model's for every token of the vocabulary."""
        words = self.words_for(vocab)
        ngram = 10.0 ** self.lm.next_log10([words[i] for i in context], words)
        ngram[vocab.start_id] = 0.0  # never predicted (ARPA files give it log10 p = -99)
        return self.weight * ngram + (1 - self.weight) * probs

    def to_dict(self) -> dict:
        return {"path": self.lm.source, "order": self.lm.order, "weight": self.weight}


def check_weight(weight: float) -> None:
    if not 0 <= weight <= 1:
        raise SettingError(
            f"the n-gram weight is a share between 0 and 1, got {weight}:", {"ngram_weight": None}
        )


@dataclass
class WeightFit:
    """EM's λ on held-out tokens, and the perplexities it gives."""

    weight: float
    iterations: int
    converged: bool
    tokens: int
    perplexity_rnn: float
    perplexity_ngram: float
    perplexity_mixed: float
    ngram_unknown: int = 0  # predicted tokens the n-gram model read as <unk>

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def fit_weight(
    log_p_rnn: np.ndarray,
    log_p_ngram: np.ndarray,
    *,
    start: float = 0.5,
    tolerance: float = 1e-7,
    max_iterations: int = 10_000,
) -> tuple[float, int, bool]:
    """The λ that maximises Σ ln(λ·p_ngram + (1 − λ)·p_rnn) over tokens, by EM:

        λ <- mean over tokens of λ·p_ngram / (λ·p_ngram + (1 − λ)·p_rnn)

    (the posterior that the n-gram model produced each token). The likelihood is concave in
    λ, so EM climbs to the optimum; stops when λ moves less than `tolerance`.
    Returns (λ, iterations, converged)."""
    log_p_rnn = np.asarray(log_p_rnn, dtype=np.float64).ravel()
    log_p_ngram = np.asarray(log_p_ngram, dtype=np.float64).ravel()
    if not len(log_p_rnn):
        raise RnnlmError("no tokens to fit the n-gram weight on")
    # The log-odds of the n-gram model per token, clipped so exp cannot overflow.
    log_ratio = np.clip(log_p_ngram - log_p_rnn, -700, 700)
    weight = start
    for iteration in range(1, max_iterations + 1):
        if weight in (0.0, 1.0):  # a fixed point of EM
            return weight, iteration - 1, True
        # posterior = λ r / (λ r + 1 − λ), r = p_ngram / p_rnn, as a logistic of log-odds
        posterior = 1 / (1 + np.exp(-(log_ratio + math.log(weight) - math.log1p(-weight))))
        new = float(posterior.mean())
        if abs(new - weight) < tolerance:
            return new, iteration, True
        weight = new
    return weight, max_iterations, False


def fit_on(
    log_p_rnn: Sequence[np.ndarray], log_p_ngram: Sequence[np.ndarray], **options
) -> WeightFit:
    """`fit_weight` over sentences of per-token ln p, with the three perplexities."""
    rnn, ngram = np.concatenate(log_p_rnn), np.concatenate(log_p_ngram)
    weight, iterations, converged = fit_weight(rnn, ngram, **options)
    tokens = len(rnn)

    def perplexity(log_p: np.ndarray) -> float:
        return math.exp(-math.fsum(log_p) / tokens)

    return WeightFit(
        weight,
        iterations,
        converged,
        tokens,
        perplexity(rnn),
        perplexity(ngram),
        perplexity(mix(rnn, ngram, weight)),
    )
