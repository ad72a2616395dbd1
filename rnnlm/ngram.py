"""Back-off n-gram models (ARPA, or anything KenLM opens) and their linear interpolation
with the RNN: p = λ·p_ngram + (1 − λ)·p_rnn per token, λ found on held-out text by EM.

Both models predict the same events: the n-gram model reads the words as the RNN's
vocabulary sees them, with its markers renamed the way KenLM names them

    SENTENCE_START -> <s>    SENTENCE_END -> </s>    the RNN's unknown token -> <unk>

so a word the RNN does not know is `<unk>` to the n-gram model too. The n-gram model starts
every sentence afresh from `<s>` (in stream mode the RNN carries its state; the n-gram does
not).
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import numpy as np

from rnnlm.errors import RnnlmError, SettingError
from rnnlm.vocab import Vocabulary

log = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
LN_10 = math.log(10)
# KenLM's log10 probability of a word when the file has no <unk> (its `unknown_missing_logprob`).
MISSING_UNK_LOG10 = -100.0
KENLM_MAGIC = b"mmap lm "  # the first bytes of a KenLM binary file


class NgramModel(Protocol):
    """What interpolation needs of an n-gram model; log-probabilities are log10, as stored."""

    order: int
    source: str

    def __contains__(self, word: str) -> bool: ...

    def sentence_log10(self, words: Sequence[str]) -> np.ndarray:
        """log10 p of each word, then of </s>, the sentence read from <s>: (len + 1,)."""
        ...

    def next_log10(self, context: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """log10 p of each candidate after <s> and `context`: (len(candidates),)."""
        ...


# -- our reader of ARPA files ----------------------------------------------------------------


@dataclass
class ArpaModel:
    """An ARPA back-off model held in dicts keyed by the n-gram's words joined by spaces.

    p(w | h) = P(h w) when the file lists the n-gram, else backoff(h) · p(w | h minus its
    first word); a word the file does not list is <unk>, in the context too (as KenLM reads).
    """

    order: int
    log10_probs: dict[str, float]
    log10_backoffs: dict[str, float]  # only the n-grams that list one
    source: str = ""
    unigrams: frozenset[str] = field(default_factory=frozenset)

    def __contains__(self, word: str) -> bool:
        return word in self.unigrams

    def _word(self, word: str) -> str:
        return word if word in self.unigrams else UNK

    def log10_prob(self, context: Sequence[str], word: str) -> float:
        """log10 p(word | context); the context's last order − 1 words are read."""
        context = [self._word(w) for w in context][max(len(context) - self.order + 1, 0) :]
        word = self._word(word)
        backoff = 0.0
        for start in range(len(context) + 1):
            history = " ".join(context[start:])
            key = f"{history} {word}" if history else word
            prob = self.log10_probs.get(key)
            if prob is not None:
                return backoff + prob
            backoff += self.log10_backoffs.get(history, 0.0)
        return backoff + MISSING_UNK_LOG10  # word is <unk> and the file has none

    def sentence_log10(self, words: Sequence[str]) -> np.ndarray:
        history = [BOS, *words, EOS]
        return np.array([self.log10_prob(history[:i], history[i]) for i in range(1, len(history))])

    def next_log10(self, context: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        history = [BOS, *context]
        return np.array([self.log10_prob(history, word) for word in candidates])


def read_arpa(path: str | Path) -> ArpaModel:
    """Read an ARPA file (gzipped when it ends in .gz) line by line; any problem in it is one
    `RnnlmError` naming the line."""
    path = Path(path)
    log.info("reading the n-gram model %s (ARPA, our reader: ~1 s per 200,000 n-grams)", path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            return _parse_arpa(lines, str(path))
    except UnicodeDecodeError as error:
        raise RnnlmError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except (OSError, EOFError) as error:
        raise RnnlmError(f"{path}: cannot read it ({error})") from None


def _parse_arpa(lines: IO[str], source: str) -> ArpaModel:
    numbered: Iterator[tuple[int, str]] = (
        (number, line.strip()) for number, line in enumerate(lines, 1)
    )

    def fail(number: int, message: str) -> RnnlmError:
        return RnnlmError(f"{source} line {number}: {message}")

    for _, line in numbered:
        if line == "\\data\\":
            break
    else:
        raise RnnlmError(f"{source} is not an ARPA file (no \\data\\ line)")
    counts: dict[int, int] = {}
    section = None
    for number, line in numbered:
        if not line:
            continue
        if line.startswith("ngram "):
            order_text, _, count_text = line[6:].partition("=")
            try:
                counts[int(order_text)] = int(count_text)
            except ValueError:
                raise fail(number, f"expected 'ngram N=COUNT', got {line!r}") from None
            continue
        section = line
        break
    if not counts or sorted(counts) != list(range(1, len(counts) + 1)):
        raise RnnlmError(f"{source}: the \\data\\ header must count the 1-grams to N-grams")
    order = len(counts)
    probs: dict[str, float] = {}
    backoffs: dict[str, float] = {}
    seen = {n: 0 for n in counts}
    n = 0
    while section is not None and section != "\\end\\":
        if section != f"\\{n + 1}-grams:":
            raise fail(number, f"expected \\{n + 1}-grams: or \\end\\, got {section!r}")
        n += 1
        if n > order:
            raise fail(number, f"the header counts only up to {order}-grams")
        section = None
        for number, line in numbered:
            if not line:
                continue
            if line.startswith("\\"):
                section = line
                break
            fields = line.split()
            if len(fields) not in (n + 1, n + 2) or (n == order and len(fields) == n + 2):
                raise fail(number, f"expected a log10 probability, {n} word(s) and maybe a backoff")
            try:
                prob = float(fields[0])
                backoff = float(fields[n + 1]) if len(fields) == n + 2 else None
            except ValueError:
                raise fail(number, f"not a number in {line!r}") from None
            if not (math.isfinite(prob) and prob <= 0) or (
                backoff is not None and not math.isfinite(backoff)
            ):
                raise fail(number, f"a log10 probability must be finite and <= 0: {line!r}")
            key = " ".join(fields[1 : n + 1])
            probs[key] = prob
            if backoff is not None and backoff != 0:
                backoffs[key] = backoff
            seen[n] += 1
    if section != "\\end\\":
        raise RnnlmError(f"{source}: ends before \\end\\")
    wrong = [f"{k}-grams {seen[k]} (header {counts[k]})" for k in counts if seen[k] != counts[k]]
    if wrong:
        raise RnnlmError(f"{source}: the counts differ from the header: {', '.join(wrong)}")
    unigrams = frozenset(key for key in probs if " " not in key)
    if UNK not in unigrams:
        log.warning(
            "%s has no %s: words it does not list get log10 probability %g (as in KenLM)",
            source,
            UNK,
            MISSING_UNK_LOG10,
        )
    return ArpaModel(order, probs, backoffs, source, unigrams)


# -- KenLM, when the `kenlm` package is installed ----------------------------------------------


class KenlmModel:
    """A KenLM model (binary or ARPA) read through the `kenlm` package."""

    def __init__(self, path: str | Path) -> None:
        import kenlm

        try:
            self.model = kenlm.Model(str(path))
        except (OSError, RuntimeError) as error:
            message = " ".join(str(error).split())
            raise RnnlmError(f"{path}: KenLM cannot read it ({message[:300]})") from None
        self.order = self.model.order
        self.source = str(path)
        self._kenlm = kenlm

    def __contains__(self, word: str) -> bool:
        return word in self.model

    def _score(self, state, words: Sequence[str]) -> Iterator[float]:
        out = self._kenlm.State()
        for word in words:
            yield self.model.BaseScore(state, word, out)
            state, out = out, state

    def sentence_log10(self, words: Sequence[str]) -> np.ndarray:
        state = self._kenlm.State()
        self.model.BeginSentenceWrite(state)
        return np.fromiter(self._score(state, [*words, EOS]), dtype=np.float64)

    def next_log10(self, context: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        state, out = self._kenlm.State(), self._kenlm.State()
        self.model.BeginSentenceWrite(state)
        for word in context:
            self.model.BaseScore(state, word, out)
            state, out = out, state
        return np.array([self.model.BaseScore(state, word, out) for word in candidates])


def kenlm_available() -> bool:
    try:
        import kenlm  # noqa: F401
    except ImportError:
        return False
    return True


def open_ngram(path: str | Path, engine: str = "auto") -> NgramModel:
    """The n-gram model in `path`: through KenLM (`engine` "kenlm", or "auto" when the
    package is installed), else with our ARPA reader ("arpa"). A KenLM binary needs KenLM."""
    path = Path(path)
    if not path.is_file():
        raise RnnlmError(f"n-gram model not found: {path}")
    with open(path, "rb") as f:
        binary = f.read(len(KENLM_MAGIC)) == KENLM_MAGIC
    if engine == "auto":
        engine = "kenlm" if kenlm_available() else "arpa"
    if engine == "kenlm":
        if not kenlm_available():
            raise RnnlmError("reading n-gram models through KenLM needs pip install 'rnnlm[ngram]'")
        model: NgramModel = KenlmModel(path)
    elif binary:
        raise RnnlmError(
            f"{path} is a KenLM binary: install the kenlm package (pip install 'rnnlm[ngram]'), "
            "or give the ARPA file"
        )
    else:
        model = read_arpa(path)
    log.info("n-gram model: %s, order %d, read by %s", path, model.order, engine)
    return model


# -- interpolation ----------------------------------------------------------------------------


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
