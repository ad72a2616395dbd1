"""Vocabulary: the tutorial's top-N rule, encode/decode, and strict loading from dicts."""

import json
from collections import Counter

import numpy as np
import pytest

from rnnlm.errors import RnnlmError
from rnnlm.vocab import (
    SENTENCE_END,
    SENTENCE_START,
    UNKNOWN_TOKEN,
    Vocabulary,
    build_vocabulary,
    count_tokens,
)

SENTENCES = [["the", "cat", "sat"], ["the", "dog", "sat"], ["a", "cat"]]


def small_vocab() -> Vocabulary:
    return build_vocabulary(count_tokens(SENTENCES), size=100)


def test_encode_decode_round_trip_adds_markers():
    vocab = small_vocab()
    ids = vocab.encode(["the", "cat", "sat"])
    assert ids.dtype == np.int32
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert vocab.decode(ids) == [SENTENCE_START, "the", "cat", "sat", SENTENCE_END]


def test_out_of_vocabulary_tokens_map_to_unknown():
    vocab = small_vocab()
    ids = vocab.ids(["the", "zebra"])
    assert ids.tolist() == [vocab.words.index("the"), vocab.unknown_id]


def test_ids_rejects_a_bare_string():
    with pytest.raises(TypeError):
        small_vocab().ids("the cat")


def test_decode_rejects_ids_outside_the_vocabulary():
    vocab = small_vocab()
    with pytest.raises(IndexError):
        vocab.decode([len(vocab)])
    with pytest.raises(IndexError):
        vocab.decode([-1])


def test_count_tokens_counts_one_pair_of_markers_per_sentence():
    counts = count_tokens(SENTENCES)
    assert counts[SENTENCE_START] == counts[SENTENCE_END] == 3
    assert counts["the"] == 2 and counts["a"] == 1


def test_most_frequent_first_ties_by_token_then_unknown_last():
    counts = Counter({"b": 5, "a": 5, "c": 9, "d": 1, SENTENCE_START: 7, SENTENCE_END: 7})
    vocab = build_vocabulary(counts, size=6)
    # size - 1 = 5 slots: c(9), the markers (7), then the tie a/b(5) broken alphabetically.
    assert vocab.words == ("c", SENTENCE_END, SENTENCE_START, "a", "b", UNKNOWN_TOKEN)


def test_unknown_count_is_the_number_of_dropped_occurrences():
    counts = Counter({"a": 5, "b": 3, "c": 2, "d": 1, SENTENCE_START: 4, SENTENCE_END: 4})
    vocab = build_vocabulary(counts, size=5)  # keeps a, b and the markers
    assert vocab.words[-1] == UNKNOWN_TOKEN
    assert vocab.counts[-1] == 2 + 1
    assert sum(vocab.counts) == sum(counts.values())


def test_markers_are_kept_even_when_rarer_than_the_cut():
    counts = Counter({"a": 9, "b": 8, "c": 7, SENTENCE_START: 1, SENTENCE_END: 1})
    vocab = build_vocabulary(counts, size=4)
    assert vocab.words == ("a", SENTENCE_END, SENTENCE_START, UNKNOWN_TOKEN)


def test_min_count_drops_rare_tokens():
    counts = Counter({"a": 3, "b": 2, "c": 1, SENTENCE_START: 3, SENTENCE_END: 3})
    vocab = build_vocabulary(counts, size=100, min_count=2)
    assert "c" not in vocab and "b" in vocab
    assert vocab.counts[vocab.unknown_id] == 1


def test_size_below_four_is_an_error():
    with pytest.raises(RnnlmError, match="size"):
        build_vocabulary(count_tokens(SENTENCES), size=3)


def test_to_dict_from_dict_round_trip_through_json():
    vocab = small_vocab()
    restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab
    assert restored.unknown_id == vocab.unknown_id


def valid_dict() -> dict:
    return small_vocab().to_dict()


WORDS_TYPE = "'words' must be a list of strings"
COUNTS_TYPE = "'counts' must be a list of integers"


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("words", "the cat", WORDS_TYPE),
        ("words", ["the", 3], WORDS_TYPE),
        ("counts", [1.0] * 9, COUNTS_TYPE),
        ("counts", [True] * 9, COUNTS_TYPE),
        ("counts", None, COUNTS_TYPE),
        ("unknown", 7, "'unknown' must be a string, got 7"),
    ],
)
def test_from_dict_rejects_wrong_types(key, value, match):
    data = valid_dict()
    data[key] = value
    with pytest.raises(RnnlmError, match=match):
        Vocabulary.from_dict(data)


@pytest.mark.parametrize(
    "key, wrong, match",
    [
        ("words", tuple, WORDS_TYPE),
        ("words", lambda words: [*words[:-1], 3], WORDS_TYPE),
        ("counts", lambda counts: [float(c) for c in counts], COUNTS_TYPE),
        ("counts", lambda counts: [c > 0 for c in counts], COUNTS_TYPE),
        ("counts", lambda counts: [np.int64(c) for c in counts], COUNTS_TYPE),
        ("unknown", lambda token: [token], "'unknown' must be a string"),
        ("start", lambda token: None, "'start' must be a string, got None"),
        ("end", lambda token: 1, "'end' must be a string, got 1"),
    ],
    ids=[
        "words-tuple", "words-int", "counts-float", "counts-bool", "counts-numpy",
        "unknown-list", "start-none", "end-int",
    ],
)  # fmt: skip
def test_from_dict_names_the_one_wrong_field(key, wrong, match):
    """One field broken, everything else valid (same lengths, special tokens present): only
    the check named can raise, and a tuple or numpy ints, which the constructor would take,
    are still refused in a file."""
    data = valid_dict()
    data[key] = wrong(data[key])
    with pytest.raises(RnnlmError, match=match):
        Vocabulary.from_dict(data)


def test_from_dict_rejects_non_mapping():
    with pytest.raises(RnnlmError, match="must be a JSON object, got list"):
        Vocabulary.from_dict(["words"])


def test_from_dict_rejects_missing_and_unexpected_keys():
    data = valid_dict()
    del data["counts"]
    with pytest.raises(RnnlmError, match="missing"):
        Vocabulary.from_dict(data)
    with pytest.raises(RnnlmError, match="unexpected"):
        Vocabulary.from_dict({**valid_dict(), "extra": 1})


def test_from_dict_rejects_duplicate_words():
    data = valid_dict()
    data["words"][1] = data["words"][0]
    with pytest.raises(RnnlmError, match="twice"):
        Vocabulary.from_dict(data)


def test_from_dict_rejects_missing_special_token():
    data = valid_dict()
    data["words"][data["words"].index(UNKNOWN_TOKEN)] = "zebra"
    with pytest.raises(RnnlmError, match="unknown token"):
        Vocabulary.from_dict(data)


def test_from_dict_rejects_mismatched_lengths_and_negative_counts():
    data = valid_dict()
    data["counts"] = data["counts"][:-1]
    with pytest.raises(RnnlmError, match="must match"):
        Vocabulary.from_dict(data)
    data = valid_dict()
    data["counts"][0] = -1
    with pytest.raises(RnnlmError, match="negative"):
        Vocabulary.from_dict(data)
