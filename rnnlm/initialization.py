"""Fresh parameter values for a model config, drawn from a seeded numpy generator."""

from __future__ import annotations

import numpy as np

from rnnlm import output
from rnnlm.architecture import param_shapes
from rnnlm.cells import CELLS
from rnnlm.config import ModelConfig
from rnnlm.params import uniform_fan_in


def init_params(config: ModelConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh values: uniform weights (±init_scale, or the tutorial's ±1/sqrt(fan_in)),
    zero biases but an LSTM's forget gate at 1, optionally an identity recurrent matrix;
    the output layer's drawn last, by `output.init_params`."""
    cell = CELLS[config.cell]
    arrays = {}
    for name, shape in param_shapes(config).items():
        if name.startswith("out/"):
            continue
        kind = name.rsplit("/", 1)[1]
        if kind == "b":
            value = np.zeros(shape)
            if cell.forget_gate is not None and not name.startswith("out/"):
                n = config.hidden_size
                value[cell.forget_gate * n : (cell.forget_gate + 1) * n] = 1.0
        elif kind == "W_rec" and config.identity_init:
            value = np.tile(np.eye(config.hidden_size), (1, cell.gates))
        elif config.init_scale:
            value = rng.uniform(-config.init_scale, config.init_scale, size=shape)
        else:
            value = uniform_fan_in(rng, shape, shape[0])
        arrays[name] = value
    return arrays | output.init_params(config.output, rng, config.init_scale)
