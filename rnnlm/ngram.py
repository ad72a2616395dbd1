"""Back-off n-gram models: what interpolation needs of one (`NgramModel`), and opening a file
through KenLM (binary or ARPA, when the `kenlm` package is installed) or our ARPA reader.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from rnnlm.arpa import EOS, read_arpa
from rnnlm.errors import RnnlmError

log = logging.getLogger(__name__)

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
