"""The worker side of `rnnlm.parallel_compile`: `python -m rnnlm.compile_worker SLOTS N`
builds nodes' C modules in a private compile directory, one request at a time.

Protocol on stdin/stdout, between processes of one user: a request is a pickled node, a
reply the pickled list of module folders made for it; each framed by a 4-byte length.
Nothing heavy is imported before the slot is claimed: the tensor library must load only
after its compile directory points at this worker's own.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import struct
import sys
import warnings
from pathlib import Path
from typing import Any, BinaryIO


def claim_slot(root: Path, count: int) -> Path:
    """The first free slot folder under `root`, locked for this process's lifetime.

    Slots outlive workers, so the support modules every compile directory builds once are
    built once per slot, not once per run.
    """
    root.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        handle = open(root / f"slot-{number}.lock", "w")  # noqa: SIM115 (held until exit)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        claim_slot.held = handle  # type: ignore[attr-defined]
        return root / f"slot-{number}"
    raise RuntimeError(f"no free compile slot under {root}")


def build(node: Any) -> list[str]:
    """Compile `node`'s C module as the linker would; the module folders made for it."""
    from rnnlm import backend

    folder = Path(backend.config.compiledir)
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    variables = [*node.inputs, *node.outputs]
    storage_map = {variable: [None] for variable in variables}
    compute_map = {variable: [False] for variable in variables}
    try:
        node.op.make_thunk(node, storage_map, compute_map, [])
    except Exception:  # the main process compiles it again, and reports the error
        return []
    made = set(os.listdir(folder)) - before
    return [str(folder / name) for name in sorted(made) if name.startswith("tmp")]


def read_message(stream: BinaryIO) -> bytes | None:
    header = stream.read(4)
    if len(header) < 4:
        return None
    (length,) = struct.unpack("<I", header)
    return stream.read(length)


def write_message(stream: BinaryIO, data: bytes) -> None:
    stream.write(struct.pack("<I", len(data)) + data)
    stream.flush()


def main() -> None:
    from rnnlm import flags

    # The main process moves the module folders away; at exit the library notices and warns.
    warnings.filterwarnings("ignore", message="A module that was loaded by this ModuleCache")
    # PyTensor also warns, on its next look at the slot, that it forgets the moved module's key.
    warnings.filterwarnings("ignore", message="Removing key file")
    slot = claim_slot(Path(sys.argv[1]), int(sys.argv[2]))
    variable = flags.flags_variable(flags.library())
    given = os.environ.get(variable, "")
    # compiledir too: a compiledir the user set would otherwise win over base_compiledir, and
    # every worker would build in the shared folder, one at a time under its lock.
    private = f"base_compiledir={slot},compiledir={slot / 'modules'}"
    os.environ[variable] = ",".join(part for part in (given, private) if part)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything the library prints must not corrupt the replies
    while (request := read_message(stdin)) is not None:
        write_message(stdout, pickle.dumps(build(pickle.loads(request))))


if __name__ == "__main__":
    main()
