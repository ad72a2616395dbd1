"""Text files -> sentences -> tokens, offline: CSV columns, one-sentence-per-line files, prose.

Sentences in CSV and prose are found by a Punkt model trained on the corpus itself, so nothing
is ever downloaded (nltk.sent_tokenize / word_tokenize would need nltk's data packages).
"""

from __future__ import annotations

import codecs
import csv
import importlib.resources
import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktSentenceTokenizer, PunktTrainer

from rnnlm.errors import RnnlmError

log = logging.getLogger(__name__)

FORMATS = ("csv", "lines", "prose")
LEVELS = ("word", "char", "whitespace")  # whitespace: pre-tokenized text such as PTB
SAMPLE_SOURCE = "built-in sample corpus"

# Large enough for any real field, small enough for a C long on every platform (sys.maxsize
# overflows where long is 32 bits); the default of 128 KiB rejects long posts.
_CSV_FIELD_SIZE_LIMIT = 2**31 - 1
_WHITESPACE_RUN = re.compile(r"\s+")
_WORD_TOKENIZER = NLTKWordTokenizer()  # stateless; building it compiles many regexes


@dataclass(frozen=True)
class Corpus:
    """Tokenized sentences (no markers) and where they came from."""

    source: str
    sentences: list[list[str]]

    @property
    def num_tokens(self) -> int:
        return sum(len(sentence) for sentence in self.sentences)


def load_corpus(
    path: str | Path | None,
    *,
    format: str | None = None,
    column: str = "body",
    lowercase: bool = True,
    level: str = "word",
) -> Corpus:
    """Read, split and tokenize a corpus; `path=None` loads the packaged sample corpus.

    `format=None` means "csv" for a .csv file and "lines" for anything else. Lowercasing comes
    before sentence splitting, as in the tutorial. Sentences that tokenize to nothing are dropped.
    """
    started = time.perf_counter()
    if path is None:
        source = SAMPLE_SOURCE
        format = format or "lines"
        _check_choice("format", format, FORMATS, source)
        _check_choice("level", level, LEVELS, source)
        resource = importlib.resources.files("rnnlm").joinpath("data/sample.txt")
        documents = _documents(decode_utf8(resource.read_bytes(), source), format, column, source)
    else:
        source = str(path)
        format = format or ("csv" if Path(path).suffix.lower() == ".csv" else "lines")
        _check_choice("format", format, FORMATS, source)
        _check_choice("level", level, LEVELS, source)
        documents = read_documents(path, format, column)

    if lowercase:
        documents = [document.lower() for document in documents]
    sentences = []
    for sentence in split_sentences(documents, format):
        tokens = tokenize(sentence, lowercase=False, level=level)
        if tokens:
            sentences.append(tokens)
    if not sentences:
        raise RnnlmError(f"{source}: no sentences left after reading and tokenizing")
    corpus = Corpus(source=source, sentences=sentences)
    log.info(
        "%s: %d documents, %d sentences, %d %s tokens in %.2fs",
        source,
        len(documents),
        len(sentences),
        corpus.num_tokens,
        level,
        time.perf_counter() - started,
    )
    return corpus


def read_documents(path: str | Path, format: str, column: str = "body") -> list[str]:
    """The documents of a file: each row's `column` value for CSV, the whole text otherwise."""
    source = str(path)
    _check_choice("format", format, FORMATS, source)
    path = Path(path)
    if not path.exists():
        raise RnnlmError(f"{source}: no such file")
    if path.is_dir():
        raise RnnlmError(f"{source}: is a directory, not a file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise RnnlmError(f"{source}: cannot read: {error.strerror or error}") from error
    return _documents(decode_utf8(data, source), format, column, source)


def split_sentences(documents: list[str], format: str) -> list[str]:
    """Sentences, stripped: one per non-blank line for "lines", found by Punkt otherwise.

    The Punkt model is trained on all the documents at once, so it learns this corpus's
    abbreviations (e.g. "e.g.") instead of relying on a downloaded English model.
    """
    _check_choice("format", format, FORMATS, "split_sentences")
    if format == "lines":
        return [line.strip() for doc in documents for line in doc.splitlines() if line.strip()]
    trainer = PunktTrainer()
    # One call on the joined text: training document by document decides abbreviations on
    # partial counts.
    trainer.train("\n\n".join(documents))
    splitter = PunktSentenceTokenizer(trainer.get_params())
    return [
        sentence.strip()
        for document in documents
        for sentence in splitter.tokenize(document)
        if sentence.strip()
    ]


def tokenize(sentence: str, *, lowercase: bool = True, level: str = "word") -> list[str]:
    """Tokens of one sentence: Treebank-style words, whitespace-separated tokens, or characters
    (whitespace runs as one " ")."""
    _check_choice("level", level, LEVELS, "tokenize")
    if lowercase:
        sentence = sentence.lower()
    if level == "char":
        return list(_WHITESPACE_RUN.sub(" ", sentence).strip())
    if level == "whitespace":
        return sentence.split()
    return _WORD_TOKENIZER.tokenize(sentence)


def _check_choice(name: str, value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise RnnlmError(f"{where}: unknown {name} {value!r} (choose from {', '.join(choices)})")


def decode_utf8(data: bytes, source: str) -> str:
    """Strict UTF-8 (a BOM is dropped); the error names the first bad byte's offset and line."""
    offset = 0
    if data.startswith(codecs.BOM_UTF8):
        offset = len(codecs.BOM_UTF8)
    try:
        text = data[offset:].decode("utf-8")
    except UnicodeDecodeError as error:
        position = offset + error.start
        line = data.count(b"\n", 0, position) + 1
        raise RnnlmError(
            f"{source}: not UTF-8: byte 0x{data[position]:02x} at offset {position} "
            f"(line {line}) is invalid; re-encode the file as UTF-8"
        ) from error
    if not text.strip():
        raise RnnlmError(f"{source}: file is empty (nothing but whitespace)")
    return text


def _documents(text: str, format: str, column: str, source: str) -> list[str]:
    if format == "csv":
        return _csv_column(text, column, source)
    return [text]


def _csv_column(text: str, column: str, source: str) -> list[str]:
    """One document per data row: its value in `column`; blank rows are skipped."""
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_SIZE_LIMIT))
    # newline="" keeps quoted newlines inside fields; strict turns bad quoting into errors
    # instead of silently mangled text. skipinitialspace follows the tutorial's reader.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    documents = []
    try:
        header = next((row for row in reader if row), None)
        if header is None or not any(name.strip() for name in header):
            raise RnnlmError(f"{source}: CSV has no header row naming its columns")
        if header.count(column) > 1:
            raise RnnlmError(f"{source}: CSV header has column {column!r} more than once")
        if column not in header:
            # A headerless file shows its first data row here, so keep each name short.
            present = ", ".join(repr(_shorten(name)) for name in header[:20])
            if len(header) > 20:
                present += f", ... ({len(header)} in all)"
            raise RnnlmError(
                f"{source}: CSV header has no column {column!r}; columns present: {present}"
            )
        index = header.index(column)
        for row in reader:
            if not row:
                continue
            if len(row) <= index:
                raise RnnlmError(
                    f"{source}: CSV row ending at line {reader.line_num} has {len(row)} fields; "
                    f"column {column!r} is field {index + 1}"
                )
            documents.append(row[index])
    except csv.Error as error:
        raise RnnlmError(f"{source}: CSV parse error at line {reader.line_num}: {error}") from error
    return documents


def _shorten(text: str, limit: int = 40) -> str:
    text = _WHITESPACE_RUN.sub(" ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
