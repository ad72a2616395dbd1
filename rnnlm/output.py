"""The output layer: one registry entry per softmax kind, from top states to log-probabilities.

    kind      parameters (K inputs, V words)                         tables kept with the model
    full      out/W (K, V), out/b (V,)                                -
    class     out/class/W (K, C), out/class/b (C,),                   word_class (V,) int32
              out/word/W (V, K), out/word/b (V,)
    adaptive  out/head/W (c_0 + n, K), out/head/b (c_0 + n,),         order (V,) int32
              out/tail{k}/P (d_k, K), out/tail{k}/W (words_k, d_k)
    sampled   out/W (K, V), out/b (V,): the full softmax's            proposal (V,) float64

Each kind gives the log-probability of the targets (the training loss and `score`) and the
log-distribution over all V words (`sample`, `fill`, the next word). Tied weights reuse the
embedding embed/W (V, K): as out/W transposed (full, sampled), as out/word/W (class), and as
the head's c_0 word rows (adaptive, whose head then keeps only its n cluster rows,
out/head/clusters (n, K); its tails live in smaller spaces, d_k < K, and are never tied).
The biases exist when `bias` is set; the adaptive softmax has only a head bias (PyTorch's
`head_bias`).

Tables are made once from the vocabulary's counts (`make_tables`), saved in the checkpoint,
and checked when read back (`check_tables`). class: each word's class, by cumulative unigram
frequency (Mikolov et al. 2011). adaptive: word ids in frequency order, whose positions the
cutoffs cut (ids need not be frequency-ordered: the vocabulary puts the unknown token last
whatever its count). sampled: the proposal of the negatives, log-uniform over frequency ranks
(TensorFlow's sampler) or unigram^0.75. The sampled softmax draws its negatives in the graph
from the model's `RandomStream`, so reseeding the stream replays them (exact resume).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnnlm.backend import log_softmax
from rnnlm.backend import tensor as tt
from rnnlm.errors import RnnlmError
from rnnlm.ops.adaptive_softmax import adaptive_log_probs, adaptive_log_softmax
from rnnlm.ops.class_softmax import class_log_softmax, class_nll, class_tables
from rnnlm.ops.sampled_softmax import draw_samples, sampled_softmax_nll
from rnnlm.ops.softmax import softmax_nll
from rnnlm.params import uniform_fan_in

SOFTMAX_KINDS = ("full", "class", "adaptive", "sampled")
SAMPLERS = ("log-uniform", "unigram")
DEFAULT_CUTOFFS = (2000, 10000, 50000, 200000)  # Grave et al.'s; those below V / 2 are used


@dataclass(frozen=True)
class OutputConfig:
    """Everything that shapes the output layer; errors name the `model.` config key."""

    vocab_size: int
    input_size: int  # K: the width of the top states
    softmax: str = "full"
    bias: bool = True  # adaptive: the head's bias only
    tied: bool = False  # word vectors shared with the embedding embed/W (V, K)
    classes: int = 0  # class: 0 = round(sqrt(V))
    cutoffs: tuple[int, ...] = ()  # adaptive: () = those of DEFAULT_CUTOFFS below V / 2
    div_value: float = 4.0  # adaptive: tail k projects to K // div_value^(k+1)
    samples: int = 1024  # sampled: negatives per batch, shared by its rows
    sampler: str = "log-uniform"  # sampled: log-uniform (over frequency ranks) | unigram

    def __post_init__(self) -> None:
        v = self.vocab_size
        _require(v >= 2 and self.input_size >= 1, "vocab_size", "at least 2 words, 1 input")
        _require(self.softmax in SOFTMAX_KINDS, "softmax", "|".join(SOFTMAX_KINDS))
        _require(0 <= self.classes <= v, "classes", f"must be in 0..{v} (0: about sqrt(V))")
        cutoffs = list(self.cutoffs)
        _require(
            all(type(c) is int and 0 < c < v for c in cutoffs) and cutoffs == sorted(set(cutoffs)),
            "cutoffs",
            f"must increase strictly within 1..{v - 1}",
        )
        _require(self.div_value > 0 and math.isfinite(self.div_value), "div_value", "> 0")
        if self.softmax == "adaptive":
            for k, (width, _) in enumerate(self.tails):
                _require(width >= 1, "div_value", f"leaves tail {k} a projection of no units")
        _require(self.samples >= 1, "samples", "must be at least 1")
        _require(self.sampler in SAMPLERS, "sampler", "|".join(SAMPLERS))

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


# -- tables: made from the vocabulary's counts ------------------------------------------------


def frequency_order(counts: np.ndarray) -> np.ndarray:
    """Word ids by descending count, ties by id (V,) int32."""
    return np.argsort(-np.asarray(counts, dtype=np.float64), kind="stable").astype(np.int32)


def frequency_classes(counts: np.ndarray, n_classes: int) -> np.ndarray:
    """Each word's class (V,) int32 by cumulative unigram frequency (Mikolov et al. 2011):
    in frequency order, a class closes once the classes so far hold their share of the
    tokens; every class gets at least one word."""
    order = frequency_order(counts)
    mass = np.asarray(counts, dtype=np.float64)[order]
    share = (
        np.cumsum(mass) / mass.sum() if mass.sum() > 0 else np.arange(1, len(mass) + 1) / len(mass)
    )
    word_class = np.empty(len(order), dtype=np.int32)
    c = 0
    for rank, word in enumerate(order):
        word_class[word] = c
        words_left, classes_left = len(order) - rank - 1, n_classes - c - 1
        if classes_left and (share[rank] > (c + 1) / n_classes or words_left == classes_left):
            c += 1
    return word_class


def log_uniform_proposal(order: np.ndarray) -> np.ndarray:
    """TensorFlow's log-uniform (Zipf) sampler over frequency ranks r:
    q = log((r + 2) / (r + 1)) / log(V + 1), as word probabilities (V,)."""
    ranks = np.arange(len(order), dtype=np.float64)
    q = np.empty(len(order))
    q[order] = np.log((ranks + 2) / (ranks + 1)) / np.log(len(order) + 1)
    return q


def unigram_proposal(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """Counts to the power 0.75 (Mikolov et al. 2013), a count of 0 taken as 1 so that
    every word can be drawn (V,)."""
    q = np.maximum(np.asarray(counts, dtype=np.float64), 1.0) ** power
    return q / q.sum()


# -- the layer ----------------------------------------------------------------------------------


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
    tables: tuple[str, ...]  # names of the tables kept with the model
    params: Callable[[OutputConfig], dict[str, ParamSpec]]
    make_tables: Callable[[OutputConfig, np.ndarray], dict[str, np.ndarray]]
    # Checks a model file's tables (ValueError) and derives the graph's constants from them.
    constants: Callable[[OutputConfig, Mapping[str, np.ndarray]], dict[str, np.ndarray]]
    log_probs: Callable[[OutputLayer, Any, Any, bool], Any]  # (N, K), (N,) -> (N,)
    log_distribution: Callable[[OutputLayer, Any], Any]  # (N, K) -> (N, V)


def _no_tables(config: OutputConfig, counts: np.ndarray) -> dict[str, np.ndarray]:
    return {}


def _no_constants(config: OutputConfig, tables: Mapping[str, np.ndarray]) -> dict:
    return {}


# full: z = top out/W + out/b; p = softmax(z)


def _full_params(config: OutputConfig) -> dict[str, ParamSpec]:
    k, v = config.input_size, config.vocab_size
    specs = {} if config.tied else {"out/W": ParamSpec((k, v), k)}
    return specs | ({"out/b": ParamSpec((v,), 0)} if config.bias else {})


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


def _class_params(config: OutputConfig) -> dict[str, ParamSpec]:
    k, v, c = config.input_size, config.vocab_size, config.n_classes
    specs = {"out/class/W": ParamSpec((k, c), k)}
    specs |= {"out/class/b": ParamSpec((c,), 0)} if config.bias else {}
    specs |= {} if config.tied else {"out/word/W": ParamSpec((v, k), k)}
    return specs | ({"out/word/b": ParamSpec((v,), 0)} if config.bias else {})


def _class_tables(config: OutputConfig, counts: np.ndarray) -> dict[str, np.ndarray]:
    return {"word_class": frequency_classes(counts, config.n_classes)}


def _class_constants(config: OutputConfig, tables: Mapping[str, np.ndarray]) -> dict:
    word_class, members, starts = class_tables(tables["word_class"], config.n_classes)
    return {"word_class": word_class, "members": members, "starts": starts}


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


def _adaptive_tables(config: OutputConfig, counts: np.ndarray) -> dict[str, np.ndarray]:
    return {"order": frequency_order(counts)}


def _adaptive_constants(config: OutputConfig, tables: Mapping[str, np.ndarray]) -> dict:
    order = np.asarray(tables["order"])
    v = config.vocab_size
    if order.dtype.kind not in "iu" or not np.array_equal(np.sort(order), np.arange(v)):
        raise ValueError(f"the adaptive softmax's word order is not a permutation of 0..{v - 1}")
    position = np.empty(v, dtype=np.int32)
    position[order] = np.arange(v, dtype=np.int32)
    return {"order": order.astype(np.int32), "position": position}


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


def _sampled_tables(config: OutputConfig, counts: np.ndarray) -> dict[str, np.ndarray]:
    if config.sampler == "unigram":
        return {"proposal": unigram_proposal(counts)}
    return {"proposal": log_uniform_proposal(frequency_order(counts))}


def _sampled_constants(config: OutputConfig, tables: Mapping[str, np.ndarray]) -> dict:
    q = np.asarray(tables["proposal"])
    if q.dtype.kind != "f" or not np.isfinite(q).all() or (q <= 0).any():
        raise ValueError("the sampled softmax's proposal must be positive and finite")
    if abs(q.sum() - 1) > 1e-6:
        raise ValueError(f"the sampled softmax's proposal sums to {q.sum()}, not 1")
    q = q.astype(np.float64) / q.sum()
    return {"proposal": q, "log_expected": np.log(config.samples * q)}


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
    "full": Softmax(
        (), _full_params, _no_tables, _no_constants, _full_log_probs, _full_log_distribution
    ),
    "class": Softmax(
        ("word_class",),
        _class_params,
        _class_tables,
        _class_constants,
        _class_log_probs,
        _class_log_distribution,
    ),
    "adaptive": Softmax(
        ("order",),
        _adaptive_params,
        _adaptive_tables,
        _adaptive_constants,
        _adaptive_log_probs,
        _adaptive_log_distribution,
    ),
    "sampled": Softmax(
        ("proposal",),
        _full_params,
        _sampled_tables,
        _sampled_constants,
        _sampled_log_probs,
        _full_log_distribution,
    ),
}


# -- the functions the model, the trainer and the checkpoint call ---------------------------------


def param_shapes(config: OutputConfig) -> dict[str, tuple[int, ...]]:
    """The output layer's parameters and their shapes, in graph order."""
    return {name: spec.shape for name, spec in SOFTMAXES[config.softmax].params(config).items()}


def init_params(
    config: OutputConfig, rng: np.random.Generator, init_scale: float = 0.0
) -> dict[str, np.ndarray]:
    """Zero biases; weights uniform in ±init_scale, or ±1/sqrt(fan_in) (also PyTorch's
    `nn.Linear` init) when init_scale is 0. The full softmax draws exactly as before."""
    arrays = {}
    for name, spec in SOFTMAXES[config.softmax].params(config).items():
        if not spec.fan_in:
            arrays[name] = np.zeros(spec.shape)
        elif init_scale:
            arrays[name] = rng.uniform(-init_scale, init_scale, size=spec.shape)
        else:
            arrays[name] = uniform_fan_in(rng, spec.shape, spec.fan_in)
    return arrays


def make_tables(config: OutputConfig, counts) -> dict[str, np.ndarray]:
    """The kind's tables from the training vocabulary's counts (V,), in id order."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (config.vocab_size,):
        raise RnnlmError(f"need {config.vocab_size} word counts, got {counts.shape}")
    return SOFTMAXES[config.softmax].make_tables(config, counts)


def check_tables(config: OutputConfig, tables: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A model file's tables, checked; what the graph derives from them. RnnlmError if bad."""
    kind = SOFTMAXES[config.softmax]
    expected = set(kind.tables)
    if set(tables) != expected:
        raise RnnlmError(
            f"the {config.softmax} softmax needs the tables {sorted(expected)}, "
            f"got {sorted(tables)}"
        )
    for name, table in tables.items():
        if np.shape(table) != (config.vocab_size,):
            raise RnnlmError(f"output table {name} has shape {np.shape(table)}, not (V,)")
    try:
        return kind.constants(config, tables)
    except ValueError as exc:
        raise RnnlmError(f"bad output table: {exc}") from None


def output_layer(
    config: OutputConfig,
    weights: Mapping[str, Any],
    tables: Mapping[str, np.ndarray],
    random: Any = None,
) -> OutputLayer:
    """The output layer over `weights` (parameter name -> symbolic variable, embed/W
    included when tied), with the tables `make_tables` made; `random` (a RandomStream) draws
    the sampled softmax's negatives."""
    return OutputLayer(config, weights, check_tables(config, tables), random)
