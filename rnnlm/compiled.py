"""A disk cache of compiled functions: a graph is compiled once, later processes unpickle it.

    graph (inputs, outputs, updates) --fingerprint--> key --sha256--> <cache>/<hex>.fn
    miss: compile, then pickle without the shared values;  hit: unpickle onto the shared
    variables of the graph just built (the caller's parameters, optimizer state, RNGs)

    recipe (function name, model config, mode, our sources) --sha256--> <cache>/<hex>.alias
    a JSON pointer to the .fn entry and the names of its shared variables: found before
    any graph is built, so a model's own functions load without building one

The key is a digest of the graph itself (every op, its properties, types, constants and
scan's inner graphs), the compile mode and call options, and the versions of everything
that turns a graph into code (rnnlm, the tensor library, numpy, Python, the compiler flags,
our C ops' `c_code_cache_version` and source). So any change that shapes the graph - config,
optimizer settings, code - is a different entry, and nothing has to list what matters.

A pickle is code. The cache reads only `<root>/<hex>.fn` and `.alias`, names it computes
itself, in a folder of its own (0700, owned by this user); files that are links, someone
else's, or writable by others are never opened. Entries are written atomically and validated on load
(header, payload digest, the rebinding); anything stale or corrupt is rebuilt silently.
"""

from __future__ import annotations

import contextlib
import copyreg
import dataclasses
import functools
import hashlib
import inspect
import io
import json
import logging
import os
import pickle
import stat
import struct
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm import __version__, backend

log = logging.getLogger(__name__)

FORMAT = 1
MAGIC = b"rnnlm-fn"
ENTRY, ALIAS = ".fn", ".alias"  # a pickled function; a recipe's JSON pointer to one
DEFAULT_MAX_BYTES = 2 * 1024**3  # oldest entries go first beyond this
# Compiler and linker settings that change the code made from the same graph.
FLAGS = (
    "floatX",
    "cxx",
    "gcc__cxxflags",
    "blas__ldflags",
    "openmp",
    "linker",
    "optimizer",
    "optimizer_excluding",
    "optimizer_including",
    "optimizer_requiring",
    "allow_gc",
    "scan__allow_gc",
    "scan__allow_output_prealloc",
    "cast_policy",
    "compute_test_value",
)


def default_dir() -> Path:
    """`$XDG_CACHE_HOME/rnnlm`, or `~/.cache/rnnlm` (a relative XDG path is ignored, per spec)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "rnnlm"


def user_cache(enabled: bool = True) -> FunctionCache | None:
    """The user's cache (`default_dir()`), or None when `enabled` is false (`--no-cache`)."""
    return FunctionCache() if enabled else None


class Unfingerprintable(ValueError):
    """Part of a graph has no stable description; its function is compiled, never cached."""


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
        key = cache_key(recipe=_Describer().value(dict(recipe)), sources=source_digest())
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
                self._write(alias_path, _canonical_json(alias))
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
        return self.root / (hashlib.sha256(_canonical_json(key)).hexdigest() + suffix)

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
            fn = _unpack(data, key, shared)
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
            if alias["key"] != json.loads(_canonical_json(key)):
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
            data = _pack(key, fn, shared)
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


# -- the key ----------------------------------------------------------------------------------


def cache_key(**what: Any) -> dict[str, Any]:
    """`what` (a graph fingerprint, or a recipe and our sources' digest) and the versions of
    everything that turns a graph into code; stored in the file and compared on load."""
    return {
        "format": FORMAT,
        "rnnlm": __version__,
        "library": backend.NAME,
        "library_version": backend.VERSION,
        "numpy": np.__version__,
        "python": list(sys.version_info[:3]),
        "flags": {name: str(getattr(backend.config, name, None)) for name in FLAGS},
        **what,
    }


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 over rnnlm's own Python sources: any code change makes new recipe keys."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def graph_fingerprint(
    inputs: Sequence, outputs: Sequence | Any, updates: Mapping, mode: Any, options: Mapping
) -> tuple[list, str]:
    """The shared variables of a graph, in a fixed order, and a digest of the whole graph."""
    outs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
    describer = _Describer()
    description = {
        "graph": describer.graph(list(inputs), [*outs, *updates.values()], list(updates)),
        "single_output": not isinstance(outputs, list | tuple),
        "mode": _describe_mode(mode),
        "options": describer.value(dict(options)),
        "ops": describer.op_versions(),
    }
    digest = hashlib.sha256(_canonical_json(description)).hexdigest()
    return describer.shared, digest


class _Describer:
    """A deterministic, JSON-able description of graphs: no object ids, no auto names."""

    def __init__(self) -> None:
        self.shared: list = []  # shared variables in order of first appearance
        self._our_ops: dict[str, Any] = {}  # class name -> one instance

    def graph(self, inputs: list, outputs: list, extra_shared: list = ()) -> dict:
        ids: dict[int, int] = {}
        leaves = []

        def number(var) -> int:
            key = id(var)
            if key not in ids:
                ids[key] = len(ids)
                leaves.append(self.leaf(var, inputs))
            return ids[key]

        for var in inputs:
            number(var)
        nodes = []
        for node in _toposort(outputs):
            args = [number(var) for var in node.inputs]
            nodes.append([self.op(node.op), args, [self.value(out.type) for out in node.outputs]])
            for out in node.outputs:
                ids[id(out)] = len(ids)
                leaves.append(None)
        results = [number(var) for var in outputs]
        for var in extra_shared:  # updated, perhaps never read
            number(var)
        return {"leaves": leaves, "nodes": nodes, "outputs": results}

    def leaf(self, var, inputs: list) -> list:
        if isinstance(var, backend.SharedVariable):
            self.shared.append(var)
            return ["shared", len(self.shared) - 1, self.value(var.type)]
        if var.owner is None and hasattr(var, "data"):
            return ["constant", self.value(var.type), self.value(var.data)]
        if any(var is given for given in inputs):
            return ["input", var.name, self.value(var.type)]
        raise Unfingerprintable(f"a free variable {var} that is not an input")

    def op(self, op) -> list:
        cls = type(op)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if cls.__module__.startswith("rnnlm"):
            self._our_ops.setdefault(name, op)
        inner = getattr(op, "fgraph", None)
        if inner is not None and hasattr(inner, "apply_nodes"):  # scan and friends
            inner_description = self.graph(list(inner.inputs), list(inner.outputs))
            attributes = {
                key: self.value(value)
                for key, value in sorted(vars(op).items())
                if not key.startswith("_") and key not in ("fgraph", "mode_instance")
            }
            return [name, attributes, inner_description]
        return [name, self.object_state(op)]

    def object_state(self, obj) -> Any:
        props = getattr(obj, "__props__", None)
        if props is not None:
            return {prop: self.value(getattr(obj, prop)) for prop in props}
        state = getattr(obj, "__dict__", None)
        if state is not None:
            return {
                key: self.value(value)
                for key, value in sorted(state.items())
                if not key.startswith("_")
            }
        return _plain_repr(obj)

    def value(self, value) -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return repr(value)  # nan and inf are not JSON
        if isinstance(value, np.ndarray | np.generic):
            array = np.ascontiguousarray(value)
            if array.dtype.hasobject:
                raise Unfingerprintable("a constant holding Python objects")
            digest = hashlib.sha256(array.tobytes()).hexdigest()
            return ["array", str(array.dtype), list(array.shape), digest]
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return sorted(([self.value(k), self.value(v)] for k, v in value.items()), key=str)
        if isinstance(value, set | frozenset):
            return sorted((self.value(item) for item in value), key=str)
        if hasattr(value, "provided_linker"):  # a Mode
            return _describe_mode(value)
        if inspect.isfunction(value) or inspect.isclass(value) or inspect.isbuiltin(value):
            return f"{value.__module__}.{value.__qualname__}"
        if dataclasses.is_dataclass(value):
            return [type(value).__qualname__, self.value(dataclasses.asdict(value))]
        if hasattr(value, "__props__") or hasattr(value, "__dict__"):  # ops, types, ...
            kind = type(value)
            return [f"{kind.__module__}.{kind.__qualname__}", self.object_state(value)]
        return _plain_repr(value)

    def op_versions(self) -> list:
        """Our own C ops: their cache versions and a digest of their source files."""
        versions = []
        for name, op in sorted(self._our_ops.items()):
            try:
                source = inspect.getsourcefile(type(op))
                digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
            except (OSError, TypeError) as error:
                raise Unfingerprintable(f"no source for {name}") from error
            version = getattr(op, "c_code_cache_version", None)
            versions.append([name, self.value(version() if version else None), digest])
        return versions


def _toposort(outputs: list) -> list:
    """The Apply nodes behind `outputs`, inputs before users, in a fixed order (no recursion)."""
    order, done = [], set()
    stack = [var.owner for var in reversed(outputs) if var.owner is not None]
    while stack:
        node = stack[-1]
        if node in done:
            stack.pop()
            continue
        pending = [var.owner for var in node.inputs if var.owner is not None]
        pending = [owner for owner in pending if owner not in done]
        if pending:
            stack.extend(reversed(pending))
        else:
            done.add(node)
            order.append(node)
            stack.pop()
    return order


def _describe_mode(mode) -> Any:
    if mode is None or isinstance(mode, str):
        return mode
    return [_plain_repr(mode.provided_linker), _describe_rewrites(mode.provided_optimizer)]


def _describe_rewrites(query) -> Any:
    """A RewriteDatabaseQuery by its fields: what it includes, excludes and requires (its
    repr is an address, and on PyTensor so is its str's every set)."""
    if not hasattr(query, "include"):
        return _plain_repr(str(query))
    return {
        "include": list(query.include),
        "exclude": list(query.exclude),
        "require": list(query.require),
        "subquery": [[name, _describe_rewrites(q)] for name, q in sorted(query.subquery.items())],
        "position_cutoff": repr(query.position_cutoff),
        "extra_rewrites": [_plain_repr(rewrite) for rewrite in query.extra_rewrites],
    }


def _plain_repr(value) -> str:
    text = repr(value)
    if " at 0x" in text or " object at " in text:
        raise Unfingerprintable(f"no stable description of {type(value).__qualname__}")
    return text


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


# -- the entry format -------------------------------------------------------------------------
#
#   MAGIC | u32 header length | header (JSON key) | sha256(payload) | payload (pickle)
#
# The payload leaves out every shared variable and its storage ("persistent ids"): loading
# puts the caller's own in their place, so the function reads and updates the caller's
# parameters, and the pickle holds no weights.


def _pack(key: Mapping, fn: Callable, shared: Sequence) -> bytes:
    buffer = io.BytesIO()
    _SharedOutPickler(buffer, shared, type(fn)).dump(fn)
    payload = buffer.getvalue()
    header = _canonical_json(key)
    return b"".join(
        [MAGIC, struct.pack("<I", len(header)), header, hashlib.sha256(payload).digest(), payload]
    )


def _unpack(data: bytes, key: Mapping, shared: Sequence) -> Callable:
    if not data.startswith(MAGIC):
        raise ValueError("not an entry")
    start = len(MAGIC) + 4
    (length,) = struct.unpack("<I", data[len(MAGIC) : start])
    header, rest = data[start : start + length], data[start + length :]
    if json.loads(header) != json.loads(_canonical_json(key)):
        raise ValueError("key mismatch")
    digest, payload = rest[:32], rest[32:]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("payload digest mismatch")
    fn = _SharedInUnpickler(io.BytesIO(payload), shared).load()
    _check_rebound(fn, shared)
    return fn


class _SharedOutPickler(pickle.Pickler):
    def __init__(self, file, shared: Sequence, function_type: type) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._ids = {}
        for index, var in enumerate(shared):
            self._ids[id(var)] = ("shared", index)
            self._ids[id(var.container)] = ("container", index)
        # copyreg's table too: numpy registers its ufuncs' reducer there (an op may hold one)
        self.dispatch_table = {**copyreg.dispatch_table, function_type: _reduce_function}

    def persistent_id(self, obj):
        return self._ids.get(id(obj))


class _SharedInUnpickler(pickle.Unpickler):
    def __init__(self, file, shared: Sequence) -> None:
        super().__init__(file)
        self._shared = shared

    def persistent_load(self, pid):
        kind, index = pid
        var = self._shared[index]
        return var if kind == "shared" else var.container


def _reduce_function(fn):
    """A compiled function without its input values (the library's own reducer pickles them
    all, and checks on load that they are unchanged: our weights will have moved on).

    A shared input's storage is its variable's container (a persistent id); an explicit input
    starts empty, as it does when compiled."""
    storage = [given.value if given.implicit else None for given in fn.maker.inputs]
    return _rebuild_function, (fn.maker, storage, fn.trust_input, fn.name)


def _rebuild_function(maker, input_storage, trust_input, name):
    # No `trustme=True`: it does nothing on Aesara 2.9, and PyTensor's maker has no such argument.
    fn = maker.create(input_storage)
    fn.trust_input = trust_input
    fn.name = name
    return fn


def _check_rebound(fn, shared: Sequence) -> None:
    """Every shared input of the loaded function is one of the caller's containers."""
    cells = {id(var.container.storage) for var in shared}
    for given, storage in zip(fn.maker.inputs, fn.input_storage, strict=True):
        if given.implicit and id(storage.storage) not in cells:
            raise ValueError(f"shared input {given.variable} was not rebound")


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
