"""Frozen configuration dataclasses: defaults live here, files and the CLI override them.

A resolved `Config` is stored in every checkpoint, so anything that shapes the graph or the
data pipeline must be a field here, never an environment variable or a global.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnlm.architecture import CELL_SHAPES, OUTPUT_PARAMS, OutputConfig
from rnnlm.errors import RnnlmError
from rnnlm.validation import check_choices, checked_section, parse_cutoffs, require

# The choices of the string settings: each list exists here once, and the CLI's options and
# the registries (rnnlm.cells, rnnlm.optim) are checked against it.
FORMATS = ("csv", "lines", "prose")
LEVELS = ("word", "char", "whitespace")  # whitespace: pre-tokenized text such as PTB
CELLS = tuple(CELL_SHAPES)
DTYPES = ("float32", "float64")
MODES = ("sentence", "stream")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
SOFTMAXES = tuple(OUTPUT_PARAMS)
SAMPLERS = ("log-uniform", "unigram")  # rnnlm.output_tables.PROPOSALS
CHOICES = {
    "data.format": FORMATS,
    "data.level": LEVELS,
    "model.cell": CELLS,
    "model.dtype": DTYPES,
    "model.softmax": SOFTMAXES,
    "model.sampler": SAMPLERS,
    "train.mode": MODES,
    "train.optimizer": OPTIMIZERS,
}
MAX_LAYERS = 100  # a bound, so a crafted model file cannot make us loop for hours
# scan's truncate_gradient when model.bptt_truncate is not given: the tutorial's last 4 steps
# of each sentence; in stream mode none inside a window, whose edges already cut the gradient.
DEFAULT_BPTT_TRUNCATE = {"sentence": 4, "stream": -1}


@dataclass(frozen=True)
class DataConfig:
    """How a corpus becomes sentences of tokens and a vocabulary."""

    corpus: str | None = None  # None: the sample corpus shipped in the package
    format: str | None = None  # csv | lines | prose; None: from the file suffix
    column: str = "body"
    lowercase: bool = True
    level: str = "word"  # word (nltk) | char | whitespace (pre-tokenized, e.g. PTB)
    unknown: str = "UNKNOWN_TOKEN"  # the corpus's own unknown-word marker, e.g. "<unk>"
    vocab_size: int = 8000  # the tutorial's size, markers and UNKNOWN_TOKEN included
    min_count: int = 1
    valid: str | None = None  # a validation corpus, read like the training one
    valid_fraction: float = 0.0  # else hold out this share of the training sentences
    prepared: str | None = None  # a folder from `rnnlm prepare`: its shards replace corpus

    def __post_init__(self) -> None:
        check_choices(self, "data", CHOICES)
        require(self.vocab_size >= 4, "data.vocab_size", "must be at least 4")
        require(self.min_count >= 1, "data.min_count", "must be at least 1")
        require(bool(self.unknown.strip()), "data.unknown", "must be a non-empty token")
        require(0 <= self.valid_fraction < 1, "data.valid_fraction", "must be in [0, 1)")


@dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes the graph; fixed before compiling."""

    vocab_size: int = 8000
    hidden_size: int = 100
    cell: str = "rnn-tanh"
    layers: int = 1
    embedding_size: int = 0  # 0: no embedding layer, the first layer reads one-hot words
    bidirectional: bool = False  # forward and backward stacks; a fill-in model, not an LM
    bias: bool = True  # False: the tutorial's bias-free RNN (gated cells need biases)
    dropout: float = 0.0  # on non-recurrent connections while training (Zaremba et al.)
    variational_dropout: bool = False  # one dropout mask per column for all its time steps
    embedding_dropout: float = 0.0  # whole words dropped from the input while training
    weight_drop: float = 0.0  # DropConnect on each W_rec while training (Merity et al. 2018)
    tie_weights: bool = False  # output layer = embedding transposed
    # The output layer (rnnlm.output; checked against the vocabulary in `output`):
    softmax: str = "full"  # full | class | adaptive | sampled (training only)
    classes: int = 0  # class: 0 = about sqrt(vocab_size)
    # adaptive: "2000,10000" (in TOML also [2000, 10000]); "" = Grave et al.'s up to V / 2
    cutoffs: str | list[int] = ""
    div_value: float = 4.0  # adaptive: tail k projects to top_size // div_value^(k+1)
    samples: int = 1024  # sampled: negatives per batch
    sampler: str = "log-uniform"  # sampled: log-uniform over frequency ranks | unigram^0.75
    init_scale: float = 0.0  # uniform in ±init_scale; 0: the tutorial's ±1/sqrt(fan_in)
    identity_init: bool = False  # recurrent matrix = identity (ReLU RNN, Le et al. 2015)
    hard_sigmoid: bool = False  # gates with the tutorial's hard sigmoid
    fused: bool = True  # one C op per cell step (rnnlm.ops.recurrent); False: the plain graph
    # scan's truncate_gradient: the last N steps; -1 = full BPTT; None = the training mode's
    # default (DEFAULT_BPTT_TRUNCATE), decided by `for_mode` before a graph is built
    bptt_truncate: int | None = None
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if isinstance(self.cutoffs, list):  # a TOML array: kept in the option's one form
            object.__setattr__(self, "cutoffs", ",".join(str(c) for c in self.cutoffs))
        check_choices(self, "model", CHOICES)
        require(self.vocab_size >= 4, "model.vocab_size", "must be at least 4")
        require(self.hidden_size >= 1, "model.hidden_size", "must be at least 1")
        require(1 <= self.layers <= MAX_LAYERS, "model.layers", f"must be in 1..{MAX_LAYERS}")
        require(self.embedding_size >= 0, "model.embedding_size", "must be 0 or positive")
        require(
            self.bias or self.cell.startswith("rnn"),
            "model.bias",
            "gru and lstm cells need their biases",
        )
        require(
            not self.identity_init or self.cell.startswith("rnn"),
            "model.identity_init",
            "only for rnn-tanh and rnn-relu cells",
        )
        require(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        require(0 <= self.weight_drop < 1, "model.weight_drop", "must be in [0, 1)")
        require(0 <= self.embedding_dropout < 1, "model.embedding_dropout", "must be in [0, 1)")
        require(self.init_scale >= 0, "model.init_scale", "must be 0 or positive")
        require(
            not self.tie_weights or self.embedding_size == self.top_size,
            "model.tie_weights",
            f"needs embedding_size equal to the top layer's size ({self.top_size})",
        )
        # What the vocabulary size decides is checked by `output`, once the corpus is read.
        require(self.classes >= 0, "model.classes", "must be 0 or positive")
        require(
            parse_cutoffs(self.cutoffs) is not None,
            "model.cutoffs",
            "must be increasing positive integers separated by commas, e.g. 2000,10000",
        )
        require(0 < self.div_value < float("inf"), "model.div_value", "must be positive")
        require(self.samples >= 1, "model.samples", "must be at least 1")
        require(
            self.bptt_truncate in (None, -1) or self.bptt_truncate >= 1,
            "model.bptt_truncate",
            "must be -1 (full BPTT) or at least 1",
        )

    @property
    def top_size(self) -> int:
        """Width of what the output layer reads: both directions when bidirectional."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    @property
    def output(self) -> OutputConfig:
        """The output layer's settings; RnnlmError if they do not fit the vocabulary."""
        return OutputConfig(
            self.vocab_size,
            self.top_size,
            self.softmax,
            self.bias,
            self.tie_weights,
            self.classes,
            parse_cutoffs(self.cutoffs) or (),
            self.div_value,
            self.samples,
            self.sampler,
        )

    def for_mode(self, mode: str) -> ModelConfig:
        """This config with `bptt_truncate` decided: as given, else `mode`'s default."""
        if self.bptt_truncate is not None:
            return self
        return dataclasses.replace(self, bptt_truncate=DEFAULT_BPTT_TRUNCATE[mode])


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, batching, evaluation cadence and the learning-rate schedule."""

    mode: str = "sentence"  # sentence: state reset per sentence; stream: carried (PTB)
    batch_size: int = 1  # the tutorial's per-sentence SGD
    bptt: int = 35  # stream mode: steps per batch, gradients truncated between batches
    epochs: int = 10
    optimizer: str = "sgd"
    learning_rate: float = 0.005
    momentum: float = 0.9  # momentum, nesterov
    rho: float = 0.9  # rmsprop's decay of the squared-gradient average
    beta1: float = 0.9  # adam
    beta2: float = 0.999  # adam
    epsilon: float = 1e-6  # adagrad, rmsprop, adam
    clip_norm: float = 0.0  # global gradient-norm clipping; 0 = off
    weight_decay: float = 0.0  # L2 penalty coefficient
    halve_on_rise: bool = True  # halve the rate (and roll back) when the eval loss rises
    lr_decay: float = 1.0  # multiply the rate by this each epoch after lr_decay_start
    lr_decay_start: int = 0  # first epoch (1-based) at whose end the decay applies
    patience: int = 0  # stop after this many evaluations without improvement; 0 = never
    eval_every: int = 0  # steps between evaluations; 0 = once per epoch
    eval_sentences: int = 1000  # training sentences to measure on when there is no validation
    seed: int = 0
    distributed: bool = False  # data-parallel over the ranks of an MPI launch (mpirun -n N)

    def __post_init__(self) -> None:
        check_choices(self, "train", CHOICES)
        require(self.batch_size >= 1, "train.batch_size", "must be at least 1")
        require(self.bptt >= 1, "train.bptt", "must be at least 1")
        require(self.epochs >= 1, "train.epochs", "must be at least 1")
        require(self.learning_rate > 0, "train.learning_rate", "must be positive")
        for name in ("momentum", "rho", "beta1", "beta2"):
            require(0 <= getattr(self, name) < 1, f"train.{name}", "must be in [0, 1)")
        require(self.epsilon > 0, "train.epsilon", "must be positive")
        require(self.clip_norm >= 0, "train.clip_norm", "must be 0 or positive")
        require(self.weight_decay >= 0, "train.weight_decay", "must be 0 or positive")
        require(0 < self.lr_decay <= 1, "train.lr_decay", "must be in (0, 1]")
        require(self.lr_decay_start >= 0, "train.lr_decay_start", "must be 0 or positive")
        require(self.patience >= 0, "train.patience", "must be 0 or positive")
        require(self.eval_every >= 0, "train.eval_every", "must be 0 or positive")
        require(self.eval_sentences >= 1, "train.eval_sentences", "must be at least 1")
        require(self.seed >= 0, "train.seed", "must be 0 or positive")


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
        return cls(**{name: checked_section(hints[name], name, values[name]) for name in values})


def load_config(path: str | Path) -> dict[str, dict[str, Any]]:
    """The raw sections of a TOML config file, checked strictly by building a `Config` once.

    Returns the file's values only (not merged with defaults), so `resolve` can layer CLI
    options on top. Every error is one line that names the file.
    """
    source = str(path)
    path = Path(path)
    if not path.exists():
        raise RnnlmError(f"{source}: no such config file")
    if path.is_dir():
        raise RnnlmError(f"{source}: is a directory, not a config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise RnnlmError(f"{source}: cannot read: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise RnnlmError(f"{source}: not UTF-8 (bad byte at offset {error.start})") from error
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message already says where, e.g. "Invalid value (at line 3, column 9)"
        message = " ".join(str(error).split())
        raise RnnlmError(f"{source}: invalid TOML: {message}") from error
    try:
        Config.from_dict(values)
    except RnnlmError as error:
        raise RnnlmError(f"{source}: {error}") from error
    return values


def resolve(file_values: dict[str, Any] | None, overrides: dict[str, dict[str, Any]]) -> Config:
    """Defaults <- file values <- overrides, merged key by key within each section.

    `overrides` holds only the options the user actually gave (absent keys keep the file's or
    the default value). The merged result is validated by `Config.from_dict`.
    """
    return Config.from_dict(resolve_dicts(file_values, overrides))


def resolve_dicts(*layers: dict[str, Any] | None) -> dict[str, Any]:
    """Sections merged key by key, later layers winning; nothing is checked."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for name, values in (layer or {}).items():
            if isinstance(values, dict) and isinstance(merged.get(name), dict):
                merged[name] = {**merged[name], **values}
            else:
                merged[name] = dict(values) if isinstance(values, dict) else values
    return merged


def resume(
    saved: Config, file_values: dict[str, Any] | None, overrides: dict[str, dict[str, Any]]
) -> Config:
    """The config of a resumed run: the checkpoint's, with the [train] values given.

    Data and model values given (in the file or as overrides) must be the checkpoint's own:
    one that differs is an error naming each, old -> new, while repeating the values a run
    started with is fine.
    """
    given = resolve_dicts(file_values, overrides)
    stored = saved.to_dict()
    changed = [
        f"{section}.{key} {stored[section][key]!r} -> {value!r}"
        for section, values in given.items()
        if section != "train" and isinstance(values, dict)
        for key, value in sorted(values.items())
        if key in stored.get(section, {}) and value != stored[section][key]
    ]
    if changed:
        raise RnnlmError(
            "a resumed run keeps the data and model settings of its checkpoint; these differ "
            f"from it: {', '.join(changed)}"
        )
    return resolve(stored, {"train": given.get("train", {})})
