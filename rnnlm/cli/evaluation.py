"""`rnnlm eval`, `compare` and `diagnose`: models measured on a corpus."""

from __future__ import annotations

import math

import click

from rnnlm.cli.options import (
    NGRAM_HELP,
    cache_option,
    corpus_option,
    int_option,
    interpolation,
    json_option,
    mode_option,
    model_option,
    models_option,
    ngram_options,
    out_option,
    quiet_option,
    seed_option,
)
from rnnlm.cli.output import echo_json, mixed_line, setup_logging, show_progress
from rnnlm.config import FORMATS

format_option = click.option(
    "--format",
    "format_",
    type=click.Choice(FORMATS),
    help="Default: the model's training format, else from the suffix.",
)
column_option = click.option("--column", default=None, help="CSV column (default: the model's).")


@click.command(name="eval")
@model_option
@corpus_option("Text to evaluate, read like the training corpus.")
@format_option
@column_option
@mode_option
@int_option(
    "--bootstrap",
    default=0,
    high=100_000,
    help="Resample sentences N times for a 95 % interval of the perplexity.",
)
@seed_option("Seed of the bootstrap.")
@ngram_options
@quiet_option
@cache_option
@json_option
def evaluate(
    model_path, corpus, format_, column, ngram, ngram_weight, quiet, as_json, **options
) -> None:
    """Cross-entropy and perplexity of a corpus, with the conventions used.

    Every word and each SENTENCE_END is predicted and counted, SENTENCE_START never.
    Unknown words count as the unknown token; the perplexity without them is given too.
    With --ngram, each token's probability is λ·p_ngram + (1 − λ)·p_rnn.
    """
    from rnnlm.evaluate import evaluate_corpus

    setup_logging(quiet)
    mixed = interpolation(ngram, ngram_weight)
    result = evaluate_corpus(
        model_path, corpus, format=format_, column=column, show_progress=show_progress(quiet),
        ngram=mixed, **options,
    )  # fmt: skip
    values = result.to_dict()
    if as_json:
        echo_json({"model": str(model_path), "corpus": corpus, **values})
        return
    click.echo(
        f"{corpus}: {result.sentences} sentences, {result.tokens} tokens predicted "
        f"(words + SENTENCE_END; SENTENCE_START is given, never predicted)"
    )
    stream = result.mode == "stream"
    click.echo(
        f"state: {'carried across sentences (stream)' if stream else 'reset at every sentence'}"
    )
    if result.ngram is not None:
        click.echo(mixed_line(result.ngram))
    click.echo(
        f"unknown: {result.unknown} tokens ({100 * values['unknown_rate']:.2f} %) "
        f"mapped to {result.unknown_token}"
    )
    click.echo(
        f"cross-entropy {result.cross_entropy:.4f} nats/token "
        f"({values['cross_entropy_bits']:.4f} bits)"
    )
    interval = ""
    if result.interval:
        low, high = result.interval
        interval = (
            f"  (95 % bootstrap interval {low:.2f} .. {high:.2f}, {options['bootstrap']} resamples)"
        )
    click.echo(f"perplexity {result.perplexity:.2f} including unknown words{interval}")
    if values["perplexity_without_unknown"] is not None:
        click.echo(f"perplexity {values['perplexity_without_unknown']:.2f} excluding unknown words")


@click.command()
@models_option("Give it twice: model A, then model B.")
@corpus_option("Text both models are scored on.")
@mode_option
@int_option(
    "--samples", default=1000, low=1, high=100_000, help="Bootstrap resamples of the sentences."
)
@seed_option("Seed of the resampling.")
@ngram_options
@click.option(
    "--ngram-on",
    type=click.Choice(["A", "B", "both"]),
    default="both",
    show_default=True,
    help="Which model --ngram is interpolated into: give the same --model twice and B to "
    "test the RNN alone against the interpolation.",
)
@cache_option
@json_option
def compare(
    models, corpus, mode, samples, seed, ngram, ngram_weight, ngram_on, cache, as_json
) -> None:
    """Is model A better than model B on this text, or is the difference noise?

    A paired bootstrap over sentences: both models are scored on the same resampled
    sentences, and the p-value is the share of resamples in which the better model is not.
    """
    from rnnlm.evaluate import compare_models

    if len(models) != 2:
        raise click.UsageError(f"give --model exactly twice (got {len(models)})")
    mixed = interpolation(ngram, ngram_weight)
    on = (ngram_on in ("A", "both"), ngram_on in ("B", "both"))
    result = compare_models(models, corpus, mode, samples, seed, cache, mixed, on)
    names = [
        f"{m} + n-gram" if mixed is not None and o else str(m)
        for m, o in zip(models, on, strict=True)
    ]
    if as_json:
        ngram_json = {"ngram": mixed.to_dict(), "ngram_on": ngram_on} if mixed is not None else {}
        echo_json({"model_a": names[0], "model_b": names[1], **ngram_json, **result.to_dict()})
        return
    click.echo(f"A {names[0]}: perplexity {result.perplexity_a:.2f}")
    click.echo(f"B {names[1]}: perplexity {result.perplexity_b:.2f}")
    if mixed is not None:
        click.echo(mixed_line(mixed.to_dict()))
    low, high = result.interval
    click.echo(
        f"B - A: {result.perplexity_b - result.perplexity_a:+.2f} "
        f"(95 % interval {low:+.2f} .. {high:+.2f}, {samples} paired resamples "
        f"of {result.sentences} sentences)"
    )
    click.echo(result.verdict)


@click.command()
@models_option("Repeat to put several models (say a tanh RNN, a GRU, an LSTM) side by side.")
@corpus_option("Sentences to measure on, read like each model's training corpus.")
@int_option(
    "--sentences", "count", default=30, low=1, help="How many sentences of the corpus to use."
)
@int_option(
    "--max-distance", default=20, low=1, help="The farthest distance k, in steps, to measure."
)
@out_option("gradients.png", "PNG of the gradient ratio against distance.")
@click.option(
    "--gradcheck",
    is_flag=True,
    help="Also check symbolic against finite-difference gradients on a few entries of each "
    "parameter, drawn among those with a non-zero gradient.",
)
@seed_option("Seed of the sentence picking and the gradient check.")
@cache_option
@json_option
def diagnose(models, corpus, out, as_json, **options) -> None:
    """Vanishing gradients, measured: ||dL_t/dh_(t-k)|| against the distance k.

    For sentences of the corpus, the gradient of each step's loss with respect to the hidden
    state k steps earlier (through the recurrence, in float64, untruncated), relative to
    k = 0; the share of saturated units (|h| > 0.99) and of dead ones (never above 0).
    """
    from rnnlm.diagnose import REPORT_DISTANCES, diagnose_models

    setup_logging(quiet=as_json)
    results = diagnose_models(models, corpus, out, **options)
    if as_json:
        echo_json({"plot": out, "models": results})
        return
    for result in results:
        ratios = result["ratios"]
        shown = ", ".join(
            f"k={k}: {ratios[k]:.3g}"
            for k in REPORT_DISTANCES
            if k < len(ratios) and math.isfinite(ratios[k])
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


@click.command(name="tune-weight")
@click.option("--ngram", required=True, type=click.Path(dir_okay=False), help=NGRAM_HELP)
@corpus_option("Held-out text (not the training text) to fit the weight on.")
@model_option
@format_option
@column_option
@mode_option
@quiet_option
@cache_option
@json_option
def tune_weight(ngram, corpus, model_path, format_, column, mode, quiet, cache, as_json) -> None:
    """The n-gram weight λ that fits held-out text best, found by EM.

    Maximises the likelihood of the corpus under p = λ·p_ngram + (1 − λ)·p_rnn per token
    (EM from λ = 0.5; the likelihood is concave in λ, so EM finds its maximum), and prints
    λ with the perplexities of the RNN, the n-gram model and their interpolation.
    """
    from rnnlm.evaluate import tune_weight as fit

    setup_logging(quiet)
    result = fit(
        model_path, interpolation(ngram, None), corpus, format=format_, column=column,
        mode=mode, show_progress=show_progress(quiet), cache=cache,
    )  # fmt: skip
    if as_json:
        echo_json({"model": model_path, "ngram": ngram, "corpus": corpus, **result.to_dict()})
        return
    state = "converged" if result.converged else "NOT converged"
    click.echo(
        f"{corpus}: {result.tokens} tokens predicted, {result.ngram_unknown} of them <unk> to "
        f"the n-gram model"
    )
    click.echo(f"EM: λ = {result.weight:.4f} after {result.iterations} iterations ({state})")
    click.echo(
        f"perplexity: rnn {result.perplexity_rnn:.2f}, n-gram {result.perplexity_ngram:.2f}, "
        f"interpolated {result.perplexity_mixed:.2f}"
    )
    click.echo(f"use: --ngram {ngram} --ngram-weight {result.weight:.4f}")


COMMANDS = [evaluate, compare, diagnose, tune_weight]
