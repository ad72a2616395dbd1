"""What a training run reads: sentences encoded against a vocabulary, and the validation set.

From a corpus file (read by `rnnlm.corpus`, the vocabulary built here unless a resumed run
brings its own) or from a `rnnlm prepare` folder (memory-mapped shards and their vocabulary).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnlm import checkpoint
from rnnlm.config import Config
from rnnlm.corpus import decode_utf8, load_corpus
from rnnlm.errors import RnnlmError, SettingError
from rnnlm.vocab import (
    Vocabulary,
    build_vocabulary,
    count_tokens,
    fixed_vocabulary,
    parse_word_list,
    words_outside,
)

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    source: str  # the corpus file, the sample corpus or the prepared folder
    vocab: Vocabulary
    # Encoded training sentences, both markers included: a list, or memory-mapped shards.
    sentences: Sequence[np.ndarray]
    valid: Sequence[np.ndarray] = field(default_factory=list)  # empty: no validation set
    # With a vocabulary given: (tokens, distinct words) of the training text outside it.
    new_words: tuple[int, int] | None = None


@dataclass(frozen=True)
class WordList:
    """The tokens a fresh run's vocabulary is fixed to (`rnnlm train --vocab`)."""

    words: list[str]
    unknown: str | None = None  # a model file's unknown token; None: the config's


def read_word_list(path: str | Path) -> WordList:
    """The tokens of a vocabulary file (one a line, see `vocab.parse_word_list`) or of an
    rnnlm model file's vocabulary, with its unknown token."""
    path = Path(path)
    if not path.is_file():
        raise RnnlmError(f"vocabulary file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == b"PK":  # a zip archive: an .npz model
        vocab = checkpoint.load(path).vocab
        return WordList(list(vocab.words), vocab.unknown)
    return WordList(parse_word_list(decode_utf8(raw, str(path)), str(path)))


def load_training_data(
    config: Config, vocab: Vocabulary | None = None, words: WordList | None = None
) -> TrainingData:
    """Read and tokenize, build the vocabulary (unless given, or fixed to `words`), encode,
    split off validation.

    Logs what the tutorial prints: sentences parsed, unique tokens, the rarest word kept;
    with a vocabulary given, how many tokens of the text it lacks (they become unknown).
    With `data.prepared`, the sentences and vocabulary come from that folder instead.
    """
    data = config.data
    if data.prepared:
        if words is not None:
            raise SettingError(
                "a prepared folder brings its own vocabulary: to fix one, train on a corpus;"
                " or drop",
                {"vocab": None},
            )
        return _prepared_data(config, vocab)
    corpus = load_corpus(data.corpus, data)
    sentences = corpus.sentences
    valid_tokens: list[list[str]] = []
    if data.valid:
        valid_tokens = load_corpus(data.valid, data).sentences
    elif data.valid_fraction:
        valid_order, train_order = hold_out(len(sentences), data.valid_fraction, config.train.seed)
        valid_tokens = [sentences[i] for i in valid_order]
        sentences = [sentences[i] for i in train_order]
    new_words = None
    if words is not None:
        vocab = fixed_vocabulary(
            words.words, count_tokens(sentences), words.unknown or data.unknown
        )
        log.info("Vocabulary fixed to %d tokens.", len(vocab))
    if vocab is not None:
        new_words = words_outside(vocab, sentences)
        log.info(
            "%d of the %d training tokens (%d distinct words) are not in the vocabulary: "
            "they map to %s.",
            new_words[0],
            sum(len(s) for s in sentences),
            new_words[1],
            vocab.unknown,
        )
    else:
        counts = count_tokens(sentences)
        vocab = build_vocabulary(counts, data.vocab_size, data.min_count, data.unknown)
        log.info("Parsed %d sentences.", len(sentences))
        log.info("Found %d unique words tokens.", len(counts))
        log.info("Using vocabulary size %d.", len(vocab))
        rarest = max(
            (i for i, word in enumerate(vocab.words) if word != vocab.unknown),
            key=lambda i: (-vocab.counts[i], i),
        )
        log.info(
            "The least frequent word in our vocabulary is '%s' and appeared %d times.",
            vocab.words[rarest],
            vocab.counts[rarest],
        )
    if valid_tokens:
        log.info("Validation: %d sentences.", len(valid_tokens))
    return TrainingData(
        corpus.source,
        vocab,
        [vocab.encode(tokens) for tokens in sentences],
        [vocab.encode(tokens) for tokens in valid_tokens],
        new_words,
    )


def hold_out(count: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the validation and the training sentences: a seeded shuffle, then a cut."""
    held_out = int(count * fraction)
    if held_out < 1 or held_out >= count:
        raise RnnlmError(
            f"valid_fraction {fraction} leaves no validation or no training sentences "
            f"out of {count}"
        )
    order = np.random.default_rng(seed).permutation(count)
    return order[:held_out], order[held_out:]


def _prepared_data(config: Config, vocab: Vocabulary | None) -> TrainingData:
    """Sentences memory-mapped from a `rnnlm prepare` folder, with its stored vocabulary.

    Its vocabulary counts every sentence in the folder, held-out ones too (it was built
    before any split); a validation file is read the way the folder's corpus was.
    """
    from rnnlm.shards import Subset, open_prepared

    stored = open_prepared(config.data.prepared)
    if vocab is not None and vocab != stored.vocab:
        raise RnnlmError(
            f"{stored.folder}: its vocabulary differs from the checkpoint's; the folder was "
            "prepared again since that run started"
        )
    sentences: Sequence[np.ndarray] = stored.sentences
    valid: Sequence[np.ndarray] = []
    data = config.data
    if data.valid:
        corpus = load_corpus(data.valid, stored.data)
        valid = [stored.vocab.encode(tokens) for tokens in corpus.sentences]
    elif data.valid_fraction:
        valid_order, train_order = hold_out(len(sentences), data.valid_fraction, config.train.seed)
        valid, sentences = Subset(sentences, valid_order), Subset(sentences, train_order)
    log.info(
        "Prepared data %s: %d sentences, %d tokens, vocabulary %d.",
        stored.folder,
        len(stored.sentences),
        stored.num_tokens,
        len(stored.vocab),
    )
    if valid:
        log.info("Validation: %d sentences.", len(valid))
    return TrainingData(str(stored.folder), stored.vocab, sentences, valid)
