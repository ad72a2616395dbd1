"""Run by tests/test_distributed.py as `mpirun -n 2 python tests/mpi_worker.py OUT_DIR`.

Every rank trains the same tiny float64 model with `SyncStep` on the same global batches,
first correctly, then with three planted bugs. It asserts nothing and runs every collective
first: a failing rank must not leave the other waiting. It writes what it saw to
OUT_DIR/rank{R}.json and .npz; rank 0 adds a one-process run of the fused step on the whole
batches (the reference). The test compares.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

# Inherited from the test's process (tests/conftest.py); run by hand, the same fast mode.
os.environ.setdefault("RNNLM_FLAGS", "mode=FAST_COMPILE")

from rnnlm.distributed import one_blas_thread_per_rank  # noqa: E402

one_blas_thread_per_rank()  # before numpy loads a BLAS

import numpy as np  # noqa: E402

from rnnlm import backend  # noqa: E402
from rnnlm.batches import pad_batch  # noqa: E402
from rnnlm.config import ModelConfig, TrainConfig  # noqa: E402
from rnnlm.distributed import MPIComm, SyncStep, shard  # noqa: E402
from rnnlm.model import Model  # noqa: E402
from rnnlm.optim import updates_for  # noqa: E402

MODEL = ModelConfig(
    vocab_size=20,
    hidden_size=5,
    embedding_size=4,
    cell="gru",
    dropout=0.3,
    bptt_truncate=-1,
    dtype="float64",
)
# Clipping and weight decay act on the global gradient: a per-rank version would show.
TRAIN = TrainConfig(optimizer="adam", learning_rate=0.05, clip_norm=0.5, weight_decay=1e-3)
SEED = 3


def global_batches() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Four batches of 5 sentences of uneven lengths (columns 0-1 and 2-4 hold different
    numbers of real tokens), then one of a single sentence: a rank with no columns."""
    rng = np.random.default_rng(11)
    batches = []
    for count in (5, 5, 5, 5, 1):
        sentences = [
            rng.integers(0, MODEL.vocab_size, size=rng.integers(3, 10)) for _ in range(count)
        ]
        batches.append(pad_batch(sentences, MODEL.dtype))
    return batches


def digest(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def with_updates(model: Model):
    """(updates function for the compilers, the optimizer state it creates), with Adam."""
    lr = backend.shared(np.asarray(TRAIN.learning_rate, dtype=MODEL.dtype), name="lr")
    state: dict = {}

    def updates(params, grads):
        result, created = updates_for(TRAIN, params, grads, lr)
        state.update(created)
        return result

    return updates, state


def train(step, model: Model, batches) -> tuple[list[float], list[float]]:
    """The steps as `Trainer` takes them: reseeded per step, states carried in a batch size."""
    nlls, tokens = [], []
    states = None
    for k, (x, y, mask) in enumerate(batches):
        if states is None or states[0].shape[0] != x.shape[1]:
            states = model.initial_states(x.shape[1])
        model.reseed([SEED, k])
        out = step(x, y, mask, *states)
        nlls.append(float(out[0]))
        tokens.append(float(out[1]))
        states = [np.asarray(s) for s in out[2:]]
    return nlls, tokens


class Faulty:
    """The real communicator with one planted bug, to show the test would catch it."""

    def __init__(self, comm: MPIComm, fault: str, layout: SyncStep) -> None:
        self.comm, self.fault, self.layout = comm, fault, layout
        self.rank, self.size = comm.rank, comm.size
        self.columns = (0, 1)  # (this rank's columns, the global batch's), set per step

    def allreduce_sum(self, buffer: np.ndarray) -> None:
        local_tokens = buffer[SyncStep.TOKENS]
        if self.fault == "no communication":
            return
        if self.fault == "per-shard averaging":
            # Each rank's mean gradient, averaged over ranks: what SyncStep divides by the
            # global column count must then be that mean times the global column count.
            own, total = self.columns
            if own:
                buffer[self.layout.grads] *= total / (own * self.size)
        self.comm.allreduce_sum(buffer)
        if self.fault == "wrong token count":
            buffer[SyncStep.TOKENS] = local_tokens

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        self.comm.broadcast(buffer, root)

    def abort(self, code: int) -> None:
        self.comm.abort(code)


def telling(step: SyncStep, faulty: Faulty):
    """`step`, first telling `faulty` how many columns this rank and the batch have."""

    def stepping(x, y, mask, *states):
        own = shard(x.shape[1], faulty.rank, faulty.size)
        faulty.columns = (own.stop - own.start, x.shape[1])
        return step(x, y, mask, *states)

    return stepping


def main(out: Path) -> None:
    comm = MPIComm()
    probe = np.array([comm.rank + 1.0])
    comm.allreduce_sum(probe)  # 3 on both ranks of a real 2-rank world
    batches = global_batches()
    model = Model(MODEL, seed=SEED)
    initial = model.params.values_dict()
    updates, state = with_updates(model)
    step = SyncStep(model, updates, comm)
    report = {
        "rank": comm.rank,
        "size": comm.size,
        "probe": float(probe[0]),
        "initial": digest(initial.values()),
        "batches": digest(a for batch in batches for a in batch),
        "local_tokens": [
            float(mask[:, shard(mask.shape[1], comm.rank, comm.size)].sum())
            for _, _, mask in batches
        ],
        "global_tokens": [float(mask.sum()) for _, _, mask in batches],
        "runs": {},
    }
    arrays = {f"initial/{name}": value for name, value in initial.items()}
    for fault in ("none", "no communication", "per-shard averaging", "wrong token count"):
        model.params.assign(initial)
        for var in state.values():
            var.set_value(np.zeros_like(var.get_value()))
        faulty = Faulty(comm, fault, step)
        step.comm = comm if fault == "none" else faulty
        nlls, tokens = train(telling(step, faulty), model, batches)
        report["runs"][fault] = {"nll": nlls, "tokens": tokens}
        arrays.update({f"{fault}/{n}": v for n, v in model.params.values_dict().items()})
    # Every collective is done: from here on a rank may fail alone.
    if comm.rank == 0:
        reference = Model(MODEL, seed=SEED)
        updates, _ = with_updates(reference)
        nlls, tokens = train(reference.compile_train_step(updates), reference, batches)
        report["reference"] = {"nll": nlls, "tokens": tokens}
        arrays.update({f"reference/{n}": v for n, v in reference.params.values_dict().items()})
    np.savez(out / f"rank{comm.rank}.npz", **arrays)
    (out / f"rank{comm.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
