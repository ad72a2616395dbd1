"""One entry of the compiled-function cache: a compiled function pickled without its shared
variables, and loaded back onto the caller's.

    MAGIC | u32 header length | header (JSON key) | sha256(payload) | payload (pickle)

The payload leaves out every shared variable and its storage ("persistent ids"): loading
puts the caller's own in their place, so the function reads and updates the caller's
parameters, and the pickle holds no weights.
"""

from __future__ import annotations

import copyreg
import hashlib
import io
import json
import pickle
import struct
from collections.abc import Callable, Mapping, Sequence

from rnnlm.compiled_key import canonical_json

MAGIC = b"rnnlm-fn"


def pack(key: Mapping, fn: Callable, shared: Sequence) -> bytes:
    buffer = io.BytesIO()
    _SharedOutPickler(buffer, shared, type(fn)).dump(fn)
    payload = buffer.getvalue()
    header = canonical_json(key)
    return b"".join(
        [MAGIC, struct.pack("<I", len(header)), header, hashlib.sha256(payload).digest(), payload]
    )


def unpack(data: bytes, key: Mapping, shared: Sequence) -> Callable:
    if not data.startswith(MAGIC):
        raise ValueError("not an entry")
    start = len(MAGIC) + 4
    (length,) = struct.unpack("<I", data[len(MAGIC) : start])
    header, rest = data[start : start + length], data[start + length :]
    if json.loads(header) != json.loads(canonical_json(key)):
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
