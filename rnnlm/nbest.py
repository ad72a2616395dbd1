"""N-best lists: the layouts `rnnlm rescore` reads, and re-ranking by score + LM weight x ln p.

hypothesis                                  a bare line: id 0, score 0
id ||| hypothesis ||| score                 rnnlm's short layout
id ||| hypothesis ||| features ||| total    Moses (`-n-best-list`): the total is the
                                            score; fields after it (alignments) are ignored
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
    from rnnlm.ngram import Interpolation

LAYOUTS = "'text', 'id ||| text ||| score' or Moses' 'id ||| text ||| features ||| total'"


@dataclass(frozen=True)
class Hypothesis:
    id: str
    text: str
    score: float


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
) -> list[dict[str, Any]]:
    """`rnnlm rescore`: each hypothesis of the n-best list `data` (read from `source`) gets
    lm = ln p_LM(text) from the model in `path` (interpolated with `ngram`, if given) and
    total = score + lm_weight * lm; the rows come best first within each id, the ids in file
    order."""
    if not math.isfinite(lm_weight):
        raise SettingError("the LM weight must be a finite number:", {"lm_weight": None})
    hypotheses = parse_nbest(decode_utf8(data, source))
    model, ckpt = open_model(path, left_to_right="score hypotheses", cache=cache)
    texts = [h.text for h in hypotheses]
    tokens = [tokenize_like_training(ckpt.config.data, text) for text in texts]
    scores = score(model, ckpt.vocab, texts, tokens, ngram=ngram)
    rows = [
        {"id": h.id, "text": h.text, "score": h.score, "lm": s.total}
        | {"total": h.score + lm_weight * s.total}
        for h, s in zip(hypotheses, scores, strict=True)
    ]
    order = {key: i for i, key in enumerate(dict.fromkeys(r["id"] for r in rows))}
    return sorted(rows, key=lambda r: (order[r["id"]], -r["total"]))
