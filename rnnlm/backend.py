"""Aesara flags, set in one place, before the first `import aesara`.

Defaults: float32, a real BLAS (the OpenBLAS inside scipy's wheel) when it can be found,
quiet about known-noisy warnings. A user's own `AESARA_FLAGS` always win, flag by flag.
"""

from __future__ import annotations

import configparser
import contextlib
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


def _canonical(name: str) -> str:
    # "blas.ldflags", "blas__ldflags" and ("blas", "ldflags") in an rc file are one flag.
    return name.replace(".", "__").lower()


def user_flag_names() -> set[str]:
    """Flags the user set, in `AESARA_FLAGS` or in the `.aesararc` files Aesara reads."""
    names = {_canonical(name) for name in parse_flags(os.environ.get("AESARA_FLAGS", ""))}
    rc = configparser.RawConfigParser()
    paths = os.environ.get("AESARARC", "~/.aesararc").split(os.pathsep)
    with contextlib.suppress(configparser.Error, UnicodeDecodeError):
        rc.read([os.path.expanduser(path) for path in paths])
    for section in rc.sections():
        for option in rc.options(section):
            names.add(_canonical(option if section == "global" else f"{section}__{option}"))
    return names


def configure_aesara() -> None:
    """Put our defaults under the user's own settings; a no-op once aesara is imported."""
    if "aesara" in sys.modules:
        return
    defaults = dict(DEFAULT_FLAGS, blas__ldflags=find_openblas())
    user = user_flag_names()
    ours = {name: value for name, value in defaults.items() if _canonical(name) not in user}
    given = os.environ.get("AESARA_FLAGS", "")
    os.environ["AESARA_FLAGS"] = ",".join(
        [f"{name}={value}" for name, value in ours.items()] + ([given] if given else [])
    )
    # numpy.distutils' deprecation notice fires on every import of aesara.
    warnings.filterwarnings("ignore", message=".*numpy.distutils.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="Use shutil.which", category=DeprecationWarning)
    # Aesara looks for "-l<name>" as a file name, so "-l:<file>" always draws a false alarm.
    logging.getLogger("aesara.tensor.blas").addFilter(
        lambda record: "did not find a dynamic library" not in record.getMessage()
    )
