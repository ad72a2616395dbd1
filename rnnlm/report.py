"""Text layouts for scores: rnnlm's own, SRILM's `ngram -ppl -debug 2`, KenLM's summary.

They let a neural model's numbers be laid beside an n-gram tool's, line by line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from rnnlm.generate import SentenceScore

LOG_BASES = {"e": math.e, "10": 10.0, "2": 2.0}


def in_base(log_prob: float, base: str) -> float:
    """A natural-log probability converted to log base `base` ("e", "10" or "2")."""
    return log_prob / math.log(LOG_BASES[base])


def plain(scores: Sequence[SentenceScore], base: str = "e") -> Iterator[str]:
    """One line per token with its probability and log-probability, then a sentence summary."""
    name = "ln" if base == "e" else f"log{base}"
    for s in scores:
        yield s.text
        for token, log_p, unknown in zip(s.tokens, s.log_probs, s.unknown, strict=True):
            mark = "  (unknown)" if unknown else ""
            log_b = in_base(log_p, base)
            yield f"  {token:<20} p={math.exp(log_p):.6f}  {name} p={log_b:.4f}{mark}"
        yield (
            f"  {name} prob {in_base(s.total, base):.4f} (log10 {in_base(s.total, '10'):.4f}), "
            f"{len(s.tokens)} tokens, {sum(s.unknown)} unknown, perplexity {s.perplexity:.2f}"
        )


def srilm(scores: Sequence[SentenceScore], unknown: str, source: str = "-") -> Iterator[str]:
    """SRILM `ngram -ppl FILE -debug 2`: each word's conditional probability and log10.

    Unlike SRILM, whose OOVs get no probability, an unknown word here is predicted as the
    unknown token and counted; `ppl` counts words and sentence ends, `ppl1` words only.
    """
    for s in scores:
        yield s.text
        previous = "<s>"
        for i, (token, log_p, is_unknown) in enumerate(
            zip(s.tokens, s.log_probs, s.unknown, strict=True)
        ):
            word = "</s>" if i == len(s.tokens) - 1 else (unknown if is_unknown else token)
            context = previous + (" ..." if i else "")
            yield (
                f"\tp( {word} | {context}) \t= [rnn] {math.exp(log_p):.6g} "
                f"[ {in_base(log_p, '10'):.6g} ]"
            )
            previous = token
        yield from _srilm_totals([s], "1 sentences")
        yield ""
    yield from _srilm_totals(scores, f"file {source}: {len(scores)} sentences")


def _srilm_totals(scores: Sequence[SentenceScore], head: str) -> Iterator[str]:
    words = sum(len(s.tokens) - 1 for s in scores)
    oovs = sum(sum(s.unknown) for s in scores)
    log10 = in_base(math.fsum(s.total for s in scores), "10")
    ppl = 10 ** (-log10 / (words + len(scores)))
    ppl1 = 10 ** (-log10 / words) if words else math.inf
    yield f"{head}, {words} words, {oovs} OOVs"
    yield f"0 zeroprobs, logprob= {log10:.6g} ppl= {ppl:.6g} ppl1= {ppl1:.6g}"


def kenlm_summary(scores: Sequence[SentenceScore]) -> Iterator[str]:
    """KenLM `query`'s closing lines: perplexity with and without OOVs, their count, tokens."""
    pairs = [
        (log_p, unknown)
        for s in scores
        for log_p, unknown in zip(s.log_probs, s.unknown, strict=True)
    ]
    known = [log_p for log_p, unknown in pairs if not unknown]
    everything = math.exp(-math.fsum(log_p for log_p, _ in pairs) / len(pairs))
    yield f"Perplexity including OOVs:\t{everything:.6g}"
    if known:
        yield f"Perplexity excluding OOVs:\t{math.exp(-math.fsum(known) / len(known)):.6g}"
    yield f"OOVs:\t{len(pairs) - len(known)}"
    yield f"Tokens:\t{len(pairs)}"
