"""`rnnlm prepare`: many corpus files -> a vocabulary and integer-id shards, tokenized on Dask.

Every file is one task (`rnnlm.workers`), so uneven files balance over the workers and the
files of a worker that dies are tokenized again elsewhere. The stages:

1. csv and prose only: Punkt learns the corpus's abbreviations from one sample of all files
   (`punkt_sample` characters, shared out over the files by size, each file's share taken
   from its start, joined in file order), trained once here; its parameters go to every
   worker. A corpus smaller than the sample is learnt whole, as `rnnlm train --corpus`
   learns a single file.
2. Workers tokenize whole files into local ids (a per-file token table); only the token
   counts come back here, and `build_vocabulary` turns their sum into the vocabulary.
3. In file order, each file's local ids are fetched, mapped to vocabulary ids, wrapped in
   sentence markers and appended to the shards (`rnnlm.shards`).

Files go in sorted path order, counts are summed (order-free) and ties in the vocabulary
break by token, so the output is byte for byte the same whatever the number of workers or
the order in which they finish; `workers=0` runs the same stages in this process, no Dask.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nltk.tokenize.punkt import PunktParameters

from rnnlm import shards
from rnnlm.config import DataConfig, load_config, resolve
from rnnlm.corpus import format_of, train_punkt
from rnnlm.errors import RnnlmError, SettingError
from rnnlm.executor import Runner, dask_client
from rnnlm.vocab import Vocabulary, build_vocabulary, with_markers
from rnnlm.workers import FileTokens, file_summary, sample_file, tokenize_file

log = logging.getLogger(__name__)

DEFAULT_PUNKT_SAMPLE = 4_000_000  # characters; Punkt trains at roughly 0.3 MB/s


def prepare_files(
    overrides: dict[str, dict[str, Any]],
    out: str | Path,
    *,
    config_file: str | Path | None = None,
    punkt_sample: int | None = None,
    shard_size: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """`rnnlm prepare`: the data config (defaults <- file <- overrides), then `prepare`;
    `punkt_sample` and `shard_size` None take their defaults."""
    file_values = load_config(config_file) if config_file else None
    return prepare(
        resolve(file_values, overrides).data,
        out,
        punkt_sample=punkt_sample or DEFAULT_PUNKT_SAMPLE,
        shard_size=shard_size or shards.DEFAULT_SHARD_SIZE,
        **options,
    )


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
        raise SettingError(
            "give the files to prepare, a path or a glob pattern such as 'dump/*.csv':",
            {"data.corpus": None},
        )
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
        runner = Runner(active, show_progress)
        log.info("%s: %d files (%s), %s", data.corpus, len(files), format, runner.describe())
        summary = _stages(runner, data, files, format, folder, punkt_sample, shard_size)
    return {
        "out": str(folder),
        "corpus": data.corpus,
        **summary,
        "workers": runner.workers,
        "wall_s": round(time.perf_counter() - started, 2),
    }


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
    found = {format_of(path, format) for path in files}
    if len(found) > 1:
        raise SettingError(
            "the files mix .csv and other suffixes; to read them alike, give",
            {"data.format": None},
        )
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


def _stages(
    runner: Runner,
    data: DataConfig,
    files: list[str],
    format: str,
    folder: Path,
    punkt_sample: int,
    shard_size: int,
) -> dict[str, int]:
    read = dataclasses.replace(data, format=format)  # every file read alike
    punkt = _train_punkt(runner, files, read, punkt_sample) if format != "lines" else None
    tokenized = runner.submit(tokenize_file, files, data=read, punkt=punkt)
    summaries = runner.wait(runner.submit(file_summary, tokenized), "tokenize")
    counts: collections.Counter[str] = collections.Counter()
    for words, word_counts, _, _, _ in summaries:
        counts.update(dict(zip(words, word_counts.tolist(), strict=True)))
    num_documents = sum(summary[4] for summary in summaries)
    num_sentences = sum(summary[2] for summary in summaries)
    num_tokens = sum(summary[3] for summary in summaries)
    counts = with_markers(counts, num_sentences)
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


def encode(tokens: FileTokens, vocab: Vocabulary):
    """A file's sentences as vocabulary ids with markers, back to back, and their offsets."""
    return vocab.encode_flat(vocab.ids(tokens.words)[tokens.ids], tokens.lengths)


def _check_new_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise RnnlmError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise RnnlmError(f"{folder}: folder is not empty; choose a new one")
    if not folder.parent.is_dir():
        raise RnnlmError(f"output folder's parent does not exist: {folder.parent}")


def _train_punkt(
    runner: Runner, files: list[str], data: DataConfig, budget: int
) -> PunktParameters:
    sizes = [Path(path).stat().st_size for path in files]
    shares = sample_shares(sizes, budget)
    samples = runner.wait(runner.submit(sample_file, files, shares, sizes, data=data), "sample")
    text = "\n\n".join(sample for sample in samples if sample)
    started = time.perf_counter()
    punkt = train_punkt(text)
    log.info(
        "Punkt sentence splitter trained on %d characters from %d files in %.1fs",
        len(text),
        sum(1 for sample in samples if sample),
        time.perf_counter() - started,
    )
    return punkt
