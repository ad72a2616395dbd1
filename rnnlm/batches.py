"""Encoded sentences -> time-major padded batches.

    sentence ids:  [S a b c E]        x = ids[:-1]  (inputs)   y = ids[1:]  (targets)

    batch of 3, left-padded, T = 4:   x          mask
                                      . S S .    0 1 1 0      time
                                      S a d S    1 1 1 1       |
                                      a e f b    1 1 1 1       v
                                      b c g c    1 1 1 1

Left padding makes every sentence end at the last step, so a truncated backward pass
(scan's `truncate_gradient` covers the last k steps) sees the last k real tokens of each.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def pad_batch(
    sentences: Sequence[np.ndarray], dtype: str = "float32"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encoded sentences (each with both markers) -> x, y int32 (T, B) and mask (T, B)."""
    steps = max(len(ids) - 1 for ids in sentences)
    x = np.zeros((steps, len(sentences)), dtype=np.int32)
    y = np.zeros_like(x)
    mask = np.zeros(x.shape, dtype=dtype)
    for column, ids in enumerate(sentences):
        n = len(ids) - 1
        x[steps - n :, column] = ids[:-1]
        y[steps - n :, column] = ids[1:]
        mask[steps - n :, column] = 1
    return x, y, mask


def length_batches(
    sentences: Sequence[np.ndarray], batch_size: int, dtype: str = "float32"
) -> Iterator[tuple[np.ndarray, ...]]:
    """Batches of similar-length sentences (little padding), in length order; for evaluation."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        yield (np.asarray(chunk), *pad_batch([sentences[i] for i in chunk], dtype))


class Batches(Sequence):
    """Batches of sentences by index, padded only when one is read: an epoch of a corpus
    memory-mapped from shards never sits in memory padded."""

    def __init__(self, sentences: Sequence[np.ndarray], groups: list, dtype: str) -> None:
        self.sentences, self.groups, self.dtype = sentences, groups, dtype

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Batches(self.sentences, self.groups[i], self.dtype)
        return pad_batch([self.sentences[j] for j in self.groups[i]], self.dtype)


def training_batches(
    sentences: Sequence[np.ndarray],
    batch_size: int,
    rng: np.random.Generator,
    dtype: str = "float32",
    bucket_batches: int = 50,
) -> Batches:
    """One epoch of sentence batches: shuffled, similar lengths bucketed together.

    Shuffle, sort each run of `bucket_batches` batches by length, cut it into batches and
    shuffle the batches: little padding, yet a different mix every epoch.
    """
    order = rng.permutation(len(sentences))
    lengths = [len(sentences[i]) for i in range(len(sentences))]
    span = batch_size * bucket_batches
    groups = []
    for start in range(0, len(order), span):
        bucket = sorted(order[start : start + span], key=lambda i: lengths[i])
        groups += [
            bucket[first : first + batch_size] for first in range(0, len(bucket), batch_size)
        ]
    return Batches(sentences, [groups[i] for i in rng.permutation(len(groups))], dtype)


def stream_ids(sentences: Sequence[np.ndarray]) -> np.ndarray:
    """S a b c E d e E ...: the first SENTENCE_START, then each sentence's words and end."""
    return np.concatenate([sentences[0][:1]] + [s[1:] for s in sentences]).astype(np.int32)


def stream(sentences: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    """The corpus as one sequence cut into `batch_size` columns, time-major (N, B) int32.

        S a b c E d e E f g h E ...   ->   column 0: S a b c E d ...
                                           column 1: ... (the next N tokens)

    Each sentence's SENTENCE_START is dropped but the very first: as in the PTB convention,
    SENTENCE_END separates sentences and the next word is predicted from it. The tail that
    does not fill a whole row is dropped.
    """
    ids = stream_ids(sentences)
    rows = len(ids) // batch_size
    if rows < 2:
        raise ValueError(f"a stream of {len(ids)} tokens is too short for {batch_size} columns")
    return ids[: rows * batch_size].reshape(batch_size, rows).T.copy()


def stream_batches(
    data: np.ndarray, bptt: int, dtype: str = "float32"
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Consecutive windows of `bptt` steps over a stream (N, B); the last may be shorter."""
    for start in range(0, len(data) - 1, bptt):
        x = data[start : start + bptt]
        y = data[start + 1 : start + 1 + bptt]
        x = x[: len(y)]
        yield x, y, np.ones(x.shape, dtype=dtype)
