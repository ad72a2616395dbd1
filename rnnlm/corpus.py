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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, PunktTrainer

from rnnlm.config import FORMATS, LEVELS, DataConfig
from rnnlm.errors import RnnlmError

log = logging.getLogger(__name__)

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
    data: DataConfig | None = None,
    *,
    punkt: PunktParameters | None = None,
    max_documents: int | None = None,
) -> Corpus:
    """One file's sentences of tokens, read as `data` says; `path=None`: the sample corpus.

    See `read_sentences`; this one reads them all and logs what it found.
    """
    data = data or DataConfig()
    started = time.perf_counter()
    documents, sentences = read_sentences(path, data, punkt=punkt, max_documents=max_documents)
    corpus = Corpus(source=source_name(path), sentences=list(sentences))
    log.info(
        "%s: %d documents, %d sentences, %d %s tokens in %.2fs",
        corpus.source,
        documents,
        len(corpus.sentences),
        corpus.num_tokens,
        data.level,
        time.perf_counter() - started,
    )
    return corpus


def read_sentences(
    path: str | Path | None,
    data: DataConfig,
    *,
    punkt: PunktParameters | None = None,
    max_documents: int | None = None,
) -> tuple[int, Iterator[list[str]]]:
    """The one way text becomes sentences of tokens: training, `rnnlm prepare`'s workers,
    eval, compare, diagnose and the benchmark all read through here.

    Returns the number of documents, and the tokens of each sentence, lazily. The file is
    read (and any problem with it raised) at once. `data.format` None means "csv" for a .csv
    file and "lines" for anything else. Lowercasing comes before sentence splitting, as in
    the tutorial. csv and prose are split by `punkt`, or by a Punkt model trained on this
    file. Sentences that tokenize to nothing are dropped; none at all is an error.
    `max_documents` keeps the first documents only (a quick look at a large file).
    """
    source = source_name(path)
    format = format_of(path, data.format)
    documents = read_text(path, format, data.column, data.lowercase)[:max_documents]
    return len(documents), _tokenized(documents, format, data.level, source, punkt)


def _tokenized(
    documents: list[str], format: str, level: str, source: str, punkt: PunktParameters | None
) -> Iterator[list[str]]:
    found = False
    for sentence in split_sentences(documents, format, punkt):
        tokens = tokenize(sentence, lowercase=False, level=level)
        if tokens:
            found = True
            yield tokens
    if not found:
        raise RnnlmError(f"{source}: no sentences left after reading and tokenizing")


def source_name(path: str | Path | None) -> str:
    return SAMPLE_SOURCE if path is None else str(path)


def format_of(path: str | Path | None, format: str | None) -> str:
    """`format`, or else the file's by its suffix: csv for .csv, lines for anything else."""
    if format is not None:
        _check_choice("format", format, FORMATS, source_name(path))
        return format
    return "csv" if path is not None and Path(path).suffix.lower() == ".csv" else "lines"


def read_text(path: str | Path | None, format: str, column: str, lowercase: bool) -> list[str]:
    """The documents of a file, lowercased if asked (path None: the sample corpus)."""
    if path is None:
        resource = importlib.resources.files("rnnlm").joinpath("data/sample.txt")
        text = decode_utf8(resource.read_bytes(), SAMPLE_SOURCE)
        documents = _documents(text, format, column, SAMPLE_SOURCE)
    else:
        documents = read_documents(path, format, column)
    return [document.lower() for document in documents] if lowercase else documents


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


def train_punkt(text: str) -> PunktParameters:
    """A Punkt model of `text`, which learns its abbreviations (e.g. "e.g.").

    One call on all the text: training piece by piece decides abbreviations on partial counts.
    """
    trainer = PunktTrainer()
    trainer.train(text)
    return trainer.get_params()


def split_sentences(
    documents: list[str], format: str, punkt: PunktParameters | None = None
) -> list[str]:
    """Sentences, stripped: one per non-blank line for "lines", found by Punkt otherwise.

    Without `punkt`, a Punkt model is trained on all the documents at once, so it learns this
    corpus's abbreviations instead of relying on a downloaded English model.
    """
    _check_choice("format", format, FORMATS, "split_sentences")
    if format == "lines":
        return [line.strip() for doc in documents for line in doc.splitlines() if line.strip()]
    splitter = PunktSentenceTokenizer(punkt or train_punkt("\n\n".join(documents)))
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


def text_lines(data: bytes, source: str) -> list[str]:
    """The non-blank lines of a UTF-8 file, stripped: one text each (`rnnlm score --file`)."""
    return [line.strip() for line in decode_utf8(data, source).splitlines() if line.strip()]
