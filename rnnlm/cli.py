"""The `rnnlm` command: parse options, call the library, print results.

Exit codes: 0 success (Ctrl-C during training too: the model is saved), 1 bad input or an
unusable file (one line on stderr), 2 bad command-line usage, 130 interrupted otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from rnnlm import __version__
from rnnlm.errors import RnnlmError

log = logging.getLogger("rnnlm")


def user_errors(command: Callable) -> Callable:
    """Turn library errors into one-line messages and Ctrl-C into exit code 130."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except RnnlmError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def as_text(argument: str) -> str:
    """A command-line argument as valid text: bytes that were not UTF-8 become U+FFFD."""
    return argument.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnlm")
def main() -> None:
    """Recurrent neural network language models as Aesara (Theano) graphs.

    Train on a CSV or text corpus, then sample sentences or score text.
    """


# (option, section, key, click type, help): each maps onto one config field; an option the
# user does not give leaves the config file's value, or the default, in place.
TRAIN_OPTIONS = [
    (
        "--corpus",
        "data",
        "corpus",
        click.Path(dir_okay=False),
        "Training text: .csv (a row per comment) or .txt. Default: a sample corpus shipped "
        "with rnnlm.",
    ),
    ("--column", "data", "column", str, "CSV column holding the text."),
    (
        "--format",
        "data",
        "format",
        click.Choice(["csv", "lines", "prose"]),
        "lines = a sentence per line (PTB style); prose = running text, split by a Punkt model "
        "trained on it. Default: csv for .csv, else lines.",
    ),
    (
        "--level",
        "data",
        "level",
        click.Choice(["word", "char", "whitespace"]),
        "Tokens: nltk words, characters, or whitespace-separated (pre-tokenized text, PTB).",
    ),
    (
        "--unknown",
        "data",
        "unknown",
        str,
        "The corpus's own unknown-word marker, if it has one (PTB: <unk>).",
    ),
    ("--keep-case/--lowercase", "data", "lowercase", None, "Keep the text's case."),
    (
        "--vocab-size",
        "data",
        "vocab_size",
        int,
        "Vocabulary size, SENTENCE_START/END and UNKNOWN_TOKEN included.",
    ),
    ("--min-count", "data", "min_count", int, "Drop words seen fewer times."),
    ("--valid", "data", "valid", click.Path(dir_okay=False), "Validation corpus."),
    (
        "--valid-fraction",
        "data",
        "valid_fraction",
        float,
        "Without --valid, hold out this share of the training sentences.",
    ),
    (
        "--data",
        "data",
        "prepared",
        click.Path(file_okay=False),
        "A folder written by `rnnlm prepare`: train on its shards and vocabulary (read from "
        "disk as needed) instead of --corpus.",
    ),
    (
        "--cell",
        "model",
        "cell",
        click.Choice(["rnn-tanh", "rnn-relu", "gru", "lstm"]),
        "Recurrent cell.",
    ),
    ("--hidden-size", "model", "hidden_size", int, "Units per recurrent layer."),
    (
        "--embedding-size",
        "model",
        "embedding_size",
        int,
        "Word-embedding size; 0 = none, the first layer reads one-hot words.",
    ),
    ("--layers", "model", "layers", int, "Stacked recurrent layers."),
    (
        "--bidirectional/--unidirectional",
        "model",
        "bidirectional",
        None,
        "A fill-in-the-blank model (see `rnnlm fill`), not a language model.",
    ),
    ("--dropout", "model", "dropout", float, "Dropout on non-recurrent connections."),
    (
        "--tie-weights/--untie-weights",
        "model",
        "tie_weights",
        None,
        "Output layer = embedding transposed (needs embedding size = top hidden size).",
    ),
    (
        "--init-scale",
        "model",
        "init_scale",
        float,
        "Uniform init in ±this; 0 = the tutorial's ±1/sqrt(fan-in).",
    ),
    (
        "--identity-init/--no-identity-init",
        "model",
        "identity_init",
        None,
        "Identity recurrent matrix (for rnn-relu).",
    ),
    ("--hard-sigmoid/--sigmoid", "model", "hard_sigmoid", None, "Gates with a hard sigmoid."),
    ("--bias/--no-bias", "model", "bias", None, "Biases (off: the tutorial's RNN)."),
    (
        "--bptt-truncate",
        "model",
        "bptt_truncate",
        int,
        "Sentence mode: back-propagate through the last N steps; -1 = all.",
    ),
    ("--dtype", "model", "dtype", click.Choice(["float32", "float64"]), "Float type."),
    (
        "--mode",
        "train",
        "mode",
        click.Choice(["sentence", "stream"]),
        "sentence: state reset per sentence; stream: the corpus as one sequence, state carried.",
    ),
    ("--batch-size", "train", "batch_size", int, "Sentences (or stream columns) per batch."),
    ("--bptt", "train", "bptt", int, "Stream mode: steps per batch."),
    ("--epochs", "train", "epochs", int, "Passes over the training data."),
    (
        "--optimizer",
        "train",
        "optimizer",
        click.Choice(["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]),
        "Optimizer.",
    ),
    ("--lr", "train", "learning_rate", float, "Learning rate."),
    ("--momentum", "train", "momentum", float, "momentum/nesterov coefficient."),
    ("--rho", "train", "rho", float, "rmsprop decay."),
    ("--clip-norm", "train", "clip_norm", float, "Clip the global gradient norm; 0 = off."),
    ("--weight-decay", "train", "weight_decay", float, "L2 penalty."),
    (
        "--halve-on-rise/--no-halve-on-rise",
        "train",
        "halve_on_rise",
        None,
        "When the evaluation loss rises: back to the best weights, halve the learning rate.",
    ),
    ("--lr-decay", "train", "lr_decay", float, "Multiply the learning rate by this per epoch..."),
    ("--lr-decay-start", "train", "lr_decay_start", int, "...from the end of this epoch on."),
    (
        "--patience",
        "train",
        "patience",
        int,
        "Stop after this many evaluations without improvement; 0 = never.",
    ),
    (
        "--eval-every",
        "train",
        "eval_every",
        int,
        "Steps between evaluations and checkpoints; 0 = once per epoch.",
    ),
    (
        "--eval-sentences",
        "train",
        "eval_sentences",
        int,
        "Without validation data: training sentences to evaluate on.",
    ),
    ("--seed", "train", "seed", int, "Seed for initialisation, shuffling and dropout."),
    (
        "--distributed/--no-distributed",
        "train",
        "distributed",
        None,
        "Data-parallel over the ranks of an MPI launch: mpirun -n N rnnlm train --distributed.",
    ),
]


def config_options(command: Callable, keys: tuple[str, ...] | None = None) -> Callable:
    """The TRAIN_OPTIONS (only the `section.key` names in `keys`, if given) as click options."""
    from rnnlm.config import Config

    defaults = Config().to_dict()
    for flag, section, key, kind, text in reversed(TRAIN_OPTIONS):
        if keys is not None and f"{section}.{key}" not in keys:
            continue
        default = defaults[section][key]
        shown = "" if default is None else f"  [default: {default}]"
        if key == "lowercase":
            shown = "  [default: lowercase]"
        name = f"{section}__{key}"
        if kind is None:
            command = click.option(flag, name, default=None, help=text + shown)(command)
        else:
            command = click.option(flag, name, type=kind, default=None, help=text + shown)(command)
    return command


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="A TOML config (see configs/); options given here override it.",
)
@config_options
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Continue exactly where this checkpoint stopped (config, optimizer, data "
    "position); only [train] options may change.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="model.npz",
    show_default=True,
    help="Latest checkpoint, written atomically at every evaluation; the best one "
    "goes to NAME.best.npz beside it.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@user_errors
def train(config_file, resume, out, quiet, as_json, **options) -> None:
    """Tokenize a corpus, build a vocabulary and train an RNN language model.

    The loss (cross-entropy per token, in nats) is printed at every evaluation;
    Ctrl-C stops after the current step and saves the model.
    """
    from rnnlm import distributed

    distributed.one_blas_thread_per_rank()  # before numpy loads a BLAS
    from rnnlm import checkpoint
    from rnnlm.config import load_config, resolve
    from rnnlm.train import Trainer, prepare_data

    setup_logging(quiet)
    overrides: dict[str, dict] = {}
    for name, value in options.items():
        if value is not None:
            section, key = name.split("__")
            overrides.setdefault(section, {})[key] = value
    previous = None
    if resume is not None:
        previous = checkpoint.load(resume)
        changed = sorted(f"{s}.{k}" for s in overrides if s != "train" for k in overrides[s])
        if config_file or changed:
            raise RnnlmError(
                f"--resume keeps the checkpoint's data and model config; cannot change "
                f"{', '.join(changed) or '--config'}"
            )
        config = resolve(previous.config.to_dict(), overrides)
    else:
        config = resolve(load_config(config_file) if config_file else None, overrides)
    comm = distributed.connect(config.train.distributed)
    if comm.rank != 0:
        log.setLevel(logging.ERROR)  # rank 0 speaks for all
    elif comm.size > 1:
        log.info("Distributed: %d ranks, each on its share of every batch.", comm.size)
    if config.data.prepared:
        from rnnlm.shards import with_prepared_data

        config = with_prepared_data(config, overrides.get("data"))
    elif config.data.corpus is None:
        log.info(
            "No --corpus given: training on the built-in sample corpus. "
            "Pass --corpus PATH (.csv with a 'body' column, or .txt) to use your own."
        )
    else:
        log.info("Corpus: %s", config.data.corpus)
    show_progress = not quiet and sys.stderr.isatty()
    with distributed.fail_together(comm):
        prepared = prepare_data(config, vocab=previous.vocab if previous else None)
        trainer = Trainer(
            config, prepared, out, show_progress=show_progress, resume=previous, comm=comm
        )
        summary = trainer.run()
    if comm.rank != 0:
        return
    if as_json:
        echo_json(summary)
    else:
        click.echo(
            f"saved {summary['model']}: {summary['steps']} steps, "
            f"loss {summary['initial_loss']:.3f} -> {summary['final_loss']:.3f} "
            f"(best {summary['best_loss']:.3f}, in {summary['best_model']}), "
            f"{summary['wall_s']:.0f} s ({summary['tokens_per_s']:.0f} tokens/s)"
        )


# The data options of `train` that `prepare` takes too (validation stays train's business).
PREPARE_KEYS = tuple(
    f"data.{key}"
    for key in ("format", "column", "level", "unknown", "lowercase", "vocab_size", "min_count")
)


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="A TOML config; its [data] section is used, options given here override it.",
)
@click.option(
    "--corpus",
    "data__corpus",
    default=None,
    help="The files: a path or a glob pattern, quoted ('dump/*.csv', 'dump/**/*.txt'); "
    "read in sorted path order.",
)
@functools.partial(config_options, keys=PREPARE_KEYS)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New (or empty) folder for the shards, vocab.json and index.json.",
)
@click.option(
    "--scheduler",
    default=None,
    help="Address of a running dask.distributed scheduler (tcp://host:8786). "
    "Default: a LocalCluster on this machine.",
)
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=None,
    help="LocalCluster worker processes [default: one per CPU core]; 0 = no Dask, "
    "everything in this process.",
)
@click.option(
    "--punkt-sample",
    type=click.IntRange(1),
    default=None,
    help="csv/prose: characters, shared out over all files, that train the sentence "
    "splitter  [default: 4000000].",
)
@click.option(
    "--shard-size",
    type=click.IntRange(1),
    default=None,
    help="Token ids per shard file, sentence markers included  [default: 16777216].",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@user_errors
def prepare(
    config_file, out, scheduler, workers, punkt_sample, shard_size, quiet, as_json, **options
) -> None:
    """Tokenize many files on Dask into a vocabulary and integer-id shards.

    `rnnlm train --data OUT` then trains on them without reading the text again. The
    output is the same, byte for byte, whatever the number of workers.
    """
    from rnnlm import prepare as pipeline
    from rnnlm import shards
    from rnnlm.config import load_config, resolve

    setup_logging(quiet)
    if scheduler is not None and workers is not None:
        raise RnnlmError("give --scheduler or --workers, not both (a scheduler has its own)")
    overrides: dict[str, dict] = {}
    for name, value in options.items():
        if value is not None:
            section, key = name.split("__")
            overrides.setdefault(section, {})[key] = value
    data = resolve(load_config(config_file) if config_file else None, overrides).data
    summary = pipeline.prepare(
        data,
        out,
        scheduler=scheduler,
        workers=workers,
        punkt_sample=punkt_sample or pipeline.DEFAULT_PUNKT_SAMPLE,
        shard_size=shard_size or shards.DEFAULT_SHARD_SIZE,
        show_progress=not quiet and sys.stderr.isatty(),
    )
    if as_json:
        echo_json(summary)
        return
    where = f"{summary['workers']} Dask workers" if summary["workers"] else "1 process"
    click.echo(
        f"wrote {summary['out']}: {summary['files']} files, {summary['sentences']} sentences, "
        f"{summary['tokens']} tokens, vocabulary {summary['vocab_size']}, "
        f"{summary['shards']} shard(s) in {summary['wall_s']:.1f} s on {where}"
    )


def load_model(path: Path):
    from rnnlm import checkpoint
    from rnnlm.model import Model

    ckpt = checkpoint.load(path)
    return Model(ckpt.config.model, params=ckpt.params), ckpt


def read_like_training(ckpt, corpus: str, format_: str | None = None, column: str | None = None):
    """Sentences of `corpus`, tokenized as the model's training corpus was."""
    from rnnlm.corpus import load_corpus

    data = ckpt.config.data
    # The training format carries over to a file of the same kind (a .txt of prose, say).
    same_kind = Path(corpus).suffix == Path(data.corpus or ".txt").suffix
    return load_corpus(
        corpus,
        format=format_ or (data.format if same_kind else None),
        column=column or data.column,
        lowercase=data.lowercase,
        level=data.level,
    ).sentences


def refuse_bidirectional(ckpt, what: str) -> None:
    if ckpt.config.model.bidirectional:
        raise RnnlmError(
            f"a bidirectional model sees the words after each one, so it cannot {what} as a "
            "language model: use `rnnlm fill`"
        )


mode_option = click.option(
    "--mode",
    type=click.Choice(["sentence", "stream"]),
    default="sentence",
    show_default=True,
    help="sentence: the state starts afresh at every sentence; stream: the sentences are one "
    "text, the state carried across (PTB convention).",
)

model_option = click.option(
    "--model",
    "model_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="model.npz",
    show_default=True,
    help="Checkpoint written by `rnnlm train`.",
)


@main.command()
@model_option
@click.option(
    "-n",
    "count",
    type=click.IntRange(1, 10_000),
    default=5,
    show_default=True,
    help="Number of sentences.",
)
@click.option(
    "--max-length",
    type=click.IntRange(1),
    default=40,
    show_default=True,
    help="Stop a sentence after this many words.",
)
@click.option(
    "--min-length",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Never end a sentence before this many words.",
)
@click.option(
    "--temperature",
    type=float,
    default=1.0,
    show_default=True,
    help="Below 1: safer choices; above 1: more surprising ones.",
)
@click.option("--prompt", default="", help="Words that open every sentence and prime the state.")
@click.option(
    "--top-k",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Draw only from the k likeliest words; 0 = all.",
)
@click.option("--greedy", is_flag=True, help="Always take the likeliest word.")
@click.option("--seed", type=click.IntRange(0), default=None, help="Seed for reproducible samples.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def sample(
    model_path, count, max_length, min_length, temperature, prompt, top_k, greedy, seed, as_json
) -> None:
    """Generate sentences, from SENTENCE_START until SENTENCE_END."""
    import numpy as np

    from rnnlm.corpus import tokenize
    from rnnlm.generate import sample as draw

    model, ckpt = load_model(model_path)
    refuse_bidirectional(ckpt, "sample left to right")
    data = ckpt.config.data
    sentences = draw(
        model,
        ckpt.vocab,
        np.random.default_rng(seed),
        count,
        max_length=max_length,
        min_length=min_length,
        temperature=temperature,
        top_k=top_k,
        greedy=greedy,
        prompt=tokenize(as_text(prompt), lowercase=data.lowercase, level=data.level),
    )
    joiner = "" if data.level == "char" else " "
    texts = [joiner.join(token for token, _ in sentence) for sentence in sentences]
    if as_json:
        echo_json(
            [
                {"text": text, "tokens": [{"token": t, "prob": p} for t, p in sentence]}
                for text, sentence in zip(texts, sentences, strict=True)
            ]
        )
    else:
        click.echo("\n".join(texts))


@main.command()
@click.argument("sentence")
@model_option
@click.option("--top-k", "-k", type=click.IntRange(1), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def fill(sentence, model_path, top_k, as_json) -> None:
    """The likeliest words for the blank in SENTENCE, e.g. "the cat ___ on the mat".

    Best with a bidirectional model (`rnnlm train --bidirectional`), which reads both
    sides of the blank; a left-to-right model only sees the words before it.
    """
    from rnnlm.corpus import tokenize
    from rnnlm.generate import BLANK
    from rnnlm.generate import fill as fill_blank

    model, ckpt = load_model(model_path)
    lowercase = ckpt.config.data.lowercase
    # The tokenizer would split the blank marker, so tokenize around it.
    parts = as_text(sentence).split(BLANK)
    tokens = []
    for i, part in enumerate(parts):
        if i:
            tokens.append(BLANK)
        tokens += tokenize(part, lowercase=lowercase, level=ckpt.config.data.level)
    candidates = fill_blank(model, ckpt.vocab, tokens, top_k)
    if as_json:
        echo_json([{"word": w, "prob": p} for w, p in candidates])
    else:
        for word, prob in candidates:
            click.echo(f"{prob:8.4f}  {word}")


@main.command()
@click.argument("sentences", nargs=-1)
@model_option
@click.option(
    "--file",
    "file_",
    type=click.File("rb"),
    help="Score each line of this file ('-' for stdin).",
)
@mode_option
@click.option(
    "--per-word",
    is_flag=True,
    help="SRILM `ngram -ppl -debug 2` layout (log10), then a KenLM-style summary.",
)
@click.option(
    "--log-base",
    type=click.Choice(["e", "10", "2"]),
    default="e",
    show_default=True,
    help="Base of the log-probabilities printed per token and per sentence.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def score(sentences, model_path, file_, mode, per_word, log_base, quiet, as_json) -> None:
    """Log-probability, per-token probabilities and perplexity of each sentence.

    Each sentence is tokenized like the training corpus; its tokens are its words and
    SENTENCE_END (SENTENCE_START is given, never predicted). Perplexity is
    exp(-log-probability / tokens).
    """
    from rnnlm import report
    from rnnlm.corpus import decode_utf8, tokenize
    from rnnlm.evaluate import TokenProgress
    from rnnlm.generate import corpus_perplexity
    from rnnlm.generate import score as score_sentences

    setup_logging(quiet)
    texts = [as_text(sentence) for sentence in sentences]
    if file_ is not None:
        text = decode_utf8(file_.read(), getattr(file_, "name", "stdin"))
        texts += [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise RnnlmError("nothing to score: give sentences as arguments or --file")
    model, ckpt = load_model(model_path)
    refuse_bidirectional(ckpt, "score sentences")
    lowercase = ckpt.config.data.lowercase
    level = ckpt.config.data.level
    tokens = [tokenize(t, lowercase=lowercase, level=level) for t in texts]
    show = file_ is not None and not quiet and sys.stderr.isatty()
    with TokenProgress(sum(len(t) + 1 for t in tokens), show) as progress:
        scores = score_sentences(model, ckpt.vocab, texts, tokens, mode, progress=progress)
    result = {"sentences": [s.to_dict() for s in scores], "log_base": log_base}
    if len(scores) > 1:
        result["corpus_perplexity"] = corpus_perplexity(scores)
    if as_json:
        echo_json(result)
        return
    if per_word:
        source = getattr(file_, "name", "-") if file_ is not None else "-"
        lines = [*report.srilm(scores, ckpt.vocab.unknown, source), *report.kenlm_summary(scores)]
    else:
        lines = list(report.plain(scores, log_base))
        if len(scores) > 1:
            tokens = sum(len(s.log_probs) for s in scores)
            lines.append(
                f"corpus perplexity {result['corpus_perplexity']:.2f} over {tokens} tokens"
            )
    click.echo("\n".join(lines))


@main.command(name="eval")
@model_option
@click.option(
    "--corpus",
    required=True,
    type=click.Path(dir_okay=False),
    help="Text to evaluate, read like the training corpus.",
)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["csv", "lines", "prose"]),
    help="Default: the model's training format, else from the suffix.",
)
@click.option("--column", default=None, help="CSV column (default: the model's).")
@mode_option
@click.option(
    "--bootstrap",
    type=click.IntRange(0, 100_000),
    default=0,
    show_default=True,
    help="Resample sentences N times for a 95 % interval of the perplexity.",
)
@click.option(
    "--seed", type=click.IntRange(0), default=0, show_default=True, help="Seed of the bootstrap."
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def evaluate(model_path, corpus, format_, column, mode, bootstrap, seed, quiet, as_json) -> None:
    """Cross-entropy and perplexity of a corpus, with the conventions used.

    Every word and each SENTENCE_END is predicted and counted, SENTENCE_START never.
    Unknown words count as the unknown token; the perplexity without them is given too.
    """
    from rnnlm.evaluate import TokenProgress, sentence_log_probs, summarize

    setup_logging(quiet)
    model, ckpt = load_model(model_path)
    refuse_bidirectional(ckpt, "report a perplexity")
    sentences = read_like_training(ckpt, corpus, format_, column)
    encoded = [ckpt.vocab.encode(tokens) for tokens in sentences]
    show = not quiet and sys.stderr.isatty()
    with TokenProgress(sum(len(s) - 1 for s in encoded), show) as progress:
        log_probs = sentence_log_probs(model, encoded, mode, progress=progress)
    result = summarize(encoded, log_probs, ckpt.vocab.unknown_id, mode, bootstrap, seed)
    if as_json:
        echo_json({"model": str(model_path), "corpus": corpus, **result.to_dict()})
        return
    values = result.to_dict()
    without = values["perplexity_without_unknown"]
    click.echo(
        f"{corpus}: {result.sentences} sentences, {result.tokens} tokens predicted "
        f"(words + SENTENCE_END; SENTENCE_START is given, never predicted)"
    )
    state = "carried across sentences (stream)" if mode == "stream" else "reset at every sentence"
    click.echo(f"state: {state}")
    click.echo(
        f"unknown: {result.unknown} tokens ({100 * values['unknown_rate']:.2f} %) "
        f"mapped to {ckpt.vocab.unknown}"
    )
    click.echo(
        f"cross-entropy {result.cross_entropy:.4f} nats/token "
        f"({values['cross_entropy_bits']:.4f} bits)"
    )
    interval = (
        f"  (95 % bootstrap interval {result.interval[0]:.2f} .. {result.interval[1]:.2f},"
        f" {bootstrap} resamples)"
        if result.interval
        else ""
    )
    click.echo(f"perplexity {result.perplexity:.2f} including unknown words{interval}")
    if without is not None:
        click.echo(f"perplexity {without:.2f} excluding unknown words")


@main.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Give it twice: model A, then model B.",
)
@click.option(
    "--corpus",
    required=True,
    type=click.Path(dir_okay=False),
    help="Text both models are scored on.",
)
@mode_option
@click.option(
    "--samples",
    type=click.IntRange(1, 100_000),
    default=1000,
    show_default=True,
    help="Bootstrap resamples of the sentences.",
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def compare(models, corpus, mode, samples, seed, as_json) -> None:
    """Is model A better than model B on this text, or is the difference noise?

    A paired bootstrap over sentences: both models are scored on the same resampled
    sentences, and the p-value is the share of resamples in which the better model is not.
    """
    import numpy as np

    from rnnlm.evaluate import paired_bootstrap, sentence_log_probs

    if len(models) != 2:
        raise RnnlmError(f"give --model exactly twice (got {len(models)})")
    loaded = [load_model(path) for path in models]
    data = [ckpt.config.data for _, ckpt in loaded]
    if (data[0].level, data[0].lowercase) != (data[1].level, data[1].lowercase):
        raise RnnlmError("the two models tokenize text differently: their scores do not compare")
    words = [set(ckpt.vocab.words) for _, ckpt in loaded]
    if words[0] != words[1]:
        # A word one model knows is an unknown token to the other: different prediction tasks.
        raise RnnlmError(
            f"the two models have different vocabularies ({len(words[0])} and {len(words[1])} "
            f"tokens, {len(words[0] ^ words[1])} in only one): their perplexities do not compare"
        )
    for _, ckpt in loaded:
        refuse_bidirectional(ckpt, "report a perplexity")
    sentences = read_like_training(loaded[0][1], corpus)
    nll = []
    for model, ckpt in loaded:
        encoded = [ckpt.vocab.encode(tokens) for tokens in sentences]
        nll.append(np.array([-lp.sum() for lp in sentence_log_probs(model, encoded, mode)]))
    counts = np.array([len(tokens) + 1 for tokens in sentences])
    result = paired_bootstrap(nll[0], nll[1], counts, samples, seed)
    if as_json:
        echo_json({"model_a": str(models[0]), "model_b": str(models[1]), **result.to_dict()})
        return
    click.echo(f"A {models[0]}: perplexity {result.perplexity_a:.2f}")
    click.echo(f"B {models[1]}: perplexity {result.perplexity_b:.2f}")
    low, high = result.interval
    click.echo(
        f"B - A: {result.perplexity_b - result.perplexity_a:+.2f} "
        f"(95 % interval {low:+.2f} .. {high:+.2f}, {samples} paired resamples "
        f"of {len(counts)} sentences)"
    )
    click.echo(result.verdict)


@main.command()
@click.option(
    "--nbest",
    required=True,
    type=click.File("rb"),
    help="Hypotheses, one per line: 'text' or 'id ||| text ||| score' ('-': stdin).",
)
@model_option
@click.option(
    "--lm-weight",
    type=float,
    default=1.0,
    show_default=True,
    help="total = score + weight * ln p_LM(text).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def rescore(nbest, model_path, lm_weight, as_json) -> None:
    """Add the language model's log-probability to n-best hypotheses and re-rank them.

    Output lines: id ||| text ||| score ||| lm ||| total, best first within each id.
    """
    from rnnlm.corpus import decode_utf8, tokenize
    from rnnlm.generate import score as score_sentences

    if not math.isfinite(lm_weight):
        raise RnnlmError("--lm-weight must be a finite number")
    text = decode_utf8(nbest.read(), getattr(nbest, "name", "stdin"))
    hypotheses = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split("|||")]
        if len(fields) == 1:
            hypotheses.append(("0", fields[0], 0.0))
        elif len(fields) >= 3:
            try:
                hypotheses.append((fields[0], fields[1], float(fields[2].split()[0])))
            except (ValueError, IndexError):
                raise RnnlmError(
                    f"line {number}: the score {fields[2]!r} is not a number"
                ) from None
        else:
            raise RnnlmError(f"line {number}: expected 'text' or 'id ||| text ||| score'")
    model, ckpt = load_model(model_path)
    refuse_bidirectional(ckpt, "score hypotheses")
    data = ckpt.config.data
    texts = [h[1] for h in hypotheses]
    tokens = [tokenize(t, lowercase=data.lowercase, level=data.level) for t in texts]
    scores = score_sentences(model, ckpt.vocab, texts, tokens)
    rows = [
        {
            "id": h[0],
            "text": h[1],
            "score": h[2],
            "lm": s.total,
            "total": h[2] + lm_weight * s.total,
        }
        for h, s in zip(hypotheses, scores, strict=True)
    ]
    order = {key: i for i, key in enumerate(dict.fromkeys(r["id"] for r in rows))}
    rows.sort(key=lambda r: (order[r["id"]], -r["total"]))
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        click.echo(
            f"{r['id']} ||| {r['text']} ||| {r['score']:.4f} ||| {r['lm']:.4f} ||| {r['total']:.4f}"
        )


@main.command()
@model_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def info(model_path, as_json) -> None:
    """Architecture, sizes, vocabulary, config, training progress and metrics of a model."""
    from rnnlm.summary import describe, shown

    d = describe(model_path)
    if as_json:
        echo_json(d)
        return
    direction = ", bidirectional" if d["bidirectional"] else ""
    embedding = f"embedding {d['embedding_size']}, " if d["embedding_size"] else ""
    click.echo(f"{d['file']} (format version {d['format_version']})")
    click.echo(
        f"model: {d['cell']}, {d['layers']} layer(s) of {d['hidden_size']}{direction}, "
        f"{embedding}{d['parameters']:,} parameters"
    )
    for name, shape in d["parameter_shapes"].items():
        click.echo(f"  {name:<16} {' x '.join(map(str, shape))}")
    click.echo(f"vocabulary: {d['vocab_size']} {d['level']} tokens")
    click.echo("  most frequent:  " + ", ".join(f"{w} ({c})" for w, c in d["most_frequent"]))
    click.echo("  least frequent: " + ", ".join(f"{w} ({c})" for w, c in d["least_frequent"]))
    progress = d["progress"]
    if "step" in progress:
        click.echo(
            f"training: epoch {progress.get('epoch')}, step {progress['step']}, "
            f"{shown(progress.get('tokens_seen', 0), ',')} tokens, learning rate "
            f"{shown(progress.get('learning_rate'), '.4g')}, "
            f"best loss {shown(progress.get('best_loss'), '.4f')}"
        )
    m = d["metrics"]
    if m:
        click.echo(
            f"metrics: {m['evaluations']} evaluations, loss {m['first_loss']:.4f} -> "
            f"{m['last_loss']:.4f}, best {m['best_loss']:.4f} (perplexity "
            f"{m['best_perplexity']:.2f}) at step {m['best_step']}"
        )
    click.echo("config:")
    for section, values in d["config"].items():
        click.echo(f"  [{section}] " + ", ".join(f"{k}={v}" for k, v in values.items()))


@main.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="curves.png",
    show_default=True,
    help="PNG to write.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@user_errors
def plot(run, out, as_json) -> None:
    """Learning curves of RUN: a checkpoint, its NAME.metrics.jsonl, or a folder holding one."""
    from rnnlm.summary import find_metrics, metrics_summary, plot_curves, read_metrics

    metrics = find_metrics(run)
    records = read_metrics(metrics)
    if not records:
        raise RnnlmError(f"{metrics} holds no evaluations yet")
    plot_curves(records, out, metrics.name)
    if as_json:
        echo_json(
            {"out": str(out), "metrics": str(metrics), "points": len(records)}
            | metrics_summary(records)
        )
        return
    click.echo(f"wrote {out} ({len(records)} evaluations)")


@main.command(name="import-tutorial")
@click.option(
    "--npz",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A model saved by the WildML tutorial's code (arrays U, V, W).",
)
@click.option(
    "--vocab-corpus",
    required=True,
    type=click.Path(dir_okay=False),
    help="The CSV the tutorial model was trained on, to rebuild its vocabulary.",
)
@click.option("--vocab-size", type=int, default=8000, show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default="model.npz", show_default=True
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the new checkpoint's `rnnlm info --json`."
)
@user_errors
def import_tutorial(npz, vocab_corpus, vocab_size, out, as_json) -> None:
    """Turn a model saved by the original tutorial code into an rnnlm checkpoint.

    The vocabulary is rebuilt the tutorial's way: the most frequent vocab_size - 1 tokens
    of the CSV (sentence markers included) and UNKNOWN_TOKEN.
    """
    from rnnlm import checkpoint
    from rnnlm.legacy import import_tutorial as convert
    from rnnlm.legacy import tutorial_vocabulary

    setup_logging(quiet=False)
    vocab = tutorial_vocabulary(vocab_corpus, vocab_size)
    checkpoint.save(out, convert(npz, vocab, corpus=vocab_corpus))
    if as_json:
        from rnnlm.summary import describe

        summary = describe(out)
        del summary["metrics"]  # a metrics file beside `out` would be another run's
        echo_json(summary)
        return
    click.echo(f"wrote {out}: tutorial RNN, vocabulary {len(vocab)}")


@main.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Repeat to put several models (say a tanh RNN, a GRU, an LSTM) side by side.",
)
@click.option(
    "--corpus",
    required=True,
    type=click.Path(dir_okay=False),
    help="Sentences to measure on, read like each model's training corpus.",
)
@click.option("--sentences", "count", type=click.IntRange(1), default=30, show_default=True)
@click.option("--max-distance", type=click.IntRange(1), default=20, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="gradients.png",
    show_default=True,
    help="PNG of the gradient ratio against distance.",
)
@click.option(
    "--gradcheck",
    is_flag=True,
    help="Also check symbolic against finite-difference gradients on a few entries of each "
    "parameter, drawn among those with a non-zero gradient.",
)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def diagnose(models, corpus, count, max_distance, out, gradcheck, seed, as_json) -> None:
    """Vanishing gradients, measured: ||dL_t/dh_(t-k)|| against the distance k.

    For sentences of the corpus, the gradient of each step's loss with respect to the hidden
    state k steps earlier (through the recurrence, in float64, untruncated), relative to
    k = 0; the share of saturated units (|h| > 0.99) and of dead ones (never above 0).
    """
    import numpy as np

    from rnnlm import diagnose as diag

    setup_logging(quiet=as_json)
    results, labels = [], []
    for path in models:
        model, ckpt = load_model(path)
        refuse_bidirectional(ckpt, "measure left-to-right gradient flow")
        encoded = [ckpt.vocab.encode(tokens) for tokens in read_like_training(ckpt, corpus)]
        order = np.random.default_rng(seed).permutation(len(encoded))
        long = [encoded[i] for i in order if len(encoded[i]) > max_distance + 1]
        picked = (long or [encoded[i] for i in order])[:count]
        result = diag.gradient_decay(model, picked, max_distance)
        result["model"] = str(path)
        result["note"] = diag.note(result)
        if gradcheck:
            result["gradcheck"] = diag.gradient_check(model, picked[0], seed=seed)
        results.append(result)
        labels.append(f"{path.name} ({ckpt.config.model.cell})")
    diag.plot(results, labels, out)
    if as_json:
        echo_json({"plot": out, "models": results})
        return
    for result in results:
        ratios = result["ratios"]
        shown = ", ".join(
            f"k={k}: {ratios[k]:.3g}"
            for k in diag.REPORT_DISTANCES
            if k < len(ratios) and np.isfinite(ratios[k])
        )
        click.echo(f"{result['model']}: {shown}")
        if result["saturated_share"] is not None:
            click.echo(f"  saturated units (|h| > 0.99): {result['saturated_share']:.1%}")
        if result["dead_units_share"] is not None:
            click.echo(f"  dead ReLU units (never above 0): {result['dead_units_share']:.1%}")
        click.echo(f"  {result['note']}")
        for name, check in result.get("gradcheck", {}).items():
            click.echo(
                f"  gradcheck {name}: relative error {check['relative_error']:.2e} over "
                f"{check['entries']} entries (|gradient| {check['min_abs_gradient']:.3g} .. "
                f"{check['max_abs_gradient']:.3g})"
            )
    click.echo(f"wrote {out}")
