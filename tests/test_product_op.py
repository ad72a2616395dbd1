"""The AVX-512 matrix product op against numpy, in both linkers, and the rewrite that uses it.

`product` (x y) and `product_add` (alpha x y + beta z) are held to numpy's `x @ y` in float64
to rtol 1e-10, float32 to 1e-5, across shapes that reach every path of the kernel (row tiles
of up to MR, column panels of two vectors with masked tails, k in chunks of KC, y read in
place or copied, OpenMP) and across memory layouts; by finite differences; and the rewrite
"rnnlm_product" is held to the library's own Dot22 and Gemm. FAST_COMPILE runs the numpy
`perform`, FAST_RUN the C code; one compiled function per (op, dtype, linker) serves every
shape.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnnlm import backend
from rnnlm.backend import gemm_ops
from rnnlm.backend import tensor as tt
from rnnlm.ops.product import REWRITE, Product, available, product, product_add
from rnnlm.ops.product_c import KC, MR, PARALLEL_WORK

pytestmark = pytest.mark.skipif(
    not available(), reason="the C compiler does not target AVX-512: no product kernel to test"
)

MODES = ["FAST_COMPILE", "FAST_RUN"]
DTYPES = ["float32", "float64"]
CASES = [(m, d) for m in MODES for d in DTYPES]
ALPHA, BETA = 0.75, -1.5

# (M, K, N). Panels are 32 float32 / 16 float64 columns (two vectors of 16 / 8 lanes): the N
# below end inside a first vector, on a vector, inside a second one, on a panel, past one.
SHAPES = [
    (1, 1, 1),
    (1, 7, 5),
    (MR, 5, 8),
    (MR - 1, 9, 13),
    (MR + 1, 6, 16),
    (2 * MR + 1, 4, 21),
    (7, 3, 32),
    (29, 10, 40),
    (30, 8, 47),
    (5, KC, 9),  # one whole k chunk
    (13, KC + 1, 17),  # a chunk and one k
    (14, 2 * KC + 232, 33),  # three chunks
    (3, 0, 4),  # K = 0: zeros
    (0, 5, 4),
    (4, 5, 0),
    (0, 0, 0),
]
# Big enough for OpenMP (M N K >= PARALLEL_WORK): a small batch's (B, H) (H, 20), whose few
# panels are split into (panel, row group) items, and one with many panels.
PARALLEL_SHAPES = [(2600, 650, 20), (96, 300, 300)]

# Memory layouts holding the same values: each turns a C array into a view the kernel must
# read through its strides (or copy).
LAYOUTS = {
    "C": np.ascontiguousarray,
    "F": np.asfortranarray,
    "T": lambda a: np.ascontiguousarray(a.T).T,  # a transposed view
    "rows::2": lambda a: np.repeat(a, 2, axis=0)[::2],
    "cols::3": lambda a: np.repeat(a, 3, axis=1)[:, ::3],
    "rows::-1": lambda a: np.ascontiguousarray(a[::-1])[::-1],
    "reversed": lambda a: np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1],
}


def shape_id(shape) -> str:
    return "x".join(map(str, shape))


def case_id(case) -> str:
    return "-".join(case)


def random(rng: np.random.Generator, shape, dtype: str) -> np.ndarray:
    return rng.normal(size=shape).astype(dtype)


def assert_matches(got: np.ndarray, want: np.ndarray, dtype: str, k: int) -> None:
    """float64 to rtol 1e-10; float32 to 1e-5. The absolute floor grows with sqrt(K), the size
    of an entry of x y, for the entries that cancel to near zero."""
    assert got.dtype == dtype and got.shape == want.shape
    tol = 1e-10 if dtype == "float64" else 1e-5
    atol = (1e-12 if dtype == "float64" else 1e-5) * np.sqrt(max(k, 1))
    np.testing.assert_allclose(got, want, rtol=tol, atol=atol)


def wide(*arrays: np.ndarray) -> list[np.ndarray]:
    """The values in float64, for numpy's oracle."""
    return [a.astype(np.float64) for a in arrays]


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def plain(request):
    """product(x, y), compiled once per (linker, dtype)."""
    mode, dtype = request.param
    x, y = tt.matrix(dtype=dtype), tt.matrix(dtype=dtype)
    return backend.function([x, y], product(x, y), mode=mode), dtype


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def added(request):
    """product_add(z, alpha, x, y, beta), compiled once per (linker, dtype)."""
    mode, dtype = request.param
    z, x, y = (tt.matrix(dtype=dtype) for _ in range(3))
    alpha, beta = tt.scalar(dtype=dtype), tt.scalar(dtype=dtype)
    out = product_add(z, alpha, x, y, beta)
    return backend.function([z, alpha, x, y, beta], out, mode=mode), dtype


def call_added(f, dtype: str, z, alpha: float, x, y, beta: float) -> np.ndarray:
    return f(z, np.asarray(alpha, dtype), x, y, np.asarray(beta, dtype))


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_product_matches_numpy(plain, shape):
    f, dtype = plain
    m, k, n = shape
    rng = np.random.default_rng(m * 10_000 + k * 100 + n)
    x, y = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    x64, y64 = wide(x, y)
    assert_matches(f(x, y), x64 @ y64, dtype, k)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_product_add_matches_numpy(added, shape):
    f, dtype = added
    m, k, n = shape
    rng = np.random.default_rng(m * 10_000 + k * 100 + n + 1)
    z, x, y = random(rng, (m, n), dtype), random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    z64, x64, y64 = wide(z, x, y)
    got = call_added(f, dtype, z, ALPHA, x, y, BETA)
    assert_matches(got, ALPHA * x64 @ y64 + BETA * z64, dtype, k)


@pytest.mark.parametrize("shape", [(1, 1, 1), (MR + 1, KC + 1, 21), (3, 0, 4)], ids=shape_id)
def test_beta_zero_does_not_read_z(added, shape):
    """BLAS's rule: with beta 0, z is not read, so NaN in it does not reach the result."""
    f, dtype = added
    m, k, n = shape
    rng = np.random.default_rng(7)
    x, y = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    z = np.full((m, n), np.nan, dtype)
    x64, y64 = wide(x, y)
    got = call_added(f, dtype, z, ALPHA, x, y, 0.0)
    assert not np.isnan(got).any()
    assert_matches(got, ALPHA * x64 @ y64, dtype, k)


@pytest.mark.parametrize("shape", [(1, 1, 1), (MR + 1, KC + 1, 21)], ids=shape_id)
def test_alpha_zero_does_not_read_x_and_y(added, shape):
    """BLAS's rule, as the library's Gemm keeps it: with alpha 0, x and y are not read, so an
    inf there gives beta z, not NaN."""
    f, dtype = added
    m, k, n = shape
    rng = np.random.default_rng(9)
    z, x, y = random(rng, (m, n), dtype), random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    x[0, 0] = np.inf
    (z64,) = wide(z)
    assert_matches(call_added(f, dtype, z, 0.0, x, y, BETA), BETA * z64, dtype, k)


@pytest.mark.parametrize("shape", PARALLEL_SHAPES, ids=shape_id)
@pytest.mark.parametrize("transposed", [False, True], ids=["y", "a.T"])
def test_parallel_work_matches_numpy(plain, shape, transposed):
    """OpenMP over panels, or over (panel, row group) items. transposed: w a' as the fused
    cells compute it, y = a.T a view of a (N, K) array (columns K apart, copied)."""
    f, dtype = plain
    m, k, n = shape
    assert m * n * k >= PARALLEL_WORK
    rng = np.random.default_rng(11)
    x = random(rng, (m, k), dtype)
    y = random(rng, (n, k), dtype).T if transposed else random(rng, (k, n), dtype)
    x64, y64 = wide(x, y)
    assert_matches(f(x, y), x64 @ y64, dtype, k)


@pytest.mark.parametrize("y_layout", LAYOUTS)
@pytest.mark.parametrize("x_layout", LAYOUTS)
def test_product_reads_any_layout(plain, x_layout, y_layout):
    """K > KC and tails in M and N, so a copied y is copied in two chunks."""
    f, dtype = plain
    m, k, n = MR + 1, KC + 6, 21
    rng = np.random.default_rng(3)
    x, y = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    x64, y64 = wide(x, y)
    x_view, y_view = LAYOUTS[x_layout](x), LAYOUTS[y_layout](y)
    np.testing.assert_array_equal(x_view, x)
    np.testing.assert_array_equal(y_view, y)
    assert_matches(f(x_view, y_view), x64 @ y64, dtype, k)


@pytest.mark.parametrize("z_layout", LAYOUTS)
def test_product_add_reads_any_layout(added, z_layout):
    f, dtype = added
    m, k, n = MR + 1, KC + 6, 21
    rng = np.random.default_rng(4)
    z, x, y = random(rng, (m, n), dtype), random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    z64, x64, y64 = wide(z, x, y)
    views = LAYOUTS[z_layout](z), LAYOUTS["reversed"](x), LAYOUTS["T"](y)
    got = call_added(f, dtype, views[0], ALPHA, views[1], views[2], BETA)
    assert_matches(got, ALPHA * x64 @ y64 + BETA * z64, dtype, k)


def test_broadcast_inputs(plain):
    """Read-only views with a stride of 0 (np.broadcast_to) along either dimension."""
    f, dtype = plain
    rng = np.random.default_rng(5)
    x = np.broadcast_to(random(rng, (1, 9), dtype), (MR + 2, 9))
    y = np.broadcast_to(random(rng, (9, 1), dtype), (9, 19))
    x64, y64 = wide(x, y)
    assert_matches(f(x, y), x64 @ y64, dtype, 9)


def test_calls_with_changing_shapes(plain):
    """One function, shapes that change from call to call and come back."""
    f, dtype = plain
    rng = np.random.default_rng(6)
    for m, k, n in [(5, 7, 9), (3, 2, 40), (5, 7, 9), (5, 7, 9), (5, 0, 9), (0, 7, 9)]:
        x, y = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
        x64, y64 = wide(x, y)
        assert_matches(f(x, y), x64 @ y64, dtype, k)


def without_gc(mode: str):
    """`mode` with a linker that keeps every node's output between calls, so that the C code
    finds its last output and may write into it again."""
    return backend.get_mode(mode).clone(link_kwargs=dict(allow_gc=False))


@pytest.mark.parametrize("mode", MODES)
def test_a_kept_output_is_reused_and_right(mode):
    """The inner product of (x y) w is an intermediate: the C reuses its array when the shape
    is the one it had, and makes a new one when it is not."""
    x, y, w = (tt.dmatrix() for _ in range(3))
    f = backend.function([x, y, w], product(product(x, y), w), mode=without_gc(mode))
    inner = f.maker.fgraph.toposort()[0].outputs[0]
    rng = np.random.default_rng(8)
    kept = []
    for m, k, n, p in [(5, 7, 9, 4), (3, 2, 17, 6), (5, 7, 9, 4), (5, 8, 9, 3)]:
        x_, y_, w_ = rng.normal(size=(m, k)), rng.normal(size=(k, n)), rng.normal(size=(n, p))
        assert_matches(f(x_, y_, w_), x_ @ y_ @ w_, "float64", k)
        kept.append(f.vm.storage_map[inner][0])
        np.testing.assert_allclose(kept[-1], x_ @ y_, rtol=1e-10, atol=1e-12)
    if mode == "FAST_RUN":  # the C code's reuse: the test above ran through it
        assert kept[3] is kept[2]


@pytest.fixture(scope="module", params=[False, True], ids=["product", "product_add"])
def c_thunk(request):
    """One float64 node's C code, run on arrays placed in its storage cells as a linker does:
    (thunk, the inputs' cells, the output's cell). Its output cell may hold an array before
    the call, as a linker's does when the node ran before."""
    add = request.param
    inputs = [tt.dmatrix(), tt.dscalar(), tt.dmatrix(), tt.dmatrix(), tt.dscalar()]
    node = Product(add)(*(inputs if add else inputs[2:4])).owner
    variables = [*node.inputs, *node.outputs]
    cells = {v: [None] for v in variables}
    thunk = node.op.make_c_thunk(node, cells, {v: [False] for v in variables}, [])
    return thunk, [cells[v] for v in node.inputs], cells[node.outputs[0]]


def run_c_thunk(c_thunk, x, y, z, kept) -> tuple[np.ndarray, np.ndarray]:
    """(the output of the node run with `kept` in its output cell, numpy's)."""
    thunk, input_cells, output_cell = c_thunk
    add = len(input_cells) == 5
    values = [z, np.asarray(ALPHA), x, y, np.asarray(BETA)] if add else [x, y]
    want = ALPHA * x @ y + BETA * z if add else x @ y
    for cell, value in zip(input_cells, values, strict=True):
        cell[0] = value
    output_cell[0] = kept
    thunk()
    return output_cell[0], want


# Several panels and row tiles, so that a tile written early would be read by a later one.
SQUARE = 3 * MR + 5


def on_a_cache_line(shape, offset: int = 0) -> np.ndarray:
    """A C-contiguous float64 array of NaN whose data starts `offset` bytes past a 64-byte
    boundary."""
    size = int(np.prod(shape))
    buffer = np.empty(size + 16)
    start = (-buffer.ctypes.data % 64 + offset) // 8
    kept = buffer[start : start + size].reshape(shape)
    kept[...] = np.nan
    return kept


def test_the_c_writes_into_a_kept_output_that_fits(c_thunk):
    rng = np.random.default_rng(18)
    x, y, z = (rng.normal(size=(SQUARE, SQUARE)) for _ in range(3))
    kept = on_a_cache_line((SQUARE, SQUARE))
    got, want = run_c_thunk(c_thunk, x, y, z, kept)
    assert got is kept
    assert_matches(got, want, "float64", SQUARE)


def test_the_c_reuses_the_memory_of_its_own_bigger_output(c_thunk):
    """Sentence batches change shape every step: a smaller product goes into the memory of
    the op's own earlier, bigger output (no fresh pages), a bigger one into new memory."""
    rng = np.random.default_rng(20)
    x, y, z = (rng.normal(size=(SQUARE, SQUARE)) for _ in range(3))
    big, _ = run_c_thunk(c_thunk, x, y, z, None)
    small, want = run_c_thunk(c_thunk, x[:-3], y, z[:-3], big)
    assert small.shape == want.shape and small.ctypes.data == big.ctypes.data
    assert_matches(small, want, "float64", SQUARE)
    x, z = (rng.normal(size=(SQUARE + 3, SQUARE)) for _ in range(2))
    grown, want = run_c_thunk(c_thunk, x, y, z, small)
    assert not np.shares_memory(grown, big) and grown.ctypes.data % 64 == 0
    assert_matches(grown, want, "float64", SQUARE)


KEPT_MISFITS = {
    "shape": lambda: np.empty((SQUARE, SQUARE + 1)),
    "F order": lambda: np.empty((SQUARE, SQUARE), order="F"),
    "strided": lambda: np.empty((SQUARE, 2 * SQUARE))[:, ::2],
    "read-only": lambda: np.broadcast_to(np.empty(SQUARE), (SQUARE, SQUARE)),
    "off a cache line": lambda: on_a_cache_line((SQUARE, SQUARE), offset=16),
}


@pytest.mark.parametrize("misfit", KEPT_MISFITS)
def test_the_c_makes_a_new_output_when_the_kept_one_does_not_fit(c_thunk, misfit):
    rng = np.random.default_rng(19)
    x, y, z = (rng.normal(size=(SQUARE, SQUARE)) for _ in range(3))
    kept = KEPT_MISFITS[misfit]()
    got, want = run_c_thunk(c_thunk, x, y, z, kept)
    assert got is not kept and got.flags.c_contiguous and got.ctypes.data % 64 == 0
    assert_matches(got, want, "float64", SQUARE)


@pytest.mark.parametrize("operand", ["x", "y", "z"])
def test_the_c_does_not_write_into_a_kept_output_it_reads(c_thunk, operand):
    """The kept array is (a view of) this call's x, y or z: the op must not overwrite an
    input it still reads, nor change it."""
    thunk, input_cells, _ = c_thunk
    if operand == "z" and len(input_cells) == 2:
        pytest.skip("product has no z: product_add covers it")
    rng = np.random.default_rng(20)
    values = {name: rng.normal(size=(SQUARE, SQUARE)) for name in "xyz"}
    kept = values[operand].copy()
    values[operand] = kept.T if operand == "z" else kept  # z: a transposed view of it
    before = kept.copy()
    got, want = run_c_thunk(c_thunk, values["x"], values["y"], values["z"], kept)
    assert got is not kept
    np.testing.assert_array_equal(kept, before)
    assert_matches(got, want, "float64", SQUARE)


@pytest.mark.parametrize("mode", MODES)
def test_product_gradient_by_finite_differences(mode):
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(3, 4)), rng.normal(size=(4, 5))
    backend.verify_grad(product, [x, y], rng=np.random.default_rng(13), mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_product_add_gradient_by_finite_differences(mode):
    rng = np.random.default_rng(14)
    z, x, y = rng.normal(size=(3, 5)), rng.normal(size=(3, 4)), rng.normal(size=(4, 5))
    values = [z, np.asarray(ALPHA), x, y, np.asarray(BETA)]
    backend.verify_grad(product_add, values, rng=np.random.default_rng(15), mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_mismatched_shapes_are_an_error(mode):
    x, y, z = tt.dmatrix(), tt.dmatrix(), tt.dmatrix()
    f = backend.function([x, y], product(x, y), mode=mode)
    with pytest.raises(ValueError):
        f(np.ones((2, 3)), np.ones((4, 5)))
    g = backend.function([z, x, y], product_add(z, ALPHA, x, y, BETA), mode=mode)
    for z_shape in [(3, 5), (1, 5)]:  # (1, 5) would broadcast in numpy: the op refuses it
        with pytest.raises(ValueError):
            g(np.ones(z_shape), np.ones((2, 3)), np.ones((3, 5)))


def test_output_shape_without_computing():
    """infer_shape: the output's shape is x's rows by y's columns, and needs no product."""
    x, y = tt.dmatrix(), tt.dmatrix()
    f = backend.function([x, y], product(x, y).shape, mode="FAST_RUN")
    assert not any(isinstance(n.op, Product) for n in f.maker.fgraph.apply_nodes)
    assert tuple(f(np.ones((4, 3)), np.ones((3, 7)))) == (4, 7)


def ops_of(f) -> list:
    return [node.op for node in f.maker.fgraph.apply_nodes]


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_rewrite_replaces_dot22(dtype):
    x, y = tt.matrix(dtype=dtype), tt.matrix(dtype=dtype)
    ours = backend.function([x, y], tt.dot(x, y), mode="FAST_RUN")
    library = backend.get_mode("FAST_RUN").excluding(REWRITE)
    theirs = backend.function([x, y], tt.dot(x, y), mode=library)
    dot22 = gemm_ops()["dot22"]
    assert Product() in ops_of(ours)
    assert not any(isinstance(op, dot22) for op in ops_of(ours))
    assert any(isinstance(op, dot22) for op in ops_of(theirs))
    assert not any(isinstance(op, Product) for op in ops_of(theirs))
    rng = np.random.default_rng(16)
    m, k, n = MR + 3, KC + 5, 37
    x_, y_ = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    assert_matches(ours(x_, y_), theirs(x_, y_).astype(np.float64), dtype, k)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_rewrite_replaces_gemm(dtype):
    z, x, y = (tt.matrix(dtype=dtype) for _ in range(3))
    a, b = tt.scalar(dtype=dtype), tt.scalar(dtype=dtype)
    expression = z * b + a * tt.dot(x, y)
    ours = backend.function([z, a, x, y, b], expression, mode="FAST_RUN")
    library = backend.get_mode("FAST_RUN").excluding(REWRITE)
    theirs = backend.function([z, a, x, y, b], expression, mode=library)
    gemm = gemm_ops()["gemm"]
    assert Product(add=True) in ops_of(ours)
    assert not any(isinstance(op, gemm) for op in ops_of(ours))
    assert any(isinstance(op, gemm) for op in ops_of(theirs))
    rng = np.random.default_rng(17)
    m, k, n = MR + 3, KC + 5, 37
    values = [
        random(rng, (m, n), dtype),
        np.asarray(ALPHA, dtype),
        random(rng, (m, k), dtype),
        random(rng, (k, n), dtype),
        np.asarray(BETA, dtype),
    ]
    assert_matches(ours(*values), theirs(*values).astype(np.float64), dtype, k)


def test_make_node_rejects_bad_input():
    with pytest.raises(TypeError):
        product(tt.dvector(), tt.dmatrix())
    with pytest.raises(TypeError):
        product(tt.dmatrix(), tt.dvector())
    with pytest.raises(TypeError):
        product(tt.dmatrix(), tt.fmatrix())
    with pytest.raises(TypeError):
        product(tt.imatrix(), tt.imatrix())
    with pytest.raises(TypeError):
        product_add(tt.fmatrix(), 1.0, tt.dmatrix(), tt.dmatrix(), 1.0)
    with pytest.raises(TypeError):
        product_add(tt.dvector(), 1.0, tt.dmatrix(), tt.dmatrix(), 1.0)
    with pytest.raises(TypeError):
        product_add(tt.dmatrix(), tt.dvector(), tt.dmatrix(), tt.dmatrix(), 1.0)
