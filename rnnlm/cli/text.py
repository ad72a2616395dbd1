"""`rnnlm sample`, `fill`, `score`, `next` and `rescore`: text in or out of a trained model."""

from __future__ import annotations

import math

import click

from rnnlm.cli.options import (
    cache_option,
    int_option,
    interpolation,
    json_option,
    mode_option,
    model_option,
    ngram_options,
    quiet_option,
    seed_option,
)
from rnnlm.cli.output import as_text, echo_json, mixed_line, setup_logging, show_progress


@click.command()
@model_option
@int_option("-n", "count", default=5, low=1, high=10_000, help="Number of sentences.")
@int_option("--max-length", default=40, low=1, help="Stop a sentence after this many words.")
@int_option("--min-length", default=1, low=1, help="Never end a sentence before this many words.")
@click.option(
    "--temperature",
    type=float,
    default=1.0,
    show_default=True,
    help="Below 1: safer choices; above 1: more surprising ones.",
)
@click.option("--prompt", default="", help="Words that open every sentence and prime the state.")
@int_option("--top-k", default=0, help="Draw only from the k likeliest words; 0 = all.")
@click.option(
    "--top-p",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Nucleus sampling: draw only from the likeliest words whose probabilities add up "
    "to P (after --top-k); 1 = all.",
)
@click.option("--greedy", is_flag=True, help="Always take the likeliest word.")
@int_option(
    "--beam",
    default=0,
    high=10_000,
    help="Beam search instead of drawing: the N likeliest completions of --prompt, with "
    "their log-probabilities (ln, of the words and SENTENCE_END given the prompt); -n does "
    "not apply; 0 = draw.",
)
@click.option(
    "--length-normalize",
    is_flag=True,
    help="With --beam: rank by log-probability per token instead of in total (which "
    "favours short sentences).",
)
@seed_option("Seed for reproducible samples.", default=None)
@cache_option
@json_option
def sample(
    model_path, count, prompt, seed, beam, length_normalize, cache, as_json, **options
) -> None:
    """Generate sentences, from SENTENCE_START until SENTENCE_END.

    With --beam N, the N likeliest completions instead, best first: by total
    log-probability, or per token with --length-normalize.
    """
    if beam:
        drawing = [
            flag
            for flag, given in (
                ("--greedy", options["greedy"]),
                ("--top-k", options["top_k"]),
                ("--top-p", options["top_p"] < 1),
                ("--temperature", options["temperature"] != 1),
                ("--seed", seed is not None),
            )
            if given
        ]
        if drawing:
            raise click.UsageError(f"--beam searches, it draws nothing: drop {', '.join(drawing)}")
        from rnnlm.beam import beam_from

        found = beam_from(
            model_path, beam, as_text(prompt), cache, normalize=length_normalize,
            max_length=options["max_length"], min_length=options["min_length"],
        )  # fmt: skip
        if as_json:
            echo_json([completion.to_dict() for completion in found])
        else:
            for completion in found:
                shown = completion.per_token if length_normalize else completion.log_prob
                click.echo(f"{shown:10.4f}  {completion.text}")
        return
    if length_normalize:
        raise click.UsageError("--length-normalize ranks beam search results: give --beam N")
    from rnnlm.generate import sample_from

    sentences = sample_from(model_path, count, as_text(prompt), seed, cache, **options)
    if as_json:
        echo_json([sentence.to_dict() for sentence in sentences])
    else:
        click.echo("\n".join(sentence.text for sentence in sentences))


@click.command()
@click.argument("sentence")
@model_option
@int_option("--top-k", "-k", default=10, low=1, help="How many candidates to list.")
@cache_option
@json_option
def fill(sentence, model_path, top_k, cache, as_json) -> None:
    """The likeliest words for the blank in SENTENCE, e.g. "the cat ___ on the mat".

    Best with a bidirectional model (`rnnlm train --bidirectional`), which reads both
    sides of the blank; a left-to-right model only sees the words before it.
    """
    from rnnlm.generate import fill_in

    candidates = fill_in(model_path, as_text(sentence), top_k, cache)
    if as_json:
        echo_json([{"word": w, "prob": p} for w, p in candidates])
    else:
        for word, prob in candidates:
            click.echo(f"{prob:8.4f}  {word}")


@click.command()
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
@ngram_options
@quiet_option
@cache_option
@json_option
def score(
    sentences, model_path, file_, mode, per_word, log_base, ngram, ngram_weight, quiet, cache,
    as_json,
) -> None:  # fmt: skip
    """Log-probability, per-token probabilities and perplexity of each sentence.

    Each sentence is tokenized like the training corpus; its tokens are its words and
    SENTENCE_END (SENTENCE_START is given, never predicted). Perplexity is
    exp(-log-probability / tokens). With --ngram, each token's probability is
    λ·p_ngram + (1 − λ)·p_rnn.
    """
    from rnnlm import report
    from rnnlm.corpus import text_lines
    from rnnlm.generate import score_texts

    setup_logging(quiet)
    source = getattr(file_, "name", "-") if file_ is not None else "-"
    texts = [as_text(sentence) for sentence in sentences]
    texts += text_lines(file_.read(), source) if file_ is not None else []
    if not texts:
        raise click.UsageError("nothing to score: give sentences as arguments or --file")
    progress = show_progress(quiet) and file_ is not None
    mixed = interpolation(ngram, ngram_weight)
    scored = score_texts(model_path, texts, mode, progress, cache, mixed)
    result = {"sentences": [s.to_dict() for s in scored.sentences], "log_base": log_base}
    if mixed is not None:
        result["ngram"] = mixed.to_dict()
    if len(texts) > 1:
        result["corpus_perplexity"] = scored.corpus_perplexity
    if as_json:
        echo_json(result)
    elif per_word:
        lines = report.srilm(scored.sentences, scored.unknown, source)
        click.echo("\n".join([*lines, *report.kenlm_summary(scored.sentences)]))
    else:
        click.echo("\n".join(report.plain(scored.sentences, log_base)))
        if mixed is not None:
            click.echo(mixed_line(mixed.to_dict()))
        if len(texts) > 1:
            tokens = sum(len(s.log_probs) for s in scored.sentences)
            click.echo(f"corpus perplexity {scored.corpus_perplexity:.2f} over {tokens} tokens")


@click.command(name="next")
@click.argument("context", default="")
@model_option
@int_option("--top-k", "-k", default=10, low=1, help="How many candidates to list.")
@ngram_options
@cache_option
@json_option
def next_word(context, model_path, top_k, ngram, ngram_weight, cache, as_json) -> None:
    """The likeliest next words after CONTEXT, e.g. "the cat sat on the", with probabilities.

    SENTENCE_END means the sentence ends there. The probabilities are over the whole
    vocabulary, so the list sums to at most 1. Without CONTEXT: a sentence's first words.
    """
    from rnnlm.next_word import next_from

    mixed = interpolation(ngram, ngram_weight)
    result = next_from(model_path, as_text(context), top_k, cache, mixed)
    if as_json:
        echo_json(result.to_dict())
    else:
        for word, prob in result.candidates:
            click.echo(f"{prob:8.4f}  {word}")


def finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter("must be a finite number")
    return value


@click.command()
@click.option(
    "--nbest",
    required=True,
    type=click.File("rb"),
    help="Hypotheses, one per line ('-': stdin): 'text', 'id ||| text ||| score', Moses' "
    "'id ||| text ||| features ||| total', or with --ac-cost and --lm-cost Kaldi's "
    "'utt-N text'.",
)
@click.option(
    "--ac-cost",
    type=click.File("rb"),
    help="Kaldi: the acoustic costs of the hypotheses, 'utt-N cost' lines.",
)
@click.option(
    "--lm-cost",
    type=click.File("rb"),
    help="Kaldi: their LM (graph) costs, 'utt-N cost' lines; the RNN takes the LM weight's "
    "share of them.",
)
@click.option(
    "--acoustic-scale",
    type=float,
    default=0.1,
    show_default=True,
    callback=finite,
    help="Kaldi: the weight of the acoustic costs (acwt, 1 / the LM scale).",
)
@model_option
@click.option(
    "--lm-weight",
    type=float,
    default=1.0,
    show_default=True,
    callback=finite,
    help="total = score + weight * ln p_LM(text).",
)
@ngram_options
@cache_option
@json_option
def rescore(
    nbest, ac_cost, lm_cost, acoustic_scale, model_path, lm_weight, ngram, ngram_weight, cache,
    as_json,
) -> None:  # fmt: skip
    """Add the language model's log-probability to n-best hypotheses and re-rank them.

    Output lines: id ||| text ||| score ||| lm ||| total, best first within each id (Kaldi:
    utt-N in place of id); the formula of the total goes to stderr. With --ngram, lm is the
    log-probability under λ·p_ngram + (1 − λ)·p_rnn per token. A Kaldi list's score is
    −(acoustic_scale · ac_cost + (1 − lm_weight) · lm_cost), as in Kaldi's rnnlmrescore.sh.
    """
    from rnnlm.nbest import KaldiCosts, combination
    from rnnlm.nbest import rescore as rerank

    if (ac_cost is None) != (lm_cost is None):
        raise click.UsageError("a Kaldi n-best list needs both --ac-cost and --lm-cost")
    kaldi = None
    if ac_cost is not None:
        sources = (getattr(ac_cost, "name", "stdin"), getattr(lm_cost, "name", "stdin"))
        kaldi = KaldiCosts(ac_cost.read(), lm_cost.read(), acoustic_scale, sources)
    source = getattr(nbest, "name", "stdin")
    mixed = interpolation(ngram, ngram_weight)
    rows = rerank(model_path, nbest.read(), source, lm_weight, cache, mixed, kaldi)
    click.echo(combination(lm_weight, kaldi), err=True)
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        name = r.get("key", r["id"])  # Kaldi: utt-N, the hypothesis's own name
        click.echo(
            f"{name} ||| {r['text']} ||| {r['score']:.4f} ||| {r['lm']:.4f} ||| {r['total']:.4f}"
        )


COMMANDS = [sample, fill, score, next_word, rescore]
