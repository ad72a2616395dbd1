"""Cold compiles on every core: a function's missing C modules built by worker processes.

The library links a compiled function node by node, and builds each missing C module under
one lock on its compile directory: one core compiles, the others wait. Between rewriting
and linking, this finds the nodes whose modules are missing and has worker processes build
them at once, each in a private compile directory (its own lock); every finished module
folder is moved whole into the shared directory (a rename, under the shared lock), where the
linker then finds it, as the library's cache expects of a folder moved in.

    main:      rewrite -> missing modules? --nodes--> pool --module folders--> rename in -> link
    worker k:  node -> op.make_thunk (the library's own compile, private dir) -> module folder

`ParallelMode` is a compile mode whose functions do this; scans compiled with it carry it
into their inner functions (Aesara), or have theirs built with the outer function's
(PyTensor, which links a scan's step in a mode of its own). Few missing modules (a warm
cache) cost nothing extra: no pool is started for fewer than `MIN_MODULES`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rnnlm import backend, compile_worker

log = logging.getLogger(__name__)

MIN_MODULES = 3  # fewer missing modules than this are not worth a pool
WORKERS_VARIABLE = "RNNLM_COMPILE_WORKERS"  # 0 or 1: compile in this process only


def workers() -> int:
    """Worker processes to use: RNNLM_COMPILE_WORKERS, else one per usable core."""
    given = os.environ.get(WORKERS_VARIABLE, "").strip()
    if given.isdigit():
        return int(given)
    return len(os.sched_getaffinity(0))


class ParallelMaker(backend.FunctionMaker):
    """A function maker that has the missing C modules built in parallel before linking."""

    def create(self, *args, **kwargs):
        # The arguments pass through: Aesara's are (input_storage, trustme, storage_map),
        # PyTensor's (input_storage, storage_map).
        # Only linkers that build C thunks (FAST_RUN's; not FAST_COMPILE's Python one).
        if getattr(self.linker, "c_thunks", False) and backend.config.cxx:
            with contextlib.suppress(Exception):  # only a head start: linking does the rest
                prebuild(self.fgraph)
        return super().create(*args, **kwargs)


class ParallelMode(backend.Mode):
    """A compile mode whose functions (and scans' inner functions) build C modules on every
    core; `clone`, `including` and `excluding` keep the class."""

    function_maker = ParallelMaker


def parallel(mode: Any) -> Any:
    """`mode` (a Mode or a mode name) as a ParallelMode with the same linker and rewrites."""
    mode = backend.get_mode(mode)
    if isinstance(mode, ParallelMode) or type(mode) is not backend.Mode:
        return mode  # already parallel, or a special mode (debugging) left as it is
    return ParallelMode(linker=mode.provided_linker, optimizer=mode.provided_optimizer)


def prebuild(fgraph: Any) -> int:
    """Build the missing C modules of `fgraph`'s nodes on the pool; how many were built."""
    count = workers()
    if count < 2:
        return 0
    cache = backend.get_module_cache(backend.config.compiledir)
    missing: dict[Any, Any] = {}  # module hash -> node
    for node in _nodes(fgraph):
        found = _module_key(node)
        if found is None or found[0] in cache.entry_from_key:
            continue
        key, source = found
        # The linker also takes a module with the same source under another key.
        module_hash = backend.get_module_hash(source, key)
        if module_hash not in cache.module_hash_to_key_data:
            missing.setdefault(module_hash, node)
    if len(missing) < MIN_MODULES:
        return 0
    started = time.perf_counter()
    nodes = [_portable(node) for node in missing.values()]
    pool = _pool(count)
    folders = pool.map(nodes)
    target = Path(backend.config.compiledir)
    with backend.lock_ctx():
        for folder in folders:
            _move(Path(folder), target)
    cache.refresh(cleanup=False)
    log.debug(
        "built %d C modules on %d workers in %.1f s",
        len(folders),
        count,
        time.perf_counter() - started,
    )
    return len(folders)


def _nodes(fgraph: Any) -> list:
    """The nodes `fgraph` links: its own and, on PyTensor, its scans' inner graphs' too.

    Aesara compiles a scan's inner function in the scan's mode (ours, so that one builds its
    own modules in parallel) and rewrites it only then. PyTensor rewrites inner graphs with
    the outer one, freezes them, and links them later in a plain mode of its own: they are
    final here, and only here can their modules be built in parallel.
    """
    nodes = []
    for node in fgraph.toposort():
        nodes.append(node)
        inner = getattr(node.op, "fgraph", None)
        if backend.NAME == "pytensor" and hasattr(inner, "unfreeze"):
            nodes.extend(_nodes(inner.unfreeze()))
    return nodes


def _module_key(node: Any) -> tuple[Any, str] | None:
    """The module key the linker will look up for `node` (as the library's COp computes it)
    and the module's source, or None for a node without a C module of its own."""
    op = node.op
    if not isinstance(op, backend.LibraryCOp):  # the library's C ops and ours
        return None
    try:
        op.prepare_node(node, None, None, "c")
        graph = backend.FunctionGraph(node.inputs, node.outputs)
        linker = backend.CLinker().accept(graph, no_recycling=[])
        return linker.cmodule_key(), linker.get_src_code()
    except Exception:  # no C code for these types, or anything else: the linker decides
        return None


def _portable(node: Any) -> Any:
    """`node` cut from its graph: fresh inputs of the same types, constants kept (they are
    part of the module key)."""
    inputs = [i if isinstance(i, backend.Constant) else i.type() for i in node.inputs]
    return node.clone_with_new_inputs(inputs, strict=True)


def _move(folder: Path, target: Path) -> None:
    """A finished module folder into the shared compile directory, whole or not at all."""
    destination = target / folder.name
    if destination.exists():
        shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        os.rename(folder, destination)
    except OSError:  # another file system: copy beside, then rename
        staging = target / f"{folder.name}.part"
        shutil.copytree(folder, staging)
        os.rename(staging, destination)
        shutil.rmtree(folder, ignore_errors=True)


class Workers:
    """Worker processes (`python -m rnnlm.compile_worker`), each fed one node at a time by
    a thread of ours; a worker that dies just stops taking work."""

    def __init__(self, count: int) -> None:
        slots = Path(backend.config.base_compiledir) / "rnnlm-workers"
        package_root = str(Path(__file__).resolve().parents[1])  # this rnnlm, not another
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (package_root, env.get("PYTHONPATH", "")) if part
        )
        command = [sys.executable, "-m", "rnnlm.compile_worker", str(slots), str(4 * count)]
        self.processes = [
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            for _ in range(count)
        ]

    def map(self, nodes: list) -> list[str]:
        """Every node built by some worker; the module folders they made."""
        pending = queue.SimpleQueue()
        for node in nodes:
            pending.put(pickle.dumps(node))
        folders: list[str] = []
        lock = threading.Lock()

        def feed(process: subprocess.Popen) -> None:
            while True:
                try:
                    request = pending.get_nowait()
                except queue.Empty:
                    return
                try:
                    compile_worker.write_message(process.stdin, request)
                    reply = compile_worker.read_message(process.stdout)
                except OSError:
                    reply = None
                if reply is None:  # the worker is gone; the linker builds what is left
                    return
                with lock:
                    folders.extend(pickle.loads(reply))

        threads = [threading.Thread(target=feed, args=(p,)) for p in self.processes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return folders

    def close(self) -> None:
        for process in self.processes:
            with contextlib.suppress(OSError):
                process.stdin.close()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


_WORKERS: Workers | None = None


def _pool(count: int) -> Workers:
    """One set of workers per process, started on first need (each imports the library
    once) and stopped at exit, or by `close_workers`."""
    global _WORKERS
    if _WORKERS is None:
        _WORKERS = Workers(count)
        atexit.register(close_workers)
    return _WORKERS


def close_workers() -> None:
    """Stop the compile workers, if any (a long-running process that has compiled all it
    needs, such as a service, need not keep them); they start again when next needed."""
    global _WORKERS
    if _WORKERS is not None:
        _WORKERS.close()
        _WORKERS = None
