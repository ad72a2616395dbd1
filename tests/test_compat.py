"""Files written by rnnlm 0.1 still load: a checkpoint made here, byte for byte in 0.1's format
(its progress table, an integer bptt_truncate, momentum state), is scored, described and
resumed by this version.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.config import Config

WORDS = ["SENTENCE_START", "SENTENCE_END", "the", "cat", "sat", ".", "a", "dog", "UNKNOWN_TOKEN"]
HIDDEN = 4
# The config table of a 0.1 checkpoint, every key as 0.1 wrote it.
CONFIG_0_1 = {
    "data": {
        "corpus": "c.txt", "format": None, "column": "body", "lowercase": True, "level": "word",
        "unknown": "UNKNOWN_TOKEN", "vocab_size": 30, "min_count": 1, "valid": None,
        "valid_fraction": 0.0, "prepared": None,
    },
    "model": {
        "vocab_size": len(WORDS), "hidden_size": HIDDEN, "cell": "rnn-tanh", "layers": 1,
        "embedding_size": 0, "bidirectional": False, "bias": True, "dropout": 0.0,
        "tie_weights": False, "init_scale": 0.0, "identity_init": False, "hard_sigmoid": False,
        "bptt_truncate": 4, "dtype": "float32",
    },
    "train": {
        "mode": "sentence", "batch_size": 1, "bptt": 35, "epochs": 1, "optimizer": "momentum",
        "learning_rate": 0.005, "momentum": 0.9, "rho": 0.9, "beta1": 0.9, "beta2": 0.999,
        "epsilon": 1e-06, "clip_norm": 0.0, "weight_decay": 0.0, "halve_on_rise": True,
        "lr_decay": 1.0, "lr_decay_start": 0, "patience": 0, "eval_every": 0,
        "eval_sentences": 1000, "seed": 0, "distributed": False,
    },
}  # fmt: skip
PROGRESS_0_1 = {
    "epoch": 1, "batch": 0, "step": 12, "examples_seen": 12, "tokens_seen": 60,
    "learning_rate": 0.0025, "best_loss": 1.75, "last_loss": 1.75, "bad_evals": 0,
    "wall_s": 3.5,
}  # fmt: skip


def write_0_1_checkpoint(path):
    rng = np.random.default_rng(0)
    shapes = {
        "layer0/W_in": (len(WORDS), HIDDEN),
        "layer0/W_rec": (HIDDEN, HIDDEN),
        "layer0/b": (HIDDEN,),
        "out/W": (HIDDEN, len(WORDS)),
        "out/b": (len(WORDS),),
    }
    arrays = {}
    for name, shape in shapes.items():
        arrays[f"param/{name}"] = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
        arrays[f"optim/momentum/velocity/{name}"] = np.zeros(shape, np.float32)
    meta = {
        "format": "rnnlm-checkpoint",
        "format_version": 1,
        "config": CONFIG_0_1,
        "vocab": {
            "words": WORDS,
            "counts": [6, 6, 6, 3, 3, 6, 3, 3, 0],
            "unknown": "UNKNOWN_TOKEN",
            "start": "SENTENCE_START",
            "end": "SENTENCE_END",
        },
        "progress": PROGRESS_0_1,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compat")
    (folder / "c.txt").write_text("the cat sat .\na dog sat .\n")
    return write_0_1_checkpoint(folder / "old.npz")


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_a_0_1_checkpoint_loads_with_its_config_and_progress(old):
    ckpt = checkpoint.load(old)
    # every 0.1 setting as written; settings added since (model.fused, ...) at their defaults
    defaults = Config().to_dict()
    expected = {section: defaults[section] | values for section, values in CONFIG_0_1.items()}
    assert ckpt.config.to_dict() == expected
    assert ckpt.config.model.softmax == "full" and not ckpt.tables  # no output tables in 0.1
    assert ckpt.progress == PROGRESS_0_1
    assert ckpt.config.model.bptt_truncate == 4


def test_a_0_1_checkpoint_scores_and_describes(old):
    [sentence] = json.loads(run("score", "--model", old, "the cat sat .", "--json").stdout)[
        "sentences"
    ]
    assert sentence["n_tokens"] == 5 and np.isfinite(sentence["log_prob"])
    info = json.loads(run("info", "--model", old, "--json").stdout)
    assert info["progress"] == PROGRESS_0_1 and info["parameters"] == 4 * 9 + 16 + 4 + 36 + 9


def test_a_0_1_checkpoint_resumes_where_it_stopped(old, tmp_path, monkeypatch):
    monkeypatch.chdir(old.parent)  # where its corpus, c.txt, is
    out = tmp_path / "m.npz"  # a 0.1 run folder: the latest and the best model
    for name in ("m.npz", "m.best.npz"):
        (tmp_path / name).write_bytes(old.read_bytes())
    result = run(
        "train", "--corpus", "c.txt", "--vocab-size", 30, "--hidden-size", HIDDEN,
        "--optimizer", "momentum", "--epochs", 2, "--resume", out, "--out", out,
    )  # fmt: skip
    assert "Resuming at epoch 2, step 12, learning rate 0.0025." in result.stderr
    resumed = checkpoint.load(out)
    assert resumed.progress["epoch"] == 2 and resumed.progress["step"] == 12 + 2
    assert resumed.config.model.bptt_truncate == 4
