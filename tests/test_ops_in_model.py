"""The fused softmax C ops inside a real model graph, and their OpenMP threads.

The suite compiles with FAST_COMPILE, which runs the ops' numpy `perform`; here one small
model is compiled with FAST_RUN, its C code checked to be what runs, and its log-probs and
gradients held against the same model on FAST_COMPILE. Then the thread count: OpenMP's is
read when the op runs (`omp_get_max_threads`), so it is set here through libgomp itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.backend import tensor as tt
from rnnlm.batches import pad_batch
from rnnlm.config import ModelConfig
from rnnlm.model import Model
from rnnlm.ops.softmax import SoftmaxNLL, SoftmaxNLLGrad, softmax_nll_grad

VOCAB = 13
CONFIG = ModelConfig(
    vocab_size=VOCAB, hidden_size=5, cell="gru", embedding_size=4, bptt_truncate=-1, dtype="float64"
)
FUSED_OPS = (SoftmaxNLL, SoftmaxNLLGrad)


def compiled(model: Model, what: str):
    """A model's compiled function (private: the graph is what these tests inspect)."""
    return {"log_probs": model._log_probs_fn, "gradients": model._gradients_fn}[what]


@contextlib.contextmanager
def perform_forbidden():
    """While compiling: a thunk built on an op's `perform` binds this one, which raises."""

    def forbidden(self, node, inputs, outputs):
        raise AssertionError(f"{type(self).__name__}.perform ran: the C code is not in use")

    with pytest.MonkeyPatch.context() as patch:
        for op in FUSED_OPS:
            patch.setattr(op, "perform", forbidden)
        yield


@pytest.fixture(scope="session")
def batch():
    """Four left-padded sentences, T = 8: 32 rows through the output layer."""
    rng = np.random.default_rng(1)
    sentences = [rng.integers(0, VOCAB, n).astype(np.int32) for n in (9, 7, 4, 8)]
    return pad_batch(sentences, "float64")


@pytest.fixture(scope="session")
def values():
    model = Model(CONFIG, seed=0)
    rng = np.random.default_rng(2)
    return {name: rng.normal(0.0, 0.6, v.shape) for name, v in model.params.values_dict().items()}


@pytest.fixture(scope="session")
def fast_run(values):
    """The model on FAST_RUN, its functions compiled (once) while the ops' `perform` raises:
    should either op fall back to Python, every call fails saying so."""
    model = Model(CONFIG, params=values, compile_mode="FAST_RUN")
    with perform_forbidden():
        for what in ("log_probs", "gradients"):
            compiled(model, what)
    return model


@pytest.fixture(scope="session")
def fast_compile(values):
    return Model(CONFIG, params=values, compile_mode="FAST_COMPILE")


@pytest.mark.parametrize(
    "what, ops", [("log_probs", [SoftmaxNLL]), ("gradients", [SoftmaxNLL, SoftmaxNLLGrad])]
)
def test_the_fused_ops_run_their_c_code_in_a_fast_run_model(fast_run, what, ops):
    fn = compiled(fast_run, what)
    found = {}
    for node, thunk in zip(fn.vm.nodes, fn.vm.thunks, strict=True):
        if isinstance(node.op, FUSED_OPS):
            found[type(node.op)] = thunk
    assert list(found) == ops, [type(n.op).__name__ for n in fn.maker.fgraph.toposort()]
    for op, thunk in found.items():
        assert hasattr(thunk, "cthunk"), f"{op.__name__} runs a Python thunk"
        assert not hasattr(thunk, "perform"), f"{op.__name__} runs its perform"


def test_fast_run_log_probs_equal_fast_compile(fast_run, fast_compile, batch):
    got = fast_run.log_probs(*batch)
    want = fast_compile.log_probs(*batch)
    assert np.abs(want).max() > 0.5
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_fast_run_gradients_equal_fast_compile(fast_run, fast_compile, batch):
    got = fast_run.gradients(*batch)
    want = fast_compile.gradients(*batch)
    assert list(got) == list(want)
    for name in want:
        assert np.abs(want[name]).max() > 1e-3, name
        np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-13, err_msg=name)


# -- OpenMP threads ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gomp():
    """libgomp, the OpenMP runtime the C ops link (`-lgomp`): the process has one copy."""
    name = ctypes.util.find_library("gomp")
    if name is None:
        pytest.skip("libgomp not found")
    return ctypes.CDLL(name)


@contextlib.contextmanager
def omp_threads(gomp, count: int):
    saved = gomp.omp_get_max_threads()
    gomp.omp_set_num_threads(count)
    try:
        yield
    finally:
        gomp.omp_set_num_threads(saved)


def static_schedule_column_sums(d: np.ndarray, threads: int) -> np.ndarray:
    """The bias gradient as `SoftmaxNLLGrad` documents it: rows dealt out by OpenMP's static
    schedule (contiguous blocks, the first n % threads one row longer), each block summed row
    by row in float64, the block sums added in thread order."""
    total = np.zeros(d.shape[1])
    for block in np.array_split(d.astype(np.float64), threads):
        partial = np.zeros(d.shape[1])
        for row in block:
            partial += row
        total += partial
    return total


@pytest.fixture(scope="session")
def grad_op():
    g, probs, y = tt.dvector(), tt.dmatrix(), tt.ivector()
    return backend.function([g, probs, y], list(softmax_nll_grad(g, probs, y)), mode="FAST_RUN")


def test_bias_gradient_reduction_is_fixed_per_thread_count(gomp, grad_op):
    """What the threads change: only the bias gradient's float64 summation order, exactly as
    the static schedule implies, so one thread count always gives the same bits. Across
    thread counts the bits differ in general: column 0 is built so that every count from 1
    to 4 gives another sum (1e16 + 1 rounds to 1e16, so where the blocks start decides)."""
    rng = np.random.default_rng(3)
    crafted = rng.random((8, 6))
    crafted[:, 0] = [1e16, 1, 1, 1, -1e16, 1, 1, 1]
    cases = [  # (g, probs, y); crafted: g = 1 and y never 0, so column 0 of d is as built
        (np.ones(8), crafted, rng.integers(1, 6, 8).astype(np.int32)),
        (rng.normal(size=37), rng.random((37, 6)), rng.integers(0, 6, 37).astype(np.int32)),
    ]
    sums = {}
    for g, probs, y in cases:
        want_d = probs * g[:, None]
        want_d[np.arange(len(y)), y] -= g
        for threads in (1, 2, 3, 4):
            with omp_threads(gomp, threads):
                d, db = grad_op(g, probs, y)
                _, again = grad_op(g, probs, y)
            np.testing.assert_array_equal(d, want_d)  # row by row: no thread dependence
            np.testing.assert_array_equal(db, again)
            np.testing.assert_array_equal(db, static_schedule_column_sums(want_d, threads))
            sums.setdefault(threads, db[0])
    # Blocks of column 0 by thread count, summed left to right, then added in order:
    #   1: 1e16 1 1 1 -1e16 1 1 1            -> 0 + 3        = 3
    #   2: [1e16 1 1 1] [-1e16 1 1 1]         -> 1e16 - 1e16  = 0
    #   3: [1e16 1 1] [1 -1e16 1] [1 1]       -> 1e16 - 1e16 + 2 = 2
    #   4: [1e16 1] [1 1] [-1e16 1] [1 1]     -> (1e16 + 2) - 1e16 + 2 = 4
    assert sums == {1: 3.0, 2: 0.0, 3: 2.0, 4: 4.0}


def test_model_results_across_thread_counts(gomp, fast_run, batch):
    """In the model (float64): log-probs and every gradient but the output bias's are the same
    bits at 1, 2 and 3 threads (rows are independent); the output bias's gradient is the same
    bits at one thread count, and within rounding of the float64 sums across counts."""
    results = {}
    for threads in (1, 2, 3):
        with omp_threads(gomp, threads):
            runs = [(fast_run.log_probs(*batch), fast_run.gradients(*batch)) for _ in range(2)]
        (log_p, grads), (log_p_again, grads_again) = runs
        np.testing.assert_array_equal(log_p, log_p_again)
        for name in grads:
            np.testing.assert_array_equal(grads[name], grads_again[name], err_msg=name)
        results[threads] = log_p, grads
    log_p, grads = results[1]
    for threads in (2, 3):
        other_log_p, other_grads = results[threads]
        np.testing.assert_array_equal(other_log_p, log_p)
        for name in grads:
            if name == "out/b":
                np.testing.assert_allclose(other_grads[name], grads[name], rtol=1e-13, atol=1e-15)
            else:
                np.testing.assert_array_equal(other_grads[name], grads[name], err_msg=name)
