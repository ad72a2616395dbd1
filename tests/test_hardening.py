"""Hardening: kill -9 while a checkpoint is being written, no network at run time, and hostile
model files through every command that reads one.
"""

import io
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
from rnnlm.legacy import tutorial_vocabulary
from rnnlm.model import init_params
from rnnlm.vocab import build_vocabulary, count_tokens

SENTENCES = [
    f"{s} {v} {o} ."
    for s, v, o in itertools.product(
        ["the cat", "a dog", "my sister"], ["sees", "likes"], ["the river", "a red ball"]
    )
]


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def assert_ok(result):
    assert result.exit_code == 0, f"{result.exception!r}\n{result.output[-2000:]}"
    assert result.exception is None


def assert_one_line_error(result, *fragments):
    """Exit 1, a handled error (no traceback), one `Error:` line: the last on stderr."""
    detail = f"exit {result.exit_code}, {result.exception!r}\n{result.output[-2000:]}"
    assert result.exit_code == 1, detail
    assert isinstance(result.exception, SystemExit), detail
    assert "Traceback" not in result.output, detail
    assert result.stdout == "", detail
    lines = result.stderr.splitlines()
    assert sum(line.startswith("Error") for line in lines) == 1, detail
    assert lines[-1].startswith("Error: "), detail
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("hardening") / "tiny.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


# -- kill -9 while saving ---------------------------------------------------------------------

# The real `rnnlm train`, with one change so that a single compile serves many kills: once the
# trainer is built, the process forks a child per folder run0, run1, ... and each child trains
# into its own folder (the checkpoint path is relative) until it is killed.
FORKING_TRAIN = """
import os
from rnnlm import train
from rnnlm.cli import main

train_for_real = train.Trainer.run

def train_in_children(trainer):
    for i in range(int(os.environ["RNNLM_TEST_CHILDREN"])):
        if os.fork() == 0:
            try:
                os.chdir(f"run{i}")
                with open("pid", "w") as f:
                    f.write(str(os.getpid()))
                train_for_real(trainer)
            finally:
                os._exit(0)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            os._exit(0)

train.Trainer.run = train_in_children
main()
"""

# Seconds after the first checkpoint appears; None: the moment a temp file is seen, i.e.
# while a checkpoint is being written.
KILL_AT = [0.0, 0.3, 1.0, None, None, None]


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.002)


def is_gone(pid):
    """Dead: reaped, or a zombie (a SIGKILLed process writes nothing more)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone between open and read
        return True
    return state in ("Z", "X")


def temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(sys.platform != "linux", reason="needs fork and /proc")
def test_kill_9_during_save_never_leaves_an_unreadable_checkpoint(tmp_path, tiny):
    runs = [tmp_path / f"run{i}" for i in range(len(KILL_AT))]
    for folder in runs:
        folder.mkdir()
    env = {**os.environ, "RNNLM_TEST_CHILDREN": str(len(runs)), "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, "-c", FORKING_TRAIN, "train", "--corpus", str(tiny)]
    command += ["--vocab-size", "20", "--hidden-size", "4", "--epochs", "100000"]
    command += ["--eval-every", "1", "--out", "model.npz", "--quiet"]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:  # a file, not a pipe: six writers could fill a pipe
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # one process group: parent and children end together
        )
    caught_mid_write = 0
    try:
        for folder, delay in zip(runs, KILL_AT, strict=True):
            saved = folder / "model.npz"

            def started(saved=saved):
                assert process.poll() is None, log.read_text()[-3000:]
                return saved.exists()

            wait_until(started, 120, f"the first checkpoint in {folder.name}")
            pid = int((folder / "pid").read_text())
            if delay is None:
                deadline = time.monotonic() + 10
                while not temp_files(folder) and time.monotonic() < deadline:
                    pass  # spin: a write takes milliseconds
                caught_mid_write += bool(temp_files(folder))
            else:
                time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda pid=pid: is_gone(pid), 10, f"process {pid} to die")

            loaded = checkpoint.load(saved)
            assert loaded.progress["step"] >= 0
            if (folder / "model.best.npz").exists():
                checkpoint.load(folder / "model.best.npz")
            for name in temp_files(folder):  # kill -9 may leave one; never under our name
                assert name.startswith(".model.") and name not in ("model.npz", "model.best.npz")
            assert_ok(run("info", "--model", saved))
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)
    # Spinning on the folder catches a write in progress in well under a second; were none
    # caught, the test would not have tested a kill during a save.
    assert caught_mid_write >= 1, "no kill landed while a checkpoint was being written"


# -- no network -------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Every way out refuses, and the attempts are recorded (in case something swallows the
    error): sockets, DNS and nltk's downloader. nltk's data path is emptied too, as on a
    machine without nltk_data, so a tokenizer that needs downloaded data fails."""
    import nltk
    import nltk.data
    import nltk.downloader

    attempts = []

    def refuse(kind):
        def refused(*args, **kwargs):
            attempts.append((kind, args[:2]))
            raise OSError(f"test forbids {kind}")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("DNS"))
    monkeypatch.setattr(nltk, "download", refuse("nltk.download"))
    monkeypatch.setattr(nltk.downloader.Downloader, "download", refuse("nltk.download"))
    monkeypatch.setattr(nltk.data, "path", [])
    return attempts


def test_the_refusals_work(no_network):
    """The patches bite: without them the test below would prove nothing."""
    import nltk

    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 80), timeout=0.01)
    with socket.socket() as s, pytest.raises(OSError):
        s.connect(("192.0.2.1", 80))
    with pytest.raises(OSError):
        nltk.download("punkt_tab")
    with pytest.raises(LookupError):
        nltk.sent_tokenize("One. Two.")
    assert [kind for kind, _ in no_network] == [
        "socket.create_connection",
        "socket.connect",
        "nltk.download",
    ]


def test_no_command_touches_the_network(no_network, tmp_path):
    """CSV and prose go through Punkt, the word level through nltk's tokenizer: all offline.
    Every command runs here; each of its outputs is checked elsewhere."""
    csv_corpus = tmp_path / "posts.csv"
    rows = [f'"{a} {b}","x"' for a, b in zip(SENTENCES, reversed(SENTENCES), strict=True)]
    csv_corpus.write_text("body,other\n" + "\n".join(rows) + "\n", encoding="utf-8")
    prose = tmp_path / "prose.txt"
    prose.write_text(" ".join(SENTENCES) + "\n", encoding="utf-8")
    nbest = tmp_path / "nbest.txt"
    nbest.write_text("0 ||| the cat sees the river . ||| -1.5\n0 ||| a cat . ||| -2\n")
    tutorial = tmp_path / "tutorial.npz"
    words = len(tutorial_vocabulary(csv_corpus, 20))
    shapes = {"U": (3, words), "V": (words, 3), "W": (3, 3)}
    np.savez(tutorial, **{name: np.full(shape, 0.1, np.float32) for name, shape in shapes.items()})
    out = tmp_path / "m.npz"
    train = ["train", "--corpus", csv_corpus, "--vocab-size", 20, "--hidden-size", 4]
    assert_ok(run(*train, "--epochs", 1, "--out", out))
    assert_ok(run("sample", "--model", out, "-n", 2, "--seed", 0))
    assert_ok(run("score", "--model", out, "The cat sees the river. A dog likes it."))
    assert_ok(run("eval", "--model", out, "--corpus", csv_corpus))
    assert_ok(run("eval", "--model", out, "--corpus", prose, "--format", "prose"))
    assert_ok(run("info", "--model", out))
    assert_ok(run("fill", "--model", out, "the cat ___ the river ."))  # left to right: allowed
    assert_ok(run("compare", "--model", out, "--model", out, "--corpus", csv_corpus))
    assert_ok(run("rescore", "--model", out, "--nbest", nbest))
    diagnose = ["diagnose", "--model", out, "--corpus", csv_corpus, "--max-distance", 3]
    assert_ok(run(*diagnose, "--out", tmp_path / "g.png"))
    assert_ok(run("plot", out, "--out", tmp_path / "curves.png"))
    imported = tmp_path / "imported.npz"
    vocab = ["--vocab-corpus", csv_corpus, "--vocab-size", 20]
    assert_ok(run("import-tutorial", "--npz", tutorial, *vocab, "--out", imported))
    assert_ok(run("score", "--model", imported, "the cat sees the river ."))
    assert no_network == []


# -- hostile model files ----------------------------------------------------------------------

MARKER = "pwned.marker"


class Payload:
    """Unpickling this creates a file: proof that pickled code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A valid checkpoint built without compiling anything."""
    folder = tmp_path_factory.mktemp("models")
    vocab = build_vocabulary(count_tokens([s.split() for s in SENTENCES]), 20)
    config = Config(
        data=DataConfig(vocab_size=20),
        model=ModelConfig(vocab_size=len(vocab), hidden_size=4),
        train=TrainConfig(epochs=1),
    )
    params = {
        name: value.astype(np.float32)
        for name, value in init_params(config.model, np.random.default_rng(0)).items()
    }
    path = folder / "good.npz"
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, params, {"step": 1}))
    return path


def contents(path):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return arrays, json.loads(str(arrays["meta"]))


def with_meta(arrays, meta, **changes):
    """A copy of `arrays` whose meta is `meta` with `changes` applied to nested keys
    (written `section__key=value` for meta["config"][section][key])."""
    meta = json.loads(json.dumps(meta))
    for name, value in changes.items():
        if "__" in name:
            section, key = name.split("__")
            meta["config"][section][key] = value
        else:
            meta[name] = value
    return {**arrays, "meta": np.array(json.dumps(meta))}


def npy_bytes(array=None, header=None):
    buffer = io.BytesIO()
    if header is None:
        np.save(buffer, array)
    else:
        np.lib.format.write_array_header_1_0(buffer, header)
        buffer.write(b"\0" * 64)
    return buffer.getvalue()


def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def craft(kind, good, folder):
    """A hostile variant of `good`, and a fragment its error message must hold."""
    arrays, meta = contents(good)
    path = folder / f"{kind}.npz"
    marker = folder / MARKER
    w_rec = arrays["param/layer0/W_rec"]
    vocab_size = len(meta["vocab"]["words"])
    if kind == "pickled-param":
        arrays["param/out/W"] = np.array([Payload(marker)], dtype=object)
        np.savez(path, **arrays)
        return path, "not an rnnlm model file"
    if kind == "pickled-meta":
        arrays["meta"] = np.array([{"config": Payload(marker)}], dtype=object)
        np.savez(path, **arrays)
        return path, "not an rnnlm model file"
    if kind == "pickled-zip-member":  # a raw pickle, not an .npy, inside the zip
        import pickle

        members = {f"{name}.npy": npy_bytes(value) for name, value in arrays.items()}
        members["evil.pkl"] = pickle.dumps(Payload(marker))
        write_zip(path, members)
        return path, "not an rnnlm model file"
    variants = {
        "huge-hidden-size": ({"model__hidden_size": 10**9}, "layer0/W_in"),
        "huge-embedding": ({"model__embedding_size": 10**12}, "parameters do not match"),
        "negative-hidden-size": ({"model__hidden_size": -4}, "model.hidden_size"),
        "hidden-size-as-text": ({"model__hidden_size": "4"}, "model.hidden_size"),
        "unknown-cell": ({"model__cell": "transformer"}, "model.cell"),
        "vocab-size-mismatch": ({"model__vocab_size": 21}, "vocabulary has"),
        "unknown-config-key": ({"model__exec": "rm -rf /"}, "model.exec"),
        "format-version-2": ({"format_version": 2}, "format version 2"),
        "format-version-text": ({"format_version": "1"}, "format version '1'"),
        "other-format": ({"format": "pytorch"}, "not an rnnlm model file"),
        "config-not-a-table": ({"config": [1, 2]}, "config must be a table"),
        "vocab-not-a-table": ({"vocab": "the cat"}, "vocabulary must be"),
        "vocab-duplicate-word": (
            {"vocab": {**meta["vocab"], "words": meta["vocab"]["words"][:1] * vocab_size}},
            "appears twice",
        ),
        "progress-not-a-table": ({"progress": 7}, "progress"),
    }
    if kind in variants:
        changes, fragment = variants[kind]
        np.savez(path, **with_meta(arrays, meta, **changes))
        return path, fragment
    array_variants = {
        "nan-weights": ("param/layer0/W_rec", np.full_like(w_rec, np.nan), "NaN"),
        "inf-weights": ("param/layer0/W_rec", np.full_like(w_rec, np.inf), "NaN or infinite"),
        "int-weights": ("param/layer0/W_rec", w_rec.astype(np.int64), "layer0/W_rec"),
        "wrong-shape": ("param/out/b", arrays["param/out/b"][:-1], "out/b"),
        "vocab-size-mismatch-in-arrays": (
            "param/out/W",
            np.zeros((4, 25), np.float32),
            "out/W",
        ),
        "extra-param": ("param/backdoor", np.zeros(3, np.float32), "backdoor"),
        "nan-optimizer-state": ("optim/sgd/x", np.array([np.nan]), "not finite"),
        "carry-misnumbered": ("carry/5", np.zeros((1, 4), np.float32), "numbered"),
        "meta-not-json": ("meta", np.array("{not json"), "not valid JSON"),
        "meta-deeply-nested": ("meta", np.array("[" * 100_000), "not valid JSON"),
        "meta-bytes": ("meta", np.frombuffer(b"{}", np.uint8), "no metadata"),
    }
    name, value, fragment = array_variants[kind]
    arrays[name] = value
    np.savez(path, **arrays)
    return path, fragment


HOSTILE = [
    "pickled-param",
    "pickled-meta",
    "pickled-zip-member",
    "huge-hidden-size",
    "huge-embedding",
    "negative-hidden-size",
    "hidden-size-as-text",
    "unknown-cell",
    "vocab-size-mismatch",
    "unknown-config-key",
    "format-version-2",
    "format-version-text",
    "other-format",
    "config-not-a-table",
    "vocab-not-a-table",
    "vocab-duplicate-word",
    "progress-not-a-table",
    "nan-weights",
    "inf-weights",
    "int-weights",
    "wrong-shape",
    "vocab-size-mismatch-in-arrays",
    "extra-param",
    "nan-optimizer-state",
    "carry-misnumbered",
    "meta-not-json",
    "meta-deeply-nested",
    "meta-bytes",
]


def every_command(path, corpus):
    """(name, arguments) for each command that reads a model file."""
    nbest = corpus.with_name("nbest.txt")
    nbest.write_text("0 ||| the cat sees the river . ||| -1.5\n", encoding="utf-8")
    return [
        ("score", ["score", "--model", path, "the cat sees the river ."]),
        ("sample", ["sample", "--model", path, "-n", 1]),
        ("eval", ["eval", "--model", path, "--corpus", corpus]),
        ("info", ["info", "--model", path]),
        ("fill", ["fill", "--model", path, "the cat ___ the river ."]),
        ("rescore", ["rescore", "--model", path, "--nbest", nbest]),
        ("compare", ["compare", "--model", path, "--model", path, "--corpus", corpus]),
        ("train --resume", ["train", "--resume", path, "--out", path.with_name("resumed.npz")]),
    ]


def test_the_pickle_payloads_would_run_if_pickles_were_allowed(good, tmp_path):
    for kind in ("pickled-param", "pickled-meta"):
        path, _ = craft(kind, good, tmp_path)
        with np.load(path, allow_pickle=True) as npz:
            for name in npz.files:
                npz[name]
        assert (tmp_path / MARKER).exists()
        (tmp_path / MARKER).unlink()


@pytest.mark.parametrize("kind", HOSTILE)
def test_a_hostile_model_file_is_one_line_error_in_every_command(good, tiny, tmp_path, kind):
    path, fragment = craft(kind, good, tmp_path)
    for command, args in every_command(path, tiny):
        message = assert_one_line_error(run(*args))
        assert fragment in message, (command, message)
    assert not (tmp_path / MARKER).exists(), "unpickling ran code from a model file"
    assert not path.with_name("resumed.npz").exists()


def test_the_good_model_file_is_accepted(good):
    """The hostile files differ from this one only where named."""
    assert_ok(run("info", "--model", good))


# -- regressions: model files that once hung or crashed a command ----------------------------


class TookTooLong(Exception):
    pass


def within(seconds, function):
    """function(), interrupted by SIGALRM after `seconds`."""

    def alarm(signum, frame):
        raise TookTooLong(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return function()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_billion_layers_in_a_model_file_is_refused_at_once(good, tmp_path):
    arrays, meta = contents(good)
    path = tmp_path / "layers.npz"
    np.savez(path, **with_meta(arrays, meta, model__layers=10**9))
    result = within(1.0, lambda: run("info", "--model", path))
    assert_one_line_error(result, "layers.npz")


def test_an_absurd_array_header_in_a_model_file_is_one_line_error(good, tmp_path):
    arrays, _ = contents(good)
    members = {f"{name}.npy": npy_bytes(value) for name, value in arrays.items()}
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**46,)}
    members["param/out/W.npy"] = npy_bytes(header=header)
    path = tmp_path / "header.npz"
    write_zip(path, members)
    assert_one_line_error(run("info", "--model", path), "header.npz")
