"""The folder `rnnlm prepare` writes and `rnnlm train --data` reads.

    DIR/index.json               format, data config, input files, shards, counts (written last)
    DIR/vocab.json               the vocabulary (`Vocabulary.to_dict`)
    DIR/shard-00000.ids.npy      int32: encoded sentences back to back, both markers included
    DIR/shard-00000.offsets.npy  int64: sentence k of the shard is ids[offsets[k]:offsets[k + 1]]

Shards are memory-mapped: training reads the sentences it batches, never the whole corpus.
The folder is untrusted input like a checkpoint, so every file is checked when it is opened.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import operator
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm.config import Config, DataConfig
from rnnlm.errors import RnnlmError, SettingError
from rnnlm.vocab import Vocabulary

FORMAT = "rnnlm-prepared"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
VOCAB_NAME = "vocab.json"
DEFAULT_SHARD_SIZE = 1 << 24  # token ids per shard: 64 MiB of int32
# The data options a prepared folder fixes; the rest (valid, valid_fraction) stay train's.
TOKENIZATION_KEYS = ("corpus", "format", "column", "lowercase", "level", "unknown")
VOCABULARY_KEYS = ("vocab_size", "min_count")


# -- writing --------------------------------------------------------------------------------


class ShardWriter:
    """Appends encoded sentences and cuts a shard once `shard_size` ids are waiting.

    A shard ends at the last sentence boundary within `shard_size` ids (one longer sentence
    gets a shard of its own), so the shards depend only on the sentences, never on how they
    arrived.
    """

    def __init__(self, folder: Path, shard_size: int = DEFAULT_SHARD_SIZE) -> None:
        if shard_size < 1:
            raise RnnlmError(f"shard size must be at least 1, got {shard_size}")
        self.folder, self.shard_size = folder, shard_size
        self.shards: list[dict[str, Any]] = []
        self._ids: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self._pending = 0

    def add(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        """Sentences `ids[offsets[k]:offsets[k + 1]]`, `offsets` starting at 0."""
        self._ids.append(np.asarray(ids, dtype=np.int32))
        self._lengths.append(np.diff(offsets))
        self._pending += len(ids)
        if self._pending >= self.shard_size:
            self._cut(final=False)

    def close(self) -> list[dict[str, Any]]:
        """Write what is left; the shard records for the index."""
        if self._pending:
            self._cut(final=True)
        return self.shards

    def _cut(self, final: bool) -> None:
        ids = np.concatenate(self._ids)
        offsets = _offsets(np.concatenate(self._lengths))
        while len(ids) >= self.shard_size or (final and len(ids)):
            # Sentences that fit in shard_size ids, but always at least one.
            count = max(int(np.searchsorted(offsets, self.shard_size, side="right")) - 1, 1)
            if len(ids) < self.shard_size:
                count = len(offsets) - 1
            end = int(offsets[count])
            self._write(ids[:end], offsets[: count + 1])
            ids, offsets = ids[end:], offsets[count:] - end
        self._ids, self._lengths = [ids], [np.diff(offsets)]
        self._pending = len(ids)

    def _write(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        stem = f"shard-{len(self.shards):05d}"
        names = {"ids": f"{stem}.ids.npy", "offsets": f"{stem}.offsets.npy"}
        np.save(self.folder / names["ids"], ids.astype(np.int32, copy=False))
        np.save(self.folder / names["offsets"], offsets.astype(np.int64, copy=False))
        self.shards.append({**names, "sentences": len(offsets) - 1, "ids_count": len(ids)})


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def write_json(path: Path, value: Any) -> None:
    """Deterministic bytes, written to a temporary name and renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# -- reading --------------------------------------------------------------------------------


class ShardedSentences(Sequence[np.ndarray]):
    """Encoded sentences read lazily from memory-mapped shards; `s[i]` is an int32 view."""

    def __init__(self, shards: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self._ids = [ids for ids, _ in shards]
        self._offsets = [offsets for _, offsets in shards]
        self._first = [0]  # index of each shard's first sentence, then the total
        for offsets in self._offsets:
            self._first.append(self._first[-1] + len(offsets) - 1)

    def __len__(self) -> int:
        return self._first[-1]

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = operator.index(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sentence {index} is outside [0, {len(self)})")
        shard = bisect.bisect_right(self._first, i) - 1
        offsets = self._offsets[shard]
        k = i - self._first[shard]
        return np.asarray(self._ids[shard][offsets[k] : offsets[k + 1]])

    def __iter__(self) -> Iterator[np.ndarray]:
        for ids, offsets in zip(self._ids, self._offsets, strict=True):
            bounds = np.asarray(offsets).tolist()
            for start, end in zip(bounds[:-1], bounds[1:], strict=True):
                yield np.asarray(ids[start:end])


class Subset(Sequence[np.ndarray]):
    """Some sentences of a sequence, by index, without copying them."""

    def __init__(self, base: Sequence[np.ndarray], indices: np.ndarray) -> None:
        self._base, self._indices = base, np.asarray(indices)

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return Subset(self._base, self._indices[index])
        return self._base[int(self._indices[index])]


@dataclass(frozen=True)
class PreparedCorpus:
    """An opened, checked `rnnlm prepare` folder."""

    folder: Path
    data: DataConfig  # how the text was read and the vocabulary built
    vocab: Vocabulary
    sentences: ShardedSentences
    num_tokens: int  # corpus tokens, markers not counted
    index: dict[str, Any]


def read_index(folder: str | Path) -> tuple[dict[str, Any], DataConfig]:
    """The checked index of a prepared folder and its data config; no shard is opened."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RnnlmError(f"{folder}: no such folder (expected one written by `rnnlm prepare`)")
    path = folder / INDEX_NAME
    if not path.is_file():
        raise RnnlmError(
            f"{folder}: no {INDEX_NAME}: not written by `rnnlm prepare`, or it did not finish"
        )
    index = _read_json(path, "index")
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise RnnlmError(f"{path}: corrupt index: not an {FORMAT} index")
    version = index.get("format_version")
    if version != FORMAT_VERSION:
        raise RnnlmError(
            f"{path}: index format version {version!r}; this rnnlm reads version {FORMAT_VERSION}"
        )
    for key, kind in (("data", dict), ("shards", list), ("sentences", int), ("tokens", int)):
        if not isinstance(index.get(key), kind) or isinstance(index.get(key), bool):
            raise RnnlmError(f"{path}: corrupt index: {key!r} is missing or not a {kind.__name__}")
    if not isinstance(index.get("vocab"), str):
        raise RnnlmError(f"{path}: corrupt index: 'vocab' is missing or not a file name")
    try:
        data = Config.from_dict({"data": index["data"]}).data
    except RnnlmError as error:
        raise RnnlmError(f"{path}: corrupt index: {error}") from error
    return index, data


def open_prepared(folder: str | Path) -> PreparedCorpus:
    """Index, vocabulary and memory-mapped shards, each checked against the index."""
    folder = Path(folder)
    index, data = read_index(folder)
    vocab_path = _member(folder, index["vocab"], "vocabulary")
    try:
        vocab = Vocabulary.from_dict(_read_json(vocab_path, "vocabulary"))
    except RnnlmError as error:
        raise RnnlmError(f"{vocab_path}: {error}") from error
    shards = [_open_shard(folder, record, len(vocab)) for record in index["shards"]]
    sentences = ShardedSentences(shards)
    ids_count = sum(len(ids) for ids, _ in shards)
    if len(sentences) != index["sentences"] or ids_count != index["tokens"] + 2 * len(sentences):
        raise RnnlmError(
            f"{folder / INDEX_NAME}: the shards hold {len(sentences)} sentences and {ids_count} "
            f"ids, the index says {index['sentences']} sentences and {index['tokens']} tokens"
        )
    for ids, offsets in shards:
        starts, ends = ids[offsets[:-1]], ids[offsets[1:] - 1]
        if (starts != vocab.start_id).any() or (ends != vocab.end_id).any():
            raise RnnlmError(f"{folder}: a shard holds a sentence without its markers")
    return PreparedCorpus(folder, data, vocab, sentences, index["tokens"], index)


def with_prepared_data(config: Config, given: Mapping[str, Any] | None = None) -> Config:
    """`config` with the corpus, tokenization and vocabulary options of its prepared folder.

    `given` holds the data options the user typed; any that the folder fixes is an error
    rather than silently ignored.
    """
    folder = config.data.prepared
    if folder is None:
        return config
    clash = [key for key in TOKENIZATION_KEYS + VOCABULARY_KEYS if key in (given or {})]
    if clash:
        raise SettingError(
            f"the prepared folder {folder} brings its own corpus, tokenization and vocabulary "
            "(run `rnnlm prepare` again to change them); drop",
            dict.fromkeys(f"data.{key}" for key in clash),
        )
    _, stored = read_index(folder)
    data = dataclasses.replace(
        stored,
        prepared=folder,
        valid=config.data.valid,
        valid_fraction=config.data.valid_fraction,
    )
    return dataclasses.replace(config, data=data)


def _member(folder: Path, name: Any, what: str) -> Path:
    # Names come from the index: plain file names inside the folder, nothing else.
    if not isinstance(name, str) or not name or Path(name).name != name or name.startswith("."):
        raise RnnlmError(f"{folder / INDEX_NAME}: corrupt index: bad {what} file name {name!r}")
    path = folder / name
    if not path.is_file():
        raise RnnlmError(f"{path}: missing {what} file (listed in {INDEX_NAME})")
    return path


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise RnnlmError(f"{path}: cannot read: {error.strerror or error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RnnlmError(f"{path}: corrupt {what}: not valid JSON ({error})") from error


def _open_shard(folder: Path, record: Any, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(record, dict):
        raise RnnlmError(f"{folder / INDEX_NAME}: corrupt index: a shard entry is not an object")
    ids = _load_array(_member(folder, record.get("ids"), "shard"), np.int32)
    offsets_path = _member(folder, record.get("offsets"), "shard offsets")
    offsets = _load_array(offsets_path, np.int64)
    sentences, ids_count = record.get("sentences"), record.get("ids_count")
    if (len(offsets) - 1, len(ids)) != (sentences, ids_count):
        raise RnnlmError(
            f"{offsets_path}: {len(offsets) - 1} sentences and {len(ids)} ids, the index says "
            f"{sentences} and {ids_count}"
        )
    lengths = np.diff(offsets)
    if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != len(ids) or (lengths < 2).any():
        raise RnnlmError(f"{offsets_path}: offsets do not cut the shard into sentences")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise RnnlmError(
            f"{folder / record['ids']}: token ids {low}..{high} fall outside the vocabulary "
            f"of {vocab_size}"
        )
    return ids, offsets


def _load_array(path: Path, dtype: type) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise RnnlmError(f"{path}: not a readable .npy file ({error})") from error
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(dtype) or array.ndim != 1:
        shape = getattr(array, "shape", "?")
        raise RnnlmError(
            f"{path}: holds {getattr(array, 'dtype', '?')} of shape {shape}; expected a "
            f"one-dimensional {np.dtype(dtype).name} array"
        )
    return array
