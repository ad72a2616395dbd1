"""The one import point for the tensor library: Aesara, or PyTensor where Aesara cannot run.

Every other module takes `scan`, `grad`, `function`, `shared`, the tensor constructors, `COp`
and the config from here; nothing else imports `aesara` or `pytensor` by name. Which library
is `rnnlm.flags.library()`; its flags are set before the first import.
"""

from __future__ import annotations

import sys

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
        from aesara.compile.mode import Mode, get_mode
        from aesara.compile.sharedvalue import SharedVariable
        from aesara.gradient import DisconnectedType, disconnected_type, jacobian, verify_grad
        from aesara.graph.basic import Apply, Constant, Variable
        from aesara.graph.fg import FunctionGraph
        from aesara.graph.op import Op
        from aesara.link.c.basic import CLinker
        from aesara.link.c.cmodule import get_module_cache, get_module_hash
        from aesara.link.c.op import COp
        from aesara.tensor.blas import ldflags as blas_ldflags
        from aesara.tensor.blas_headers import blas_header_text, blas_header_version
        from aesara.tensor.math import sigmoid
        from aesara.tensor.random.utils import RandomStream
        from aesara.tensor.special import log_softmax, softmax
    else:
        import pytensor as _library
        import pytensor.tensor as tensor
        from pytensor.compile.compilelock import lock_ctx
        from pytensor.compile.function.types import FunctionMaker
        from pytensor.compile.mode import Mode, get_mode
        from pytensor.compile.sharedvalue import SharedVariable
        from pytensor.gradient import DisconnectedType, disconnected_type, jacobian, verify_grad
        from pytensor.graph.basic import Apply, Constant, Variable
        from pytensor.graph.fg import FunctionGraph
        from pytensor.graph.op import Op
        from pytensor.link.c.basic import CLinker
        from pytensor.link.c.cmodule import get_module_cache, get_module_hash
        from pytensor.link.c.op import COp
        from pytensor.tensor.blas import ldflags as blas_ldflags
        from pytensor.tensor.blas_headers import blas_header_text, blas_header_version
        from pytensor.tensor.math import sigmoid
        from pytensor.tensor.random.utils import RandomStream
        from pytensor.tensor.special import log_softmax, softmax
finally:
    if _hide_mpi:
        sys.modules.pop("mpi4py.MPI", None)

VERSION: str = _library.__version__
config = _library.config
function = _library.function
grad = _library.grad
shared = _library.shared


def scan(fn, **kwargs):
    """`scan` returning (outputs, updates) on either library."""
    return _library.scan(fn, **kwargs)


__all__ = [
    "NAME",
    "VERSION",
    "Apply",
    "CLinker",
    "COp",
    "Constant",
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
    "disconnected_type",
    "function",
    "get_mode",
    "get_module_cache",
    "get_module_hash",
    "grad",
    "jacobian",
    "lock_ctx",
    "log_softmax",
    "scan",
    "shared",
    "sigmoid",
    "softmax",
    "tensor",
    "verify_grad",
]
