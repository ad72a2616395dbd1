"""The options commands share, and `train`'s and `prepare`'s options generated from the config.

A config option's type, default and choices come from its dataclass field and
`rnnlm.config.CHOICES`; only its help text, and a flag that is not the key with dashes,
are written here. An option left out leaves the config file's value, or the default.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from rnnlm.config import CHOICES, DEFAULT_BPTT_TRUNCATE, Config


@dataclass(frozen=True)
class ConfigOption:
    help: str
    flag: str | None = None  # None: --key-with-dashes; booleans --key/--no-key
    type: Any = None  # None: from the field's type


TRUNCATION_DEFAULTS = ", ".join(f"{mode} {n}" for mode, n in DEFAULT_BPTT_TRUNCATE.items())
CONFIG_OPTIONS: dict[str, ConfigOption] = {
    "data.corpus": ConfigOption(
        "Training text: .csv (a row per comment) or .txt. Default: a sample corpus shipped "
        "with rnnlm.",
        type=click.Path(dir_okay=False),
    ),
    "data.format": ConfigOption(
        "lines = a sentence per line (PTB style); prose = running text, split by a Punkt "
        "model trained on it. Default: csv for .csv, else lines."
    ),
    "data.column": ConfigOption("CSV column holding the text."),
    "data.lowercase": ConfigOption(
        "Lowercase the text (the tutorial's choice), or keep its case.",
        flag="--lowercase/--keep-case",
    ),
    "data.level": ConfigOption(
        "Tokens: nltk words, characters, or whitespace-separated (pre-tokenized text, PTB)."
    ),
    "data.unknown": ConfigOption(
        "The corpus's own unknown-word marker, if it has one (PTB: <unk>)."
    ),
    "data.vocab_size": ConfigOption(
        "Vocabulary size, SENTENCE_START/END and the unknown token included."
    ),
    "data.min_count": ConfigOption("Drop words seen fewer times."),
    "data.valid": ConfigOption("Validation corpus.", type=click.Path(dir_okay=False)),
    "data.valid_fraction": ConfigOption(
        "Without --valid, hold out this share of the training sentences."
    ),
    "data.prepared": ConfigOption(
        "A folder written by `rnnlm prepare`: train on its shards and vocabulary (read from "
        "disk as needed) instead of --corpus.",
        flag="--data",
        type=click.Path(file_okay=False),
    ),
    "model.hidden_size": ConfigOption("Units per recurrent layer."),
    "model.cell": ConfigOption("Recurrent cell."),
    "model.layers": ConfigOption("Stacked recurrent layers."),
    "model.embedding_size": ConfigOption(
        "Word-embedding size; 0 = none, the first layer reads one-hot words."
    ),
    "model.bidirectional": ConfigOption(
        "A fill-in-the-blank model (see `rnnlm fill`), not a language model.",
        flag="--bidirectional/--unidirectional",
    ),
    "model.bias": ConfigOption("Biases (off: the tutorial's RNN)."),
    "model.dropout": ConfigOption("Dropout on non-recurrent connections."),
    "model.variational_dropout": ConfigOption(
        "--dropout draws one mask per sentence (per column of a --bptt window in stream mode), "
        "the same at every time step (Gal & Ghahramani 2016), instead of one per step."
    ),
    "model.embedding_dropout": ConfigOption(
        "Drop this share of the vocabulary from the input while training: a dropped word's "
        "embedding (or one-hot input weights) is zero wherever it occurs in the batch, the "
        "rest scaled up (Gal & Ghahramani 2016, Merity et al. 2018)."
    ),
    "model.weight_drop": ConfigOption(
        "DropConnect on each recurrent matrix while training: this share of its entries zeroed, "
        "the rest scaled up, one mask per step of training (Merity et al. 2018)."
    ),
    "model.tie_weights": ConfigOption(
        "Output layer = embedding transposed (needs embedding size = top hidden size).",
        flag="--tie-weights/--untie-weights",
    ),
    "model.softmax": ConfigOption(
        "Output layer: full; class (frequency classes, Mikolov et al. 2011); adaptive "
        "(Grave et al. 2017, as PyTorch's AdaptiveLogSoftmaxWithLoss); sampled (training only; "
        "eval, score and sample use the full softmax of the same weights)."
    ),
    "model.classes": ConfigOption("--softmax class: word classes; 0 = about sqrt(vocabulary)."),
    "model.cutoffs": ConfigOption(
        "--softmax adaptive: where the head and each tail cluster end, in frequency ranks, "
        "e.g. 2000,10000. Default: 2000,10000,50000,200000, those up to half the vocabulary."
    ),
    "model.div_value": ConfigOption(
        "--softmax adaptive: tail cluster k projects to top size / this^(k+1) units."
    ),
    "model.samples": ConfigOption("--softmax sampled: negatives drawn per batch."),
    "model.sampler": ConfigOption(
        "--softmax sampled: negatives log-uniform over frequency ranks, or unigram^0.75."
    ),
    "model.init_scale": ConfigOption("Uniform init in ±this; 0 = the tutorial's ±1/sqrt(fan-in)."),
    "model.identity_init": ConfigOption("Identity recurrent matrix (for rnn-relu)."),
    "model.hard_sigmoid": ConfigOption(
        "Gates with a hard sigmoid.", flag="--hard-sigmoid/--sigmoid"
    ),
    "model.fused": ConfigOption(
        "Each recurrent step as one op (rnnlm.ops.recurrent: one BLAS product, then every "
        "gate in one pass); --no-fused: the plain graph of small ops it is checked against."
    ),
    "model.bptt_truncate": ConfigOption(
        "Back-propagate through the last N steps of each sentence or --bptt window; -1 = "
        f"all.  [default: {TRUNCATION_DEFAULTS}]"
    ),
    "model.dtype": ConfigOption("Float type."),
    "train.mode": ConfigOption(
        "sentence: state reset per sentence; stream: the corpus as one sequence, state carried."
    ),
    "train.batch_size": ConfigOption("Sentences (or stream columns) per batch."),
    "train.bptt": ConfigOption("Stream mode: steps per batch."),
    "train.epochs": ConfigOption("Passes over the training data."),
    "train.optimizer": ConfigOption("Optimizer."),
    "train.learning_rate": ConfigOption("Learning rate.", flag="--lr"),
    "train.momentum": ConfigOption("momentum/nesterov coefficient."),
    "train.rho": ConfigOption("rmsprop decay."),
    "train.beta1": ConfigOption("adam's decay of the gradient average."),
    "train.beta2": ConfigOption("adam's decay of the squared-gradient average."),
    "train.epsilon": ConfigOption("adagrad, rmsprop and adam: added to the denominator."),
    "train.clip_norm": ConfigOption("Clip the global gradient norm; 0 = off."),
    "train.weight_decay": ConfigOption("L2 penalty."),
    "train.halve_on_rise": ConfigOption(
        "When the evaluation loss rises: back to the best weights, halve the learning rate."
    ),
    "train.lr_decay": ConfigOption("Multiply the learning rate by this per epoch..."),
    "train.lr_decay_start": ConfigOption("...from the end of this epoch on."),
    "train.patience": ConfigOption(
        "Stop after this many evaluations without improvement; 0 = never."
    ),
    "train.eval_every": ConfigOption(
        "Steps between evaluations and checkpoints; 0 = once per epoch."
    ),
    "train.eval_sentences": ConfigOption(
        "Without validation data: training sentences to evaluate on."
    ),
    "train.seed": ConfigOption("Seed for initialisation, shuffling and dropout."),
    "train.distributed": ConfigOption(
        "Data-parallel over the ranks of an MPI launch: mpirun -n N rnnlm train --distributed."
    ),
}
NOT_OPTIONS = ("model.vocab_size",)  # decided by the vocabulary the corpus gives


def config_fields() -> list[tuple[str, Any, Any]]:
    """(section.key, type, default) of every config field an option sets, in config order."""
    fields = []
    for section in dataclasses.fields(Config):
        kind = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            key = f"{section.name}.{f.name}"
            if key not in NOT_OPTIONS:
                fields.append((key, hints[f.name], f.default))
    return fields


def config_option(key: str, hint: Any, default: Any) -> Callable:
    spec = CONFIG_OPTIONS[key]  # a field without its option and help text is a bug: KeyError
    name = key.replace(".", "__")
    dashed = key.partition(".")[2].replace("_", "-")
    if hint is bool:
        flag = spec.flag or f"--{dashed}/--no-{dashed}"
        on, off = (word.lstrip("-") for word in flag.split("/"))
        text = f"{spec.help}  [default: {on if default else off}]"
        return click.option(flag, name, default=None, help=text)
    kind = spec.type
    if kind is None and key in CHOICES:
        kind = click.Choice(CHOICES[key])
    if kind is None:
        kind = next(t for t in (int, float, str) if t is hint or t in typing.get_args(hint))
    shown = "" if default in (None, "") else f"  [default: {default}]"
    return click.option(
        spec.flag or f"--{dashed}", name, type=kind, default=None, help=spec.help + shown
    )


def config_options(keys: tuple[str, ...] | None = None) -> Callable:
    """The config options (only those of `keys`, if given) as click options."""

    def decorate(command: Callable) -> Callable:
        for key, hint, default in reversed(config_fields()):
            if keys is None or key in keys:
                command = config_option(key, hint, default)(command)
        return command

    return decorate


def given(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The config values given as options, as {section: {key: value}}."""
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in options.items():
        if value is not None:
            section, key = name.split("__")
            overrides.setdefault(section, {})[key] = value
    return overrides


def option_name(command: click.Command | None, setting: str) -> str:
    """The option that sets `setting` (a config key such as "data.format", or an argument
    name such as "min_length"), as the user types it; the setting itself when none does."""
    for param in command.params if command is not None else []:
        if isinstance(param, click.Option) and param.name == setting.replace(".", "__"):
            return max(param.opts, key=lambda opt: opt.startswith("--"))
    return setting


# -- options several commands share -----------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")


def _cache(ctx: click.Context, param: click.Parameter, no_cache: bool) -> Any:
    from rnnlm.compiled import user_cache  # imports the tensor library: never for --help

    return user_cache(enabled=not no_cache)


# Gives the command `cache`: the user's compiled-function cache, or None with --no-cache.
cache_option = click.option(
    "--no-cache",
    "cache",
    is_flag=True,
    callback=_cache,
    help="Compile every function afresh: neither read nor write the compiled-function "
    "cache (see `rnnlm cache info`).",
)
quiet_option = click.option(
    "--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr, no progress bar."
)


def path_option(*names: str, help: str, folder: bool = False, **options: Any) -> Callable:
    """A file path option (a folder's, with `folder`), given to the library as a string."""
    kind = click.Path(file_okay=not folder, dir_okay=folder)
    return click.option(*names, type=kind, help=help, **options)


model_option = path_option(
    "--model",
    "model_path",
    default="model.npz",
    show_default=True,
    help="Checkpoint written by `rnnlm train`.",
)
mode_option = click.option(
    "--mode",
    type=click.Choice(CHOICES["train.mode"]),
    default="sentence",
    show_default=True,
    help="sentence: the state starts afresh at every sentence; stream: the sentences are one "
    "text, the state carried across (PTB convention).",
)


def models_option(text: str) -> Callable:
    return path_option("--model", "models", multiple=True, required=True, help=text)


def int_option(
    *names: str, default: int | None, help: str, low: int | None = 0, high: int | None = None
) -> Callable:
    """An integer option in [low, high] (None: unbounded); its default shown unless None."""
    return click.option(
        *names,
        type=click.IntRange(low, high),
        default=default,
        show_default=default is not None,
        help=help,
    )


def seed_option(text: str, default: int | None = 0) -> Callable:
    return int_option("--seed", default=default, help=text)


def corpus_option(text: str) -> Callable:
    return path_option("--corpus", required=True, help=text)


def out_option(default: str, text: str) -> Callable:
    return path_option("--out", default=default, show_default=True, help=text)


def config_file_option(text: str) -> Callable:
    return path_option("--config", "config_file", help=text)


# -- interpolation with an n-gram model -------------------------------------------------------

DEFAULT_NGRAM_WEIGHT = 0.5
NGRAM_HELP = (
    "An n-gram model to interpolate with, per token: an ARPA file (.arpa or .arpa.gz), or "
    "any model KenLM reads (a binary too) when the kenlm package is installed "
    "(pip install 'rnnlm[ngram]')."
)
ngram_path_option = path_option("--ngram", help=NGRAM_HELP)
ngram_weight_option = click.option(
    "--ngram-weight",
    type=click.FloatRange(0, 1),
    default=None,
    help="λ in p = λ·p_ngram + (1 − λ)·p_rnn  [default: "
    f"{DEFAULT_NGRAM_WEIGHT}]; `rnnlm tune-weight` finds it on held-out text.",
)


def ngram_options(command: Callable) -> Callable:
    """--ngram and --ngram-weight; the command turns them into one with `interpolation`."""
    return ngram_path_option(ngram_weight_option(command))


def interpolation(ngram: str | None, weight: float | None) -> Any:
    """The `rnnlm.interpolation.Interpolation` that --ngram and --ngram-weight ask for, or None."""
    if ngram is None:
        if weight is not None:
            raise click.UsageError("--ngram-weight needs --ngram (the n-gram model to mix in)")
        return None
    from rnnlm.interpolation import Interpolation

    return Interpolation.open(ngram, DEFAULT_NGRAM_WEIGHT if weight is None else weight)
