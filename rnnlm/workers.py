"""The work `rnnlm prepare` sends to its Dask workers: one file each, read the one way
(`rnnlm.corpus.read_sentences`) and turned into local ids.

Module-level functions, so that Dask can ship them; bad input comes back as a `Failed`
value rather than an exception, so workers log no traceback and Dask does not retry.
"""

from __future__ import annotations

import array
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from nltk.tokenize.punkt import PunktParameters

from rnnlm.config import DataConfig
from rnnlm.corpus import read_sentences, read_text
from rnnlm.errors import RnnlmError


@dataclass
class FileTokens:
    """One file tokenized: ids index `words`, the file's own token table."""

    path: str
    words: list[str]
    counts: np.ndarray  # int64, occurrences of each word in this file
    ids: np.ndarray  # int32, every sentence's tokens back to back, no markers
    lengths: np.ndarray  # int64, tokens per sentence
    documents: int


@dataclass(frozen=True)
class Failed:
    """Bad input found on a worker; the client raises it as an RnnlmError."""

    message: str


def _returning_errors(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RnnlmError as error:
            return Failed(str(error))

    return wrapper


@_returning_errors
def sample_file(path: str, share: int, size: int, *, data: DataConfig) -> str:
    """The start of a file's text, `share` characters at most, cut at whitespace; all of it
    when the file (`size` bytes) fits in its share. `data.format` is the files' format."""
    text = "\n\n".join(read_text(path, data.format, data.column, data.lowercase))
    if share >= size:
        return text
    text = text[:share]
    cut = max(text.rfind(" "), text.rfind("\n"))
    return text[:cut] if cut > 0 else text


@_returning_errors
def tokenize_file(path: str, *, data: DataConfig, punkt: PunktParameters | None) -> FileTokens:
    """One file's sentences, split by the given Punkt model, as ids into its own table."""
    documents, sentences = read_sentences(path, data, punkt=punkt)
    table: dict[str, int] = {}
    ids = array.array("i")  # 4 bytes a token; a list would take 9 times as much
    lengths = array.array("q")
    for tokens in sentences:
        ids.extend(table.setdefault(token, len(table)) for token in tokens)
        lengths.append(len(tokens))
    local = np.frombuffer(ids, dtype=np.intc).astype(np.int32)
    counts = np.bincount(local, minlength=len(table)).astype(np.int64)
    sentence_lengths = np.frombuffer(lengths, dtype=np.int64).copy()
    return FileTokens(path, list(table), counts, local, sentence_lengths, documents)


def file_summary(tokens: FileTokens | Failed) -> tuple[list[str], np.ndarray, int, int, int]:
    """What the client needs for the vocabulary: words, counts, sentences, tokens, documents."""
    if isinstance(tokens, Failed):
        return tokens  # type: ignore[return-value]
    return tokens.words, tokens.counts, len(tokens.lengths), len(tokens.ids), tokens.documents
