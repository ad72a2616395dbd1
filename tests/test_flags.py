"""The tensor library's flags: our defaults, RNNLM_FLAGS over them, the user's own flags over
both, flag by flag; and which library runs.

Each check imports rnnlm in a fresh interpreter (flags are read once, when the library is
imported); nothing is compiled.
"""

import json
import os
import subprocess
import sys

import pytest

from rnnlm import backend
from rnnlm.flags import (
    LIBRARIES,
    NEUTRAL_VARIABLE,
    PREFIXED_BLAS,
    configure,
    find_openblas,
    flags_variable,
    library,
    openblas_flags,
    parse_flags,
)

VARIABLE = flags_variable(backend.NAME)  # AESARA_FLAGS or PYTENSOR_FLAGS
REPORT = (
    "import json, os; from rnnlm import backend; c = backend.config; "
    "print(json.dumps({'name': backend.NAME, 'floatX': c.floatX, 'mode': c.mode, "
    "'allow_gc': c.allow_gc, "
    f"'linker': c.linker, 'blas__ldflags': c.blas__ldflags, 'env': os.environ['{VARIABLE}']}}))"
)


def clean_environment() -> dict[str, str]:
    """This process's environment without any library's or rnnlm's flags (conftest sets some)."""
    prefixes = (*(name.upper() for name in LIBRARIES), NEUTRAL_VARIABLE)
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def library_config(flags=None, **env):
    """The library's resolved config after `import rnnlm.backend` in a fresh interpreter."""
    environment = clean_environment()
    environment["RNNLM_BACKEND"] = backend.NAME
    if flags is not None:
        environment[VARIABLE] = flags
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
    return library_config()


def test_default_floatx_is_float32(default_config):
    assert default_config["floatX"] == "float32"


def test_intermediates_are_kept_between_calls_unless_the_user_says_otherwise(default_config):
    assert default_config["allow_gc"] is False
    assert library_config("allow_gc=True")["allow_gc"] is True


def test_default_linker_is_the_c_one_our_ops_need(default_config):
    # PyTensor's own default is Numba, which cannot run a C op.
    assert default_config["linker"] == "cvm"


def test_default_blas_is_scipys_openblas_or_none(default_config):
    assert default_config["blas__ldflags"] == find_openblas()


def test_users_floatx_wins():
    assert library_config("floatX=float64")["floatX"] == "float64"


def test_users_blas_ldflags_win():
    flags = "-L/nonexistent -lnosuchblas"
    assert library_config(f"blas__ldflags={flags}")["blas__ldflags"] == flags


def test_users_empty_blas_ldflags_win_and_other_defaults_stay():
    config = library_config("blas__ldflags=")
    assert config["blas__ldflags"] == ""
    assert config["floatX"] == "float32"


def test_users_rc_file_floatx_wins(tmp_path):
    rc = tmp_path / "rc"
    rc.write_text("[global]\nfloatX = float64\n")
    assert library_config(**{f"{backend.NAME.upper()}RC": str(rc)})["floatX"] == "float64"


def test_rnnlm_flags_beat_our_defaults_and_lose_to_the_users():
    config = library_config(**{NEUTRAL_VARIABLE: "floatX=float64,mode=FAST_COMPILE"})
    assert (config["floatX"], config["mode"]) == ("float64", "FAST_COMPILE")
    config = library_config("floatX=float16", **{NEUTRAL_VARIABLE: "floatX=float64"})
    assert config["floatX"] == "float16"


def test_rnnlm_backend_chooses_the_library_and_a_wrong_name_is_one_line(monkeypatch):
    for name in LIBRARIES:
        monkeypatch.setenv("RNNLM_BACKEND", f" {name.upper()} ")
        assert library() == name
    monkeypatch.setenv("RNNLM_BACKEND", "theano")
    with pytest.raises(ImportError, match="RNNLM_BACKEND='theano': choose aesara or pytensor"):
        library()


def test_parse_flags_reads_name_value_pairs_and_skips_the_rest():
    assert parse_flags(" floatX = float64 ,junk,,blas__ldflags=-L/x -lblas") == {
        "floatX": "float64",
        "blas__ldflags": "-L/x -lblas",
    }


def test_configure_is_a_no_op_once_the_library_is_imported(monkeypatch):
    # rnnlm.backend imported the library in this process already.
    monkeypatch.setenv(VARIABLE, "floatX=float64")
    configure()
    assert os.environ[VARIABLE] == "floatX=float64"


def test_scipy_1_12s_openblas_is_linked_by_name(tmp_path):
    (tmp_path / "libopenblasp-r0-23e5df77.3.21.dev.so").touch()
    (tmp_path / "libgfortran-040039e1.so.5.0.0").touch()
    assert openblas_flags(tmp_path) == f"-L{tmp_path} -l:libopenblasp-r0-23e5df77.3.21.dev.so"


def test_scipy_1_13s_prefixed_openblas_gets_its_names_renamed(tmp_path):
    (tmp_path / "libscipy_openblas-5f890258.so").touch()
    flags = openblas_flags(tmp_path).split()
    assert flags[:2] == [f"-L{tmp_path}", "-l:libscipy_openblas-5f890258.so"]
    assert "-Dsgemm_=scipy_sgemm_" in flags and "-Dddot_=scipy_ddot_" in flags
    assert len(flags) == 2 + len(PREFIXED_BLAS)


def test_no_openblas_no_flags(tmp_path):
    assert openblas_flags(tmp_path) == "" == openblas_flags(tmp_path / "absent")


def test_import_never_needs_numpy_distutils():
    # With setuptools >= 74, numpy.distutils cannot be imported, and Aesara 2.9.4 probes it for
    # BLAS flags whenever blas__ldflags is unset. Blocking the module stands in for that setup.
    code = (
        "import sys; sys.modules['numpy.distutils'] = None; "
        "from rnnlm import backend; print(backend.config.floatX)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "float32"


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_openmp_threads_sleep_between_regions_unless_the_user_says(given):
    environment = {k: v for k, v in clean_environment().items() if k != "OMP_WAIT_POLICY"}
    if given:
        environment["OMP_WAIT_POLICY"] = given
    result = subprocess.run(
        [sys.executable, "-c", "import os, rnnlm.backend; print(os.environ['OMP_WAIT_POLICY'])"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == (given or "PASSIVE")
