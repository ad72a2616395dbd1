"""Aesara flags, set in one place, before the first `import aesara`.

Defaults: float32, a real BLAS (the OpenBLAS inside scipy's wheel) when it can be found,
quiet about known-noisy warnings. A user's own `AESARA_FLAGS` always win, flag by flag.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path

DEFAULT_FLAGS = {
    "floatX": "float32",
}


def find_openblas() -> str:
    """Linker flags for the OpenBLAS shipped inside scipy's wheel, or "" when there is none.

    numpy's own OpenBLAS cannot be used: it is ILP64 with suffixed symbol names.
    An empty value makes Aesara fall back to its NumPy C-API GEMM, and keeps
    `import aesara` from probing numpy.distutils (which breaks with setuptools >= 74).
    """
    spec = importlib.util.find_spec("scipy")
    if spec is None or spec.origin is None:
        return ""
    libs = Path(spec.origin).parent.parent / "scipy.libs"
    candidates = sorted(libs.glob("libopenblas*.so*")) if libs.is_dir() else []
    if not candidates:
        return ""
    lib = candidates[0]
    return f"-L{libs} -l:{lib.name}"


def parse_flags(text: str) -> dict[str, str]:
    """`AESARA_FLAGS` syntax: comma-separated `name=value` pairs."""
    flags = {}
    for item in text.split(","):
        if "=" in item:
            name, value = item.split("=", 1)
            flags[name.strip()] = value.strip()
    return flags


def configure_aesara() -> None:
    """Merge our defaults under the user's `AESARA_FLAGS`; a no-op once aesara is imported."""
    if "aesara" in sys.modules:
        return
    user = parse_flags(os.environ.get("AESARA_FLAGS", ""))
    flags = dict(DEFAULT_FLAGS)
    if "blas__ldflags" not in user and "blas.ldflags" not in user:
        flags["blas__ldflags"] = find_openblas()
    flags.update(user)
    os.environ["AESARA_FLAGS"] = ",".join(f"{k}={v}" for k, v in flags.items())
    # numpy.distutils' deprecation notice fires on every import of aesara.
    warnings.filterwarnings("ignore", message=".*numpy.distutils.*", category=DeprecationWarning)
    # Aesara looks for "-l<name>" as a file name, so "-l:<file>" always draws a false alarm.
    logging.getLogger("aesara.tensor.blas").addFilter(
        lambda record: "did not find a dynamic library" not in record.getMessage()
    )
