"""`rnnlm prepare`: many corpus files -> a vocabulary and integer-id shards, tokenized on Dask.

Every file is one Dask task, so uneven files balance over the workers and the files of a
worker that dies are tokenized again elsewhere. The stages:

1. csv and prose only: Punkt learns the corpus's abbreviations from one sample of all files
   (`punkt_sample` characters, shared out over the files by size, each file's share taken
   from its start, joined in file order), trained once here; its parameters go to every
   worker. A corpus smaller than the sample is learnt whole, exactly as `rnnlm train
   --corpus` learns a single file.
2. Workers tokenize whole files into local ids (a per-file token table); only the token
   counts come back here, and `build_vocabulary` turns their sum into the vocabulary.
3. In file order, each file's local ids are fetched, mapped to vocabulary ids, wrapped in
   sentence markers and appended to the shards (`rnnlm.shards`).

Files go in sorted path order, counts are summed (order-free) and ties in the vocabulary
break by token, so the output is byte for byte the same whatever the number of workers or
the order in which they finish; `workers=0` runs the same stages in this process, no Dask.
"""

from __future__ import annotations

import array
import collections
import contextlib
import dataclasses
import functools
import glob
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, PunktTrainer

from rnnlm import shards
from rnnlm.config import DataConfig
from rnnlm.corpus import read_documents, split_sentences, tokenize
from rnnlm.errors import RnnlmError
from rnnlm.vocab import SENTENCE_END, SENTENCE_START, Vocabulary, build_vocabulary

log = logging.getLogger(__name__)

DEFAULT_PUNKT_SAMPLE = 4_000_000  # characters; Punkt trains at roughly 0.3 MB/s
_INSTALL_HINT = "pip install 'rnnlm[distributed]'"


@dataclass
class FileTokens:
    """One file tokenized: ids index `words`, the file's own token table."""

    path: str
    words: list[str]
    counts: np.ndarray  # int64, occurrences of each word in this file
    ids: np.ndarray  # int32, every sentence's tokens back to back, no markers
    lengths: np.ndarray  # int64, tokens per sentence
    documents: int


# -- work done on the workers (module-level functions, so Dask can ship them) -------------


@dataclass(frozen=True)
class Failed:
    """Bad input found on a worker: returned rather than raised, so workers log no traceback
    and Dask does not retry; the client raises it as an RnnlmError."""

    message: str


def _returning_errors(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RnnlmError as error:
            return Failed(str(error))

    return wrapper


@_returning_errors
def sample_file(path: str, share: int, size: int, *, data: DataConfig, format: str) -> str:
    """The start of a file's text, `share` characters at most, cut at whitespace; all of it
    when the file (`size` bytes) fits in its share."""
    documents = read_documents(path, format, data.column)
    if data.lowercase:
        documents = [document.lower() for document in documents]
    text = "\n\n".join(documents)
    if share >= size:
        return text
    text = text[:share]
    cut = max(text.rfind(" "), text.rfind("\n"))
    return text[:cut] if cut > 0 else text


@_returning_errors
def tokenize_file(
    path: str, *, data: DataConfig, format: str, punkt: PunktParameters | None
) -> FileTokens:
    """Read, split and tokenize one file exactly as `load_corpus` does, with a given Punkt."""
    documents = read_documents(path, format, data.column)
    if data.lowercase:
        documents = [document.lower() for document in documents]
    if punkt is None:
        sentences = split_sentences(documents, "lines")
    else:
        splitter = PunktSentenceTokenizer(punkt)
        sentences = [
            sentence.strip()
            for document in documents
            for sentence in splitter.tokenize(document)
            if sentence.strip()
        ]
    table: dict[str, int] = {}
    ids = array.array("i")  # 4 bytes a token; a list would take 9 times as much
    lengths = array.array("q")
    for sentence in sentences:
        tokens = tokenize(sentence, lowercase=False, level=data.level)
        if tokens:
            ids.extend(table.setdefault(token, len(table)) for token in tokens)
            lengths.append(len(tokens))
    if not lengths:
        raise RnnlmError(f"{path}: no sentences left after reading and tokenizing")
    local = np.frombuffer(ids, dtype=np.intc).astype(np.int32)
    counts = np.bincount(local, minlength=len(table)).astype(np.int64)
    sentence_lengths = np.frombuffer(lengths, dtype=np.int64).copy()
    return FileTokens(path, list(table), counts, local, sentence_lengths, len(documents))


def file_summary(tokens: FileTokens | Failed) -> tuple[list[str], np.ndarray, int, int, int]:
    """What the client needs for the vocabulary: words, counts, sentences, tokens, documents."""
    if isinstance(tokens, Failed):
        return tokens  # type: ignore[return-value]
    return tokens.words, tokens.counts, len(tokens.lengths), len(tokens.ids), tokens.documents


# -- the client side ------------------------------------------------------------------------


def find_files(pattern: str) -> list[str]:
    """Files matching a glob pattern (`**` recurses), in sorted path order."""
    pattern = os.path.expanduser(pattern)
    files = sorted(path for path in glob.glob(pattern, recursive=True) if Path(path).is_file())
    if not files:
        if Path(pattern).is_dir():
            raise RnnlmError(f"{pattern}: is a folder; give a pattern such as '{pattern}/*.csv'")
        if any(char in pattern for char in "*?["):
            raise RnnlmError(f"no files match {pattern!r}")
        raise RnnlmError(f"{pattern}: no such file")
    return files


def file_format(files: Sequence[str], format: str | None) -> str:
    """The one format of all files: `format`, or else each file's suffix must agree."""
    if format is not None:
        return format
    found = {("csv" if Path(path).suffix.lower() == ".csv" else "lines") for path in files}
    if len(found) > 1:
        raise RnnlmError("the files mix .csv and other suffixes; pass --format to read them alike")
    return found.pop()


def sample_shares(sizes: Sequence[int], budget: int) -> list[int]:
    """Split `budget` over files: a fair share each, what a small file leaves goes to the rest."""
    shares = [0] * len(sizes)
    left, files_left = budget, len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (sizes[i], i)):
        shares[i] = min(sizes[i], left // files_left)
        left -= shares[i]
        files_left -= 1
    return shares


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client of `scheduler`, or of a new LocalCluster of `workers` processes; None (no
    Dask at all) when `workers` is 0."""
    if scheduler is None and workers == 0:
        yield None
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise RnnlmError(
            f"preparing on Dask needs dask.distributed ({_INSTALL_HINT}); "
            "--workers 0 prepares in this process"
        ) from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as error:
            raise RnnlmError(f"cannot reach the Dask scheduler at {scheduler}: {error}") from None
        with client:
            yield client
        return
    # One thread per worker: tokenizing is pure Python, so only processes run it in parallel.
    with (
        LocalCluster(
            n_workers=workers or os.cpu_count() or 1,
            threads_per_worker=1,
            processes=True,
            # No dashboard, and its HTTP port (which the scheduler opens even so) picked
            # freely, so a second cluster on the machine is not warned about port 8787.
            dashboard_address=":0",
            scheduler_kwargs={"dashboard": False},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def prepare(
    data: DataConfig,
    out: str | Path,
    *,
    client: Any = None,
    scheduler: str | None = None,
    workers: int | None = 0,
    punkt_sample: int = DEFAULT_PUNKT_SAMPLE,
    shard_size: int = shards.DEFAULT_SHARD_SIZE,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Tokenize the files matching `data.corpus` into the new folder `out`; a summary.

    Runs on `client` (a `dask.distributed.Client`) if given, else on `dask_client(scheduler,
    workers)`: by default (workers=0) in this process. The inputs are checked first, so a
    typo costs no cluster start.
    """
    started = time.perf_counter()
    if data.corpus is None:
        raise RnnlmError("give the files to prepare: --corpus PATTERN (e.g. 'dump/*.csv')")
    if punkt_sample < 1:
        raise RnnlmError(f"the Punkt sample must be at least 1 character, got {punkt_sample}")
    if shard_size < 1:
        raise RnnlmError(f"the shard size must be at least 1 token id, got {shard_size}")
    # Validation is chosen at training time; the index records only what shaped the shards.
    data = dataclasses.replace(data, valid=None, valid_fraction=0.0, prepared=None)
    folder = Path(out)
    _check_new_folder(folder)
    files = find_files(data.corpus)
    format = file_format(files, data.format)
    context = contextlib.nullcontext(client) if client else dask_client(scheduler, workers)
    with context as active:
        folder.mkdir(exist_ok=True)
        runner = _Runner(active, show_progress)
        log.info("%s: %d files (%s), %s", data.corpus, len(files), format, runner.describe())
        summary = _stages(runner, data, files, format, folder, punkt_sample, shard_size)
    return {
        "out": str(folder),
        "corpus": data.corpus,
        **summary,
        "workers": runner.workers,
        "wall_s": round(time.perf_counter() - started, 2),
    }


def _stages(
    runner: _Runner,
    data: DataConfig,
    files: list[str],
    format: str,
    folder: Path,
    punkt_sample: int,
    shard_size: int,
) -> dict[str, int]:
    punkt = None
    if format != "lines":
        punkt = _train_punkt(runner, files, data, format, punkt_sample)
    tokenized = runner.submit(tokenize_file, files, data=data, format=format, punkt=punkt)
    summaries = runner.wait(runner.submit(file_summary, tokenized), "tokenize")
    counts: collections.Counter[str] = collections.Counter()
    for words, word_counts, _, _, _ in summaries:
        counts.update(dict(zip(words, word_counts.tolist(), strict=True)))
    num_documents = sum(summary[4] for summary in summaries)
    num_sentences = sum(summary[2] for summary in summaries)
    num_tokens = sum(summary[3] for summary in summaries)
    # As count_tokens does: the markers compete for vocabulary slots like any token.
    counts[SENTENCE_START] += num_sentences
    counts[SENTENCE_END] += num_sentences
    log.info(
        "%d documents, %d sentences, %d %s tokens, %d distinct",
        num_documents,
        num_sentences,
        num_tokens,
        data.level,
        len(counts),
    )
    vocab = build_vocabulary(counts, data.vocab_size, data.min_count, data.unknown)
    shards.write_json(folder / shards.VOCAB_NAME, vocab.to_dict())

    writer = shards.ShardWriter(folder, shard_size)
    with runner.bar(len(files), "write") as bar:
        for i in range(len(files)):
            writer.add(*encode(runner.result(tokenized[i]), vocab))
            tokenized[i] = None  # frees the worker's copy
            bar.update(1)
    records = writer.close()
    index = {
        "format": shards.FORMAT,
        "format_version": shards.FORMAT_VERSION,
        "data": dataclasses.asdict(data),
        "resolved_format": format,
        "punkt_sample": punkt_sample if punkt is not None else None,
        "vocab": shards.VOCAB_NAME,
        "sentences": num_sentences,
        "tokens": num_tokens,
        "files": [
            {"path": path, "documents": s[4], "sentences": s[2], "tokens": s[3]}
            for path, s in zip(files, summaries, strict=True)
        ],
        "shards": records,
    }
    shards.write_json(folder / shards.INDEX_NAME, index)  # last: it marks the folder complete
    return {
        "files": len(files),
        "documents": num_documents,
        "sentences": num_sentences,
        "tokens": num_tokens,
        "vocab_size": len(vocab),
        "shards": len(records),
    }


def encode(tokens: FileTokens, vocab: Vocabulary) -> tuple[np.ndarray, np.ndarray]:
    """A file's sentences as vocabulary ids with markers, as `Vocabulary.encode` gives them,
    back to back; and the offsets of each sentence."""
    body = vocab.ids(tokens.words)[tokens.ids]
    offsets = np.zeros(len(tokens.lengths) + 1, dtype=np.int64)
    np.cumsum(tokens.lengths + 2, out=offsets[1:])
    ids = np.empty(offsets[-1], dtype=np.int32)
    markers = np.zeros(len(ids), dtype=bool)
    markers[offsets[:-1]] = markers[offsets[1:] - 1] = True
    ids[offsets[:-1]] = vocab.start_id
    ids[offsets[1:] - 1] = vocab.end_id
    ids[~markers] = body
    return ids, offsets


def _check_new_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise RnnlmError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise RnnlmError(f"{folder}: folder is not empty; choose a new --out")
    if not folder.parent.is_dir():
        raise RnnlmError(f"output folder's parent does not exist: {folder.parent}")


def _train_punkt(
    runner: _Runner, files: list[str], data: DataConfig, format: str, budget: int
) -> PunktParameters:
    sizes = [Path(path).stat().st_size for path in files]
    shares = sample_shares(sizes, budget)
    tasks = runner.submit(sample_file, files, shares, sizes, data=data, format=format)
    samples = runner.wait(tasks, "sample")
    text = "\n\n".join(sample for sample in samples if sample)
    started = time.perf_counter()
    trainer = PunktTrainer()
    trainer.train(text)  # one call: training piece by piece decides on partial counts
    log.info(
        "Punkt sentence splitter trained on %d characters from %d files in %.1fs",
        len(text),
        sum(1 for sample in samples if sample),
        time.perf_counter() - started,
    )
    return trainer.get_params()


class _Later:
    """The in-process stand-in for a Dask future: the call runs when its result is first
    needed, once; arguments that are themselves `_Later` are resolved first."""

    def __init__(self, func: Callable, args: tuple, kwargs: dict[str, Any]) -> None:
        self._func, self._args, self._kwargs = func, args, kwargs
        self._done, self._value = False, None

    def result(self) -> Any:
        if not self._done:
            args = [arg.result() if isinstance(arg, _Later) else arg for arg in self._args]
            self._value, self._done = self._func(*args, **self._kwargs), True
            self._args = ()  # let the inputs go
        return self._value


class _Runner:
    """The stages' one interface to Dask futures, or to plain calls in this process."""

    def __init__(self, client: Any, show_progress: bool) -> None:
        self.client, self.show_progress = client, show_progress
        self.workers = len(client.scheduler_info()["workers"]) if client is not None else 0

    def describe(self) -> str:
        if self.client is None:
            return "in this process (no Dask)"
        return f"{self.workers} Dask workers at {self.client.scheduler.address}"

    def submit(self, func: Callable, *columns: Sequence, **shared: Any) -> list:
        """One task per row of `columns`, `shared` sent to every worker once; a column may
        hold earlier tasks, whose results the task then receives."""
        if self.client is None:
            return [_Later(func, row, shared) for row in zip(*columns, strict=True)]
        sent = {key: self.client.scatter(value, broadcast=True) for key, value in shared.items()}
        return self.client.map(func, *columns, pure=False, **sent)

    def wait(self, tasks: list, desc: str) -> list:
        """Results in task order, with a bar as tasks finish; the first failure stops all."""
        results: dict[int, Any] = {}
        with self.bar(len(tasks), desc) as bar:
            for i, value in self._as_completed(tasks):
                if isinstance(value, Failed):
                    # Closing the client on the way out releases the tasks still queued.
                    raise RnnlmError(value.message)
                results[i] = value
                bar.update(1)
        return [results[i] for i in range(len(tasks))]

    def _as_completed(self, tasks: list) -> Iterator[tuple[int, Any]]:
        if self.client is None:
            yield from ((i, task.result()) for i, task in enumerate(tasks))
            return
        from dask.distributed import as_completed

        position = {task.key: i for i, task in enumerate(tasks)}
        for future in as_completed(tasks):
            yield position[future.key], self.result(future)

    def result(self, task: Any) -> Any:
        """A task's value; a worker that kept dying is an RnnlmError, a bug a traceback."""
        if self.client is None:
            return task.result()
        from distributed import KilledWorker

        try:
            return task.result()
        except KilledWorker as error:
            raise RnnlmError(
                f"Dask workers kept dying while running {error.task} (out of memory?)"
            ) from None

    def bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(
            total=total,
            desc=desc,
            unit="file",
            disable=not self.show_progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
