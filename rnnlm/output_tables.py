"""The output layer's tables: made once from the training counts, saved in the checkpoint,
checked when read back, and turned into what the graph needs. numpy only.

    class     word_class (V,) int32: each word's class, by cumulative unigram frequency
              (Mikolov et al. 2011)
    adaptive  order (V,) int32: word ids in frequency order, whose positions the cutoffs cut
              (ids need not be in frequency order: the vocabulary puts the unknown token last
              whatever its count)
    sampled   proposal (V,) float64: the negatives' distribution, log-uniform over frequency
              ranks (TensorFlow's sampler) or unigram^0.75 (Mikolov et al. 2013)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rnnlm.architecture import OutputConfig
from rnnlm.errors import RnnlmError

if TYPE_CHECKING:
    from rnnlm.vocab import Vocabulary


def training_counts(vocab: Vocabulary) -> np.ndarray:
    """The vocabulary's counts (V,) in id order, SENTENCE_START's set to 0: it is counted once
    per sentence but never predicted, so it should hold no frequent word's place."""
    counts = np.asarray(vocab.counts, dtype=np.float64)
    counts[vocab.start_id] = 0
    return counts


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


def class_tables(word_class: np.ndarray, n_classes: int) -> tuple[np.ndarray, ...]:
    """(word_class, members, starts) as int32: every word's class, the words of each class
    in id order, and where each class starts in `members` (C + 1,). ValueError if bad."""
    word_class = np.asarray(word_class)
    if word_class.ndim != 1 or not np.issubdtype(word_class.dtype, np.integer):
        raise ValueError("a class map is a vector of integer classes, one per word")
    if len(word_class) and (word_class.min() < 0 or word_class.max() >= n_classes):
        raise ValueError(f"a class map's classes must lie in [0, {n_classes})")
    sizes = np.bincount(word_class, minlength=n_classes)
    if (sizes == 0).any():
        raise ValueError(f"class {int(np.argmin(sizes))} of the class map has no words")
    members = np.argsort(word_class, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    return word_class.astype(np.int32), members.astype(np.int32), starts.astype(np.int32)


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


# The sampled softmax's proposals; `config.SAMPLERS` lists the same names.
PROPOSALS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "log-uniform": lambda counts: log_uniform_proposal(frequency_order(counts)),
    "unigram": unigram_proposal,
}


# -- per kind: the tables' names, how they are made, what the graph derives from them ---------


@dataclass(frozen=True)
class Tables:
    names: tuple[str, ...]
    make: Callable[[OutputConfig, np.ndarray], dict[str, np.ndarray]]
    # Checks a model file's tables (ValueError) and derives the graph's constants from them.
    derive: Callable[[OutputConfig, Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def _class_derive(config: OutputConfig, tables: Mapping[str, np.ndarray]) -> dict:
    word_class, members, starts = class_tables(tables["word_class"], config.n_classes)
    return {"word_class": word_class, "members": members, "starts": starts}


def _adaptive_derive(config: OutputConfig, tables: Mapping[str, np.ndarray]) -> dict:
    order = np.asarray(tables["order"])
    v = config.vocab_size
    if order.dtype.kind not in "iu" or not np.array_equal(np.sort(order), np.arange(v)):
        raise ValueError(f"the adaptive softmax's word order is not a permutation of 0..{v - 1}")
    position = np.empty(v, dtype=np.int32)
    position[order] = np.arange(v, dtype=np.int32)
    return {"order": order.astype(np.int32), "position": position}


def _sampled_derive(config: OutputConfig, tables: Mapping[str, np.ndarray]) -> dict:
    q = np.asarray(tables["proposal"])
    if q.dtype.kind != "f" or not np.isfinite(q).all() or (q <= 0).any():
        raise ValueError("the sampled softmax's proposal must be positive and finite")
    if abs(q.sum() - 1) > 1e-6:
        raise ValueError(f"the sampled softmax's proposal sums to {q.sum()}, not 1")
    q = q.astype(np.float64) / q.sum()
    return {"proposal": q, "log_expected": np.log(config.samples * q)}


TABLES: dict[str, Tables] = {
    "full": Tables((), lambda config, counts: {}, lambda config, tables: {}),
    "class": Tables(
        ("word_class",),
        lambda config, counts: {"word_class": frequency_classes(counts, config.n_classes)},
        _class_derive,
    ),
    "adaptive": Tables(
        ("order",), lambda config, counts: {"order": frequency_order(counts)}, _adaptive_derive
    ),
    "sampled": Tables(
        ("proposal",),
        lambda config, counts: {"proposal": PROPOSALS[config.sampler](counts)},
        _sampled_derive,
    ),
}


def make_tables(config: OutputConfig, counts) -> dict[str, np.ndarray]:
    """The kind's tables from the training vocabulary's counts (V,), in id order."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (config.vocab_size,):
        raise RnnlmError(f"need {config.vocab_size} word counts, got {counts.shape}")
    return TABLES[config.softmax].make(config, counts)


def check_tables(config: OutputConfig, tables: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A model file's tables, checked; what the graph derives from them. RnnlmError if bad."""
    kind = TABLES[config.softmax]
    expected = set(kind.names)
    if set(tables) != expected:
        raise RnnlmError(
            f"the {config.softmax} softmax needs the tables {sorted(expected)}, "
            f"got {sorted(tables)}"
        )
    for name, table in tables.items():
        if np.shape(table) != (config.vocab_size,):
            raise RnnlmError(f"output table {name} has shape {np.shape(table)}, not (V,)")
    try:
        return kind.derive(config, tables)
    except ValueError as exc:
        raise RnnlmError(f"bad output table: {exc}") from None


def tables_digest(tables: Mapping[str, np.ndarray]) -> str:
    """A digest of the tables' names, types and values: they are constants of the graph, so
    a compiled function found by the model config alone must be found by them too."""
    digest = hashlib.sha256()
    for name in sorted(tables):
        table = np.ascontiguousarray(tables[name])
        digest.update(f"{name}:{table.dtype.str}:{table.shape}:".encode())
        digest.update(table.tobytes())
    return digest.hexdigest()
