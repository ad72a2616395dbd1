"""Recurrent cells: per cell, an initialiser and a pure step function for `aesara.scan`.

A step takes the already-projected input of one time step (the projection for all steps is
one big product outside the scan) and the previous state, and returns the new state.
Masking is not a cell's business: `model.masked` wraps any step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import aesara.tensor as at
import numpy as np

from rnnlm.params import uniform_fan_in


def rnn_shapes(n_in: int, hidden: int) -> dict[str, tuple[int, ...]]:
    # W_in is the tutorial's U transposed, W_rec its W transposed (row-vector convention).
    return {"W_in": (n_in, hidden), "W_rec": (hidden, hidden)}


def rnn_tanh_init(rng: np.random.Generator, n_in: int, hidden: int) -> dict[str, np.ndarray]:
    # Uniform in ±1/sqrt(fan_in), fan_in being the first axis, as the tutorial initialises.
    return {
        name: uniform_fan_in(rng, shape, shape[0])
        for name, shape in rnn_shapes(n_in, hidden).items()
    }


def rnn_tanh_step(x_t: at.TensorVariable, h_prev: at.TensorVariable, W_rec: at.TensorVariable):
    # s_t = tanh(U x_t + W s_{t-1}); x_t (B, H) is U x_t, already looked up.
    return at.tanh(x_t + at.dot(h_prev, W_rec))


@dataclass(frozen=True)
class Cell:
    shapes: Callable[[int, int], dict[str, tuple[int, ...]]]  # (n_in, hidden) -> shapes
    init: Callable[..., dict[str, np.ndarray]]
    step: Callable[..., at.TensorVariable]
    recurrent_params: tuple[str, ...]  # passed to the step as non-sequences, in this order


CELLS: dict[str, Cell] = {
    "rnn-tanh": Cell(rnn_shapes, rnn_tanh_init, rnn_tanh_step, ("W_rec",)),
}
