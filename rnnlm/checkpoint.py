"""One self-describing `.npz`: parameters, vocabulary, resolved config, training progress,
and the output layer's tables (a class map, a word order, a proposal: `rnnlm.output_tables`).

Model files are untrusted input: loaded with `allow_pickle=False`, every array checked
against the shapes its own config implies. Writes go to a temp file that is renamed over
the target, so a reader never sees half a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm import flags
from rnnlm.architecture import param_shapes
from rnnlm.config import Config
from rnnlm.errors import RnnlmError
from rnnlm.output_tables import check_tables
from rnnlm.vocab import Vocabulary

FORMAT = "rnnlm-checkpoint"
FORMAT_VERSION = 1
PARAM_PREFIX = "param/"
OPTIM_PREFIX = "optim/"
CARRY_PREFIX = "carry/"
TABLE_PREFIX = "table/"


@dataclass
class Checkpoint:
    config: Config
    vocab: Vocabulary
    params: dict[str, np.ndarray]
    progress: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, np.ndarray] = field(default_factory=dict)  # named optimizer state
    carry: list[np.ndarray] = field(default_factory=list)  # stream mode: recurrent states
    # The tensor library that wrote the file ({} before rnnlm recorded it); `save` writes the
    # one running. Parameters are plain arrays: any library loads them.
    backend: dict[str, str] = field(default_factory=dict)
    tables: dict[str, np.ndarray] = field(default_factory=dict)  # the output layer's


def save(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": checkpoint.config.to_dict(),
        "vocab": checkpoint.vocab.to_dict(),
        "progress": checkpoint.progress,
        "backend": flags.describe(),
    }
    arrays = {PARAM_PREFIX + name: value for name, value in checkpoint.params.items()}
    arrays.update({OPTIM_PREFIX + name: value for name, value in checkpoint.optimizer.items()})
    arrays.update({f"{CARRY_PREFIX}{i}": value for i, value in enumerate(checkpoint.carry)})
    arrays.update({TABLE_PREFIX + name: value for name, value in checkpoint.tables.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a model is an ordinary file
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(folder)  # make the rename itself durable
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_npz(path: Path, kind: str = "an rnnlm model file") -> dict[str, np.ndarray]:
    """Every array of an untrusted .npz, never unpickling; any problem is one `RnnlmError`."""
    if not path.is_file():
        raise RnnlmError(f"model file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a lone .npy array
            raise ValueError("not an .npz archive")
        with loaded as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise RnnlmError(f"{path} is not {kind} ({exc})") from None
    except MemoryError:
        raise RnnlmError(f"{path}: an array in it claims more memory than there is") from None
    # A zip member not stored as .npy comes back as raw bytes.
    strays = sorted(name for name, value in arrays.items() if not isinstance(value, np.ndarray))
    if strays:
        raise RnnlmError(f"{path} is not {kind} (stray member {strays[0]!r})")
    return arrays


def load(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint; any problem is one `RnnlmError` line."""
    path = Path(path)
    arrays = read_npz(path)
    meta = _read_meta(path, arrays.pop("meta", None))
    try:
        config = Config.from_dict(meta["config"])
        vocab = Vocabulary.from_dict(meta["vocab"])
    except RnnlmError as exc:
        raise RnnlmError(f"{path}: {exc}") from None
    if len(vocab) != config.model.vocab_size:
        raise RnnlmError(
            f"{path}: vocabulary has {len(vocab)} words but the model expects "
            f"{config.model.vocab_size}"
        )
    params = _with_prefix(arrays, PARAM_PREFIX)
    _check_params(path, config, params)
    tables = _with_prefix(arrays, TABLE_PREFIX)
    try:
        check_tables(config.model.output, tables)
    except RnnlmError as exc:
        raise RnnlmError(f"{path}: {exc}") from None
    optimizer = _with_prefix(arrays, OPTIM_PREFIX)
    carry = _with_prefix(arrays, CARRY_PREFIX)
    for name, value in [*optimizer.items(), *carry.items()]:
        if value.dtype.kind != "f" or not np.isfinite(value).all():
            raise RnnlmError(f"{path}: training state {name} is not finite floating point")
    progress = meta.get("progress", {})
    if not isinstance(progress, dict):
        raise RnnlmError(f"{path}: training progress is not a table")
    backend = meta.get("backend", {})
    if not isinstance(backend, dict) or not all(isinstance(v, str) for v in backend.values()):
        raise RnnlmError(f"{path}: the backend entry is not a table of strings")
    ordered_carry = [carry[str(i)] for i in range(len(carry)) if str(i) in carry]
    if len(ordered_carry) != len(carry):
        raise RnnlmError(f"{path}: carried states are not numbered 0..{len(carry) - 1}")
    return Checkpoint(config, vocab, params, progress, optimizer, ordered_carry, backend, tables)


def _with_prefix(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)}


def _read_meta(path: Path, raw: np.ndarray | None) -> dict[str, Any]:
    if raw is None or raw.dtype.kind != "U" or raw.shape != ():
        raise RnnlmError(f"{path} is not an rnnlm model file (no metadata)")
    try:
        meta = json.loads(str(raw))
    except (json.JSONDecodeError, RecursionError):
        raise RnnlmError(f"{path}: metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RnnlmError(f"{path} is not an rnnlm model file")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise RnnlmError(
            f"{path}: format version {version!r} is not supported "
            f"(this rnnlm reads version {FORMAT_VERSION})"
        )
    for key in ("config", "vocab"):
        if key not in meta:
            raise RnnlmError(f"{path}: metadata has no {key!r}")
    return meta


def _check_params(path: Path, config: Config, params: dict[str, np.ndarray]) -> None:
    try:
        expected = param_shapes(config.model)
    except RnnlmError as exc:  # an output layer that does not fit the vocabulary
        raise RnnlmError(f"{path}: {exc}") from None
    if set(params) != set(expected):
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        raise RnnlmError(
            f"{path}: parameters do not match the config (missing {missing}, unexpected {extra})"
        )
    for name, shape in expected.items():
        value = params[name]
        if value.shape != shape or value.dtype.kind != "f":
            raise RnnlmError(
                f"{path}: parameter {name} is {value.dtype}{list(value.shape)}, "
                f"expected float{list(shape)}"
            )
        if not np.isfinite(value).all():
            raise RnnlmError(f"{path}: parameter {name} holds NaN or infinite values")
