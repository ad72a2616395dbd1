"""The adaptive softmax (Grave et al. 2017), defined as PyTorch's `AdaptiveLogSoftmaxWithLoss`.

Words are positions 0 .. V-1 in frequency order. With cutoffs c_0 < c_1 < ... and c_n = V:

    head      h (N, K) . head_W^T (c_0 + n, K) + head_b: the c_0 most frequent words, then one
              token per tail cluster
    tail k    words [c_k, c_k+1): h . P_k^T (d_k, K) . W_k^T (c_k+1 - c_k, d_k), no biases,
              d_k = K // div_value^(k+1)
    log p(w) = log softmax(head)[w]                                     w < c_0
             = log softmax(head)[c_0 + k] + log softmax(tail k)[w - c_k]  w in tail k

Weights are in PyTorch's (out, in) layout, so its `head.weight`, `tail[k][0].weight` and
`tail[k][1].weight` load as they are. For the training loss each tail is computed only on
the rows whose target is in it (as PyTorch does): the head's product is then most of the
work. There is no new C op here: the products are BLAS, and every softmax + NLL — the
head's and each tail's — is the fused `softmax_nll` op, forward and gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

from rnnlm.backend import log_softmax
from rnnlm.backend import tensor as tt
from rnnlm.ops.softmax import softmax_nll


def head_targets(y, cutoffs: Sequence[int], vocab_size: int):
    """Each target's head entry (N,): the word itself in the shortlist, else its cluster token.

    A target >= V gets the entry past the head's end, which `softmax_nll` rejects as out of
    range (a negative one is rejected as it is)."""
    bounds = (*cutoffs[1:], vocab_size)
    cluster = sum((tt.ge(y, c) for c in bounds), tt.zeros_like(y))  # tail k of y >= c_0
    return tt.cast(tt.switch(tt.lt(y, cutoffs[0]), y, cutoffs[0] + cluster), "int32")


def adaptive_log_probs(h, head_W, head_b, tails, y, cutoffs: Sequence[int], vocab_size: int):
    """log p(y_i | h_i) (N,) for rows h (N, K) and target positions y (N,); `tails` lists
    (P_k, W_k); `head_b` may be None."""
    y = tt.as_tensor_variable(y)
    log_p = -softmax_nll(tt.dot(h, head_W.T), head_targets(y, cutoffs, vocab_size), head_b)  # (N,)
    bounds = [*cutoffs, vocab_size]
    for k, (P, W) in enumerate(tails):
        low, high = bounds[k], bounds[k + 1]
        rows = tt.nonzero(tt.and_(tt.ge(y, low), tt.lt(y, high)))[0]  # (n_k,)
        logits = tt.dot(tt.dot(h[rows], P.T), W.T)  # (n_k, d_k) -> (n_k, words of tail k)
        log_p = tt.inc_subtensor(log_p[rows], -softmax_nll(logits, y[rows] - low))
    return log_p


def adaptive_log_softmax(h, head_W, head_b, tails, cutoffs: Sequence[int]):
    """log p(w | h_i) of every position w (N, V), every tail on every row: PyTorch's `log_prob`,
    and the plain graph `adaptive_log_probs` is held against."""
    head_logits = tt.dot(h, head_W.T)
    head = log_softmax(head_logits if head_b is None else head_logits + head_b, axis=-1)
    parts = [head[:, : cutoffs[0]]]
    for k, (P, W) in enumerate(tails):
        token = head[:, cutoffs[0] + k][:, None]  # (N, 1): log p(tail k)
        parts.append(token + log_softmax(tt.dot(tt.dot(h, P.T), W.T), axis=-1))
    return tt.concatenate(parts, axis=1)
