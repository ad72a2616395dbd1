"""sum_of_squares, the clipping norm's one-pass reduction, against numpy in both linkers."""

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.backend import tensor as tt
from rnnlm.ops.norm import PARALLEL_SIZE, sum_of_squares

MODES = ["FAST_COMPILE", "FAST_RUN"]


@pytest.fixture(scope="module", params=[(m, d) for m in MODES for d in ("float32", "float64")])
def compiled(request):
    mode, dtype = request.param
    x = tt.matrix(dtype=dtype)
    return backend.function([x], sum_of_squares(x), mode=mode), dtype


@pytest.mark.parametrize(
    "shape", [(0, 3), (1, 1), (7, 13), (PARALLEL_SIZE // 100 + 1, 100)], ids=str
)
def test_matches_numpy(compiled, shape):
    f, dtype = compiled
    x = np.random.default_rng(0).normal(size=shape).astype(dtype)
    got = f(x)
    assert got.dtype == dtype and got.shape == ()
    want = np.sum(x.astype(np.float64) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-13)


def test_strided_input(compiled):
    f, dtype = compiled
    x = np.random.default_rng(1).normal(size=(6, 10)).astype(dtype)
    np.testing.assert_allclose(
        f(x[::2, ::3]), np.sum(x[::2, ::3].astype(np.float64) ** 2), rtol=1e-6
    )


@pytest.mark.parametrize("mode", MODES)
def test_gradient(mode):
    x = np.random.default_rng(2).normal(size=(3, 4))
    backend.verify_grad(sum_of_squares, [x], rng=np.random.default_rng(3), mode=mode)
