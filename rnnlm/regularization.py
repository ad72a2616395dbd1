"""Dropout, word dropout and weight drop: a training graph's random masks, drawn outside scans.

    dropout       h (T, B, D) * mask / keep on the non-recurrent connections; a mask per unit
                  and step (Zaremba et al. 2014), or per unit and column, the same at every
                  step (variational: Gal & Ghahramani 2016)
    word dropout  embedding rows (T, B, E) * mask[ids] / keep: a mask (V,) over the vocabulary
                  per training step, so a dropped word is dropped wherever it occurs
                  (embedding dropout: Gal & Ghahramani 2016, Merity et al. 2018)
    weight drop   W_rec (H, G*H) * mask / keep, one mask per training step, shared by every
                  step of the scan (DropConnect on the recurrent matrix: Merity et al. 2018)

Evaluation graphs never call these: they read the plain activations and weights.
"""

from __future__ import annotations

import numpy as np

from rnnlm.backend import RandomStream
from rnnlm.backend import tensor as tt

# One shard of a distributed batch: (offset, global columns), symbolic. Its masks are those
# of the global batch, cut to the shard's columns: N workers drop exactly the units one
# worker would on the whole batch.
Shard = tuple | None


def dropout(random: RandomStream, h, rate: float, variational: bool, shard: Shard = None):
    """h (T, B, D) with a share `rate` of its units zeroed and the rest scaled by 1 / (1 - rate),
    so its expectation is h.

    `variational`: one mask (B, D) per column, the same at every time step; a column is a
    sentence, or in stream mode one column of a bptt window. Else a mask per step (T, B, D).
    """
    keep = 1.0 - rate
    if variational:
        columns = (h.shape[1] if shard is None else shard[1], h.shape[2])
        draw = random.uniform(0.0, 1.0, size=columns)  # (B, D), or the global batch's
        if shard is not None:
            draw = draw[shard[0] : shard[0] + h.shape[1]]
        kept = tt.cast(draw < keep, h.dtype).dimshuffle("x", 0, 1)  # (1, B, D)
    elif shard is None:
        kept = tt.cast(random.uniform(0.0, 1.0, size=h.shape) < keep, h.dtype)
    else:
        offset, columns = shard
        draw = random.uniform(0.0, 1.0, size=(h.shape[0], columns, h.shape[2]))
        kept = tt.cast(draw[:, offset : offset + h.shape[1]] < keep, h.dtype)
    return h * kept / np.asarray(keep, h.dtype)


def word_dropout(random: RandomStream, rows, ids, vocab_size: int, rate: float):
    """Embedding rows (T, B, E) of ids (T, B) with a share `rate` of the vocabulary's words
    zeroed wherever they occur, the rest scaled by 1 / (1 - rate): the embedding matrix with
    whole rows dropped, without building it. The mask is the same on every shard."""
    keep = 1.0 - rate
    words = tt.cast(random.uniform(0.0, 1.0, size=(vocab_size,)) < keep, rows.dtype)  # (V,)
    return rows * words[ids].dimshuffle(0, 1, "x") / np.asarray(keep, rows.dtype)


def weight_drop(random: RandomStream, W, rate: float):
    """W (H, G*H) with a share `rate` of its entries zeroed and the rest scaled by
    1 / (1 - rate), a fresh mask per call of the compiled step.

    Scaled as Merity et al.'s WeightDrop (dropout on the raw weight): the dropped matrix's
    expectation is W, so evaluation uses W itself. Wan et al.'s unscaled DropConnect would need
    its moment-matching inference instead. The gradient reaches W through the mask:
    dL/dW = mask * dL/dW_dropped / (1 - rate).
    """
    keep = 1.0 - rate
    kept = tt.cast(random.uniform(0.0, 1.0, size=W.shape) < keep, W.dtype)
    return W * kept / np.asarray(keep, W.dtype)
