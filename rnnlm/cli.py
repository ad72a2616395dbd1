"""The `rnnlm` command: parse options, call the library, print results.

Exit codes: 0 success (Ctrl-C during training too: the model is saved), 1 bad input or an
unusable file (one line on stderr), 2 bad command-line usage, 130 interrupted otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
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


@main.command()
@click.option(
    "--corpus",
    type=click.Path(dir_okay=False, path_type=str),
    help="Training text: .csv (one comment per row) or .txt. "
    "Default: a small sample corpus shipped with rnnlm.",
)
@click.option("--column", default="body", show_default=True, help="CSV column holding the text.")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["csv", "lines", "prose"]),
    help="csv; lines = one sentence per line (PTB style); prose = running text split "
    "into sentences by a Punkt model trained on the corpus. Default: from suffix.",
)
@click.option("--keep-case", is_flag=True, help="Do not lowercase the text.")
@click.option(
    "--vocab-size",
    type=int,
    default=8000,
    show_default=True,
    help="Vocabulary size, SENTENCE_START/END and UNKNOWN_TOKEN included.",
)
@click.option(
    "--min-count",
    type=int,
    default=1,
    show_default=True,
    help="Drop words seen fewer times than this.",
)
@click.option("--hidden-size", type=int, default=100, show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option(
    "--lr",
    type=float,
    default=0.005,
    show_default=True,
    help="SGD learning rate; halved whenever the evaluation loss rises.",
)
@click.option(
    "--bptt-truncate",
    type=int,
    default=4,
    show_default=True,
    help="Back-propagate through the last N steps of each sentence; -1 = all.",
)
@click.option(
    "--eval-every",
    type=int,
    default=0,
    show_default=True,
    help="SGD steps between evaluations (and checkpoints); 0 = once per epoch.",
)
@click.option(
    "--eval-sentences",
    type=int,
    default=1000,
    show_default=True,
    help="Training sentences the evaluation loss is measured on.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default="model.npz",
    show_default=True,
    help="Checkpoint to write (atomically, at every evaluation).",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@user_errors
def train(
    corpus,
    column,
    format_,
    keep_case,
    vocab_size,
    min_count,
    hidden_size,
    epochs,
    lr,
    bptt_truncate,
    eval_every,
    eval_sentences,
    seed,
    out,
    quiet,
    as_json,
) -> None:
    """Tokenize a corpus, build a vocabulary and train an RNN language model.

    The loss (cross-entropy per token, in nats) is printed at every evaluation;
    Ctrl-C stops after the current step and saves the model.
    """
    from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
    from rnnlm.train import prepare_data
    from rnnlm.train import train as run_training

    setup_logging(quiet)
    data = DataConfig(
        corpus=corpus,
        format=format_,
        column=column,
        lowercase=not keep_case,
        vocab_size=vocab_size,
        min_count=min_count,
    )
    train_config = TrainConfig(
        epochs=epochs,
        learning_rate=lr,
        eval_every=eval_every,
        eval_sentences=eval_sentences,
        seed=seed,
    )
    if corpus is None:
        log.info(
            "No --corpus given: training on the built-in sample corpus. "
            "Pass --corpus PATH (.csv with a 'body' column, or .txt) to use your own."
        )
    else:
        log.info("Corpus: %s", corpus)
    prepared = prepare_data(Config(data=data))
    model = ModelConfig(
        vocab_size=len(prepared.vocab), hidden_size=hidden_size, bptt_truncate=bptt_truncate
    )
    config = Config(data=data, model=model, train=train_config)
    summary = run_training(config, prepared, out, show_progress=not quiet and sys.stderr.isatty())
    if as_json:
        echo_json(summary)
    else:
        click.echo(
            f"saved {summary['model']}: {summary['steps']} steps, "
            f"loss {summary['initial_loss']:.3f} -> {summary['final_loss']:.3f}, "
            f"{summary['wall_s']:.0f} s ({summary['tokens_per_s']:.0f} tokens/s)"
        )


def load_model(path: Path):
    from rnnlm import checkpoint
    from rnnlm.model import Model

    ckpt = checkpoint.load(path)
    return Model(ckpt.config.model, params=ckpt.params), ckpt


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
    "-n", "count", type=click.IntRange(1), default=5, show_default=True, help="Number of sentences."
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
@click.option("--seed", type=int, default=None, help="Seed for reproducible samples.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def sample(model_path, count, max_length, min_length, temperature, seed, as_json) -> None:
    """Generate sentences, from SENTENCE_START until SENTENCE_END."""
    import numpy as np

    from rnnlm.generate import sample as draw

    model, ckpt = load_model(model_path)
    rng = np.random.default_rng(seed)
    sentences = draw(
        model,
        ckpt.vocab,
        rng,
        count,
        max_length=max_length,
        min_length=min_length,
        temperature=temperature,
    )
    if as_json:
        echo_json([{"text": " ".join(words), "tokens": words} for words in sentences])
    else:
        for words in sentences:
            click.echo(" ".join(words))


@main.command()
@click.argument("sentences", nargs=-1)
@model_option
@click.option(
    "--file",
    "file_",
    type=click.File("r", encoding="utf-8"),
    help="Score each line of this file ('-' for stdin).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@user_errors
def score(sentences, model_path, file_, as_json) -> None:
    """Log-probability, per-token probabilities and perplexity of each sentence.

    Each sentence is tokenized like the training corpus; its tokens are its words and
    SENTENCE_END (SENTENCE_START is given, never predicted). Perplexity is
    exp(-log-probability / tokens).
    """
    from rnnlm.corpus import tokenize
    from rnnlm.generate import corpus_perplexity
    from rnnlm.generate import score as score_sentences

    texts = list(sentences)
    if file_ is not None:
        try:
            texts += [line.rstrip("\n") for line in file_ if line.strip()]
        except UnicodeDecodeError as exc:
            raise RnnlmError(f"{file_.name} is not UTF-8 (byte {exc.start})") from None
    if not texts:
        raise RnnlmError("nothing to score: give sentences as arguments or --file")
    model, ckpt = load_model(model_path)
    lowercase = ckpt.config.data.lowercase
    scores = score_sentences(
        model, ckpt.vocab, texts, [tokenize(t, lowercase=lowercase) for t in texts]
    )
    result = {"sentences": [s.to_dict() for s in scores]}
    if len(scores) > 1:
        result["corpus_perplexity"] = corpus_perplexity(scores)
    if as_json:
        echo_json(result)
        return
    for s in result["sentences"]:
        click.echo(s["text"])
        for t in s["tokens"]:
            mark = "  (unknown)" if t["unknown"] else ""
            click.echo(f"  {t['token']:<20} p={t['prob']:.6f}  ln p={t['log_prob']:.4f}{mark}")
        click.echo(
            f"  log-prob {s['log_prob']:.4f} (log10 {s['log10_prob']:.4f}), "
            f"{s['n_tokens']} tokens, {s['n_unknown']} unknown, "
            f"perplexity {s['perplexity']:.2f}"
        )
    if "corpus_perplexity" in result:
        click.echo(
            f"corpus perplexity {result['corpus_perplexity']:.2f} "
            f"over {sum(len(s.log_probs) for s in scores)} tokens"
        )
