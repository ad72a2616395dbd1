"""Which tensor library rnnlm runs on, and its flags, set in one place before it is imported.

Importing this module is cheap: it never imports the library itself (`rnnlm.backend` does).
Defaults: float32, a real BLAS (the OpenBLAS inside scipy's wheel) when it can be found,
quiet about known-noisy warnings. A user's own flags (`AESARA_FLAGS` / `PYTENSOR_FLAGS`, or
the library's rc file) always win, flag by flag.
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

LIBRARIES = ("aesara", "pytensor")
DEFAULT_FLAGS = {
    "floatX": "float32",
}


def library() -> str:
    """The tensor library: `RNNLM_BACKEND` if set, else Aesara when installed, else PyTensor."""
    chosen = os.environ.get("RNNLM_BACKEND", "").strip().lower()
    if chosen:
        if chosen not in LIBRARIES:
            raise ImportError(f"RNNLM_BACKEND={chosen!r}: choose {' or '.join(LIBRARIES)}")
        return chosen
    for name in LIBRARIES:
        if importlib.util.find_spec(name) is not None:
            return name
    raise ImportError("rnnlm needs Aesara or PyTensor: pip install -e . installs the right one")


def flags_variable(name: str) -> str:
    """`AESARA_FLAGS` or `PYTENSOR_FLAGS`."""
    return f"{name.upper()}_FLAGS"


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


def user_flag_names(name: str = "aesara") -> set[str]:
    """Flags the user set for library `name`, in its environment variable or its rc files."""
    names = {_canonical(flag) for flag in parse_flags(os.environ.get(flags_variable(name), ""))}
    rc = configparser.RawConfigParser()
    paths = os.environ.get(f"{name.upper()}RC", f"~/.{name}rc").split(os.pathsep)
    with contextlib.suppress(configparser.Error, UnicodeDecodeError):
        rc.read([os.path.expanduser(path) for path in paths])
    for section in rc.sections():
        for option in rc.options(section):
            names.add(_canonical(option if section == "global" else f"{section}__{option}"))
    return names


def configure() -> None:
    """Put our defaults under the user's own settings; a no-op once the library is imported."""
    name = library()
    if name in sys.modules:
        return
    defaults = dict(DEFAULT_FLAGS, blas__ldflags=find_openblas())
    user = user_flag_names(name)
    ours = {flag: value for flag, value in defaults.items() if _canonical(flag) not in user}
    variable = flags_variable(name)
    given = os.environ.get(variable, "")
    os.environ[variable] = ",".join(
        [f"{flag}={value}" for flag, value in ours.items()] + ([given] if given else [])
    )
    # numpy.distutils' deprecation notice fires on every import of aesara.
    warnings.filterwarnings("ignore", message=".*numpy.distutils.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="Use shutil.which", category=DeprecationWarning)
    # The library looks for "-l<name>" as a file name, so "-l:<file>" always draws a false alarm.
    logging.getLogger(f"{name}.tensor.blas").addFilter(
        lambda record: "did not find a dynamic library" not in record.getMessage()
    )
