"""Aesara flags: our defaults, and the user's own AESARA_FLAGS winning flag by flag.

Each check imports rnnlm in a fresh interpreter (flags are read once, at `import aesara`);
nothing is compiled.
"""

import json
import os
import subprocess
import sys

import pytest

from rnnlm.flags import configure, find_openblas, parse_flags

REPORT = (
    "import json, os, rnnlm, aesara; "
    "print(json.dumps({'floatX': aesara.config.floatX, "
    "'blas__ldflags': aesara.config.blas__ldflags, 'env': os.environ['AESARA_FLAGS']}))"
)


def aesara_config(flags=None, **env):
    """Aesara's resolved config after `import rnnlm` in a fresh interpreter."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AESARA")}
    if flags is not None:
        environment["AESARA_FLAGS"] = flags
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", REPORT],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def default_config():
    return aesara_config()


def test_default_floatx_is_float32(default_config):
    assert default_config["floatX"] == "float32"


def test_default_blas_is_scipys_openblas_or_none(default_config):
    assert default_config["blas__ldflags"] == find_openblas()


def test_users_floatx_wins():
    assert aesara_config("floatX=float64")["floatX"] == "float64"


def test_users_blas_ldflags_win():
    flags = "-L/nonexistent -lnosuchblas"
    assert aesara_config(f"blas__ldflags={flags}")["blas__ldflags"] == flags


def test_users_empty_blas_ldflags_win_and_other_defaults_stay():
    config = aesara_config("blas__ldflags=")
    assert config["blas__ldflags"] == ""
    assert config["floatX"] == "float32"


def test_users_aesararc_floatx_wins(tmp_path):
    rc = tmp_path / "aesararc"
    rc.write_text("[global]\nfloatX = float64\n")
    assert aesara_config(AESARARC=str(rc))["floatX"] == "float64"


def test_parse_flags_reads_name_value_pairs_and_skips_the_rest():
    assert parse_flags(" floatX = float64 ,junk,,blas__ldflags=-L/x -lblas") == {
        "floatX": "float64",
        "blas__ldflags": "-L/x -lblas",
    }


def test_configure_is_a_no_op_once_aesara_is_imported(monkeypatch):
    import aesara  # noqa: F401  (already imported by rnnlm's own modules in this process)

    monkeypatch.setenv("AESARA_FLAGS", "floatX=float64")
    configure()
    assert os.environ["AESARA_FLAGS"] == "floatX=float64"


def test_import_never_needs_numpy_distutils():
    # With setuptools >= 74, numpy.distutils cannot be imported, and Aesara 2.9.4 probes it for
    # BLAS flags whenever blas__ldflags is unset. Blocking the module stands in for that setup.
    code = (
        "import sys; sys.modules['numpy.distutils'] = None; "
        "import rnnlm, aesara; print(aesara.config.floatX)"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AESARA")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "float32"
