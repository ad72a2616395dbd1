"""Shared fixtures. Compiling is the slow part of every test, so compiled models are shared."""

from __future__ import annotations

import os
from pathlib import Path

# Tiny test graphs run fine on the library's Python linker, which compiles in seconds instead
# of minutes. This must happen before rnnlm (which configures the library) is imported; it
# carries over to the subprocesses tests start. The user's own library flags still win.
os.environ["RNNLM_FLAGS"] = ",".join(
    flag for flag in ("mode=FAST_COMPILE", os.environ.get("RNNLM_FLAGS", "")) if flag
)

import pytest  # noqa: E402

import rnnlm  # noqa: E402, F401  (sets the tensor library's flags before any test imports it)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA
