"""Matrix products in rnnlm's own AVX-512 kernel, put in place of the library's BLAS ops.

    product(x (M, K), y (K, N))                     -> x y                (M, N)
    product_add(z (M, N), alpha, x, y, beta)        -> alpha x y + beta z  (Gemm's arithmetic)

Why: this project's machines set `OPENBLAS_CORETYPE=Haswell`, which holds OpenBLAS to its
AVX2 kernels on CPUs that have AVX-512, while PyTorch's own kernels use all of the CPU. Our
kernel (`rnnlm.ops.product_c`) ran the PTB and medium LSTMs' products 1.4-2.7x faster than
that OpenBLAS on one core (README, Performance). A rewrite (`use_product`, registered in the
library's `optdb`) replaces the library's `Dot22` and `Gemm` nodes, after its BLAS rewrites
made them (`Dot22Scalar`, a scaled product without z, stays BLAS's: rnnlm's training graphs
have none), wherever the C compiler targets AVX-512; the graph a user builds keeps its `dot`s,
and `Mode(...).excluding("rnnlm_product")` compiles without it. The numpy `perform` is the
oracle, and the py linker's arithmetic.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from rnnlm.backend import (
    Apply,
    cxx_flags,
    gemm_ops,
    in2out,
    node_rewriter,
    optdb,
    shape_rule,
)
from rnnlm.backend import tensor as tt
from rnnlm.ops.common import OpenMPOp
from rnnlm.ops.product_c import VERSION, c_call, c_support

REWRITE = "rnnlm_product"


class Product(OpenMPOp):
    """x y, or with `add`: alpha x y + beta z (inputs z, alpha, x, y, beta)."""

    __props__ = ("add",)

    def __init__(self, add: bool = False) -> None:
        self.add = add

    def make_node(self, *inputs):
        if self.add:
            z, alpha, x, y, beta = inputs
        else:
            (x, y), z = inputs, None
        x, y = tt.as_tensor_variable(x), tt.as_tensor_variable(y)
        if (
            x.ndim != 2
            or y.ndim != 2
            or x.dtype not in ("float32", "float64")
            or y.dtype != x.dtype
        ):
            raise TypeError(
                f"product needs two float matrices of one dtype, got {x.type}, {y.type}"
            )
        out = tt.tensor(dtype=x.dtype, shape=(x.type.shape[0], y.type.shape[1]))
        if not self.add:
            return Apply(self, [x, y], [out])
        z = tt.as_tensor_variable(z)
        if z.ndim != 2 or z.dtype != x.dtype:
            raise TypeError(f"product_add needs z of x's dtype, got {z.type}")
        alpha, beta = (tt.cast(tt.as_tensor_variable(s), x.dtype) for s in (alpha, beta))
        if alpha.ndim or beta.ndim:
            raise TypeError("product_add needs scalar alpha and beta")
        return Apply(self, [z, alpha, x, y, beta], [out])

    def perform(self, node, inputs, outputs):
        if self.add:
            z, alpha, x, y, beta = inputs
            if z.shape != (x.shape[0], y.shape[1]):
                raise ValueError(f"product: z is {z.shape}, x y is {(x.shape[0], y.shape[1])}")
            # BLAS's rules, as in the C: z is not read when beta is 0, nor x and y when alpha is
            xy = alpha * np.dot(x, y) if alpha != 0 else np.zeros(z.shape, z.dtype)
            result = xy + (beta * z if beta != 0 else 0)
        else:
            x, y = inputs
            result = np.dot(x, y)
        outputs[0][0] = np.asarray(result, dtype=node.outputs[0].dtype)

    def pullback(self, inputs, outputs, cotangents):
        (g,) = cotangents
        if not self.add:
            x, y = inputs
            return [tt.dot(g, y.T), tt.dot(x.T, g)]
        z, alpha, x, y, beta = inputs
        xy = tt.dot(x, y)
        return [
            beta * g,
            tt.sum(g * xy).astype(alpha.dtype),
            alpha * tt.dot(g, y.T),
            alpha * tt.dot(x.T, g),
            tt.sum(g * z).astype(beta.dtype),
        ]

    @shape_rule
    def infer_shape(self, node, shapes):
        x, y = shapes[2:4] if self.add else shapes
        return [(x[0], y[1])]

    def c_support_code(self, **kwargs):
        kernels = "".join(c_support(dtype) for dtype in ("float32", "float64"))
        return kernels + "#ifndef RNNLM_HAS_PRODUCT\n#error product needs AVX-512\n#endif\n"

    def c_code(self, node, name, inputs, outputs, sub):
        dtype = node.outputs[0].dtype
        (out,) = outputs
        t = f"npy_{dtype}"
        if self.add:
            z, alpha, x, y, beta = inputs
            scalars = [f"*({t}*)PyArray_DATA({s})" for s in (alpha, beta)]
            return c_call(dtype, x, y, z, *scalars, out, sub["fail"])
        x, y = inputs
        return c_call(dtype, x, y, None, "1", "0", out, sub["fail"])

    def c_code_cache_version(self):
        return VERSION


product = Product()
product_add = Product(add=True)


@cache
def available() -> bool:
    """Whether the C compiler targets AVX-512 (the kernel's instructions)."""
    return "-mavx512f" in cxx_flags()


@node_rewriter(list(gemm_ops().values()))
def _to_product(fgraph, node):
    """Dot22(x, y) -> product(x, y); Gemm(z, a, x, y, b) -> product_add(z, a, x, y, b)."""
    if not available() or node.outputs[0].dtype not in ("float32", "float64"):
        return None
    kinds = gemm_ops()
    if isinstance(node.op, kinds["dot22"]):
        return [product(*node.inputs)]
    if isinstance(node.op, kinds["gemm"]):
        return [product_add(*node.inputs)]
    return None


# After the BLAS rewrites (1.7) and elemwise fusion (49), before the destroy handler (49.5)
# that the in-place rewrites work under: our op writes a fresh output.
optdb.register(REWRITE, in2out(_to_product), "fast_run", position=49.4)
