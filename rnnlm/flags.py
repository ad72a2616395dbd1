"""Which tensor library rnnlm runs on, and its flags, set in one place before it is imported.

Importing this module is cheap: it never imports the library itself (`rnnlm.backend` does).
Defaults: float32, intermediate arrays kept between calls (`allow_gc`), a real BLAS (the
OpenBLAS inside scipy's wheel) when it can be found, PyTensor's C linker (our ops are C),
quiet about known-noisy warnings; and OpenMP threads that sleep rather than spin between
parallel regions (`OMP_WAIT_POLICY`, unless set).
Flags are read in three layers, each winning over the one before, flag by flag: our defaults;
`RNNLM_FLAGS` (the same `name=value,...` syntax, for whichever library runs: what tests and
scripts set); the user's own `AESARA_FLAGS` / `PYTENSOR_FLAGS` or the library's rc file.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import warnings
from pathlib import Path

LIBRARIES = ("aesara", "pytensor")
NEUTRAL_VARIABLE = "RNNLM_FLAGS"
DEFAULT_FLAGS = {
    "floatX": "float32",
    # Keep a compiled function's intermediate arrays between calls, for the ops to write into
    # again, rather than free them after use and allocate them anew on the next call. Freed
    # pages went back to this VM's host within a second; a training step after such a pause
    # (the bench alternates contenders) faulted them all in again: the medium LSTM step took
    # 280-327 ms against 212-223 with this, on 2 threads (README, Performance). It costs the
    # memory of one step's intermediates: peak RSS 355 -> 414 MB for PTB-small training.
    "allow_gc": "False",
}
LIBRARY_FLAGS = {
    # PyTensor's default linker is Numba, which cannot run a C op; "cvm" is Aesara's default.
    "pytensor": {"linker": "cvm"},
}
# Our ops' OpenMP threads and OpenBLAS's own threads take turns on the same cores. A libgomp
# thread spins after its parallel region by default, and keeps the core from the BLAS thread
# that needs it next; told to sleep, the PTB-small step trained 1.4x faster on two threads
# (README, Performance). libgomp reads this when it loads, with our first compiled op.
THREAD_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
# scipy >= 1.13 ships OpenBLAS as libscipy_openblas, every symbol prefixed with "scipy_"; the
# library's C code calls the plain Fortran names, so those it uses are renamed at compile time.
PREFIXED_BLAS = [f"{kind}{name}_" for kind in "sd" for name in ("gemm", "gemv", "ger", "dot")]


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


def describe() -> dict[str, str]:
    """The library and its version, e.g. {"name": "pytensor", "version": "3.3.8"}, unimported."""
    name = library()
    return {"name": name, "version": importlib.metadata.version(name)}


def flags_variable(name: str) -> str:
    """`AESARA_FLAGS` or `PYTENSOR_FLAGS`."""
    return f"{name.upper()}_FLAGS"


def find_openblas() -> str:
    """Linker flags for the OpenBLAS shipped inside scipy's wheel, or "" when there is none.

    numpy's own OpenBLAS cannot be used: it is ILP64 with suffixed symbol names. An empty
    value makes the library fall back to NumPy (Aesara: its C-API GEMM; PyTensor: `numpy.dot`
    in Python), and keeps it from probing for a system BLAS (Aesara through numpy.distutils,
    which breaks with setuptools >= 74; PyTensor by compiling test programs).
    """
    spec = importlib.util.find_spec("scipy")
    if spec is None or spec.origin is None:
        return ""
    return openblas_flags(Path(spec.origin).parent.parent / "scipy.libs")


def openblas_flags(folder: Path) -> str:
    """Flags to link the OpenBLAS in `folder` (scipy's wheel's scipy.libs), or "".

    scipy <= 1.12 ships `libopenblas*.so` with the plain Fortran names; scipy >= 1.13
    `libscipy_openblas*.so`, whose names are prefixed, so `-D` renames them (see
    `PREFIXED_BLAS`); both libraries pass flags other than -L/-l to the compiler.
    """
    candidates = sorted(folder.glob("lib*openblas*.so*")) if folder.is_dir() else []
    if not candidates:
        return ""
    lib = candidates[0]
    renames = []
    if lib.name.startswith("libscipy_openblas"):
        renames = [f"-D{name}=scipy_{name}" for name in PREFIXED_BLAS]
    return " ".join([f"-L{folder}", f"-l:{lib.name}", *renames])


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
    for variable, value in THREAD_DEFAULTS.items():
        os.environ.setdefault(variable, value)
    name = library()
    if name in sys.modules:
        return
    ours = dict(DEFAULT_FLAGS, **LIBRARY_FLAGS.get(name, {}), blas__ldflags=find_openblas())
    ours.update(parse_flags(os.environ.get(NEUTRAL_VARIABLE, "")))
    user = user_flag_names(name)
    ours = {flag: value for flag, value in ours.items() if _canonical(flag) not in user}
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
