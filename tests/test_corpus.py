"""Corpus loading: each format, tokenization levels, and one-line errors that name the file."""

import codecs
from pathlib import Path

import pytest

from rnnlm.config import DataConfig
from rnnlm.corpus import load_corpus, read_documents, split_sentences, tokenize
from rnnlm.errors import RnnlmError

REDDIT_CSV = Path(__file__).parents[2] / "shared/data/reddit-posts/reddit-posts.csv"

PARAGRAPH = (
    "The lighthouse keeper woke before dawn. He climbed the stairs with a lamp. "
    "The sea was calm and grey. Gulls circled the rocks below. "
    "He wrote the weather in his book, as he did every day. Then he made tea."
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_lines_format_one_sentence_per_non_blank_line(tmp_path):
    path = write(tmp_path, "c.txt", "The cat sat.\n\n  A dog ran.  \n")
    corpus = load_corpus(path)
    assert corpus.sentences == [["the", "cat", "sat", "."], ["a", "dog", "ran", "."]]
    assert corpus.source == str(path)


def test_csv_format_reads_the_body_column(tmp_path):
    path = write(tmp_path, "c.csv", "id,body\n1,The cat sat.\n2,A dog ran.\n")
    corpus = load_corpus(path)
    assert corpus.sentences == [["the", "cat", "sat", "."], ["a", "dog", "ran", "."]]


def test_csv_column_option_picks_another_column(tmp_path):
    path = write(tmp_path, "c.csv", "title,body\nHello there,Ignored text\n")
    assert load_corpus(path, DataConfig(column="title")).sentences == [["hello", "there"]]


def test_format_option_overrides_the_suffix(tmp_path):
    path = write(tmp_path, "c.txt", "body\nThe cat sat.\n")
    assert load_corpus(path, DataConfig(format="csv")).sentences == [["the", "cat", "sat", "."]]


def test_missing_column_error_lists_the_columns(tmp_path):
    path = write(tmp_path, "c.csv", "subreddit,kind,text\nx,y,z\n")
    with pytest.raises(RnnlmError, match="'subreddit', 'kind', 'text'") as info:
        load_corpus(path)
    assert str(path) in str(info.value) and "'body'" in str(info.value)


def test_csv_with_embedded_newlines_and_quotes(tmp_path):
    text = 'id,body\n1,"She said ""hi"".\nThen she left."\n2,"one, two"\n'
    path = write(tmp_path, "c.csv", text)
    assert read_documents(path, "csv", "body") == ['She said "hi".\nThen she left.', "one, two"]
    tokens = [t for s in load_corpus(path).sentences for t in s]
    assert not any("\n" in t for t in tokens)


def test_csv_parse_error_names_the_line(tmp_path):
    path = write(tmp_path, "c.csv", 'id,body\n1,ok\n2,"bad"quote\n')
    with pytest.raises(RnnlmError, match=r"line 3"):
        load_corpus(path)


def test_csv_without_header_row_is_an_error(tmp_path):
    path = write(tmp_path, "c.csv", ",,\nx,y,z\n")
    with pytest.raises(RnnlmError, match="no header"):
        load_corpus(path)


def test_csv_accepts_fields_larger_than_the_default_limit(tmp_path):
    long_body = "word " * 40_000  # 200 KB, over csv's default 128 KiB field limit
    path = write(tmp_path, "c.csv", f'body\n"{long_body}"\n')
    assert load_corpus(path).num_tokens == 40_000


def test_prose_is_split_into_sentences_by_trained_punkt(tmp_path):
    path = write(tmp_path, "story.txt", PARAGRAPH)
    corpus = load_corpus(path, DataConfig(format="prose"))
    assert len(corpus.sentences) == 6
    assert corpus.sentences[-1] == ["then", "he", "made", "tea", "."]


def test_split_sentences_lines_strips_and_skips_blanks():
    assert split_sentences(["  a b \n\n c\n"], "lines") == ["a b", "c"]


def test_empty_file_is_an_error(tmp_path):
    path = write(tmp_path, "c.txt", " \n\n")
    with pytest.raises(RnnlmError, match="empty") as info:
        load_corpus(path)
    assert str(path) in str(info.value)


def test_missing_file_and_directory_are_errors(tmp_path):
    with pytest.raises(RnnlmError, match="no such file"):
        load_corpus(tmp_path / "absent.txt")
    with pytest.raises(RnnlmError, match="directory"):
        load_corpus(tmp_path)


def test_non_utf8_error_gives_the_byte_offset(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"good line\nbad \xff byte\n")
    with pytest.raises(RnnlmError, match=r"offset 14 \(line 2\)") as info:
        load_corpus(path)
    assert str(path) in str(info.value)


def test_utf8_bom_is_stripped(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"body\nhello\n")
    assert load_corpus(path).sentences == [["hello"]]


def test_lowercase_can_be_turned_off(tmp_path):
    path = write(tmp_path, "c.txt", "The Cat sat.\n")
    assert load_corpus(path, DataConfig(lowercase=False)).sentences == [["The", "Cat", "sat", "."]]


def test_char_level_collapses_whitespace():
    assert tokenize("Hi  \t yo", level="char") == ["h", "i", " ", "y", "o"]


def test_char_level_corpus(tmp_path):
    path = write(tmp_path, "c.txt", "ab c\n")
    assert load_corpus(path, DataConfig(level="char")).sentences == [["a", "b", " ", "c"]]


def test_unknown_format_and_level_are_errors(tmp_path):
    path = write(tmp_path, "c.txt", "hello\n")
    with pytest.raises(RnnlmError, match="format 'tsv'"):
        load_corpus(path, DataConfig(format="tsv"))
    with pytest.raises(RnnlmError, match="level 'byte'"):
        load_corpus(path, DataConfig(level="byte"))


def test_no_sentences_left_is_an_error(tmp_path):
    path = write(tmp_path, "c.csv", "body,id\n,1\n,2\n")
    with pytest.raises(RnnlmError, match="no sentences"):
        load_corpus(path)


def test_sample_corpus_loads_a_few_hundred_sentences():
    corpus = load_corpus(None)
    assert corpus.source == "built-in sample corpus"
    assert 300 <= len(corpus.sentences) <= 400


@pytest.mark.skipif(not REDDIT_CSV.is_file(), reason=f"real reddit CSV not found at {REDDIT_CSV}")
def test_real_reddit_csv_loads_without_newlines_in_tokens():
    corpus = load_corpus(REDDIT_CSV)
    assert len(corpus.sentences) > 5_000
    assert not any("\n" in token for sentence in corpus.sentences for token in sentence)
