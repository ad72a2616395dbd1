"""The fused cell steps in numpy: each cell's shape (`SPECS`) and the `perform` of the ops in
`rnnlm.ops.recurrent`, the same arithmetic as their C kernels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CellSpec:
    gates: int  # G: blocks stacked in x_t and W_rec
    states: int  # h, or h and c
    saved: int  # width of `acts`, in units of H
    weights: int  # weight matrices the op reads


SPECS = {
    "rnn-tanh": CellSpec(gates=1, states=1, saved=1, weights=1),
    "rnn-relu": CellSpec(gates=1, states=1, saved=1, weights=1),
    "gru": CellSpec(gates=3, states=1, saved=4, weights=2),
    "lstm": CellSpec(gates=4, states=2, saved=5, weights=1),
}


# -- numpy: the `perform` of the ops --------------------------------------------------------


def _gate(x, hard: bool):
    if hard:
        return np.clip(0.2 * x + 0.5, 0, 1)
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def _slope(a, hard: bool):
    """d gate / d pre-activation, from the gate's value a."""
    if hard:
        return np.where((a > 0) & (a < 1), 0.2, 0.0).astype(a.dtype)
    return a * (1 - a)


def _check_shapes(cell: str, what: str, x, m, states, weights, transpose: bool) -> None:
    """The C kernels' shape checks, for `perform`: x or d (B, G*H), m (B,), states (B, H),
    weights as the forward op (transposed) or the gradient op reads them."""
    spec = SPECS[cell]
    batch, n = states[0].shape
    widths = [2 * n, n] if cell == "gru" else [spec.gates * n]
    expected = [(w, n) if transpose else (n, w) for w in widths]
    if (
        x.shape[0] != batch
        or (x.shape[1] != spec.gates * n and x.shape[1] != spec.saved * n)
        or m.shape != (batch,)
        or any(s.shape != (batch, n) for s in states)
        or [w.shape for w in weights] != expected
    ):
        raise ValueError(f"fused {cell} step{what}: shapes do not match")


def numpy_forward(cell: str, hard: bool, x, m, *args) -> list[np.ndarray]:
    """The fused step: (x, m, *states, *transposed weights) -> new states, then acts."""
    spec = SPECS[cell]
    states, weights_t = args[: spec.states], args[spec.states :]
    _check_shapes(cell, "", x, m, states, weights_t, transpose=True)
    h = states[0]
    n = h.shape[1]
    m = m[:, None]
    if cell == "lstm":
        c = states[1]
        pre = x + h @ weights_t[0].T
        i, f, o = np.split(_gate(pre[:, : 3 * n], hard), 3, axis=1)
        g = np.tanh(pre[:, 3 * n :])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        return [m * (o * tc) + (1 - m) * h, m * c_new + (1 - m) * c, np.hstack([i, f, o, g, tc])]
    if cell == "gru":
        W_zr_t, W_c_t = weights_t
        zr = _gate(x[:, : 2 * n] + h @ W_zr_t.T, hard)
        z, r = zr[:, :n], zr[:, n:]
        rh = r * h
        cand = np.tanh(x[:, 2 * n :] + rh @ W_c_t.T)
        h_new = (1 - z) * cand + z * h
        return [m * h_new + (1 - m) * h, np.hstack([z, r, cand, rh])]
    pre = x + h @ weights_t[0].T
    a = np.tanh(pre) if cell == "rnn-tanh" else np.maximum(pre, 0)
    return [m * a + (1 - m) * h, a]


def numpy_backward(cell: str, hard: bool, *args) -> list[np.ndarray]:
    """The step's backward: (*g_states, m, *states, acts, *weights) -> d_pre (B, G*H), d_pre'
    (G*H, B), the gradients of the previous states, and of the mask (B,)."""
    spec = SPECS[cell]
    g_states, (m, *rest) = args[: spec.states], args[spec.states :]
    states, acts, weights = rest[: spec.states], rest[spec.states], rest[spec.states + 1 :]
    _check_shapes(cell, " gradient", acts, m, [*g_states, *states], weights, transpose=False)
    g_h, h = g_states[0], states[0]
    m = m[:, None]
    g_hr = m * g_h  # what reaches the unmasked new h
    if cell == "lstm":
        g_c, c = g_states[1], states[1]
        i, f, o, g, tc = np.split(acts, 5, axis=1)
        g_cr = m * g_c + g_hr * o * (1 - tc * tc)
        d_pre = np.hstack(
            [
                g_cr * g * _slope(i, hard),
                g_cr * c * _slope(f, hard),
                g_hr * tc * _slope(o, hard),
                g_cr * i * (1 - g * g),
            ]
        )
        g_h_prev = (1 - m) * g_h + d_pre @ weights[0].T
        g_c_prev = (1 - m) * g_c + g_cr * f
        g_m = (g_h * (o * tc - h) + g_c * (f * c + i * g - c)).sum(axis=1)
        return [d_pre, d_pre.T.copy(), g_h_prev, g_c_prev, g_m]
    if cell == "gru":
        W_zr, W_c = weights
        z, r, cand, _rh = np.split(acts, 4, axis=1)
        d_c = g_hr * (1 - z) * (1 - cand * cand)
        g_rh = d_c @ W_c.T
        d_zr = np.hstack([g_hr * (h - cand) * _slope(z, hard), g_rh * h * _slope(r, hard)])
        g_h_prev = (1 - m) * g_h + g_hr * z + g_rh * r + d_zr @ W_zr.T
        g_m = (g_h * ((1 - z) * cand + z * h - h)).sum(axis=1)
        d_pre = np.hstack([d_zr, d_c])
        return [d_pre, d_pre.T.copy(), g_h_prev, g_m]
    a = acts
    d_pre = g_hr * ((1 - a * a) if cell == "rnn-tanh" else (a > 0))
    g_h_prev = (1 - m) * g_h + d_pre @ weights[0].T
    return [d_pre, d_pre.T.copy(), g_h_prev, (g_h * (a - h)).sum(axis=1)]
