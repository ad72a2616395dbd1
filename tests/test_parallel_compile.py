"""Missing C modules built by worker processes before linking: they land in the shared
compile directory, the linker finds them there, and the function computes what it should."""

import numpy as np

from rnnlm import backend, parallel_compile
from rnnlm.backend import tensor as tt


def fresh_graph():
    """Three elementwise loops over different ranks (so they cannot fuse), with constants
    drawn now: modules no compile directory has seen."""
    constants = np.random.default_rng().uniform(1, 2, size=3).round(12)
    x, y, z = tt.dvector("x"), tt.dmatrix("y"), tt.dtensor3("z")
    outputs = [tt.exp(x) * constants[0], tt.tanh(y) + constants[1], tt.log(z) - constants[2]]
    return [x, y, z], outputs, constants


def spy_on_prebuild(monkeypatch):
    """Record, for each prebuild, how many modules it built and which of the graph's module
    keys the shared cache knew before and after."""
    calls = []
    original = parallel_compile.prebuild
    cache = backend.get_module_cache(backend.config.compiledir)

    def spy(fgraph):
        keys = [parallel_compile._module_key(node) for node in fgraph.toposort()]
        keys = [key for key in keys if key is not None]
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
    inputs, outputs, constants = fresh_graph()
    f = backend.function(inputs, outputs, mode=parallel_compile.parallel("FAST_RUN"))
    (call,) = calls
    assert call["before"] < call["keys"] - 2  # at least three modules were missing
    assert call["built"] >= 3
    assert call["after"] == call["keys"]  # all moved in before linking, known to the cache

    x, y, z = np.full(2, 0.5), np.full((2, 2), 0.5), np.full((2, 2, 2), 0.5)
    got = f(x, y, z)
    np.testing.assert_allclose(got[0], np.exp(x) * constants[0])
    np.testing.assert_allclose(got[1], np.tanh(y) + constants[1])
    np.testing.assert_allclose(got[2], np.log(z) - constants[2])


def test_one_worker_builds_nothing_in_parallel(monkeypatch):
    monkeypatch.setenv(parallel_compile.WORKERS_VARIABLE, "1")
    calls = spy_on_prebuild(monkeypatch)
    inputs, outputs, constants = fresh_graph()
    f = backend.function(inputs, outputs, mode=parallel_compile.parallel("FAST_RUN"))
    assert [call["built"] for call in calls] == [0]
    got = f(np.ones(1), np.ones((1, 1)), np.ones((1, 1, 1)))
    np.testing.assert_allclose(got[0], np.e * constants[0])


def test_a_python_linker_is_left_alone(monkeypatch):
    calls = spy_on_prebuild(monkeypatch)
    inputs, outputs, _ = fresh_graph()
    backend.function(inputs, outputs, mode=parallel_compile.parallel("FAST_COMPILE"))
    assert calls == []  # FAST_COMPILE links Python thunks: no C module to build
