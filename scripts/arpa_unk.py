"""Give an ARPA file's stand-in word the name <unk>, for corpora that carry their own <unk>.

KenLM's `lmplz` refuses a corpus holding the word <unk> (PTB does), and adds a <unk> of its
own that the corpus never fills. Train on the text with <unk> renamed, then rename it back:

    sed 's/<unk>/UNKWORD/g' ptb.train.txt | lmplz -o 5 > raw.arpa
    python scripts/arpa_unk.py raw.arpa UNKWORD > kn5.arpa

Every n-gram holding lmplz's own <unk> is dropped (in lmplz's output that is the one unigram,
whose small probability is left out), the stand-in becomes <unk> everywhere, and the
\\data\\ counts are recounted. The file is read twice, never held in memory.
"""

from __future__ import annotations

import argparse
import sys

UNK = "<unk>"


def n_gram_lines(path: str, stand_in: str):
    """(order, line) of each n-gram kept, renamed; order 0 for every other line."""
    order = 0
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            stripped = line.strip()
            if stripped.endswith("-grams:") and stripped.startswith("\\"):
                order = int(stripped[1:].split("-")[0])
                yield 0, line
                continue
            if not order or not stripped or stripped.startswith("\\"):
                yield 0, line
                continue
            fields = stripped.split()
            words = fields[1 : order + 1]
            if UNK in words:
                continue
            words = [UNK if word == stand_in else word for word in words]
            yield order, "\t".join([fields[0], " ".join(words), *fields[order + 1 :]]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arpa", help="the ARPA file lmplz wrote")
    parser.add_argument("stand_in", help="the word that stood for <unk> in the training text")
    args = parser.parse_args()
    counts: dict[int, int] = {}
    for order, _ in n_gram_lines(args.arpa, args.stand_in):
        if order:
            counts[order] = counts.get(order, 0) + 1
    if not counts:
        sys.exit(f"{args.arpa}: no n-grams found")
    out = sys.stdout
    in_header = False
    for _, line in n_gram_lines(args.arpa, args.stand_in):
        stripped = line.strip()
        if stripped == "\\data\\":
            in_header = True
        elif in_header and stripped.startswith("ngram "):
            n = int(stripped[6:].split("=")[0])
            line = f"ngram {n}={counts.get(n, 0)}\n"
        elif stripped.startswith("\\") and stripped.endswith("-grams:"):
            in_header = False
        out.write(line)


if __name__ == "__main__":
    main()
