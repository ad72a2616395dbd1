"""What every C op of rnnlm shares: no parameters, OpenMP, glibc's vectorised math."""

from __future__ import annotations

from rnnlm.backend import COp
from rnnlm.backend import tensor as tt

# Vectorised expf/exp (and tanh) from glibc's libmvec, and rows spread over OpenMP threads.
COMPILE_ARGS = ["-fopenmp", "-fno-math-errno"]
LIBRARIES = ["mvec", "gomp"]
SIMD_MATH = """
extern float expf(float) __attribute__((simd("notinbranch")));
extern double exp(double) __attribute__((simd("notinbranch")));
"""


def float_tensor(x, ndim: int, what: str):
    """`x` as a symbolic float32/float64 tensor of `ndim` dimensions, or a TypeError naming it."""
    x = tt.as_tensor_variable(x)
    if x.ndim != ndim or x.dtype not in ("float32", "float64"):
        raise TypeError(f"{what} must be a float tensor of {ndim} dims, got {x.type}")
    return x


def int32_vector(x, what: str):
    """`x` as a symbolic int32 vector, or a TypeError naming it."""
    x = tt.as_tensor_variable(x)
    if x.ndim != 1 or x.dtype != "int32":
        raise TypeError(f"{what} must be an int32 vector, got {x.type}")
    return x


def math_functions(dtype: str) -> tuple[str, str]:
    """The C names of exp and log for a float dtype."""
    return ("expf", "logf") if dtype == "float32" else ("exp", "log")


class OpenMPOp(COp):
    """A parameterless C op compiled with OpenMP and libmvec."""

    __props__ = ()

    def c_compile_args(self, **kwargs):
        return COMPILE_ARGS

    def c_libraries(self, **kwargs):
        return LIBRARIES

    def c_code_cache_version(self):
        # The compiled module is reused by this version, not by its source: bump it with any
        # change to an op's C code, or the old module keeps running (and tests still pass).
        return (2,)
