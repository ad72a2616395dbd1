"""Missing C modules built by worker processes before linking: they land in the shared
compile directory, the linker finds them there, and the function computes what it should."""

import numpy as np

from rnnlm import backend, parallel_compile
from rnnlm.backend import tensor as tt

UNARY = [
    (tt.tanh, np.tanh),
    (tt.sin, np.sin),
    (tt.cos, np.cos),
    (tt.arctan, np.arctan),
    (tt.exp, np.exp),
    (tt.log1p, np.log1p),
    (tt.sqrt, np.sqrt),
    (tt.square, np.square),
]


def fresh_graph():
    """Three fused elementwise loops over different ranks (so they stay three), each a chain
    of operations drawn now: C sources nobody has compiled (8**8 chains each)."""
    rng = np.random.default_rng()
    chains = [[UNARY[i] for i in rng.integers(0, len(UNARY), size=8)] for _ in range(3)]
    inputs = [tt.dvector("x"), tt.dmatrix("y"), tt.dtensor3("z")]
    outputs = []
    for variable, chain in zip(inputs, chains, strict=True):
        for symbolic, _ in chain:
            variable = symbolic(variable) * 0.5  # keeps exp and sqr from running away
        outputs.append(variable)

    def expected(*values):
        results = []
        for value, chain in zip(values, chains, strict=True):
            for _, numeric in chain:
                value = numeric(value) * 0.5
            results.append(value)
        return results

    return inputs, outputs, expected


def spy_on_prebuild(monkeypatch):
    """Record, for each prebuild, how many modules it built and which of the graph's module
    keys the shared cache knew before and after."""
    calls = []
    original = parallel_compile.prebuild
    cache = backend.get_module_cache(backend.config.compiledir)

    def spy(fgraph):
        found = [parallel_compile._module_key(node) for node in parallel_compile._nodes(fgraph)]
        keys = [key for key, _ in filter(None, found)]
        before = sum(key in cache.entry_from_key for key in keys)
        built = original(fgraph)
        after = sum(key in cache.entry_from_key for key in keys)
        calls.append({"keys": len(keys), "before": before, "built": built, "after": after})
        return built

    monkeypatch.setattr(parallel_compile, "prebuild", spy)
    return calls


def test_missing_modules_are_built_by_workers_and_found_by_the_linker(monkeypatch):
    monkeypatch.setenv(parallel_compile.WORKERS_VARIABLE, "2")
    calls = spy_on_prebuild(monkeypatch)
    inputs, outputs, expected = fresh_graph()
    f = backend.function(inputs, outputs, mode=parallel_compile.parallel("FAST_RUN"))
    (call,) = calls
    assert call["before"] < call["keys"] - 2  # at least three modules were missing
    assert call["built"] >= 3
    assert call["after"] == call["keys"]  # all moved in before linking, known to the cache

    values = np.full(2, 0.5), np.full((2, 2), 0.25), np.full((2, 2, 2), 0.75)
    for got, want in zip(f(*values), expected(*values), strict=True):
        np.testing.assert_allclose(got, want)

    workers = parallel_compile._WORKERS.processes
    parallel_compile.close_workers()
    assert all(process.poll() is not None for process in workers)  # stopped, not orphaned


def test_one_worker_builds_nothing_in_parallel(monkeypatch):
    monkeypatch.setenv(parallel_compile.WORKERS_VARIABLE, "1")
    calls = spy_on_prebuild(monkeypatch)
    inputs, outputs, expected = fresh_graph()
    f = backend.function(inputs, outputs, mode=parallel_compile.parallel("FAST_RUN"))
    assert [call["built"] for call in calls] == [0]
    values = np.ones(1), np.ones((1, 1)), np.ones((1, 1, 1))
    np.testing.assert_allclose(f(*values)[0], expected(*values)[0])


def test_a_python_linker_is_left_alone(monkeypatch):
    calls = spy_on_prebuild(monkeypatch)
    inputs, outputs, _ = fresh_graph()
    backend.function(inputs, outputs, mode=parallel_compile.parallel("FAST_COMPILE"))
    assert calls == []  # FAST_COMPILE links Python thunks: no C module to build


def test_the_modules_of_a_scans_step_are_built_by_workers_too(monkeypatch):
    # Aesara compiles the step in the scan's mode (ours); PyTensor links it in a mode of its
    # own, so the outer function builds the step's modules (`parallel_compile._nodes`).
    monkeypatch.setenv(parallel_compile.WORKERS_VARIABLE, "2")
    calls = spy_on_prebuild(monkeypatch)
    rng = np.random.default_rng()
    chains = [[UNARY[i] for i in rng.integers(0, len(UNARY), size=8)] for _ in range(3)]

    def step(*args):  # (x_t, y_t, z_t, h_x, h_y, h_z): each h <- chain(x_t + h)
        states = []
        for value, state, chain in zip(args[:3], args[3:], chains, strict=True):
            variable = value + state  # reads the state: no rewrite moves it out of the loop
            for symbolic, _ in chain:
                variable = symbolic(variable) * 0.5
            states.append(variable)
        return states

    sequences = [tt.dmatrix("x"), tt.dtensor3("y"), tt.dtensor4("z")]
    starts = [tt.zeros_like(s[0]) for s in sequences]
    outputs, _ = backend.scan(
        step, sequences=sequences, outputs_info=starts, mode=parallel_compile.parallel("FAST_RUN")
    )
    f = backend.function(sequences, outputs, mode=parallel_compile.parallel("FAST_RUN"))
    # The three chains are fresh modules only the step has; the scan's own are not.
    assert sum(call["built"] for call in calls) >= 3

    values = [np.full((3, *[2] * rank), 0.1 * rank) for rank in (1, 2, 3)]
    for got, value, chain in zip(f(*values), values, chains, strict=True):
        state, want = np.zeros_like(value[0]), []
        for row in value:
            state = row + state
            for _, numeric in chain:
                state = numeric(state) * 0.5
            want.append(state)
        np.testing.assert_allclose(got, want)
    parallel_compile.close_workers()
