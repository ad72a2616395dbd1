"""`rnnlm next`, `rnnlm cache info|clear`, `--no-cache`, and how `rnnlm serve` names its
models, through the command line."""

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from servers import tiny_model

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.cli.serving import model_names
from rnnlm.model import Model
from rnnlm.next_word import next_words


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny.npz")


def run(*arguments, cache=None):
    env = {"XDG_CACHE_HOME": str(cache)} if cache is not None else {}
    return CliRunner().invoke(main, [str(a) for a in arguments], env=env)


def test_next_lists_the_likeliest_words(model_file, tmp_path):
    result = run("next", "The cat sat on", "--model", model_file, "--json", cache=tmp_path)
    assert result.exit_code == 0, result.output
    got = json.loads(result.output)
    assert got["tokens"] == ["the", "cat", "sat", "on"]
    assert len(got["next"]) == 10
    probs = [c["prob"] for c in got["next"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1
    ckpt = checkpoint.load(model_file)
    (expected,) = next_words(
        Model(ckpt.config.model, params=ckpt.params), ckpt.vocab, [got["tokens"]], 10
    )
    assert [(c["token"], pytest.approx(c["prob"])) for c in got["next"]] == expected

    text = run("next", "the cat", "--model", model_file, "-k", "3", cache=tmp_path)
    assert text.exit_code == 0
    lines = text.output.splitlines()
    assert len(lines) == 3
    assert all(len(line.split()) == 2 and float(line.split()[0]) <= 1 for line in lines)


def test_next_with_no_context_gives_first_words(model_file, tmp_path):
    result = run("next", "--model", model_file, "--json", cache=tmp_path)
    assert result.exit_code == 0
    assert json.loads(result.output)["tokens"] == []


def test_next_refuses_a_missing_model_in_one_line(tmp_path):
    result = run("next", "the", "--model", tmp_path / "none.npz", cache=tmp_path)
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1


def test_cache_info_clear_and_no_cache(model_file, tmp_path):
    info = json.loads(run("cache", "info", "--json", cache=tmp_path).output)
    assert (info["entries"], info["path"]) == (0, str(tmp_path / "rnnlm"))

    assert run("score", "a cat", "--model", model_file, "--no-cache", cache=tmp_path).exit_code == 0
    assert json.loads(run("cache", "info", "--json", cache=tmp_path).output)["entries"] == 0

    first = run("score", "a cat", "--model", model_file, "--json", cache=tmp_path)
    entries = json.loads(run("cache", "info", "--json", cache=tmp_path).output)["entries"]
    assert entries >= 1
    second = run("score", "a cat", "--model", model_file, "--json", cache=tmp_path)
    assert json.loads(second.output) == json.loads(first.output)  # from the cache, same numbers
    assert json.loads(run("cache", "info", "--json", cache=tmp_path).output)["entries"] == entries

    text = run("cache", "info", cache=tmp_path).output
    assert str(tmp_path / "rnnlm") in text and f"{entries} compiled functions" in text
    cleared = run("cache", "clear", cache=tmp_path)
    assert f"removed {entries} compiled functions" in cleared.output
    assert json.loads(run("cache", "info", "--json", cache=tmp_path).output)["entries"] == 0


def test_served_models_are_named_by_file_or_by_name():
    named = model_names(("models/a.npz", "big=models/b.npz"))
    assert {name: str(path) for name, path in named.items()} == {
        "a": "models/a.npz",
        "big": "models/b.npz",
    }
    with pytest.raises(click.BadParameter, match="two models named 'a'"):
        model_names(("x/a.npz", "y/a.npz"))
    with pytest.raises(click.BadParameter, match="empty model name"):
        model_names(("=a.npz",))


RUNS_A_MODEL = ["sample", "fill", "score", "next", "rescore", "eval", "compare", "diagnose"]


@pytest.mark.parametrize("command", [*RUNS_A_MODEL, "train", "serve"])
def test_every_command_that_compiles_takes_no_cache(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "--no-cache" in result.output


def test_help_of_the_new_commands_imports_no_tensor_library():
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from rnnlm.cli import main\n"
        "for args in (['--help'], ['serve', '--help'], ['next', '--help'], ['cache', '--help']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0\n"
        "heavy = ('aesara', 'pytensor', 'fastapi', 'uvicorn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr
