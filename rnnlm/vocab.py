"""The vocabulary: token <-> id maps with sentence markers and an unknown token.

Built by the WildML tutorial's rule (most frequent tokens, UNKNOWN_TOKEN last); saved as JSON.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np

from rnnlm.errors import RnnlmError

log = logging.getLogger(__name__)

SENTENCE_START = "SENTENCE_START"
SENTENCE_END = "SENTENCE_END"
UNKNOWN_TOKEN = "UNKNOWN_TOKEN"

MIN_VOCABULARY_SIZE = 4  # start, end, unknown and at least one real token
_DICT_KEYS = ("words", "counts", "unknown", "start", "end")


@dataclass(frozen=True)
class Vocabulary:
    """Token ids are positions in `words`; `counts[i]` is the training count of `words[i]`."""

    words: tuple[str, ...]
    counts: tuple[int, ...]
    unknown: str = UNKNOWN_TOKEN
    start: str = SENTENCE_START
    end: str = SENTENCE_END
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Lists are accepted for convenience but stored as tuples so the object stays immutable.
        words = tuple(self.words)
        counts = tuple(self.counts)
        if len(words) != len(counts):
            raise RnnlmError(
                f"vocabulary has {len(words)} words but {len(counts)} counts; they must match"
            )
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word:
                raise RnnlmError(f"vocabulary word {i} must be a non-empty string, got {word!r}")
        for i, count in enumerate(counts):
            if isinstance(count, bool) or not isinstance(count, Integral):
                raise RnnlmError(f"vocabulary count {i} must be an integer, got {count!r}")
            if count < 0:
                raise RnnlmError(f"vocabulary count {i} ({words[i]!r}) is negative: {count}")
        counts = tuple(int(c) for c in counts)
        index: dict[str, int] = {}
        for i, word in enumerate(words):
            if word in index:
                raise RnnlmError(f"vocabulary word {word!r} appears twice (ids {index[word]}, {i})")
            index[word] = i
        specials = {"unknown": self.unknown, "start": self.start, "end": self.end}
        for role, token in specials.items():
            if not isinstance(token, str) or not token:
                raise RnnlmError(f"vocabulary {role} token must be a non-empty string")
            if token not in index:
                raise RnnlmError(f"vocabulary lacks its {role} token {token!r}")
        if len(set(specials.values())) != len(specials):
            raise RnnlmError(f"vocabulary special tokens must differ, got {specials}")
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, token: object) -> bool:
        return token in self._index

    @property
    def start_id(self) -> int:
        return self._index[self.start]

    @property
    def end_id(self) -> int:
        return self._index[self.end]

    @property
    def unknown_id(self) -> int:
        return self._index[self.unknown]

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        """int32 ids of `tokens`, no markers added; tokens not in the vocabulary map to unknown."""
        if isinstance(tokens, str):
            # A bare string would silently encode its characters; make the caller say so.
            raise TypeError("ids() takes a sequence of tokens, not a str; split it first")
        unknown_id = self.unknown_id
        return np.array([self._index.get(t, unknown_id) for t in tokens], dtype=np.int32)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        """int32 ids of one sentence wrapped in markers: [start_id, ids..., end_id]."""
        ids, _ = self.encode_flat(self.ids(tokens), np.array([len(tokens)]))
        return ids

    def encode_flat(self, ids: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sentences of ids without markers, back to back, `lengths[k]` ids each -> the same
        sentences wrapped in markers, back to back (int32), and int64 offsets: sentence k is
        out[offsets[k] : offsets[k + 1]]. The one place markers are added."""
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(np.asarray(lengths, dtype=np.int64) + 2, out=offsets[1:])
        out = np.empty(offsets[-1], dtype=np.int32)
        markers = np.zeros(len(out), dtype=bool)
        markers[offsets[:-1]] = markers[offsets[1:] - 1] = True
        out[offsets[:-1]] = self.start_id
        out[offsets[1:] - 1] = self.end_id
        out[~markers] = ids
        return out, offsets

    def is_unknown(self, ids: np.ndarray) -> np.ndarray:
        """Which ids count as unknown words: those of the unknown token, which every word
        outside the vocabulary maps to and which may be a word of the corpus itself (PTB's
        <unk>). `score` and `eval` count unknown words by this one rule."""
        return np.asarray(ids) == self.unknown_id

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens for `ids`, markers included; an id outside [0, len) raises IndexError."""
        size = len(self.words)
        tokens = []
        for i in ids:
            i = int(i)
            # Negative ids would wrap around silently with plain indexing.
            if not 0 <= i < size:
                raise IndexError(f"token id {i} is outside the vocabulary [0, {size})")
            tokens.append(self.words[i])
        return tokens

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict that `from_dict` turns back into an equal Vocabulary."""
        return {
            "words": list(self.words),
            "counts": list(self.counts),
            "unknown": self.unknown,
            "start": self.start,
            "end": self.end,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Vocabulary:
        """Rebuild from `to_dict` output; the dict comes from a model file, so trust nothing."""
        if not isinstance(data, Mapping):
            raise RnnlmError(f"vocabulary must be a JSON object, got {type(data).__name__}")
        missing = [k for k in _DICT_KEYS if k not in data]
        unknown_keys = sorted(str(k) for k in data if k not in _DICT_KEYS)
        if missing:
            raise RnnlmError(f"vocabulary is missing keys: {', '.join(missing)}")
        if unknown_keys:
            raise RnnlmError(f"vocabulary has unexpected keys: {', '.join(unknown_keys)}")
        words, counts = data["words"], data["counts"]
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise RnnlmError("vocabulary 'words' must be a list of strings")
        # bool is an int subclass, and JSON floats like 3.0 are not counts: reject both.
        if not isinstance(counts, list) or not all(type(c) is int for c in counts):
            raise RnnlmError("vocabulary 'counts' must be a list of integers")
        for key in ("unknown", "start", "end"):
            if not isinstance(data[key], str):
                raise RnnlmError(f"vocabulary '{key}' must be a string, got {data[key]!r}")
        return cls(
            words=tuple(words),
            counts=tuple(counts),
            unknown=data["unknown"],
            start=data["start"],
            end=data["end"],
        )


def count_tokens(sentences: Iterable[Sequence[str]]) -> collections.Counter[str]:
    """Token counts, plus one SENTENCE_START and one SENTENCE_END per sentence.

    The tutorial wraps every sentence in markers before counting, so the markers compete for
    vocabulary slots like any other token.
    """
    counts: collections.Counter[str] = collections.Counter()
    num_sentences = 0
    for sentence in sentences:
        counts.update(sentence)
        num_sentences += 1
    return with_markers(counts, num_sentences)


def with_markers(counts: collections.Counter[str], sentences: int) -> collections.Counter[str]:
    """`counts` plus one SENTENCE_START and one SENTENCE_END for each of `sentences`."""
    if sentences:
        counts[SENTENCE_START] += sentences
        counts[SENTENCE_END] += sentences
    return counts


def build_vocabulary(
    counts: collections.Counter[str], size: int, min_count: int = 1, unknown: str = UNKNOWN_TOKEN
) -> Vocabulary:
    """The (size - 1) most frequent tokens, then `unknown`; fewer if the corpus is smaller.

    `unknown` may be the corpus's own marker (PTB's `<unk>`): its occurrences then simply
    count as unknown words, and no second unknown token is added.

    Ties break by token string so the ids do not depend on corpus order. Tokens seen fewer than
    `min_count` times are dropped. The markers are always kept, displacing the rarest kept token
    if need be. The unknown token's count is the number of corpus tokens that will map to it.
    """
    if isinstance(size, bool) or not isinstance(size, Integral) or size < MIN_VOCABULARY_SIZE:
        raise RnnlmError(f"vocabulary size must be an integer >= {MIN_VOCABULARY_SIZE}, got {size}")
    if isinstance(min_count, bool) or not isinstance(min_count, Integral) or min_count < 1:
        raise RnnlmError(f"vocabulary min_count must be an integer >= 1, got {min_count}")
    markers = (SENTENCE_START, SENTENCE_END)
    ranked = sorted(
        (
            (token, count)
            for token, count in counts.items()
            if token not in markers and token != unknown and count >= min_count
        ),
        key=lambda item: (-item[1], item[0]),
    )
    # Reserve room for both markers and the unknown token; the rest goes to ordinary tokens.
    kept = ranked[: size - 1 - len(markers)]
    kept += [(marker, counts.get(marker, 0)) for marker in markers]
    kept.sort(key=lambda item: (-item[1], item[0]))

    kept_total = sum(count for _, count in kept)
    unknown_count = sum(count for count in counts.values() if count > 0) - kept_total
    words = tuple(token for token, _ in kept) + (unknown,)
    word_counts = tuple(count for _, count in kept) + (unknown_count,)
    log.info(
        "vocabulary: %d tokens (asked for %d); %d of %d distinct corpus tokens map to %s",
        len(words),
        size,
        len(counts) - len(kept),
        len(counts),
        unknown,
    )
    return Vocabulary(words=words, counts=word_counts, unknown=unknown)


# -- a vocabulary as a text file: one token a line ------------------------------------------


def vocabulary_lines(vocab: Vocabulary) -> list[str]:
    """`token<TAB>count` in id order: what `rnnlm vocab` prints and `--vocab` reads back."""
    return [f"{word}\t{count}" for word, count in zip(vocab.words, vocab.counts, strict=True)]


def parse_word_list(text: str, source: str) -> list[str]:
    """The tokens of a vocabulary file, in order: each line is the token, then optionally a
    tab and a count (ignored: a run counts its own corpus). Blank lines are skipped; the
    token is taken as it is, so a character model's space token (" <TAB>count") survives."""
    words: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        token, tab, count = line.rpartition("\t")
        if not tab:
            token = line
        elif count.strip() and not count.strip().isdigit():
            raise RnnlmError(f"{source} line {number}: the count {count!r} is not a number")
        if not token or (not tab and not token.strip()):
            continue  # blank; a whitespace token (a char model's space) comes with its count
        if token in seen:
            raise RnnlmError(f"{source} line {number}: {token!r} is already on line {seen[token]}")
        seen[token] = number
        words.append(token)
    if not words:
        raise RnnlmError(f"{source}: no tokens in it")
    return words


def fixed_vocabulary(
    words: Sequence[str], counts: collections.Counter[str], unknown: str = UNKNOWN_TOKEN
) -> Vocabulary:
    """A vocabulary of `words` in their order (ids are positions), with the sentence markers
    and `unknown` added at the end when missing; the counts are those of `counts` (a corpus's
    `count_tokens`), the unknown token's being every corpus token outside the list."""
    words = list(words)
    added = [token for token in (SENTENCE_START, SENTENCE_END, unknown) if token not in words]
    if added:
        log.info("vocabulary: adding %s to the %d words given", ", ".join(added), len(words))
    words += added
    if len(words) < MIN_VOCABULARY_SIZE:
        raise RnnlmError(
            f"a vocabulary needs at least {MIN_VOCABULARY_SIZE} tokens, markers included"
        )
    listed = set(words)
    word_counts = [counts.get(word, 0) for word in words]
    outside = sum(count for token, count in counts.items() if token not in listed and count > 0)
    word_counts[words.index(unknown)] += outside
    return Vocabulary(words=tuple(words), counts=tuple(word_counts), unknown=unknown)


def words_outside(vocab: Vocabulary, sentences: Iterable[Sequence[str]]) -> tuple[int, int]:
    """(tokens, distinct words) of `sentences` that `vocab` does not hold: the new words that
    map to its unknown token."""
    missing: collections.Counter[str] = collections.Counter()
    for sentence in sentences:
        missing.update(token for token in sentence if token not in vocab)
    return sum(missing.values()), len(missing)
