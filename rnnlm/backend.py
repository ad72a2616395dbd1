"""The one import point for the tensor library: Aesara, or PyTensor where Aesara cannot run.

Every other module takes `scan`, `grad`, `function`, `shared`, the tensor constructors, `Op`,
`COp` and the config from here; nothing else imports `aesara` or `pytensor` by name. Which
library is `rnnlm.flags.library()`; its flags are set before the first import. Where the
two differ, the difference is bridged here:

- `scan` returns (outputs, updates) on both (PyTensor 3 is moving to outputs alone);
- `RandomStream` is the same class on both (PyTensor 3.3 deprecates it, quietly here);
- an op's gradient is `pullback(inputs, outputs, cotangents)` on both (PyTensor 3's name;
  Aesara calls `L_op`, whose default calls `grad(inputs, output_grads)`, still honoured);
- an op's `infer_shape(node, shapes)` is written once, under `@shape_rule` (Aesara passes
  an fgraph first, PyTensor no longer does);
- PyTensor's default linker is Numba, which cannot run our C ops: `rnnlm.flags` sets "cvm",
  Aesara's default.

`COp` is the base for rnnlm's C ops; `LibraryCOp` is the library's own, the base of its C ops
too (on Aesara `COp` derives from it): ask `isinstance(op, LibraryCOp)` of any op in a graph.
"""

from __future__ import annotations

import sys
import warnings

from rnnlm import flags

NAME = flags.library()
flags.configure()

# aesara.tensor.io imports mpi4py.MPI whenever mpi4py is installed, for MPI ops rnnlm never
# uses, and MPI_Init costs ~1 s of every start-up. Hide it while the library loads (which
# tolerates the ImportError); rnnlm.distributed imports it itself when training asks for MPI.
_hide_mpi = "mpi4py.MPI" not in sys.modules
if _hide_mpi:
    sys.modules["mpi4py.MPI"] = None  # type: ignore[assignment]
try:
    if NAME == "aesara":
        import aesara as _library
        import aesara.tensor as tensor
        from aesara.compile.compilelock import lock_ctx
        from aesara.compile.function.types import FunctionMaker
        from aesara.compile.mode import Mode, get_mode, optdb
        from aesara.compile.sharedvalue import SharedVariable
        from aesara.gradient import DisconnectedType, disconnected_type, jacobian, verify_grad
        from aesara.graph.basic import Apply, Constant, Variable
        from aesara.graph.fg import FunctionGraph
        from aesara.graph.op import Op as _Op
        from aesara.graph.rewriting.basic import in2out, node_rewriter
        from aesara.link.c.basic import CLinker
        from aesara.link.c.cmodule import GCC_compiler, get_module_cache, get_module_hash
        from aesara.link.c.op import COp as LibraryCOp
        from aesara.tensor.blas import Dot22, Gemm
        from aesara.tensor.blas import ldflags as blas_ldflags
        from aesara.tensor.blas_headers import blas_header_text, blas_header_version
        from aesara.tensor.math import sigmoid
        from aesara.tensor.random.utils import RandomStream as _RandomStream
        from aesara.tensor.special import log_softmax, softmax
    else:
        import pytensor as _library
        import pytensor.tensor as tensor
        from pytensor.compile.compilelock import lock_ctx
        from pytensor.compile.maker import FunctionMaker
        from pytensor.compile.mode import Mode, get_mode, optdb
        from pytensor.compile.sharedvalue import SharedVariable
        from pytensor.gradient import DisconnectedType, disconnected_type, jacobian, verify_grad
        from pytensor.graph.basic import Apply, Constant, Variable
        from pytensor.graph.fg import FunctionGraph
        from pytensor.graph.op import Op as _Op
        from pytensor.graph.rewriting.basic import in2out, node_rewriter
        from pytensor.link.c.basic import CLinker
        from pytensor.link.c.cmodule import GCC_compiler, get_module_cache, get_module_hash
        from pytensor.link.c.op import COp as LibraryCOp
        from pytensor.tensor.blas import Dot22, Gemm
        from pytensor.tensor.blas import ldflags as blas_ldflags
        from pytensor.tensor.blas.c_code.blas_headers import blas_header_text, blas_header_version
        from pytensor.tensor.math import sigmoid
        from pytensor.tensor.random.utils import RandomStream as _RandomStream
        from pytensor.tensor.special import log_softmax, softmax
finally:
    if _hide_mpi:
        sys.modules.pop("mpi4py.MPI", None)

VERSION: str = _library.__version__
config = _library.config
function = _library.function
grad = _library.grad
shared = _library.shared


def gemm_ops() -> dict[str, type]:
    """The library's BLAS product ops that its rewrites make of `dot`: {"dot22", "gemm"}."""
    return {"dot22": Dot22, "gemm": Gemm}


def cxx_flags() -> list[str]:
    """The flags the library compiles C ops with (its `-march=native` equivalents among
    them), or [] when it has no C compiler."""
    return list(GCC_compiler.compile_args()) if config.cxx else []


def scan(fn, **kwargs):
    """`scan` returning (outputs, updates) on either library.

    On PyTensor the updates are always empty: a step that draws random numbers is an error
    there (PyTensor says so), so draw them outside the scan, as rnnlm's dropout does.
    """
    if NAME == "aesara":
        return _library.scan(fn, **kwargs)
    with warnings.catch_warnings():
        # PyTensor 3.3 deprecates `mode` but honours it. Without it the inner graph of a
        # FAST_COMPILE function would run on C thunks (its "vm" linker), compiled with gcc.
        warnings.filterwarnings("ignore", "The `mode` argument of `scan`", FutureWarning)
        return _library.scan(fn, return_updates=False, **kwargs), {}


class RandomStream(_RandomStream):
    """Shared random generators for symbolic draws, reseeded together (dropout masks).

    The same class, and the same draws for a seed, on both libraries. PyTensor 3.3 deprecates
    it (for `shared_rng` and explicit updates) and warns about its insides; it still works.
    """

    def __init__(self, seed: int | None = None) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "RandomStream is deprecated", FutureWarning)
            super().__init__(seed)

    def gen(self, op, *args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "RandomVariable Ops will stop hiding")
            warnings.filterwarnings("ignore", "Setting default_update is deprecated")
            return super().gen(op, *args, **kwargs)


def shape_rule(rule):
    """An op's `infer_shape` from `rule(self, node, shapes)`, in the signature each library
    calls: Aesara passes its fgraph first; PyTensor no longer does, and warns about any op
    whose method still takes it."""
    if NAME != "aesara":
        return rule

    def infer_shape(self, fgraph, node, shapes):
        return rule(self, node, shapes)

    return infer_shape


if NAME == "aesara":

    class _Pullback:
        """Aesara asks an op for `L_op`; route it to `pullback`, or to `grad` for ops without."""

        def L_op(self, inputs, outputs, output_grads):
            return self.pullback(inputs, outputs, output_grads)

        def pullback(self, inputs, outputs, cotangents):
            return self.grad(inputs, cotangents)

    class Op(_Pullback, _Op):
        """A Python op: `make_node`, `perform`, and a `pullback` for its gradient."""

    class COp(_Pullback, LibraryCOp):
        """A C op: `make_node`, `perform`, `c_code`, and a `pullback` for its gradient."""

else:
    # PyTensor calls `pullback`; an op that still defines `grad` works there too, with a
    # FutureWarning from PyTensor.
    Op, COp = _Op, LibraryCOp


__all__ = [
    "NAME",
    "VERSION",
    "Apply",
    "CLinker",
    "COp",
    "Constant",
    "LibraryCOp",
    "DisconnectedType",
    "FunctionGraph",
    "FunctionMaker",
    "Mode",
    "Op",
    "RandomStream",
    "SharedVariable",
    "Variable",
    "blas_header_text",
    "blas_header_version",
    "blas_ldflags",
    "config",
    "cxx_flags",
    "disconnected_type",
    "function",
    "gemm_ops",
    "get_mode",
    "get_module_cache",
    "get_module_hash",
    "grad",
    "in2out",
    "jacobian",
    "lock_ctx",
    "log_softmax",
    "node_rewriter",
    "optdb",
    "scan",
    "shape_rule",
    "shared",
    "sigmoid",
    "softmax",
    "tensor",
    "verify_grad",
]
