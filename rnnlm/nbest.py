"""N-best lists: the layouts `rnnlm rescore` reads, and re-ranking by score + LM weight x ln p.

hypothesis                                  a bare line: id 0, score 0
id ||| hypothesis ||| score                 rnnlm's short layout
id ||| hypothesis ||| features ||| total    Moses (`-n-best-list`): the total is the
                                            score; fields after it (alignments) are ignored
utt-N hypothesis                            Kaldi (`nbest-to-linear` then `int2sym.pl`):
                                            hypothesis N of utterance utt; its costs (−ln,
                                            lower is better) in two more files of
                                            `utt-N cost` lines, acoustic and LM

A Kaldi hypothesis's score is the decoder's, as a log-probability with the LM part that the
RNN's weight replaces taken out, the way Kaldi's steps/rnnlmrescore.sh interpolates:

    score = −(acoustic_scale · ac_cost + (1 − w) · lm_cost),  total = score + w · ln p_RNN
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnlm.corpus import decode_utf8
from rnnlm.errors import RnnlmError, SettingError
from rnnlm.generate import score
from rnnlm.loading import open_model, tokenize_like_training

if TYPE_CHECKING:
    from rnnlm.compiled import FunctionCache
    from rnnlm.interpolation import Interpolation

LAYOUTS = "'text', 'id ||| text ||| score' or Moses' 'id ||| text ||| features ||| total'"


@dataclass(frozen=True)
class Hypothesis:
    id: str
    text: str
    score: float
    key: str = ""  # Kaldi: the line's own name, utt-N


@dataclass(frozen=True)
class KaldiCosts:
    """A Kaldi n-best list's cost files (`utt-N cost` lines) and how to weigh them."""

    acoustic: bytes
    lm: bytes
    acoustic_scale: float = 0.1  # Kaldi's acwt (1 / its LM scale)
    sources: tuple[str, str] = ("acoustic costs", "LM costs")


def combination(lm_weight: float, kaldi: KaldiCosts | None = None) -> str:
    """How `rescore` adds up a hypothesis's total, in words."""
    if kaldi is None:
        return f"total = score + {lm_weight:g} · lm,  lm = ln p_RNN(text)"
    return (
        f"total = −({kaldi.acoustic_scale:g} · ac_cost + {1 - lm_weight:g} · lm_cost) "
        f"+ {lm_weight:g} · lm,  lm = ln p_RNN(text)"
    )


def parse_costs(data: bytes, source: str) -> dict[str, float]:
    """`key cost` lines (a Kaldi text archive of costs): cost by key."""
    costs: dict[str, float] = {}
    for number, line in enumerate(decode_utf8(data, source).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise RnnlmError(f"{source} line {number}: expected 'utt-N cost', got {line!r}")
        try:
            cost = float(fields[1])
        except ValueError:
            raise RnnlmError(f"{source} line {number}: {fields[1]!r} is not a number") from None
        if not math.isfinite(cost):
            raise RnnlmError(f"{source} line {number}: the cost {fields[1]} is not finite")
        if fields[0] in costs:
            raise RnnlmError(f"{source} line {number}: {fields[0]} appears twice")
        costs[fields[0]] = cost
    return costs


def parse_kaldi(text: str, kaldi: KaldiCosts, lm_weight: float) -> list[Hypothesis]:
    """The hypotheses of a Kaldi n-best list (`utt-N words...`, in file order), each scored
    from its costs (see the module docstring)."""
    acoustic = parse_costs(kaldi.acoustic, kaldi.sources[0])
    lm = parse_costs(kaldi.lm, kaldi.sources[1])
    hypotheses = []
    for number, line in enumerate(text.splitlines(), 1):
        key, _, words = line.strip().partition(" ")
        if not key:
            continue
        utterance, dash, index = key.rpartition("-")
        if not (dash and utterance and index.isdigit()):
            raise RnnlmError(f"line {number}: expected 'utt-N words', N the hypothesis number")
        for costs, source in ((acoustic, kaldi.sources[0]), (lm, kaldi.sources[1])):
            if key not in costs:
                raise RnnlmError(f"{source}: no cost for {key} (line {number} of the n-best list)")
        score = -(kaldi.acoustic_scale * acoustic.pop(key) + (1 - lm_weight) * lm.pop(key))
        hypotheses.append(Hypothesis(utterance, words.strip(), score, key))
    for costs, source in ((acoustic, kaldi.sources[0]), (lm, kaldi.sources[1])):
        if costs:
            raise RnnlmError(f"{source}: {next(iter(costs))} is not in the n-best list")
    return hypotheses


def parse_nbest(text: str) -> list[Hypothesis]:
    """The hypotheses of an n-best list, in file order; blank lines are skipped."""
    hypotheses = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split("|||")]
        if len(fields) == 1:
            hypotheses.append(Hypothesis("0", fields[0], 0.0))
            continue
        if len(fields) == 2:
            raise RnnlmError(f"line {number}: expected {LAYOUTS}")
        # The short layout's score field may carry more words after the number; Moses' total
        # is one number.
        total = fields[3] if len(fields) >= 4 else (fields[2].split() or [""])[0]
        try:
            hypotheses.append(Hypothesis(fields[0], fields[1], float(total)))
        except ValueError:
            field = fields[3] if len(fields) >= 4 else fields[2]
            raise RnnlmError(f"line {number}: the score {field!r} is not a number") from None
    return hypotheses


def rescore(
    path: str | Path,
    data: bytes,
    source: str,
    lm_weight: float = 1.0,
    cache: FunctionCache | None = None,
    ngram: Interpolation | None = None,
    kaldi: KaldiCosts | None = None,
) -> list[dict[str, Any]]:
    """`rnnlm rescore`: each hypothesis of the n-best list `data` (read from `source`; a
    Kaldi list with `kaldi`'s costs) gets lm = ln p_LM(text) from the model in `path`
    (interpolated with `ngram`, if given) and total = score + lm_weight * lm (`combination`
    says it in full); the rows come best first within each id, the ids in file order."""
    if not math.isfinite(lm_weight):
        raise SettingError("the LM weight must be a finite number:", {"lm_weight": None})
    if kaldi is not None and not math.isfinite(kaldi.acoustic_scale):
        raise SettingError("the acoustic scale must be a finite number:", {"acoustic_scale": None})
    text = decode_utf8(data, source)
    if kaldi is not None:
        hypotheses = parse_kaldi(text, kaldi, lm_weight)
    else:
        hypotheses = parse_nbest(text)
    model, ckpt = open_model(path, left_to_right="score hypotheses", cache=cache)
    texts = [h.text for h in hypotheses]
    tokens = [tokenize_like_training(ckpt.config.data, text) for text in texts]
    scores = score(model, ckpt.vocab, texts, tokens, ngram=ngram)
    rows = [
        {"id": h.id, "text": h.text, "score": h.score, "lm": s.total}
        | {"total": h.score + lm_weight * s.total}
        | ({"key": h.key} if h.key else {})
        for h, s in zip(hypotheses, scores, strict=True)
    ]
    order = {key: i for i, key in enumerate(dict.fromkeys(r["id"] for r in rows))}
    return sorted(rows, key=lambda r: (order[r["id"]], -r["total"]))
