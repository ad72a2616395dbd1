"""Gradient-flow diagnostics: what they measure must hold for models where the answer is known."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.diagnose import (
    gradient_check,
    gradient_decay,
    steps_per_tenfold_drop,
    untruncated_float64,
)
from rnnlm.model import Model
from rnnlm.vocab import build_vocabulary, count_tokens

SENTENCE = np.array([0, 3, 4, 5, 6, 7, 8, 9, 3, 4, 1], dtype=np.int32)


@pytest.fixture(scope="module")
def tanh_model():
    return Model(ModelConfig(vocab_size=12, hidden_size=6, bptt_truncate=2), seed=1)


def test_a_loss_never_depends_on_later_states(tanh_model):
    norms, _ = untruncated_float64(tanh_model).gradient_flow(SENTENCE)
    assert np.all(np.triu(norms, k=1) == 0)
    assert np.all(np.diag(norms) > 0)


def test_without_recurrence_the_gradient_stops_at_distance_zero(tanh_model):
    params = tanh_model.params.values_dict()
    params["layer0/W_rec"][:] = 0
    model = Model(tanh_model.config, params=params)
    result = gradient_decay(model, [SENTENCE], max_distance=5)
    assert result["ratios"][0] == 1.0
    assert result["ratios"][1:] == [0.0] * 5


def test_the_measurement_ignores_the_models_truncation(tanh_model):
    # bptt_truncate=2 would cut the gradient off; the diagnosis uses full BPTT.
    result = gradient_decay(tanh_model, [SENTENCE], max_distance=6)
    assert all(r > 0 for r in result["ratios"])


def test_tenfold_drop_distance_of_an_exact_exponential():
    assert steps_per_tenfold_drop(10.0 ** (-np.arange(8) / 3)) == pytest.approx(3.0)
    assert steps_per_tenfold_drop(np.ones(5) * 2.0 ** np.arange(5)) is None


def test_gradient_check_agrees_with_finite_differences(tanh_model):
    errors = gradient_check(tanh_model, SENTENCE)
    assert set(errors) == set(tanh_model.params)
    assert max(errors.values()) < 1e-5


def test_diagnose_command_compares_models_and_writes_a_png(tmp_path, tanh_model):
    words = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
    vocab = build_vocabulary(count_tokens([words]), 12)
    paths = []
    for cell in ("rnn-tanh", "lstm"):
        model = Model(ModelConfig(vocab_size=12, hidden_size=6, cell=cell), seed=2)
        config = Config(data=DataConfig(vocab_size=12), model=model.config)
        path = tmp_path / f"{cell}.npz"
        checkpoint.save(path, checkpoint.Checkpoint(config, vocab, model.params.values_dict()))
        paths += ["--model", path]
    corpus = tmp_path / "text.txt"
    corpus.write_text(" ".join(words * 2) + "\n")
    out = tmp_path / "g.png"
    result = CliRunner().invoke(
        main,
        [
            "diagnose",
            *map(str, paths),
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--max-distance",
            "5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["cell"] for m in report["models"]] == ["rnn-tanh", "lstm"]
    assert all(m["ratios"][0] == 1.0 and len(m["ratios"]) == 6 for m in report["models"])
    assert out.read_bytes()[:4] == b"\x89PNG"
