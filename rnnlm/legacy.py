"""Import a model saved by the original WildML tutorial code (`np.savez(U=, V=, W=)`).

The tutorial's file holds only the three weight matrices; its vocabulary was never saved, so
`tutorial_vocabulary` rebuilds it from the CSV the model was trained on.
"""

from __future__ import annotations

import logging
from numbers import Integral
from pathlib import Path

import numpy as np

from rnnlm import checkpoint
from rnnlm.checkpoint import Checkpoint, read_npz
from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
from rnnlm.corpus import load_corpus
from rnnlm.errors import RnnlmError
from rnnlm.vocab import (
    MIN_VOCABULARY_SIZE,
    SENTENCE_END,
    SENTENCE_START,
    UNKNOWN_TOKEN,
    Vocabulary,
    count_tokens,
)

log = logging.getLogger(__name__)

TUTORIAL_CORPUS = "data/reddit-comments-2015-08.csv"  # where the tutorial read its comments
# name -> what its axes hold, in the tutorial's column-vector orientation
TUTORIAL_ARRAYS = {"U": "hidden x vocabulary", "V": "vocabulary x hidden", "W": "hidden x hidden"}


def tutorial_vocabulary(csv_path: str | Path, vocab_size: int = 8000) -> Vocabulary:
    """The tutorial's vocabulary rebuilt from its CSV: the (vocab_size - 1) most frequent
    tokens, sentence markers included, then UNKNOWN_TOKEN.

    The tutorial read the first column of each row (here: the "body" column), lowercased each
    comment, split it with `nltk.sent_tokenize`, wrapped each sentence in SENTENCE_START /
    SENTENCE_END, tokenized with `nltk.word_tokenize` and kept
    `nltk.FreqDist(tokens).most_common(vocab_size - 1)`. Two things can differ here:

    - Splitting and tokenizing stay offline: sentences come from a Punkt model trained on the
      CSV itself and words from `NLTKWordTokenizer` (`rnnlm.corpus`), not from nltk's
      downloaded English Punkt model and 2015 Treebank tokenizer, so a few counts may differ.
    - Ties: `most_common` sorts by count only, so equal counts keep the counter's order. On
      Python 3 that is first occurrence (what this function does: SENTENCE_START, the first
      token, before SENTENCE_END, whose counts are always equal). The tutorial ran on
      Python 2, where it was dict hash order, which cannot be reproduced; among words of equal
      count the ids may therefore differ from the tutorial's. The trained file agrees on the
      markers: its id 1 is the one input column never trained, SENTENCE_END's.
      (`rnnlm.vocab.build_vocabulary` breaks ties alphabetically, which would swap the markers.)
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, Integral):
        raise RnnlmError(f"vocabulary size must be an integer, got {vocab_size!r}")
    if vocab_size < MIN_VOCABULARY_SIZE:
        raise RnnlmError(
            f"vocabulary size must be at least {MIN_VOCABULARY_SIZE}, got {vocab_size}"
        )
    sentences = load_corpus(csv_path, DataConfig(format="csv", column="body")).sentences
    counts = count_tokens(sentences)
    # Every token once, in order of first occurrence in the marker-wrapped token stream.
    first_seen: dict[str, None] = {}
    for sentence in sentences:
        first_seen.setdefault(SENTENCE_START)
        first_seen.update(dict.fromkeys(sentence))
        first_seen.setdefault(SENTENCE_END)
    # A stable sort by count alone: FreqDist.most_common's order on Python 3.
    kept = sorted(first_seen, key=lambda token: -counts[token])[: vocab_size - 1]
    missing = [marker for marker in (SENTENCE_START, SENTENCE_END) if marker not in kept]
    if missing:
        raise RnnlmError(
            f"vocabulary size {vocab_size} is too small: {missing[0]} is not among the "
            f"{vocab_size - 1} most frequent tokens of {csv_path}"
        )
    kept_counts = [counts[token] for token in kept]
    unknown_count = counts.total() - sum(kept_counts)  # corpus tokens that map to UNKNOWN_TOKEN
    log.info(
        "tutorial vocabulary: %d tokens (asked for %d) from %d sentences; %d of %d distinct "
        "tokens map to %s",
        len(kept) + 1,
        vocab_size,
        len(sentences),
        len(counts) - len(kept),
        len(counts),
        UNKNOWN_TOKEN,
    )
    return Vocabulary(words=(*kept, UNKNOWN_TOKEN), counts=(*kept_counts, unknown_count))


def import_tutorial_file(
    npz_path: str | Path, vocab_corpus: str | Path, vocab_size: int, out: str | Path
) -> Vocabulary:
    """`rnnlm import-tutorial`: the tutorial's model file as a checkpoint in `out`, its
    vocabulary rebuilt from the CSV it was trained on; returns that vocabulary."""
    vocab = tutorial_vocabulary(vocab_corpus, vocab_size)
    checkpoint.save(out, import_tutorial(npz_path, vocab, corpus=vocab_corpus))
    return vocab


def import_tutorial(
    npz_path: str | Path, vocab: Vocabulary, *, corpus: str | Path | None = None
) -> Checkpoint:
    """A checkpoint of the tutorial's bias-free tanh RNN from its `.npz` of U, V and W.

    The tutorial computes s_t = tanh(U[:, x_t] + W s_{t-1}) and o_t = softmax(V s_t) on
    column vectors with U (H, V), W (H, H), V (V, H); rnnlm multiplies row vectors, so its
    parameters are the transposes: layer0/W_in = U.T (V, H), layer0/W_rec = W.T (H, H),
    out/W = V.T (H, V). `vocab` must list the words in the tutorial's id order (see
    `tutorial_vocabulary`); `corpus` is recorded as the training corpus in the config.
    """
    path = Path(npz_path)
    arrays = _read_arrays(path)
    U, V, W = (arrays[name] for name in TUTORIAL_ARRAYS)
    hidden_size, vocab_size = U.shape
    if W.shape != (hidden_size, hidden_size):
        raise RnnlmError(
            f"{path}: W is {list(W.shape)} but U {list(U.shape)} implies "
            f"[{hidden_size}, {hidden_size}] (hidden x hidden)"
        )
    if V.shape != (vocab_size, hidden_size):
        raise RnnlmError(
            f"{path}: V is {list(V.shape)} but U {list(U.shape)} implies "
            f"[{vocab_size}, {hidden_size}] (vocabulary x hidden)"
        )
    if vocab_size != len(vocab):
        raise RnnlmError(
            f"{path}: the model has {vocab_size} words but the vocabulary {len(vocab)}: "
            f"rebuild the vocabulary from the CSV the model was trained on (for the "
            f"tutorial's model, pass the full reddit-comments-2015-08.csv)"
        )
    config = Config(
        data=DataConfig(
            corpus=str(corpus) if corpus is not None else TUTORIAL_CORPUS,
            format="csv",
            column="body",
            lowercase=True,
            level="word",
            unknown=vocab.unknown,
            vocab_size=len(vocab),
        ),
        model=ModelConfig(
            vocab_size=vocab_size,
            hidden_size=hidden_size,
            cell="rnn-tanh",
            bias=False,
            embedding_size=0,
            bptt_truncate=4,
            dtype="float32",
        ),
        train=TrainConfig(learning_rate=0.005),
    )
    params = {
        "layer0/W_in": _float32(path, "U", U).T.copy(),  # (V, H): row x_t is U[:, x_t]
        "layer0/W_rec": _float32(path, "W", W).T.copy(),  # (H, H)
        "out/W": _float32(path, "V", V).T.copy(),  # (H, V)
    }
    log.info("imported %s: tanh RNN, hidden %d, vocabulary %d", path, hidden_size, vocab_size)
    return Checkpoint(config, vocab, params, progress={"imported_from": str(npz_path)})


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """U, V and W as 2-D floating-point arrays; anything else is one `RnnlmError` line."""
    arrays = read_npz(path, "a tutorial model file")
    names = sorted(arrays)
    missing = [name for name in TUTORIAL_ARRAYS if name not in names]
    extra = [name for name in names if name not in TUTORIAL_ARRAYS]
    if missing or extra:
        hint = " (an rnnlm model file needs no import)" if "meta" in names else ""
        raise RnnlmError(
            f"{path}: a tutorial RNN model holds exactly the arrays U, V, W; "
            f"missing {missing}, unexpected {extra}{hint}"
        )
    for name, role in TUTORIAL_ARRAYS.items():
        value = arrays[name]
        if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind != "f":
            shape = list(getattr(value, "shape", []))
            kind = getattr(value, "dtype", type(value).__name__)
            raise RnnlmError(
                f"{path}: {name} is {kind}{shape}, expected a 2-D float ({role}) array"
            )
        if 0 in value.shape:
            raise RnnlmError(f"{path}: {name} is empty ({list(value.shape)})")
    return arrays


def _float32(path: Path, name: str, value: np.ndarray) -> np.ndarray:
    """The array as float32 (rnnlm's dtype), refusing NaN and values float32 cannot hold."""
    with np.errstate(over="ignore"):
        value = value.astype(np.float32)
    if not np.isfinite(value).all():
        raise RnnlmError(f"{path}: {name} holds NaN or infinite values (as float32)")
    return value
