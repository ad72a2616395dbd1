"""A disk cache of compiled functions: a graph is compiled once, later processes unpickle it.

    graph (inputs, outputs, updates) --fingerprint--> key --sha256--> <cache>/<hex>.fn
    miss: compile, then pickle without the shared values;  hit: unpickle onto the shared
    variables of the graph just built (the caller's parameters, optimizer state, RNGs)

    recipe (function name, model config, mode, our sources) --sha256--> <cache>/<hex>.alias
    a JSON pointer to the .fn entry and the names of its shared variables: found before
    any graph is built, so a model's own functions load without building one

This module holds the cache and its folder; the keys are made in `compiled_key`, an entry's
bytes in `compiled_entry`.

A pickle is code. The cache reads only `<root>/<hex>.fn` and `.alias`, names it computes
itself, in a folder of its own (0700, owned by this user); files that are links, someone
else's, or writable by others are never opened. Entries are written atomically and validated on load
(header, payload digest, the rebinding); anything stale or corrupt is rebuilt silently.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnlm import backend
from rnnlm.compiled_entry import pack, unpack
from rnnlm.compiled_key import (
    Unfingerprintable,
    cache_key,
    canonical_json,
    graph_fingerprint,
    recipe_key,
)

log = logging.getLogger(__name__)

ENTRY, ALIAS = ".fn", ".alias"  # a pickled function; a recipe's JSON pointer to one
DEFAULT_MAX_BYTES = 2 * 1024**3  # oldest entries go first beyond this


def default_dir() -> Path:
    """`$XDG_CACHE_HOME/rnnlm`, or `~/.cache/rnnlm` (a relative XDG path is ignored, per spec)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "rnnlm"


def user_cache(enabled: bool = True) -> FunctionCache | None:
    """The user's cache (`default_dir()`), or None when `enabled` is false (`--no-cache`)."""
    return FunctionCache() if enabled else None


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    entries: int
    bytes: int
    usable: bool  # False: not ours or open to others, so never read

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "path": str(self.path)}


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    rebuilt: int = 0  # stale or corrupt entries replaced
    uncacheable: int = 0


class FunctionCache:
    """Compiled functions on disk. `function` mirrors `backend.function` (keyed by the graph);
    `named` finds a function by a recipe before any graph is built (keyed by what builds it)."""

    def __init__(self, root: str | Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root) if root is not None else default_dir()
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._usable: bool | None = None
        # While `named` builds: what `function` compiled or loaded (path, key, shared, fn).
        self._recorded: list[tuple[Path, dict, list, Callable]] | None = None

    def function(
        self,
        inputs: Sequence,
        outputs: Sequence | Any,
        *,
        mode: Any,
        updates: Mapping | None = None,
        **kwargs: Any,
    ) -> Callable:
        """`backend.function(inputs, outputs, mode=mode, updates=updates, **kwargs)`, from
        disk when this exact graph was compiled before, and saved for next time when not."""
        updates = dict(updates or {})
        try:
            shared, fingerprint = graph_fingerprint(inputs, outputs, updates, mode, kwargs)
        except Unfingerprintable as error:
            log.debug("not caching a function: %s", error)
            self.stats.uncacheable += 1
            return backend.function(inputs, outputs, mode=mode, updates=updates, **kwargs)
        key = cache_key(graph=fingerprint)
        path = self._path(key, ENTRY)
        fn = self._load_entry(path, key, shared) if self.usable() else None
        if fn is not None:
            self.stats.hits += 1
        else:
            self.stats.misses += 1
            fn = backend.function(inputs, outputs, mode=mode, updates=updates, **kwargs)
            if self.usable():
                self._save_entry(path, key, fn, shared)
        if self._recorded is not None:
            self._recorded.append((path, key, shared, fn))
        return fn

    def named(
        self,
        recipe: Mapping[str, Any],
        shared: Mapping[str, Any],
        build: Callable[[], Callable],
    ) -> Callable:
        """The function `build()` makes, found by `recipe` without calling `build` at all.

        `recipe` must name everything the graph depends on beyond rnnlm's source code (which
        the key covers): say, the function's name, the model config and the compile mode.
        Its shared variables must all be values of `shared` (name -> shared variable).
        A small JSON alias maps the recipe to the graph-keyed entry that `build` compiled,
        and the entry's shared variables to names; no pickle is read on the alias's word
        alone: the entry is validated against its own full key as always.
        """
        key = recipe_key(recipe)
        alias_path = self._path(key, ALIAS)
        if self.usable():
            fn = self._load_alias(alias_path, key, shared)
            if fn is not None:
                self.stats.hits += 1
                return fn
        outer, self._recorded = self._recorded, []
        try:
            fn = build()
            made = [entry for entry in self._recorded if entry[3] is fn]
        finally:
            self._recorded = outer
        names = {id(var): name for name, var in shared.items()}
        if made and self.usable():
            entry_path, entry_key, entry_shared, _ = made[0]
            if all(id(var) in names for var in entry_shared):
                alias = {
                    "key": key,
                    "entry": entry_path.name,
                    "entry_key": entry_key,
                    "shared": [names[id(var)] for var in entry_shared],
                }
                self._write(alias_path, canonical_json(alias))
        return fn

    # -- the folder -------------------------------------------------------------------------

    def usable(self) -> bool:
        """Create the folder (0700) on first use; refuse one that is not private to us."""
        if self._usable is None:
            self._usable = self._check_root()
        return self._usable

    def _check_root(self) -> bool:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(self.root)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                log.warning("compiled-function cache off: %s is not a folder of ours", self.root)
                return False
            if stat.S_IMODE(info.st_mode) & 0o077:
                os.chmod(self.root, 0o700)
            return True
        except OSError as error:
            log.warning("compiled-function cache off: %s: %s", self.root, error)
            return False

    def _path(self, key: Mapping, suffix: str) -> Path:
        """The only file a key may be read from: a hex name the cache computed, in its root."""
        return self.root / (hashlib.sha256(canonical_json(key)).hexdigest() + suffix)

    def files(self) -> list[Path]:
        """Every entry and alias in the folder."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if _cache_file_kind(p.name))

    def info(self) -> CacheInfo:
        files = self.files()
        entries = sum(_cache_file_kind(p.name) == ENTRY for p in files)
        usable = self._check_root() if self.root.exists() else True
        return CacheInfo(self.root, entries, sum(_size(p) for p in files), usable)

    def clear(self) -> int:
        """Delete every entry, alias and stray temporary file; the number of entries deleted."""
        removed = 0
        for path in self.root.iterdir() if self.root.is_dir() else ():
            kind = _cache_file_kind(path.name)
            if kind or _is_temp_name(path.name):
                _unlink_quietly(path)
                removed += kind == ENTRY
        return removed

    # -- reading and writing ----------------------------------------------------------------

    def _read_private(self, path: Path) -> bytes | None:
        """The bytes of one of our own regular files, or None (missing, a link, not ours)."""
        try:
            info = os.lstat(path)
        except OSError:
            return None
        if (
            not stat.S_ISREG(info.st_mode)
            or info.st_uid != os.getuid()
            or stat.S_IMODE(info.st_mode) & 0o022
        ):
            log.warning("compiled-function cache: not reading %s (not a private file)", path)
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    def _load_entry(self, path: Path, key: Mapping, shared: Sequence) -> Callable | None:
        data = self._read_private(path)
        if data is None:
            return None
        try:
            fn = unpack(data, key, shared)
        except Exception as error:  # anything at all: the entry is rebuilt
            log.debug("compiled-function cache: rebuilding %s (%s)", path.name, error)
            self.stats.rebuilt += 1
            _unlink_quietly(path)
            return None
        os.utime(path)  # recently used: pruned last
        return fn

    def _load_alias(self, path: Path, key: Mapping, shared: Mapping[str, Any]) -> Callable | None:
        data = self._read_private(path)
        if data is None:
            return None
        try:
            alias = json.loads(data)
            if alias["key"] != json.loads(canonical_json(key)):
                raise ValueError("key mismatch")
            entry_key = alias["entry_key"]
            entry_path = self._path(entry_key, ENTRY)  # recomputed: the alias names no path
            if entry_path.name != alias["entry"]:
                raise ValueError("entry name mismatch")
            if entry_key != cache_key(graph=entry_key.get("graph")):
                raise ValueError("stale entry key")
            variables = [shared[name] for name in alias["shared"]]
        except Exception as error:
            log.debug("compiled-function cache: dropping alias %s (%s)", path.name, error)
            _unlink_quietly(path)
            return None
        fn = self._load_entry(entry_path, entry_key, variables)
        if fn is None:
            _unlink_quietly(path)
        return fn

    def _save_entry(self, path: Path, key: Mapping, fn: Callable, shared: Sequence) -> None:
        try:
            data = pack(key, fn, shared)
        except Exception as error:  # an op that does not pickle: just not cached
            log.debug("compiled-function cache: cannot pickle (%s)", error)
            self.stats.uncacheable += 1
            return
        self._write(path, data)
        self._prune()

    def _write(self, path: Path, data: bytes) -> None:
        """Atomically: a private temporary file in the folder, renamed over the target."""
        try:
            handle, temp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=path.suffix)
        except OSError as error:
            log.debug("compiled-function cache: cannot write %s (%s)", path, error)
            return
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temp, path)
        except OSError as error:
            log.debug("compiled-function cache: cannot write %s (%s)", path, error)
            _unlink_quietly(Path(temp))

    def _prune(self) -> None:
        """Beyond `max_bytes`, delete the least recently used entries (aliases to them die
        on their next use)."""
        entries = []
        for path in self.files():
            with contextlib.suppress(OSError):
                info = path.stat()
                entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            _unlink_quietly(path)
            total -= size


# -- file names -------------------------------------------------------------------------------


def _cache_file_kind(name: str) -> str | None:
    """ENTRY or ALIAS for a name the cache could have made (64 hex digits), else None."""
    stem, dot, suffix = name.partition(".")
    kind = dot + suffix
    if kind in (ENTRY, ALIAS) and len(stem) == 64 and all(c in "0123456789abcdef" for c in stem):
        return kind
    return None


def _is_temp_name(name: str) -> bool:
    return name.startswith(".tmp-") and name.endswith((ENTRY, ALIAS))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
