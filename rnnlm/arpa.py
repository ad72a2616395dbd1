"""Our reader of ARPA back-off n-gram files (gzipped too), and the model it makes: a word's
probability by backoff, as KenLM computes it, `<s>`, `</s>` and `<unk>` included.
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from rnnlm.errors import RnnlmError

log = logging.getLogger(__name__)

BOS, EOS, UNK = "<s>", "</s>", "<unk>"  # the format's markers, KenLM's too
# KenLM's log10 probability of a word when the file has no <unk> (its `unknown_missing_logprob`).
MISSING_UNK_LOG10 = -100.0


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
