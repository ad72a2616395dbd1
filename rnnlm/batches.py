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
