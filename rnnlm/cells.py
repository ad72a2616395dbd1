"""Recurrent cells: per cell, its gate count, state count and a pure step function.

A step takes the already-projected input of one time step — the projection for every step
is one big product outside the scan, gates stacked side by side — then the previous
state(s) and the recurrent matrix, and returns the new state(s). The first state is what
the layer outputs. Masking is not a cell's business: `scan_steps.masked` wraps any step.

Row-vector convention: x_t (B, G*H), h (B, H), W_rec (H, G*H).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rnnlm.architecture import CELL_SHAPES
from rnnlm.backend import sigmoid
from rnnlm.backend import tensor as tt
from rnnlm.config import ModelConfig


def hard_sigmoid(x):
    # Theano's piecewise-linear sigmoid, which the tutorial's GRU used for speed. Its
    # constants in x's dtype, as Theano's own: a bare 0.2 would be float32(0.2) (floatX).
    slope, shift = (tt.constant(value, dtype=x.dtype) for value in (0.2, 0.5))
    return tt.clip(slope * x + shift, 0, 1)


def _gate(config: ModelConfig) -> Callable:
    return hard_sigmoid if config.hard_sigmoid else sigmoid


def rnn_tanh(config: ModelConfig) -> Callable:
    def step(x_t, h_prev, W_rec):
        # s_t = tanh(U x_t + W s_{t-1})
        return tt.tanh(x_t + tt.dot(h_prev, W_rec))

    return step


def rnn_relu(config: ModelConfig) -> Callable:
    def step(x_t, h_prev, W_rec):
        return tt.maximum(x_t + tt.dot(h_prev, W_rec), 0)

    return step


def gru(config: ModelConfig) -> Callable:
    """The tutorial's part 4 GRU; gates stacked as [update z | reset r | candidate c]."""
    gate = _gate(config)
    n = config.hidden_size

    def step(x_t, h_prev, W_rec):
        zr = gate(x_t[:, : 2 * n] + tt.dot(h_prev, W_rec[:, : 2 * n]))
        z, r = zr[:, :n], zr[:, n:]
        c = tt.tanh(x_t[:, 2 * n :] + tt.dot(r * h_prev, W_rec[:, 2 * n :]))
        return (1 - z) * c + z * h_prev

    return step


def lstm(config: ModelConfig) -> Callable:
    """LSTM without peepholes; gates stacked as [input i | forget f | output o | candidate g]."""
    gate = _gate(config)
    n = config.hidden_size

    def step(x_t, h_prev, c_prev, W_rec):
        pre = x_t + tt.dot(h_prev, W_rec)  # (B, 4H)
        ifo = gate(pre[:, : 3 * n])
        i, f, o = ifo[:, :n], ifo[:, n : 2 * n], ifo[:, 2 * n :]
        c = f * c_prev + i * tt.tanh(pre[:, 3 * n :])
        return [o * tt.tanh(c), c]

    return step


@dataclass(frozen=True)
class Cell:
    make_step: Callable[[ModelConfig], Callable]
    gates: int  # G: blocks stacked in W_in, W_rec and b
    states: int  # recurrent state tensors; the first is the output
    forget_gate: int | None = None  # block whose bias starts at 1 (Gers et al.)


# The counts come from rnnlm.architecture, which the checkpoint reader uses without a graph.
CELLS: dict[str, Cell] = {
    "rnn-tanh": Cell(rnn_tanh, *CELL_SHAPES["rnn-tanh"]),
    "rnn-relu": Cell(rnn_relu, *CELL_SHAPES["rnn-relu"]),
    "gru": Cell(gru, *CELL_SHAPES["gru"]),
    "lstm": Cell(lstm, *CELL_SHAPES["lstm"]),
}
