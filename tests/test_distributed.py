"""Data-parallel training: two MPI ranks on a global batch train like one process on it.

The MPI tests launch `mpirun -n 2` from the virtual environment of this Python and skip, with
the reason, where mpi4py or mpirun is missing (pip install -e '.[distributed]').
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnlm import checkpoint, distributed
from rnnlm.config import Config, load_config
from rnnlm.data import load_training_data
from rnnlm.distributed import LocalComm, shard
from rnnlm.errors import RnnlmError
from rnnlm.runfiles import metrics_path
from rnnlm.train import Trainer

HERE = Path(__file__).resolve().parent
RTOL = 1e-10  # float64: only the order of the sums differs
TIMEOUT_S = 300  # per mpirun launch; a hang fails the test instead of the whole run
FAULTS = ("no communication", "per-shard averaging", "wrong token count")


def find_mpirun() -> str | None:
    beside = Path(sys.executable).parent / "mpirun"
    return str(beside) if beside.exists() else shutil.which("mpirun")


MPIRUN = find_mpirun()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIRUN is None,
    reason="needs mpi4py and mpirun: pip install -e '.[distributed]'",
)


def mpirun(*command: str, cwd: Path) -> subprocess.CompletedProcess:
    """`command` on two ranks, allowed as root and on fewer cores than ranks.

    Past TIMEOUT_S mpirun gets SIGTERM, on which it ends its ranks too (`subprocess.run`'s
    SIGKILL would leave them running), then SIGKILL if it lingers.
    """
    args = [MPIRUN, "--oversubscribe", "-n", "2", *command]
    env = dict(
        os.environ,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
    )
    with subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


# -- the single-process pieces -----------------------------------------------------------


def test_a_world_of_one_sums_and_broadcasts_to_itself():
    comm = distributed.connect(False)
    assert isinstance(comm, LocalComm) and (comm.rank, comm.size) == (0, 1)
    buffer = np.array([1.5, -2.0])
    comm.allreduce_sum(buffer)
    comm.broadcast(buffer)
    assert buffer.tolist() == [1.5, -2.0]
    with pytest.raises(ValueError, match="no rank 1"):
        comm.broadcast(buffer, root=1)
    with pytest.raises(SystemExit):
        comm.abort(1)


@pytest.mark.parametrize("columns", [0, 1, 2, 5, 20])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_cover_every_column_once_and_differ_by_at_most_one(columns, size):
    parts = [shard(columns, rank, size) for rank in range(size)]
    assert [i for part in parts for i in range(columns)[part]] == list(range(columns))
    lengths = [part.stop - part.start for part in parts]
    assert max(lengths) - min(lengths) <= 1


def test_one_process_keeps_the_fused_step():
    class Model:
        def compile_train_step(self, updates):
            return "fused"

    assert distributed.train_step(Model(), None, LocalComm()) == "fused"


def test_under_an_mpi_launcher_blas_gets_one_thread_unless_the_user_chose(monkeypatch):
    for name in (*distributed.LAUNCHER_VARS, *distributed.BLAS_THREAD_VARS):
        monkeypatch.delenv(name, raising=False)
    distributed.one_blas_thread_per_rank()
    assert not any(name in os.environ for name in distributed.BLAS_THREAD_VARS)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    distributed.one_blas_thread_per_rank()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "4"
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "1"


def test_without_mpi4py_distributed_training_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(RnnlmError, match=r"pip install -e '\.\[distributed\]'"):
        distributed.connect(True)


class Aborted(Exception):
    pass


class TwoRanks(LocalComm):
    rank, size = 1, 2

    def abort(self, code: int) -> None:
        raise Aborted(code)


@pytest.mark.parametrize(
    "error, code", [(RnnlmError("disk full"), 1), (KeyboardInterrupt(), 130)], ids=repr
)
def test_an_error_on_one_rank_aborts_them_all(capsys, error, code):
    with pytest.raises(Aborted) as aborted, distributed.fail_together(TwoRanks()):
        raise error
    assert aborted.value.args == (code,)
    assert "rank 1 of 2" in capsys.readouterr().err
    with pytest.raises(RnnlmError), distributed.fail_together(LocalComm()):
        raise RnnlmError("one process: the CLI reports it as usual")


def test_a_config_can_ask_for_distributed_training(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[train]\ndistributed = true\n")
    assert Config.from_dict(load_config(path)).train.distributed


# -- two ranks under mpirun ----------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """What each rank of tests/mpi_worker.py saw: ([report per rank], [arrays per rank])."""
    out = tmp_path_factory.mktemp("mpi")
    result = mpirun(sys.executable, str(HERE / "mpi_worker.py"), str(out), cwd=out)
    assert result.returncode == 0, result.stderr[-4000:]
    reports = [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]
    # A launcher of another MPI than mpi4py's makes two worlds of one, both rank 0.
    assert [r["rank"] for r in reports] == [0, 1], "not one world of two ranks"
    return reports, [dict(np.load(out / f"rank{r['rank']}.npz")) for r in reports]


def mismatches(reports, arrays, run: str) -> list[str]:
    """How `run` differs from one process on the whole batches (empty: it does not)."""
    reference, reference_arrays = reports[0]["reference"], arrays[0]
    found = []
    for report, values in zip(reports, arrays, strict=True):
        rank = report["rank"]
        if not np.allclose(report["runs"][run]["nll"], reference["nll"], rtol=RTOL, atol=0):
            found.append(f"rank {rank}: loss")
        if report["runs"][run]["tokens"] != reference["tokens"]:
            found.append(f"rank {rank}: tokens")
        for key in (k for k in reference_arrays if k.startswith("reference/")):
            name = key.split("/", 1)[1]
            if not np.allclose(values[f"{run}/{name}"], reference_arrays[key], rtol=RTOL, atol=0):
                found.append(f"rank {rank}: {name}")
    return found


@needs_mpi
def test_two_ranks_form_one_world(two_ranks):
    reports, _ = two_ranks
    assert [(r["size"], r["probe"]) for r in reports] == [(2, 3.0), (2, 3.0)]


@needs_mpi
def test_ranks_start_alike_see_the_same_batches_and_hold_ragged_shares(two_ranks):
    first, second = two_ranks[0]
    assert first["initial"] == second["initial"]
    assert first["batches"] == second["batches"]
    shares = np.array([first["local_tokens"], second["local_tokens"]])
    assert (shares.sum(axis=0) == first["global_tokens"]).all()
    assert (shares[0] != shares[1]).sum() >= 3  # the shards hold different token counts
    assert shares[0][-1] == 0  # a one-column batch leaves rank 0 without any


@needs_mpi
def test_two_ranks_train_like_one_process_on_the_whole_batch(two_ranks):
    reports, arrays = two_ranks
    assert mismatches(reports, arrays, "none") == []
    names = [key.split("/", 1)[1] for key in arrays[0] if key.startswith("initial/")]
    for name in names:
        # bit for bit the same on both ranks, and trained
        assert np.array_equal(arrays[0][f"none/{name}"], arrays[1][f"none/{name}"]), name
        assert not np.allclose(arrays[0][f"none/{name}"], arrays[0][f"initial/{name}"]), name


@needs_mpi
@pytest.mark.parametrize("fault", FAULTS)
def test_a_planted_bug_breaks_the_equivalence(two_ranks, fault):
    reports, arrays = two_ranks
    assert mismatches(reports, arrays, fault) != []


SENTENCES = [
    "the cat sat on the mat .",
    "the dog sat on the rug .",
    "a cat saw a dog .",
    "the dog saw the cat on the mat .",
    "a bird sang .",
    "the bird sat on the dog .",
    "a cat sang to the bird .",
    "the mat was red .",
    "the rug was blue .",
    "a dog ran .",
]


@needs_mpi
def test_mpirun_rnnlm_train_distributed_writes_one_checkpoint_as_one_process_would(tmp_path):
    (tmp_path / "corpus.txt").write_text("\n".join(SENTENCES) + "\n")
    # Stream mode with 3 columns: shards of 1 and 2, and states carried from batch to batch.
    options = {
        "corpus": tmp_path / "corpus.txt",
        "vocab-size": 20,
        "hidden-size": 4,
        "embedding-size": 3,
        "cell": "rnn-tanh",
        "dtype": "float64",
        "mode": "stream",
        "batch-size": 3,
        "bptt": 4,
        "epochs": 1,
        "optimizer": "adam",
        "lr": 0.05,
        "eval-every": 3,
        "eval-sentences": 4,
    }
    flags = [f"--{key}={value}" for key, value in options.items()]
    cli = [sys.executable, "-c", "from rnnlm.cli import main; main()", "train"]
    result = mpirun(*cli, "--distributed", *flags, "--out=model.npz", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]

    summary = json.loads(result.stdout)  # one rank printed it
    assert result.stderr.count("Model: rnn-tanh") == 1  # one rank logged
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "corpus.txt",
        "model.best.npz",
        "model.metrics.jsonl",
        "model.npz",
    ]
    assert len(metrics_path(tmp_path / "model.npz").read_text().splitlines()) == len(
        summary["history"]
    )
    saved = checkpoint.load(tmp_path / "model.npz")
    assert saved.config.train.distributed and saved.progress["step"] == summary["steps"] > 1

    # One process on the same config takes the same steps to the same weights.
    config = dataclasses.replace(
        saved.config, train=dataclasses.replace(saved.config.train, distributed=False)
    )
    alone = Trainer(config, load_training_data(config), tmp_path / "alone.npz").run()
    assert alone["steps"] == summary["steps"]
    assert [r["loss"] for r in alone["history"]] == pytest.approx(
        [r["loss"] for r in summary["history"]], rel=RTOL
    )
    for name, value in checkpoint.load(tmp_path / "alone.npz").params.items():
        np.testing.assert_allclose(saved.params[name], value, rtol=RTOL, err_msg=name)
