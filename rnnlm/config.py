"""Frozen configuration dataclasses: defaults live here, files and the CLI override them.

A resolved `Config` is stored in every checkpoint, so anything that shapes the graph or the
data pipeline must be a field here, never an environment variable or a global.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from rnnlm.errors import RnnlmError

CELLS = ("rnn-tanh",)
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class DataConfig:
    """How a corpus becomes sentences of tokens and a vocabulary."""

    corpus: str | None = None  # None: the sample corpus shipped in the package
    format: str | None = None  # csv | lines | prose; None: from the file suffix
    column: str = "body"
    lowercase: bool = True
    vocab_size: int = 8000  # the tutorial's size, markers and UNKNOWN_TOKEN included
    min_count: int = 1

    def __post_init__(self) -> None:
        _require(self.vocab_size >= 4, "data.vocab_size", "must be at least 4")
        _require(self.min_count >= 1, "data.min_count", "must be at least 1")
        _require(self.format in (None, "csv", "lines", "prose"), "data.format", "csv|lines|prose")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes the graph; fixed before compiling."""

    vocab_size: int = 8000
    hidden_size: int = 100
    cell: str = "rnn-tanh"
    bptt_truncate: int = 4  # scan's truncate_gradient; -1 = full BPTT
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _require(self.vocab_size >= 4, "model.vocab_size", "must be at least 4")
        _require(self.hidden_size >= 1, "model.hidden_size", "must be at least 1")
        _require(self.cell in CELLS, "model.cell", "|".join(CELLS))
        _require(
            self.bptt_truncate == -1 or self.bptt_truncate >= 1,
            "model.bptt_truncate",
            "must be -1 (full BPTT) or at least 1",
        )
        _require(self.dtype in DTYPES, "model.dtype", "|".join(DTYPES))


@dataclass(frozen=True)
class TrainConfig:
    """The tutorial's SGD loop: step size, evaluation cadence, stopping."""

    epochs: int = 10
    learning_rate: float = 0.005
    eval_every: int = 0  # SGD steps between evaluations; 0 = once per epoch
    eval_sentences: int = 1000  # training sentences the evaluation loss is measured on
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", "must be at least 1")
        _require(self.learning_rate > 0, "train.learning_rate", "must be positive")
        _require(self.eval_every >= 0, "train.eval_every", "must be 0 or positive")
        _require(self.eval_sentences >= 1, "train.eval_sentences", "must be at least 1")


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """Strict: unknown sections or keys and wrong types are errors naming the key."""
        if not isinstance(values, dict):
            raise RnnlmError("config must be a table of sections")
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(values) - set(sections)
        if unknown:
            raise RnnlmError(f"unknown config section {sorted(unknown)[0]!r}")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _section(hints[name], name, values[name]) for name in values})


def _section(kind: type, name: str, values: Any) -> Any:
    if not isinstance(values, dict):
        raise RnnlmError(f"config section {name!r} must be a table")
    hints = typing.get_type_hints(kind)
    for key, value in values.items():
        if key not in hints:
            raise RnnlmError(f"unknown config key {name}.{key}")
        if not _has_type(value, hints[key]):
            raise RnnlmError(f"config key {name}.{key} has the wrong type: {value!r}")
    return kind(**values)


def _has_type(value: Any, hint: Any) -> bool:
    if isinstance(hint, types.UnionType):
        return any(_has_type(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _require(ok: bool, key: str, expected: str) -> None:
    if not ok:
        raise RnnlmError(f"bad config value for {key}: {expected}")
