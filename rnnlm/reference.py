"""A plain numpy RNN with hand-derived BPTT (WildML tutorial, part 2): an oracle for the
symbolic gradients of `rnnlm.model`. Float64, one unbatched sentence, no Aesara.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Notation (tutorial's): vocabulary size V, hidden size H, sentence length T.
#   U (H, V) input -> hidden, W (H, H) hidden -> hidden, V (V, H) hidden -> output; no biases.
#   s_t = tanh(U[:, x_t] + W s_{t-1}),  s_{-1} = 0
#   o_t = softmax(V s_t)
#   L   = sum_t -log o_t[y_t]
#
# Backward, full BPTT:
#   dL/dz_t   = o_t - onehot(y_t)                         (z_t = V s_t, softmax + NLL)
#   dV        = sum_t outer(o_t - onehot(y_t), s_t)
#   delta_t   = dL/da_t  (a_t = U[:, x_t] + W s_{t-1}, the pre-activation)
#             = (V^T (o_t - onehot(y_t)) + W^T delta_{t+1}) * (1 - s_t^2),   delta_T = 0
#   dU[:, x_t] += delta_t,   dW += outer(delta_t, s_{t-1})


class NumpyRNN:
    """Tutorial RNN over one sentence of token ids (int arrays of length T); float64 weights.

    The weights are held by reference, so `numerical_gradient` can perturb them in place.
    """

    def __init__(self, U: np.ndarray, V: np.ndarray, W: np.ndarray) -> None:
        self.U = U  # (H, V)
        self.V = V  # (V, H)
        self.W = W  # (H, H)
        hidden_size, vocab_size = U.shape
        if V.shape != (vocab_size, hidden_size) or W.shape != (hidden_size, hidden_size):
            raise ValueError(
                f"shapes do not fit: U {U.shape}, V {V.shape}, W {W.shape}; "
                "want U (H, V), V (V, H), W (H, H)"
            )

    def forward(
        self, x: np.ndarray, s_init: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Outputs o (T, V) and states s (T, H); `s_init` is s_{-1} (zeros by default)."""
        hidden_size, vocab_size = self.U.shape
        s_prev = np.zeros(hidden_size) if s_init is None else s_init
        o = np.zeros((len(x), vocab_size))
        s = np.zeros((len(x), hidden_size))
        for t, x_t in enumerate(x):
            s[t] = np.tanh(self.U[:, x_t] + self.W @ s_prev)
            z = self.V @ s[t]
            e = np.exp(z - z.max())
            o[t] = e / e.sum()
            s_prev = s[t]
        return o, s

    def loss(self, x: np.ndarray, y: np.ndarray, s_init: np.ndarray | None = None) -> float:
        """Summed cross-entropy sum_t -log o_t[y_t] (not averaged)."""
        o, _ = self.forward(x, s_init)
        return float(-np.log(o[np.arange(len(y)), y]).sum())

    def _backward_setup(self, x, y):
        o, s = self.forward(x)
        d_z = o.copy()  # (T, V) dL/dz_t = o_t - onehot(y_t)
        d_z[np.arange(len(y)), y] -= 1.0
        # s_prev[t] = s_{t-1}, with s_{-1} = 0, so step 0 needs no special case.
        s_prev = np.vstack([np.zeros((1, s.shape[1])), s[:-1]])  # (T, H)
        d_V = d_z.T @ s  # (V, H) sum_t outer(d_z_t, s_t): every step, whatever the truncation
        return s, s_prev, d_z, d_V

    def bptt(
        self, x: np.ndarray, y: np.ndarray, truncate: int = -1
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dU, dV, dW) as Aesara's `scan(truncate_gradient=truncate)` computes them.

        Aesara runs the backward scan over only the last `truncate` steps, t in [T-k, T-1]:
        delta is accumulated through those steps exactly as in full BPTT (delta_T = 0) and
        then dropped, so steps t < T-k add nothing to dU, dW -- not even their own output's
        local term. dV uses V outside the scan, so it gets every step.
        Equals full BPTT when truncate < 0 or truncate >= T.
        """
        s, s_prev, d_z, d_V = self._backward_setup(x, y)
        d_U = np.zeros_like(self.U)
        d_W = np.zeros_like(self.W)
        T = len(x)
        first = 0 if truncate < 0 else max(0, T - truncate)
        delta = np.zeros(s.shape[1])  # delta_T = 0
        for t in range(T - 1, first - 1, -1):
            delta = (self.V.T @ d_z[t] + self.W.T @ delta) * (1.0 - s[t] ** 2)
            d_U[:, x[t]] += delta
            d_W += np.outer(delta, s_prev[t])
        return d_U, d_V, d_W

    def bptt_tutorial(
        self, x: np.ndarray, y: np.ndarray, truncate: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dU, dV, dW) by the tutorial's loop: each output's error goes back at most
        `truncate` steps (bptt_step in t, t-1, ..., max(0, t - truncate)).

        Not what Aesara computes for truncate < T (see `bptt`); full BPTT when
        truncate < 0 or truncate >= T.
        """
        s, s_prev, d_z, d_V = self._backward_setup(x, y)
        d_U = np.zeros_like(self.U)
        d_W = np.zeros_like(self.W)
        T = len(x)
        if truncate < 0:
            truncate = T
        for t in reversed(range(T)):
            # delta for output t at its own step, then carried back one step at a time:
            #   delta <- W^T delta * (1 - s_{step-1}^2)
            delta = (self.V.T @ d_z[t]) * (1.0 - s[t] ** 2)
            for step in reversed(range(max(0, t - truncate), t + 1)):
                d_U[:, x[step]] += delta
                d_W += np.outer(delta, s_prev[step])
                delta = (self.W.T @ delta) * (1.0 - s_prev[step] ** 2)
        return d_U, d_V, d_W


def numerical_gradient(f: Callable[[], float], param: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Central differences (f(p + eps) - f(p - eps)) / 2 eps, entry by entry.

    Perturbs `param` in place (so `f` must read it by reference) and restores each entry.
    """
    grad = np.zeros_like(param, dtype=np.float64)
    for index in np.ndindex(param.shape):
        saved = param[index]
        param[index] = saved + eps
        f_plus = f()
        param[index] = saved - eps
        f_minus = f()
        param[index] = saved
        grad[index] = (f_plus - f_minus) / (2.0 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max(max|a|, max|b|); 0 when both are all zeros."""
    scale = max(np.abs(a).max(), np.abs(b).max())
    return 0.0 if scale == 0 else float(np.abs(a - b).max() / scale)
