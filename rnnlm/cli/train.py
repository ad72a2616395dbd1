"""`rnnlm train` and `rnnlm prepare`: their options are the config's (see options.py)."""

from __future__ import annotations

import click

from rnnlm.cli.options import (
    cache_option,
    config_file_option,
    config_options,
    given,
    int_option,
    json_option,
    out_option,
    path_option,
    quiet_option,
)
from rnnlm.cli.output import echo_json, setup_logging, show_progress

# The data options of `train` that `prepare` takes too (validation stays train's business).
PREPARE_KEYS = tuple(
    f"data.{key}"
    for key in ("format", "column", "level", "unknown", "lowercase", "vocab_size", "min_count")
)


@click.command()
@config_file_option("A TOML config (see configs/); options given here override it.")
@config_options()
@path_option(
    "--resume",
    help="Continue exactly where this checkpoint stopped (config, optimizer, data "
    "position); options that repeat its data and model settings are fine, only [train] "
    "options may change.",
)
@path_option(
    "--init-from",
    help="Fine-tune: start from this model's weights and vocabulary (words it lacks become "
    "its unknown token) on the corpus given, with a fresh optimizer; its model and "
    "tokenization settings are kept, its [train] settings unless given.",
)
@path_option(
    "--vocab",
    "vocab",
    help="Fix the vocabulary: a file of one token a line (`rnnlm vocab` writes one; a tab "
    "and a count may follow each token), or a model file whose vocabulary to take. The "
    "markers and the unknown token are added if missing.",
)
@out_option(
    "model.npz",
    "Latest checkpoint, written atomically at every evaluation (its folder is created); "
    "the best one goes to NAME.best.npz beside it.",
)
@quiet_option
@cache_option
@json_option
def train(config_file, resume, init_from, vocab, out, quiet, cache, as_json, **options) -> None:
    """Tokenize a corpus, build a vocabulary and train an RNN language model.

    The loss (cross-entropy per token, in nats) is printed at every evaluation;
    Ctrl-C stops after the current step and saves the model.
    """
    from rnnlm import distributed

    distributed.one_blas_thread_per_rank()  # before numpy loads a BLAS
    from rnnlm.launch import train_run

    setup_logging(quiet)
    summary = train_run(
        given(options),
        out,
        config_file=config_file,
        resume=resume,
        init_from=init_from,
        vocab=vocab,
        show_progress=show_progress(quiet),
        cache=cache,
    )
    if summary is None:  # not rank 0 of a distributed run
        return
    if as_json:
        echo_json(summary)
        return
    loss = summary["loss_name"].replace("_", " ")
    click.echo(
        f"saved {summary['model']}: {summary['steps']} steps, "
        f"{loss} {summary['initial_loss']:.3f} -> {summary['final_loss']:.3f} "
        f"(best {summary['best_loss']:.3f}, in {summary['best_model']}), "
        f"{summary['wall_s']:.0f} s ({summary['tokens_per_s']:.0f} tokens/s)"
    )
    if "new_tokens" in summary:
        click.echo(
            f"{summary['new_tokens']} training tokens ({summary['new_words']} distinct words) "
            "were not in the vocabulary: they were read as its unknown token"
        )


@click.command()
@config_file_option("A TOML config; its [data] section is used, options given here override it.")
@click.option(
    "--corpus",
    "data__corpus",
    default=None,
    help="The files: a path or a glob pattern, quoted ('dump/*.csv', 'dump/**/*.txt'); "
    "read in sorted path order.",
)
@config_options(PREPARE_KEYS)
@path_option(
    "--out",
    folder=True,
    required=True,
    help="New (or empty) folder for the shards, vocab.json and index.json.",
)
@click.option(
    "--scheduler",
    default=None,
    help="Address of a running dask.distributed scheduler (tcp://host:8786). "
    "Default: a LocalCluster on this machine.",
)
@int_option(
    "--workers",
    default=None,
    help="LocalCluster worker processes [default: one per CPU core]; 0 = no Dask, "
    "everything in this process.",
)
@int_option(
    "--punkt-sample",
    default=None,
    low=1,
    help="csv/prose: characters, shared out over all files, that train the sentence "
    "splitter  [default: 4000000].",
)
@int_option(
    "--shard-size",
    default=None,
    low=1,
    help="Token ids per shard file, sentence markers included  [default: 16777216].",
)
@quiet_option
@json_option
def prepare(
    config_file, out, scheduler, workers, punkt_sample, shard_size, quiet, as_json, **options
) -> None:
    """Tokenize many files on Dask into a vocabulary and integer-id shards.

    `rnnlm train --data OUT` then trains on them without reading the text again. The
    output is the same, byte for byte, whatever the number of workers.
    """
    from rnnlm.prepare import prepare_files

    setup_logging(quiet)
    if scheduler is not None and workers is not None:
        raise click.UsageError("give --scheduler or --workers, not both (a scheduler has its own)")
    summary = prepare_files(
        given(options),
        out,
        config_file=config_file,
        scheduler=scheduler,
        workers=workers,
        punkt_sample=punkt_sample,
        shard_size=shard_size,
        show_progress=show_progress(quiet),
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


COMMANDS = [train, prepare]
