"""The keys of the compiled-function cache: what a compiled function is filed under.

The key of a function is a digest of the graph itself (every op, its properties, types,
constants and scan's inner graphs), the compile mode and call options, and the versions of
everything that turns a graph into code (rnnlm, the tensor library, numpy, Python, the
compiler flags, our rewrite, our C ops' `c_code_cache_version` and source). So any change
that shapes the graph - config, optimizer settings, code - is a different entry, and nothing
has to list what matters. A recipe's key (function name, model config, mode) covers our
sources instead.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnlm import __version__, backend
from rnnlm.ops import product

FORMAT = 1
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


class Unfingerprintable(ValueError):
    """Part of a graph has no stable description; its function is compiled, never cached."""


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
        # our own rewrite turns the same graph into other code where it applies
        "rewrites": {product.REWRITE: [list(product.VERSION), product.available()]},
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


def recipe_key(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The key of a recipe (what builds a function, see `FunctionCache.named`): the recipe
    described as a graph's values are, and a digest of our sources."""
    return cache_key(recipe=_Describer().value(dict(recipe)), sources=source_digest())


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
    digest = hashlib.sha256(canonical_json(description)).hexdigest()
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


def canonical_json(value: Any) -> bytes:
    """The one byte form of a key: hashed for file names, stored in entries, compared on load."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
