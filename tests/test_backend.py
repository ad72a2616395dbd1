"""The one import point works the same on Aesara and PyTensor: what `rnnlm.backend` bridges
(scan's return, an op's gradient, the C linker, scipy's BLAS, the rewrites we exclude), and
model files moving between the two libraries.

Each test runs on whichever library this interpreter has (`rnnlm.flags.library()`); CI runs
the suite on both. The cross-library test needs the other library's interpreter, named by
RNNLM_OTHER_PYTHON (.ci/run sets it), and skips without it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import backend, checkpoint, flags
from rnnlm.backend import Apply
from rnnlm.backend import tensor as tt
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.errors import RnnlmError
from rnnlm.model import Model, init_params
from rnnlm.vocab import build_vocabulary, count_tokens

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "the cat sat on the mat"


def test_the_library_is_the_one_chosen_and_its_version_is_the_installed_one():
    assert backend.NAME == flags.library()
    assert backend.VERSION == importlib.metadata.version(backend.NAME)
    assert flags.describe() == {"name": backend.NAME, "version": backend.VERSION}


def test_scan_returns_outputs_and_updates_like_a_numpy_loop():
    x = tt.vector("x", dtype="float64")
    outputs, updates = backend.scan(
        lambda x_t, h: 0.5 * h + x_t, sequences=[x], outputs_info=[tt.zeros((), "float64")]
    )
    assert len(updates) == 0
    values = np.array([1.0, 2.0, -3.0, 0.25])
    want, h = [], 0.0
    for v in values:
        h = 0.5 * h + v
        want.append(h)
    assert np.allclose(backend.function([x], outputs)(values), want)


class Cube(backend.Op):
    """x**3 with its gradient written as `pullback` (PyTensor's name; Aesara's L_op)."""

    __props__ = ()

    def make_node(self, x):
        x = tt.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        outputs[0][0] = inputs[0] ** 3

    def pullback(self, inputs, outputs, cotangents):
        return [3 * inputs[0] ** 2 * cotangents[0]]


class LegacyCube(backend.Op):
    """The same op with its gradient written as `grad`, the name before PyTensor 3."""

    __props__ = ()
    make_node, perform = Cube.make_node, Cube.perform

    def grad(self, inputs, output_grads):
        return [3 * inputs[0] ** 2 * output_grads[0]]


@pytest.mark.filterwarnings("ignore:LegacyCube should implement `pullback`:FutureWarning")
@pytest.mark.parametrize("op", [Cube(), LegacyCube()], ids=["pullback", "grad"])
def test_an_ops_gradient_reaches_the_library_by_either_name(op):
    x = tt.vector("x", dtype="float64")
    gradient = backend.function([x], backend.grad(op(x).sum(), x))
    values = np.array([-2.0, 0.5, 3.0])
    assert np.allclose(gradient(values), 3 * values**2)


class COnly(backend.COp):
    """x + 1 in C; its Python `perform` refuses, so a result proves the C code ran."""

    __props__ = ()

    def make_node(self, x):
        x = tt.as_tensor_variable(x)
        return Apply(self, [x], [x.type()])

    def perform(self, node, inputs, outputs):
        raise AssertionError("the Python implementation ran, not the C code")

    def c_code(self, node, name, inputs, outputs, sub):
        (x,), (z,), fail = inputs, outputs, sub["fail"]
        return f"""
        Py_XDECREF({z});
        {z} = (PyArrayObject*)PyArray_NewCopy({x}, NPY_CORDER);
        if (!{z}) {{ {fail}; }}
        {{
            double* data = (double*)PyArray_DATA({z});
            for (npy_intp i = 0; i < PyArray_SIZE({z}); ++i) data[i] += 1;
        }}
        """

    def c_code_cache_version(self):
        return (1,)


def test_the_default_mode_runs_c_ops_as_c():
    # PyTensor's own default linker is Numba, which has no C ops: rnnlm.flags pins "cvm".
    x = tt.vector("x", dtype="float64")
    assert np.allclose(backend.function([x], COnly()(x), mode="FAST_RUN")([1.0, 2.0]), [2, 3])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_run_matrix_products_link_scipys_blas_and_are_right(dtype):
    # With scipy >= 1.13 this is the renamed scipy_sgemm_ / scipy_dgemm_: a missing rename
    # would fail to load the compiled module (undefined symbol).
    a, b = tt.matrix("a", dtype=dtype), tt.matrix("b", dtype=dtype)
    product = backend.function([a, b], tt.dot(a, b), mode="FAST_RUN")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 20)).astype(dtype), rng.normal(size=(20, 10)).astype(dtype)
    assert np.allclose(product(x, y), x @ y, rtol=1e-4 if dtype == "float32" else 1e-12)
    assert ("-l:" in backend.config.blas__ldflags) == bool(flags.find_openblas())


def registered(db, name: str, seen=None) -> bool:
    """Whether `name` names or tags a rewrite anywhere in the rewrite database `db`."""
    seen = set() if seen is None else seen
    if id(db) in seen or not hasattr(db, "__db__"):
        return False
    seen.add(id(db))
    if name in db.__db__:
        return True
    return any(registered(entry, name, seen) for group in db.__db__.values() for entry in group)


@pytest.mark.parametrize("name", ["scan_pushout_add", "local_dot22_to_dot22scalar"])
def test_the_rewrites_rnnlm_excludes_exist_under_these_names(name):
    # Excluding an unknown name is silently a no-op; rnnlm.model excludes these two.
    assert registered(backend.get_mode("FAST_RUN").optdb, name)


def test_a_truncated_gradient_compiles_in_fast_run_and_equals_the_python_linkers():
    # Aesara 2.9.4 and PyTensor 3.3 both move the truncated gradient's sums out of the scan
    # with the full length (scan_pushout_add): a shape error unless rnnlm excludes it.
    config = ModelConfig(vocab_size=10, hidden_size=5, bptt_truncate=2, dtype="float64")
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, 10, (7, 3)).astype("int32") for _ in range(2))
    mask = np.ones((7, 3))
    fast = Model(config, seed=1, compile_mode="FAST_RUN").gradients(x, y, mask)
    python = Model(config, seed=1, compile_mode="FAST_COMPILE").gradients(x, y, mask)
    for name, value in python.items():
        assert np.allclose(fast[name], value, rtol=1e-10), name


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny untrained checkpoint written by this library."""
    vocab = build_vocabulary(count_tokens([SENTENCE.split()]), 20)
    config = Config(data=DataConfig(), model=ModelConfig(vocab_size=len(vocab), hidden_size=3))
    params = init_params(config.model, np.random.default_rng(0))
    path = tmp_path_factory.mktemp("backend") / "model.npz"
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, params))
    return path


def with_meta(path: Path, out: Path, **changes) -> Path:
    """A copy of checkpoint `path` at `out`, its metadata entries replaced (None: removed)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    meta = json.loads(str(arrays["meta"]))
    meta.update(changes)
    arrays["meta"] = np.array(json.dumps({k: v for k, v in meta.items() if v is not None}))
    np.savez(out, **arrays)
    return out


def log_probs(path: Path) -> np.ndarray:
    ckpt = checkpoint.load(path)
    model = Model(ckpt.config.model, params=ckpt.params)
    ids = ckpt.vocab.encode(SENTENCE.split())
    x, y = ids[:-1, None], ids[1:, None]
    return model.log_probs(x, y, np.ones(x.shape, dtype=ckpt.config.model.dtype))


def test_every_checkpoint_records_the_library_that_saved_it(saved):
    assert checkpoint.load(saved).backend == {"name": backend.NAME, "version": backend.VERSION}


def test_a_checkpoint_from_the_other_library_or_from_before_loads_and_scores_the_same(
    saved, tmp_path
):
    (other,) = set(flags.LIBRARIES) - {backend.NAME}
    theirs = with_meta(saved, tmp_path / "other.npz", backend={"name": other, "version": "1.0"})
    older = with_meta(saved, tmp_path / "older.npz", backend=None)
    assert checkpoint.load(theirs).backend["name"] == other
    assert checkpoint.load(older).backend == {}
    assert np.array_equal(log_probs(theirs), log_probs(saved))
    assert np.array_equal(log_probs(older), log_probs(saved))


def test_a_malformed_backend_entry_is_one_clear_error(saved, tmp_path):
    bad = with_meta(saved, tmp_path / "bad.npz", backend=["aesara"])
    with pytest.raises(RnnlmError, match="the backend entry is not a table of strings"):
        checkpoint.load(bad)


def test_info_says_which_library_saved_the_model_and_which_runs(saved):
    result = CliRunner().invoke(main, ["info", "--model", str(saved)])
    assert result.exit_code == 0, result.output
    running = f"{backend.NAME} {backend.VERSION}"
    assert f"saved with: {running}; running on: {running}" in result.output


def cli(python: str, *args: str | Path) -> str:
    """stdout of `rnnlm ARGS` run by `python` on this checkout, the library left to choose."""
    environment = {k: v for k, v in os.environ.items() if k != "RNNLM_BACKEND"}
    environment["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [python, "-c", "from rnnlm.cli import main; main()", *map(str, args)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


OTHER_PYTHON = os.environ.get("RNNLM_OTHER_PYTHON", "")


@pytest.mark.skipif(
    not OTHER_PYTHON,
    reason="RNNLM_OTHER_PYTHON names no interpreter of the other tensor library (.ci/run does)",
)
def test_a_model_trained_on_the_other_library_scores_the_same_here(tmp_path):
    model = tmp_path / "other.npz"
    train = ["train", "--hidden-size", "8", "--vocab-size", "60", "--epochs", "1", "--no-cache"]
    cli(OTHER_PYTHON, *train, "--batch-size", "8", "--quiet", "--out", model)
    saved_with = checkpoint.load(model).backend
    assert saved_with["name"] != backend.NAME, "RNNLM_OTHER_PYTHON runs this same library"
    score = ["score", "--model", model, "--json", "--no-cache", SENTENCE]
    (theirs,) = json.loads(cli(OTHER_PYTHON, *score))["sentences"]
    (ours,) = json.loads(cli(sys.executable, *score))["sentences"]
    assert ours["n_tokens"] == theirs["n_tokens"] > 1
    assert ours["log_prob"] == pytest.approx(theirs["log_prob"], rel=1e-5)
