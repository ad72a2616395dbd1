"""`rnnlm info`, `plot` and `import-tutorial`: what model and run files hold, and a
conversion. None of them builds a graph."""

from __future__ import annotations

from pathlib import Path

import click

from rnnlm.cli.options import int_option, json_option, model_option, out_option, path_option
from rnnlm.cli.output import echo_json, setup_logging


@click.command()
@model_option
@json_option
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
    softmax = dict(d["softmax"])
    details = ", ".join(f"{key} {value}" for key, value in softmax.items() if key != "kind")
    click.echo(f"output: {softmax['kind']} softmax" + (f" ({details})" if details else ""))
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
        name = "fill_loss" if "best_fill_loss" in m else "loss"
        best = f"best {m[f'best_{name}']:.4f}"
        if "best_perplexity" in m:
            best += f" (perplexity {m['best_perplexity']:.2f})"
        click.echo(
            f"metrics: {m['evaluations']} evaluations, {name.replace('_', ' ')} "
            f"{m[f'first_{name}']:.4f} -> {m[f'last_{name}']:.4f}, {best} at step {m['best_step']}"
        )
    saved, running = d["saved_with"], d["running_on"]
    saved = f"{saved.get('name')} {saved.get('version')}" if saved else "(not recorded)"
    click.echo(f"saved with: {saved}; running on: {running['name']} {running['version']}")
    click.echo("config:")
    for section, values in d["config"].items():
        click.echo(f"  [{section}] " + ", ".join(f"{k}={v}" for k, v in values.items()))


@click.command()
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@out_option("curves.png", "PNG to write.")
@json_option
def plot(run, out, as_json) -> None:
    """Learning curves of RUN: a checkpoint, its NAME.metrics.jsonl, or a folder holding one."""
    from rnnlm.summary import plot_run

    summary = plot_run(run, out)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"wrote {out} ({summary['points']} evaluations)")


@click.command(name="import-tutorial")
@path_option(
    "--npz", required=True, help="A model saved by the WildML tutorial's code (arrays U, V, W)."
)
@path_option(
    "--vocab-corpus",
    required=True,
    help="The CSV the tutorial model was trained on, to rebuild its vocabulary.",
)
@int_option(
    "--vocab-size", default=8000, low=None, help="The vocabulary size the model was trained with."
)
@out_option("model.npz", "The checkpoint to write.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the new checkpoint's `rnnlm info --json`."
)
def import_tutorial(npz, vocab_corpus, vocab_size, out, as_json) -> None:
    """Turn a model saved by the original tutorial code into an rnnlm checkpoint.

    The vocabulary is rebuilt the tutorial's way: the most frequent vocab_size - 1 tokens
    of the CSV (sentence markers included) and UNKNOWN_TOKEN.
    """
    from rnnlm.legacy import import_tutorial_file

    setup_logging(quiet=False)
    vocab = import_tutorial_file(npz, vocab_corpus, vocab_size, out)
    if as_json:
        from rnnlm.summary import describe

        summary = describe(out)
        del summary["metrics"]  # a metrics file beside `out` would be another run's
        echo_json(summary)
        return
    click.echo(f"wrote {out}: tutorial RNN, vocabulary {len(vocab)}")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@json_option
def vocab(model, as_json) -> None:
    """The vocabulary of MODEL: each token and its count in the training text, in id order.

    The text output (token, a tab, count) is a file `rnnlm train --vocab` reads back.
    """
    from rnnlm.checkpoint import load
    from rnnlm.vocab import vocabulary_lines

    words = load(model).vocab
    if as_json:
        echo_json(
            {"model": model, "size": len(words), "unknown": words.unknown, "start": words.start}
            | {"end": words.end, "words": list(words.words), "counts": list(words.counts)}
        )
        return
    click.echo("\n".join(vocabulary_lines(words)))


COMMANDS = [info, plot, import_tutorial, vocab]
