"""The Penn Treebank files load as they are, with the published token counts.

Counts from ../shared/data/ptb/SOURCE.md (Mikolov's files): words, and words plus one
<eos> per line, which is what stream-mode evaluation predicts and counts.
"""

from pathlib import Path

import pytest

from rnnlm.batches import stream_ids
from rnnlm.config import load_config, resolve
from rnnlm.corpus import load_corpus
from rnnlm.vocab import (
    SENTENCE_END,
    SENTENCE_START,
    UNKNOWN_TOKEN,
    build_vocabulary,
    count_tokens,
)

ROOT = Path(__file__).resolve().parents[1]
PTB = ROOT.parent / "shared" / "data" / "ptb"
COUNTS = {  # file: (lines, words, words + one <eos> a line)
    "ptb.train.txt": (42_068, 887_521, 929_589),
    "ptb.valid.txt": (3_370, 70_390, 73_760),
    "ptb.test.txt": (3_761, 78_669, 82_430),
}

pytestmark = pytest.mark.skipif(
    not PTB.is_dir(), reason=f"no Penn Treebank in {PTB} (see ../shared/data/ptb/SOURCE.md)"
)


@pytest.fixture(scope="module")
def corpora():
    data = resolve(load_config(ROOT / "configs" / "ptb-small.toml"), {}).data  # as a user gets
    return data, {name: load_corpus(PTB / name, data) for name in COUNTS}


@pytest.mark.parametrize("name", COUNTS)
def test_token_counts_are_the_published_ones(corpora, name):
    _, corpus = corpora
    lines, words, with_eos = COUNTS[name]
    sentences = corpus[name].sentences
    assert len(sentences) == lines
    assert sum(len(s) for s in sentences) == words
    assert sum(len(s) + 1 for s in sentences) == with_eos


def test_vocabulary_is_ptbs_own_with_unk_as_the_unknown_token(corpora):
    data, corpus = corpora
    train = corpus["ptb.train.txt"].sentences
    counts = count_tokens(train)
    words = set(counts) - {SENTENCE_START, SENTENCE_END}  # count_tokens adds the markers
    assert len(words) == 9_999 and "<unk>" in words
    vocab = build_vocabulary(counts, data.vocab_size, data.min_count, data.unknown)
    # 9,999 words (<unk> among them) + SENTENCE_END (<eos>) + SENTENCE_START, no second marker
    assert len(vocab) == data.vocab_size == 10_001
    assert vocab.unknown == "<unk>" and UNKNOWN_TOKEN not in vocab
    unk = vocab.encode(["<unk>"])[1]
    for name in ("ptb.valid.txt", "ptb.test.txt"):
        for sentence in corpus[name].sentences:
            ids = vocab.encode(sentence)[1:-1]
            # Only the corpus's own <unk> maps to the unknown id: valid and test add no words.
            assert all(i != unk or w == "<unk>" for i, w in zip(ids, sentence, strict=True))


def test_stream_predicts_every_word_and_eos(corpora):
    data, corpus = corpora
    sentences = corpus["ptb.valid.txt"].sentences
    vocab = build_vocabulary(count_tokens(sentences), 20_000, 1, data.unknown)
    ids = stream_ids([vocab.encode(s) for s in sentences])
    assert len(ids) - 1 == COUNTS["ptb.valid.txt"][2]  # all but the opening SENTENCE_START
