"""What a model config implies without building a graph: each cell's gate and state counts,
the recurrent stacks, the output layer's settings and every parameter's shape.

The checkpoint reader checks a file's arrays against these shapes and `rnnlm info` counts
parameters with them; neither needs the tensor library, so this module imports none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from rnnlm.errors import RnnlmError

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
    return shapes | {name: spec.shape for name, spec in output_params(config.output).items()}


def parameter_count(config: ModelConfig) -> int:
    return sum(math.prod(shape) for shape in param_shapes(config).values())


# -- the output layer -------------------------------------------------------------------------
#
#   kind      parameters (K inputs, V words)                            tables (rnnlm.output_tables)
#   full      out/W (K, V), out/b (V,)                                  -
#   class     out/class/W (K, C), out/class/b (C,),                     word_class (V,)
#             out/word/W (V, K), out/word/b (V,)
#   adaptive  out/head/W (c_0 + n, K), out/head/b (c_0 + n,),           order (V,)
#             out/tail{k}/P (d_k, K), out/tail{k}/W (words_k, d_k)
#   sampled   out/W (K, V), out/b (V,): the full softmax's              proposal (V,)
#
# Tied weights reuse embed/W (V, K): as out/W transposed (full, sampled), as out/word/W
# (class), as the head's c_0 word rows (adaptive, whose head then keeps only its n cluster
# rows, out/head/clusters (n, K); its tails, d_k < K wide, are never tied). Biases exist when
# `bias` is set; the adaptive softmax has only a head bias (PyTorch's `head_bias`). The
# adaptive weights are in PyTorch's (out, in) layout, so its modules' weights load as they are.

DEFAULT_CUTOFFS = (2000, 10000, 50000, 200000)  # Grave et al.'s; those up to V / 2 are used


@dataclass(frozen=True)
class OutputConfig:
    """What shapes the output layer, checked against the vocabulary and input sizes (known
    only once the corpus is read); errors name the `model.` config key."""

    vocab_size: int
    input_size: int  # K: the width of the top states
    softmax: str = "full"
    bias: bool = True  # adaptive: the head's bias only
    tied: bool = False  # word vectors shared with the embedding embed/W (V, K)
    classes: int = 0  # class: 0 = round(sqrt(V))
    cutoffs: tuple[int, ...] = ()  # adaptive: () = those of DEFAULT_CUTOFFS up to V / 2
    div_value: float = 4.0  # adaptive: tail k projects to K // div_value^(k+1)
    samples: int = 1024  # sampled: negatives per batch, shared by its rows
    sampler: str = "log-uniform"  # sampled: log-uniform (over frequency ranks) | unigram

    def __post_init__(self) -> None:
        v = self.vocab_size
        _require(v >= 2 and self.input_size >= 1, "vocab_size", "at least 2 words, 1 input")
        _require(self.softmax in OUTPUT_PARAMS, "softmax", "|".join(OUTPUT_PARAMS))
        _require(0 <= self.classes <= v, "classes", f"must be in 0..{v} (0: about sqrt(V))")
        cutoffs = list(self.cutoffs)
        _require(
            all(type(c) is int and 0 < c < v for c in cutoffs) and cutoffs == sorted(set(cutoffs)),
            "cutoffs",
            f"must increase strictly within 1..{v - 1} (the vocabulary has {v} words)",
        )
        _require(self.div_value > 0 and math.isfinite(self.div_value), "div_value", "> 0")
        if self.softmax == "adaptive":
            for k, (width, _) in enumerate(self.tails):
                _require(width >= 1, "div_value", f"leaves tail {k} a projection of no units")
        _require(self.samples >= 1, "samples", "must be at least 1")

    @property
    def n_classes(self) -> int:
        return self.classes or max(1, round(math.sqrt(self.vocab_size)))

    @property
    def head_cutoffs(self) -> tuple[int, ...]:
        """The adaptive softmax's cutoffs, explicit or by default (at least one)."""
        v = self.vocab_size
        return self.cutoffs or tuple(c for c in DEFAULT_CUTOFFS if 2 * c <= v) or (max(1, v // 4),)

    @property
    def tails(self) -> list[tuple[int, int]]:
        """(projection width, words) of each adaptive tail cluster."""
        return tail_shapes(self.input_size, self.vocab_size, self.head_cutoffs, self.div_value)


def tail_shapes(
    input_size: int, vocab_size: int, cutoffs: Sequence[int], div_value: float
) -> list[tuple[int, int]]:
    """(projection width d_k, words) of each adaptive tail cluster, as PyTorch computes them:
    d_k = input_size // div_value^(k+1)."""
    bounds = [*cutoffs, vocab_size]
    return [
        (int(input_size // (div_value ** (k + 1))), bounds[k + 1] - bounds[k])
        for k in range(len(cutoffs))
    ]


def _require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise RnnlmError(f"bad config value for model.{key}: {expected}")


@dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    fan_in: int  # width of what it multiplies, for the ±1/sqrt(fan_in) init; 0: a bias


def _full_params(config: OutputConfig) -> dict[str, ParamSpec]:
    k, v = config.input_size, config.vocab_size
    specs = {} if config.tied else {"out/W": ParamSpec((k, v), k)}
    return specs | ({"out/b": ParamSpec((v,), 0)} if config.bias else {})


def _class_params(config: OutputConfig) -> dict[str, ParamSpec]:
    k, v, c = config.input_size, config.vocab_size, config.n_classes
    specs = {"out/class/W": ParamSpec((k, c), k)}
    specs |= {"out/class/b": ParamSpec((c,), 0)} if config.bias else {}
    specs |= {} if config.tied else {"out/word/W": ParamSpec((v, k), k)}
    return specs | ({"out/word/b": ParamSpec((v,), 0)} if config.bias else {})


def _adaptive_params(config: OutputConfig) -> dict[str, ParamSpec]:
    k, cutoffs = config.input_size, config.head_cutoffs
    head = len(cutoffs) + (0 if config.tied else cutoffs[0])
    specs = {f"out/head/{'clusters' if config.tied else 'W'}": ParamSpec((head, k), k)}
    if config.bias:
        specs["out/head/b"] = ParamSpec((cutoffs[0] + len(cutoffs),), 0)
    for i, (width, words) in enumerate(config.tails):
        specs[f"out/tail{i}/P"] = ParamSpec((width, k), k)
        specs[f"out/tail{i}/W"] = ParamSpec((words, width), width)
    return specs


# The softmax kinds' graphs are in `rnnlm.output`, their tables in `rnnlm.output_tables`,
# under the same names; `config.SOFTMAXES` (and so `--softmax`) follows this registry.
OUTPUT_PARAMS: dict[str, Callable[[OutputConfig], dict[str, ParamSpec]]] = {
    "full": _full_params,
    "class": _class_params,
    "adaptive": _adaptive_params,
    "sampled": _full_params,  # the full softmax's weights: sampling is a training objective
}


def output_params(config: OutputConfig) -> dict[str, ParamSpec]:
    """The output layer's parameters, their shapes and fan-ins, in graph order."""
    return OUTPUT_PARAMS[config.softmax](config)
