"""The `rnnlm` command end to end: train on a tiny corpus, sample, score, and bad input.

One model is trained for the whole module; every bad-input test checks the same contract:
a non-zero exit, no traceback, and one line that names the problem.
"""

import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time

import click
import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import __version__, checkpoint
from rnnlm.cli import main
from rnnlm.corpus import SAMPLE_SOURCE, tokenize
from rnnlm.vocab import SENTENCE_END, SENTENCE_START, UNKNOWN_TOKEN

SUBJECTS = ["the cat", "the dog", "a bird", "my sister", "the old man", "a small child"]
VERBS = ["sees", "likes", "follows"]
OBJECTS = ["the river", "a red ball"]
SENTENCES = [f"{s} {v} {o} ." for s, v, o in itertools.product(SUBJECTS, VERBS, OBJECTS)]
MARKERS = ("SENTENCE_START", "SENTENCE_END", "UNKNOWN_TOKEN")


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def assert_ok(result):
    assert result.exit_code == 0, result.output
    assert result.exception is None


def assert_one_line_error(result, *fragments):
    """Exit != 0, a handled error (no traceback), one `Error:` line naming the problem."""
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert sum(line.startswith("Error") for line in lines) == 1, result.stderr
    message = lines[-1]  # a message running on to a second line would not start with Error
    assert message.startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def corpus(workdir):
    path = workdir / "tiny.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def tiny_training(corpus, out, *options):
    return run(
        "train", "--corpus", corpus, "--vocab-size", 30, "--hidden-size", 8, *options, "--out", out
    )


@pytest.fixture(scope="module")
def trained(workdir, corpus):
    out = workdir / "m.npz"
    return tiny_training(corpus, out, "--epochs", 2), out


@pytest.fixture(scope="module")
def model(trained):
    result, out = trained
    assert_ok(result)
    return out


@pytest.fixture(scope="module")
def vocab(model):
    return checkpoint.load(model).vocab


# -- train ------------------------------------------------------------------------------------


def test_train_exits_0_and_writes_a_loadable_model(trained):
    result, out = trained
    assert_ok(result)
    assert checkpoint.load(out).config.model.hidden_size == 8


def test_train_reports_the_sentences_parsed(trained):
    result, _ = trained
    assert f"Parsed {len(SENTENCES)} sentences." in result.stderr


def test_train_logs_a_loss_line_per_evaluation(trained):
    result, _ = trained
    steps = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    assert len(steps) == 3  # before training, then once per epoch
    assert steps[0].startswith("step 0 ")
    assert steps[-1].startswith(f"step {2 * len(SENTENCES)} ")


def test_train_prints_a_summary_on_stdout(trained):
    result, out = trained
    [line] = result.stdout.strip().splitlines()
    assert line.startswith(f"saved {out}:")
    assert " loss " in line


def corpus_loss(model_path):
    """Mean NLL per predicted token of the saved model over SENTENCES, computed here."""
    from rnnlm.model import Model

    saved = checkpoint.load(model_path)
    model = Model(saved.config.model, params=saved.params)
    total, count = 0.0, 0
    for text in SENTENCES:
        ids = saved.vocab.encode(tokenize(text))
        x, y = ids[:-1, None], ids[1:, None]
        total -= float(model.log_probs(x, y, np.ones(x.shape)).sum(dtype=np.float64))
        count += len(ids) - 1
    return total / count


def test_train_last_loss_is_the_saved_models_loss(trained):
    """Evaluations at epoch ends: the last one measured exactly the weights that were saved."""
    _, out = trained
    saved = checkpoint.load(out)
    assert saved.progress["last_loss"] == pytest.approx(corpus_loss(out), rel=1e-5)


def test_train_final_loss_is_the_saved_models_loss_when_eval_every_leaves_a_tail(corpus, tmp_path):
    out = tmp_path / "tail.npz"
    result = tiny_training(corpus, out, "--epochs", 1, "--eval-every", 25, "--json")
    assert_ok(result)
    summary = json.loads(result.stdout)
    assert summary["steps"] == len(SENTENCES)
    assert summary["final_loss"] == pytest.approx(corpus_loss(out), rel=1e-5)


def test_train_without_corpus_uses_the_sample_corpus_and_says_so(tmp_path):
    out = tmp_path / "sample.npz"
    result = run(
        "train", "--epochs", 1, "--hidden-size", 8, "--vocab-size", 50, "--out", out, "--json"
    )
    assert_ok(result)
    assert "built-in sample corpus" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["corpus"] == SAMPLE_SOURCE
    assert checkpoint.load(out).config.data.corpus is None


# -- sample -----------------------------------------------------------------------------------


def test_sample_prints_n_nonempty_sentences_without_markers(model):
    result = run("sample", "--model", model, "-n", 3, "--seed", 1)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert line.strip()
        assert not any(marker in line for marker in MARKERS)


def test_sample_is_reproducible_with_a_seed(model):
    first = run("sample", "--model", model, "-n", 3, "--seed", 1)
    second = run("sample", "--model", model, "-n", 3, "--seed", 1)
    assert_ok(first)
    assert first.stdout == second.stdout


def test_sample_respects_max_length(model):
    result = run("sample", "--model", model, "-n", 5, "--seed", 2, "--max-length", 3, "--json")
    assert_ok(result)
    sentences = json.loads(result.stdout)
    assert len(sentences) == 5
    for s in sentences:
        words = [t["token"] for t in s["tokens"]]
        assert 1 <= len(words) <= 3 and s["text"] == " ".join(words)
        assert all(0 < t["prob"] <= 1 for t in s["tokens"])


def test_sample_rejects_a_zero_temperature(model):
    result = run("sample", "--model", model, "--temperature", 0)
    assert_one_line_error(result, "temperature")


def test_sample_rejects_min_length_above_max_length(model):
    result = run("sample", "--model", model, "--min-length", 5, "--max-length", 3)
    assert_one_line_error(result, "min-length")


# -- score ------------------------------------------------------------------------------------


def score_json(model, *args, input=None):
    result = run("score", "--model", model, "--json", *args, input=input)
    assert_ok(result)
    return json.loads(result.stdout)


def test_score_json_log_prob_is_the_sum_of_the_tokens(model):
    [s] = score_json(model, "the cat sees the river .")["sentences"]
    assert math.fsum(t["log_prob"] for t in s["tokens"]) == pytest.approx(s["log_prob"], abs=1e-9)


def test_score_json_tokens_are_the_words_then_sentence_end(model):
    [s] = score_json(model, "The cat sees the river.")["sentences"]
    assert [t["token"] for t in s["tokens"]] == ["the", "cat", "sees", "the", "river", "."] + [
        "SENTENCE_END"
    ]
    assert s["n_tokens"] == len(s["tokens"])


def test_score_json_counts_unknown_words(model, vocab):
    text = "the zebra sees the quokka ."
    [s] = score_json(model, text)["sentences"]
    oov = [word for word in tokenize(text) if word not in vocab]
    assert oov == ["zebra", "quokka"]
    assert s["n_unknown"] == 2
    assert [t["token"] for t in s["tokens"] if t["unknown"]] == oov


def test_score_json_perplexity_is_exp_of_mean_token_nll(model):
    [s] = score_json(model, "a bird likes a red ball .")["sentences"]
    want = math.exp(-s["log_prob"] / s["n_tokens"])
    assert s["perplexity"] == pytest.approx(want, rel=1e-12)


def test_score_json_probs_are_exp_log_probs(model):
    [s] = score_json(model, "a bird likes a red ball .")["sentences"]
    for token in s["tokens"]:
        assert 0 < token["prob"] <= 1
        assert token["prob"] == pytest.approx(math.exp(token["log_prob"]), rel=1e-12)


def test_score_two_sentences_gives_corpus_perplexity(model):
    result = score_json(model, "the cat sees the river .", "my sister likes the dog .")
    tokens = [t for s in result["sentences"] for t in s["tokens"]]
    want = math.exp(-math.fsum(t["log_prob"] for t in tokens) / len(tokens))
    assert result["corpus_perplexity"] == pytest.approx(want, rel=1e-12)


def test_score_json_numbers_of_a_context_free_model_worked_out_by_hand(model, vocab, tmp_path):
    """21 tokens; p(the) = 1/2 and 1/40 for every other token, whatever came before:
    "the cat sees the river ."   7 tokens, "the" twice   perplexity (2**2 * 40**5) ** (1/7)
    "my sister likes the dog ."  7 tokens, "the" once    perplexity (2 * 40**6) ** (1/7)
    over both: (2**3 * 40**11) ** (1/14), from the tokens (not the mean of the two)."""
    import dataclasses

    assert len(vocab) == 21
    saved = checkpoint.load(model)
    params = dict(saved.params, **{"out/W": np.zeros_like(saved.params["out/W"])})
    params["out/b"] = np.log([0.5 if word == "the" else 1 / 40 for word in vocab.words])
    config = dataclasses.replace(
        saved.config, model=dataclasses.replace(saved.config.model, dtype="float64")
    )
    path = tmp_path / "context-free.npz"
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, params))
    result = score_json(path, "the cat sees the river .", "my sister likes the dog .")
    first, second = result["sentences"]
    assert [t["prob"] for t in first["tokens"]] == pytest.approx(
        [1 / 2, 1 / 40, 1 / 40, 1 / 2, 1 / 40, 1 / 40, 1 / 40], rel=1e-12
    )
    assert first["log_prob"] == pytest.approx(-2 * math.log(2) - 5 * math.log(40), rel=1e-12)
    assert first["perplexity"] == pytest.approx((2**2 * 40**5) ** (1 / 7), rel=1e-12)
    assert second["perplexity"] == pytest.approx((2 * 40**6) ** (1 / 7), rel=1e-12)
    assert result["corpus_perplexity"] == pytest.approx((2**3 * 40**11) ** (1 / 14), rel=1e-12)


def test_score_one_sentence_has_no_corpus_perplexity(model):
    assert "corpus_perplexity" not in score_json(model, "the cat sees the river .")


def test_score_file_scores_each_nonblank_line_like_arguments(model, tmp_path):
    texts = ["the cat sees the river .", "a small child follows a red ball ."]
    path = tmp_path / "sentences.txt"
    path.write_text(f"{texts[0]}\n\n{texts[1]}\n", encoding="utf-8")
    from_file = score_json(model, "--file", path)
    from_args = score_json(model, *texts)
    assert from_file == from_args


def test_score_file_dash_reads_stdin(model):
    texts = ["the cat sees the river .", "a small child follows a red ball ."]
    from_stdin = score_json(model, "--file", "-", input="\n".join(texts) + "\n")
    assert from_stdin == score_json(model, *texts)


def test_score_prints_a_readable_report(model):
    result = run("score", "--model", model, "the cat sees the zebra .", "a bird likes a ball .")
    assert_ok(result)
    assert "(unknown)" in result.stdout
    assert "perplexity" in result.stdout
    assert "corpus perplexity" in result.stdout


def test_score_a_sentence_of_only_unknown_words_is_valid(model):
    [s] = score_json(model, "zebra quokka wombat")["sentences"]
    assert s["n_unknown"] == 3
    assert s["n_tokens"] == 4 and math.isfinite(s["log_prob"])


# -- version and help -------------------------------------------------------------------------


def test_version():
    result = run("--version")
    assert_ok(result)
    assert __version__ in result.stdout


# Every command's --help, in one fresh interpreter, then the modules it holds.
HELP_ONLY = """
import sys
from rnnlm.cli import main
for name in [None, *main.commands]:
    try:
        main([name, "--help"] if name else ["--help"])
    except SystemExit as done:
        assert done.code == 0, (name, done.code)
heavy = ("aesara", "pytensor", "rnnlm.backend", "rnnlm.model", "numpy")
print(",".join(sorted(m for m in heavy if m in sys.modules)))
"""


def test_the_command_line_and_every_help_start_without_the_tensor_library():
    imported = subprocess.run(
        [sys.executable, "-c", "import sys, rnnlm.cli; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for heavy in ("aesara", "pytensor", "rnnlm.backend"):
        assert f"'{heavy}'" not in imported
    helped = subprocess.run(
        [sys.executable, "-c", HELP_ONLY], capture_output=True, text=True, check=True
    )
    assert helped.stdout.count("Usage: ") == 1 + len(main.commands)
    assert helped.stdout.splitlines()[-1] == ""  # none of them imported


def test_python_dash_m_rnnlm_is_the_command():
    done = subprocess.run(
        [sys.executable, "-m", "rnnlm", "sample", "--no-such-option"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2  # click's usage error, under the command's own name
    assert "Usage: rnnlm sample" in done.stderr


def test_every_option_has_help_text():
    for command in main.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, f"{command.name} {param.opts}"


@pytest.mark.parametrize("command", [[], *([name] for name in main.commands)], ids=str)
def test_every_command_has_help(command):
    result = run(*command, "--help")
    assert_ok(result)
    assert "Usage:" in result.stdout


# -- bad input: train -------------------------------------------------------------------------


def train_on(path, *extra):
    out = path.with_name("out.npz")
    return run("train", "--corpus", path, "--hidden-size", 8, "--epochs", 1, "--out", out, *extra)


def test_train_missing_corpus(tmp_path):
    assert_one_line_error(train_on(tmp_path / "missing.txt"), "missing.txt", "no such file")


def test_train_empty_corpus(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    assert_one_line_error(train_on(path), "empty.txt", "empty")


def test_train_corpus_of_blank_lines(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("\n   \n\t\n\n", encoding="utf-8")
    assert_one_line_error(train_on(path), "blank.txt")


def test_train_csv_without_sentences(tmp_path):
    path = tmp_path / "header-only.csv"
    path.write_text("subreddit,body\n", encoding="utf-8")
    assert_one_line_error(train_on(path), "header-only.csv", "no sentences")


def test_train_csv_without_the_column_lists_the_columns_present(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_text("subreddit,title\nAskReddit,hello there\n", encoding="utf-8")
    assert_one_line_error(train_on(path), "'body'", "'subreddit'", "'title'")


def test_train_non_utf8_corpus_names_the_byte_offset(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"the cat sat .\n" + "café au lait .\n".encode("latin-1"))
    assert_one_line_error(train_on(path), "UTF-8", "offset 17")


def test_train_vocab_size_too_small(corpus):
    assert_one_line_error(train_on(corpus, "--vocab-size", 3), "vocab_size")


@pytest.mark.parametrize(
    ("option", "value", "key"),
    [
        ("--hidden-size", 0, "hidden_size"),
        ("--epochs", 0, "epochs"),
        ("--lr", 0, "learning_rate"),
        ("--bptt-truncate", 0, "bptt_truncate"),
        ("--eval-every", -1, "eval_every"),
        ("--min-count", 0, "min_count"),
    ],
)
def test_train_rejects_a_bad_setting_naming_it(corpus, option, value, key):
    assert_one_line_error(train_on(corpus, option, value), key)


def test_train_into_a_folder_that_cannot_be_made(corpus, tmp_path):
    (tmp_path / "a-file").write_text("not a folder\n")
    out = tmp_path / "a-file" / "folder" / "m.npz"
    result = run("train", "--corpus", corpus, "--hidden-size", 8, "--epochs", 1, "--out", out)
    assert_one_line_error(result, "cannot create the output folder", "a-file")
    assert not out.parent.exists()


# -- bad input: score and sample --------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \t "], ids=["empty", "whitespace"])
def test_score_a_sentence_without_words(model, text):
    assert_one_line_error(run("score", "--model", model, text), "nothing to score")


def test_score_nothing(model):
    assert_one_line_error(run("score", "--model", model), "nothing to score")


def test_score_an_empty_file(model, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n", encoding="utf-8")
    assert_one_line_error(run("score", "--model", model, "--file", path), "empty.txt", "empty")


def test_score_a_non_utf8_file_names_the_byte(model, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"the cat .\n" + "café .\n".encode("latin-1"))
    assert_one_line_error(run("score", "--model", model, "--file", path), "UTF-8", "offset 13")


def test_score_a_large_non_utf8_file_names_the_byte_offset_in_the_file(model, tmp_path):
    path = tmp_path / "large.txt"
    good = b"the cat sees the river .\n" * 800  # 20,000 bytes
    path.write_bytes(good + b"caf\xe9 .\n")
    result = run("score", "--model", model, "--file", path)
    assert_one_line_error(result, "UTF-8", f"offset {len(good) + 3}")


def not_ours(tmp_path, kind, real_model):
    path = tmp_path / f"{kind}.npz"
    if kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("this is not a model\n", encoding="utf-8")
    elif kind == "plain-npz":
        np.savez(path, a=np.arange(5))
    elif kind == "truncated":
        data = real_model.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.arange(5))
    return path


NOT_OURS = ["random-bytes", "text", "plain-npz", "truncated"]


@pytest.mark.parametrize("kind", NOT_OURS)
def test_score_with_a_model_file_that_is_not_ours(model, tmp_path, kind):
    path = not_ours(tmp_path, kind, model)
    assert_one_line_error(run("score", "--model", path, "the cat"), path.name)


@pytest.mark.parametrize("kind", NOT_OURS)
def test_sample_with_a_model_file_that_is_not_ours(model, tmp_path, kind):
    path = not_ours(tmp_path, kind, model)
    assert_one_line_error(run("sample", "--model", path), path.name)


def test_score_with_a_npy_file_as_model(model, tmp_path):
    path = not_ours(tmp_path, "npy", model)
    assert_one_line_error(run("score", "--model", path, "the cat"), path.name)


@pytest.mark.parametrize("command", [["score", "the cat"], ["sample"]])
def test_missing_model_file(tmp_path, command):
    path = tmp_path / "missing.npz"
    assert_one_line_error(run(*command, "--model", path), "missing.npz", "not found")


# -- Ctrl-C -----------------------------------------------------------------------------------


def test_ctrl_c_during_training_saves_a_loadable_model_and_exits_0(tmp_path):
    out = tmp_path / "interrupted.npz"
    command = [sys.executable, "-c", "from rnnlm.cli import main; main()", "train"]
    options = ["--epochs", "100", "--hidden-size", "8", "--vocab-size", "50"]
    options += ["--eval-every", "20", "--out", str(out), "--json"]
    process = subprocess.Popen(
        command + options,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not out.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] is True
    saved = checkpoint.load(out)
    assert saved.progress["step"] == summary["steps"] > 0
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert os.path.getsize(out) > 0


def test_character_level_model_trains_samples_and_scores(corpus, tmp_path):
    out = tmp_path / "chars.npz"
    result = run(
        "train",
        "--corpus",
        corpus,
        "--level",
        "char",
        "--vocab-size",
        40,
        "--hidden-size",
        8,
        "--epochs",
        1,
        "--batch-size",
        8,
        "--optimizer",
        "adam",
        "--lr",
        0.01,
        "--out",
        out,
    )
    assert_ok(result)
    vocab = checkpoint.load(out).vocab
    specials = {SENTENCE_START, SENTENCE_END, UNKNOWN_TOKEN}
    assert all(len(word) == 1 for word in vocab.words if word not in specials)
    sampled = run("sample", "--model", out, "-n", 2, "--seed", 3, "--json")
    assert_ok(sampled)
    for sentence in json.loads(sampled.stdout):
        assert sentence["text"] == "".join(t["token"] for t in sentence["tokens"])
    scored = json.loads(run("score", "--model", out, "the cat", "--json").stdout)
    tokens = [t["token"] for t in scored["sentences"][0]["tokens"]]
    assert tokens == [*"the cat", vocab.end]


# -- progress bars, help text, compare ---------------------------------------------------------

# One child process, three commands, stderr on a pseudo-terminal (so the bars are drawn).
ON_A_TERMINAL = """
import sys
from rnnlm.cli import main
for args in sys.argv[1:]:
    main(args.split("\\t"), standalone_mode=False)
"""


def run_on_a_terminal(*commands, cwd):
    """stderr of `commands` (each a list of arguments), run on a pty 120 columns wide."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    args = ["\t".join(map(str, command)) for command in commands]
    # Every update drawn, so that a short run shows what a long one would.
    env = {**os.environ, "TQDM_MININTERVAL": "0"}
    process = subprocess.Popen(
        [sys.executable, "-c", ON_A_TERMINAL, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    try:
        while True:  # read as it comes: a full pty buffer would block the child
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        process.wait(timeout=60)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert process.returncode == 0, text[-3000:]
    return text


@pytest.mark.skipif(sys.platform != "linux", reason="needs a pty")
def test_progress_bars_on_a_terminal_show_speed_and_perplexity_under_the_log(corpus, tmp_path):
    import re

    out = tmp_path / "bar.npz"
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(SENTENCES[:6]) + "\n")
    train = ["train", "--corpus", corpus, "--vocab-size", 30, "--hidden-size", 4, "--epochs", 8]
    stderr = run_on_a_terminal(
        [*train, "--eval-every", 100, "--out", out],
        ["eval", "--model", out, "--corpus", corpus],
        ["score", "--model", out, "--file", lines],
        cwd=tmp_path,
    )
    renders = re.split(r"[\r\n]", stderr)
    training = [r for r in renders if " batches [" in r]
    assert any(re.search(r"loss=\d+\.\d{4}, ppl=\d+\.\d, tok/s=\d+\]", r) for r in training)
    assert "batch/s" not in stderr and "it/s" not in stderr
    # eval's bar, then score's: tokens/s and the running perplexity.
    assert len([r for r in renders if re.search(r"tok/s, ppl=\d+\.\d\d\]", r)]) >= 2
    # Each evaluation's log line starts a line of its own, above the bar, not after it.
    logged = [m.start() for m in re.finditer(r"step \d+  epoch ", stderr)]
    assert len(logged) >= 4
    assert all(stderr[start - 1] in "\r\n" for start in logged), stderr[-2000:]


def test_score_quiet_is_accepted_and_no_bar_is_drawn_off_a_terminal(model, tmp_path):
    path = tmp_path / "sentences.txt"
    path.write_text("the cat sees the river .\na bird likes a red ball .\n", encoding="utf-8")
    loud = run("score", "--model", model, "--file", path)
    quiet = run("score", "--model", model, "--file", path, "--quiet")
    assert_ok(loud)
    assert_ok(quiet)
    assert quiet.stdout == loud.stdout and "corpus perplexity" in quiet.stdout
    assert loud.stderr == quiet.stderr == ""  # CliRunner's stderr is not a terminal


@pytest.mark.skipif(sys.platform != "linux", reason="needs a pty")
def test_quiet_on_a_terminal_draws_no_bar_and_logs_nothing(model, corpus, tmp_path):
    """On a pseudo-terminal with --quiet: no bar and no log line. The control: eval and score
    draw their bars there without it (training's bar: the test above)."""
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(SENTENCES[:6]) + "\n")
    train = ["train", "--corpus", corpus, "--vocab-size", 30, "--hidden-size", 4, "--epochs", 1]
    commands = [
        ["eval", "--model", model, "--corpus", corpus],
        ["score", "--model", model, "--file", lines],
    ]
    loud = run_on_a_terminal(*commands, cwd=tmp_path)
    assert loud.count("tok/s") >= 2
    quiet = run_on_a_terminal(
        [*train, "--out", tmp_path / "t.npz", "--quiet"],
        *[[*command, "--quiet"] for command in commands],
        cwd=tmp_path,
    )
    assert (tmp_path / "t.npz").exists()
    assert "batches" not in quiet and "tok/s" not in quiet and "Parsed" not in quiet
    assert quiet.strip() == "", quiet[-2000:]


def test_eval_help_shows_a_plain_percent_sign():
    result = run("eval", "--help")
    assert_ok(result)
    assert "95 % interval" in " ".join(result.stdout.split()) and "%%" not in result.stdout


def copy_of(model, path, vocab=None, params=None):
    """The checkpoint `model` with another vocabulary or other weights."""
    ckpt = checkpoint.load(model)
    changed = checkpoint.Checkpoint(
        ckpt.config, vocab or ckpt.vocab, params or ckpt.params, ckpt.progress
    )
    checkpoint.save(path, changed)
    return path


def test_compare_refuses_models_with_different_vocabularies(model, vocab, corpus, tmp_path):
    from rnnlm.vocab import Vocabulary

    words = [("zebra" if word == "river" else word) for word in vocab.words]
    other = copy_of(model, tmp_path / "other.npz", vocab=Vocabulary(words, vocab.counts))
    result = run("compare", "--model", model, "--model", other, "--corpus", corpus)
    assert_one_line_error(result, "different vocabularies", "2 in only one")


def test_compare_without_a_contrary_resample_prints_p_below_one_in_n(model, corpus, tmp_path):
    from rnnlm.evaluate import Comparison

    params = checkpoint.load(model).params
    uniform = {name: np.zeros_like(value) if name.startswith("out/") else value
               for name, value in params.items()}  # fmt: skip
    flat = copy_of(model, tmp_path / "flat.npz", params=uniform)  # every word equally likely
    result = run("compare", "--model", model, "--model", flat, "--corpus", corpus, "--samples", 200)
    assert_ok(result)
    assert result.stdout.splitlines()[-1] == "model A is better (p < 0.005)"
    # Too few resamples to reach p < 0.05 even when none goes against the order.
    assert Comparison(10.0, 12.0, (1.0, 3.0), 0.0, 10).verdict.startswith(
        "too few resamples for a verdict (p < 0.1)"
    )
    assert Comparison(10.0, 12.0, (1.0, 3.0), 0.02, 100).verdict == "model A is better (p = 0.020)"
