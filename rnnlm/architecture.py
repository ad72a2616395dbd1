"""What a model config implies without building a graph: each cell's gate and state counts,
the recurrent stacks and every parameter's shape.

The checkpoint reader checks a file's arrays against these shapes and `rnnlm info` counts
parameters with them; neither needs the tensor library, so this module imports none.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from rnnlm.config import ModelConfig


class CellShape(NamedTuple):
    gates: int  # G: blocks stacked in W_in, W_rec and b
    states: int  # recurrent state tensors; the first is the output
    forget_gate: int | None = None  # block whose bias starts at 1 (Gers et al.)


# The cells' step functions are in `rnnlm.cells`, under the same names.
CELL_SHAPES: dict[str, CellShape] = {
    "rnn-tanh": CellShape(gates=1, states=1),
    "rnn-relu": CellShape(gates=1, states=1),
    "gru": CellShape(gates=3, states=1),
    "lstm": CellShape(gates=4, states=2, forget_gate=1),
}


def stacks(config: ModelConfig) -> tuple[str, ...]:
    """Parameter prefixes of the recurrent stacks: forward, and backward if bidirectional."""
    return ("layer", "back") if config.bidirectional else ("layer",)


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's shape, in graph order, without allocating anything."""
    width = CELL_SHAPES[config.cell].gates * config.hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    if config.embedding_size:
        shapes["embed/W"] = (config.vocab_size, config.embedding_size)
    for stack in stacks(config):
        for layer in range(config.layers):
            n_in = (
                (config.embedding_size or config.vocab_size) if layer == 0 else config.hidden_size
            )
            shapes[f"{stack}{layer}/W_in"] = (n_in, width)
            shapes[f"{stack}{layer}/W_rec"] = (config.hidden_size, width)
            if config.bias:
                shapes[f"{stack}{layer}/b"] = (width,)
    if not config.tie_weights:
        shapes["out/W"] = (config.top_size, config.vocab_size)
    if config.bias:
        shapes["out/b"] = (config.vocab_size,)
    return shapes


def parameter_count(config: ModelConfig) -> int:
    return sum(math.prod(shape) for shape in param_shapes(config).values())
