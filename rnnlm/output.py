"""The output layer's graph: from top states to log-probabilities, one entry per softmax kind.

Each kind gives the log-probability of the targets (the training loss, `score`, `eval`) and
the log-distribution over all V words (`sample`, `fill`, the next word). Its parameters and
their shapes are in `rnnlm.architecture` (OUTPUT_PARAMS, with a table of them), its tables
in `rnnlm.output_tables`; neither needs the tensor library, so reading a checkpoint builds
no graph. The sampled softmax is a training objective: with `train` it scores each target
against negatives drawn in the graph from the model's `RandomStream` (reseeding the stream
replays them: exact resume); otherwise it is the full softmax of the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnlm.architecture import OutputConfig, output_params
from rnnlm.backend import log_softmax
from rnnlm.backend import tensor as tt
from rnnlm.ops.adaptive_softmax import adaptive_log_probs, adaptive_log_softmax
from rnnlm.ops.class_softmax import class_log_softmax, class_nll
from rnnlm.ops.sampled_softmax import draw_samples, sampled_softmax_nll
from rnnlm.ops.softmax import softmax_nll
from rnnlm.output_tables import check_tables
from rnnlm.params import uniform_fan_in


@dataclass(frozen=True)
class OutputLayer:
    """One output layer over symbolic weights, ready to put on top of a graph."""

    config: OutputConfig
    weights: Mapping[str, Any]  # parameter name -> symbolic variable; embed/W when tied
    constants: Mapping[str, np.ndarray]  # what the kind derived from its tables
    random: Any = None  # a RandomStream: the sampled softmax's negatives
    kind: Softmax = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SOFTMAXES[self.config.softmax])

    def token_log_probs(self, top, y, train: bool = False):
        """log p(y | top): top (..., K), y (...) int -> (...). With `train` the sampled
        softmax gives its sampled objective's (negated) terms instead."""
        flat = top.reshape((-1, top.shape[-1]))  # (N, K): one big product
        return self.kind.log_probs(self, flat, y.flatten(), train).reshape(y.shape)

    def log_distribution(self, top):
        """log p(w | top) of every word: top (..., K) -> (..., V)."""
        flat = top.reshape((-1, top.shape[-1]))
        out = self.kind.log_distribution(self, flat)  # (N, V)
        return out.reshape((*[top.shape[i] for i in range(top.ndim - 1)], out.shape[1]))

    def bias(self, name: str):
        return self.weights[name] if self.config.bias else None


@dataclass(frozen=True)
class Softmax:
    log_probs: Callable[[OutputLayer, Any, Any, bool], Any]  # (N, K), (N,) -> (N,)
    log_distribution: Callable[[OutputLayer, Any], Any]  # (N, K) -> (N, V)


# full: z = top out/W + out/b; p = softmax(z)


def _full_weights(layer: OutputLayer):
    w = layer.weights["embed/W"].T if layer.config.tied else layer.weights["out/W"]
    return w, layer.bias("out/b")  # (K, V), (V,) or None


def _full_log_probs(layer: OutputLayer, top, y, train: bool):
    w, b = _full_weights(layer)
    return -softmax_nll(tt.dot(top, w), y, b)


def _full_log_distribution(layer: OutputLayer, top):
    w, b = _full_weights(layer)
    logits = tt.dot(top, w)
    return log_softmax(logits if b is None else logits + b, axis=-1)


# class: log p(w) = log softmax(top out/class/W + out/class/b)[class(w)]
#                 + log softmax over class(w)'s words u of (top . out/word/W[u] + out/word/b[u])


def _class_weights(layer: OutputLayer):
    word_W = layer.weights["embed/W" if layer.config.tied else "out/word/W"]  # (V, K)
    word_b = layer.bias("out/word/b")
    if word_b is None:
        word_b = tt.zeros((layer.config.vocab_size,), dtype=word_W.dtype)
    return layer.weights["out/class/W"], layer.bias("out/class/b"), word_W, word_b


def _class_log_probs(layer: OutputLayer, top, y, train: bool):
    class_W, class_b, word_W, word_b = _class_weights(layer)
    c = layer.constants
    y_class = tt.as_tensor_variable(c["word_class"])[y]  # (N,)
    log_p_class = -softmax_nll(tt.dot(top, class_W), y_class, class_b)
    tables = (c["word_class"], c["members"], c["starts"])
    return log_p_class - class_nll(top, word_W, word_b, y, *tables)


def _class_log_distribution(layer: OutputLayer, top):
    class_W, class_b, word_W, word_b = _class_weights(layer)
    c = layer.constants
    class_logits = tt.dot(top, class_W)  # (N, C)
    if class_b is not None:
        class_logits = class_logits + class_b
    in_class = class_log_softmax(tt.dot(top, word_W.T) + word_b, c["members"], c["starts"])
    return log_softmax(class_logits, axis=-1)[:, c["word_class"]] + in_class  # (N, V)


# adaptive: see rnnlm.ops.adaptive_softmax; words enter it as frequency positions


def _adaptive_weights(layer: OutputLayer):
    config, w = layer.config, layer.weights
    if config.tied:
        shortlist = config.head_cutoffs[0]
        # The shortlist's rows of the embedding: a slice when ids are already in frequency order.
        words = slice(0, shortlist) if _identity(layer) else layer.constants["order"][:shortlist]
        head_W = tt.concatenate([w["embed/W"][words], w["out/head/clusters"]], axis=0)
    else:
        head_W = w["out/head/W"]
    tails = [(w[f"out/tail{i}/P"], w[f"out/tail{i}/W"]) for i in range(len(config.tails))]
    return head_W, layer.bias("out/head/b"), tails


def _identity(layer: OutputLayer) -> bool:
    return bool((layer.constants["order"] == np.arange(layer.config.vocab_size)).all())


def _adaptive_log_probs(layer: OutputLayer, top, y, train: bool):
    head_W, head_b, tails = _adaptive_weights(layer)
    if not _identity(layer):
        y = tt.as_tensor_variable(layer.constants["position"])[y]
    config = layer.config
    return adaptive_log_probs(top, head_W, head_b, tails, y, config.head_cutoffs, config.vocab_size)


def _adaptive_log_distribution(layer: OutputLayer, top):
    head_W, head_b, tails = _adaptive_weights(layer)
    by_position = adaptive_log_softmax(top, head_W, head_b, tails, layer.config.head_cutoffs)
    return by_position if _identity(layer) else by_position[:, layer.constants["position"]]


# sampled: the full softmax's weights; training scores each target against shared negatives


def _sampled_log_probs(layer: OutputLayer, top, y, train: bool):
    if not train:
        return _full_log_probs(layer, top, y, train)
    if layer.random is None:
        raise ValueError("the sampled softmax draws its negatives from a RandomStream: pass one")
    w, b = _full_weights(layer)
    c = layer.constants
    samples = draw_samples(layer.random, c["proposal"], layer.config.samples)  # (S,)
    log_expected = c["log_expected"].astype(top.dtype)
    return -sampled_softmax_nll(top, w, b, y, samples, log_expected)


SOFTMAXES: dict[str, Softmax] = {
    "full": Softmax(_full_log_probs, _full_log_distribution),
    "class": Softmax(_class_log_probs, _class_log_distribution),
    "adaptive": Softmax(_adaptive_log_probs, _adaptive_log_distribution),
    "sampled": Softmax(_sampled_log_probs, _full_log_distribution),
}


def init_params(
    config: OutputConfig, rng: np.random.Generator, init_scale: float = 0.0
) -> dict[str, np.ndarray]:
    """Zero biases; weights uniform in ±init_scale, or ±1/sqrt(fan_in) (also PyTorch's
    `nn.Linear` init) when init_scale is 0. The full softmax draws as it always has."""
    arrays = {}
    for name, spec in output_params(config).items():
        if not spec.fan_in:
            arrays[name] = np.zeros(spec.shape)
        elif init_scale:
            arrays[name] = rng.uniform(-init_scale, init_scale, size=spec.shape)
        else:
            arrays[name] = uniform_fan_in(rng, spec.shape, spec.fan_in)
    return arrays


def output_layer(
    config: OutputConfig,
    weights: Mapping[str, Any],
    tables: Mapping[str, np.ndarray],
    random: Any = None,
) -> OutputLayer:
    """The output layer over `weights` (parameter name -> symbolic variable, embed/W
    included when tied), with the tables `output_tables.make_tables` made (checked here:
    RnnlmError if bad); `random` (a RandomStream) draws the sampled softmax's negatives."""
    return OutputLayer(config, weights, check_tables(config, tables), random)
