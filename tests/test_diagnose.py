"""Gradient-flow diagnostics: what they measure must hold for models where the answer is known."""

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.diagnose import (
    gradient_check,
    gradient_decay,
    informative_entries,
    note,
    steps_per_tenfold_drop,
    untruncated_float64,
)
from rnnlm.model import Model
from rnnlm.vocab import build_vocabulary, count_tokens

SENTENCE = np.array([0, 3, 4, 5, 6, 7, 8, 9, 3, 4, 1], dtype=np.int32)
WORDS = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]


def save(model, path):
    """`model` as a checkpoint over a vocabulary of WORDS, as `rnnlm train` would write it."""
    vocab = build_vocabulary(count_tokens([WORDS]), model.config.vocab_size)
    config = Config(data=DataConfig(vocab_size=model.config.vocab_size), model=model.config)
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, model.params.values_dict()))
    return path


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
    assert note(result) == (
        "rnn-tanh: no gradient reaches even one step back (a zero recurrent matrix, or every "
        "unit dead)."
    )


def test_the_measurement_ignores_the_models_truncation(tanh_model):
    # bptt_truncate=2 would cut the gradient off; the diagnosis uses full BPTT.
    result = gradient_decay(tanh_model, [SENTENCE], max_distance=6)
    assert all(r > 0 for r in result["ratios"])


def test_tenfold_drop_distance_of_an_exact_exponential():
    assert steps_per_tenfold_drop(10.0 ** (-np.arange(8) / 3)) == pytest.approx(3.0)
    assert steps_per_tenfold_drop(np.ones(5) * 2.0 ** np.arange(5)) is None


def test_dead_relu_units_are_counted_and_live_ones_carry_the_gradient():
    config = ModelConfig(vocab_size=12, hidden_size=6, cell="rnn-relu")
    params = Model(config, seed=3).params.values_dict()
    # Units 0 and 1 can never rise above 0; the others always stay above it (their input is
    # at most ±1/sqrt(12) from the bias of 1) and keep 0.9 of their state.
    params["layer0/b"][:] = [-1e3, -1e3, 1, 1, 1, 1]
    params["layer0/W_rec"][:] = 0.9 * np.eye(6)
    result = gradient_decay(Model(config, params=params), [SENTENCE], max_distance=5)
    assert result["dead_units_share"] == pytest.approx(2 / 6)
    assert result["saturated_share"] is None  # a tanh statistic
    ratios = result["ratios"]
    assert all(0 < ratios[k + 1] < ratios[k] for k in range(5))
    steps = result["steps_per_tenfold_drop"]
    assert steps > 4
    assert note(result) == (
        f"rnn-relu: gradients shrink ×10 every {steps:.1f} steps (at k = 4 they keep "
        f"{ratios[4]:.2%} of their size): long-range gradients survive: truncating BPTT "
        "would lose them."
    )


def test_the_note_quotes_the_farthest_distance_measured_up_to_4():
    result = {"cell": "gru", "ratios": [1.0, 0.5, 0.25, 0.125], "steps_per_tenfold_drop": 3.3}
    assert "(at k = 3 they keep 12.50% of their size): truncating BPTT at 4" in note(result)
    result["ratios"] = [1.0, math.nan]
    assert (
        note(result)
        == "gru: gradients shrink ×10 every 3.3 steps: truncating BPTT at 4 loses little."
    )


def test_gradient_check_entries_are_ones_whose_gradient_is_not_zero():
    gradient = np.zeros((50, 4))
    gradient[[3, 17]] = [[0.5, -2, 1e-9, 0], [1, 1, 1, 1]]  # two words' rows, one tiny entry
    rng = np.random.default_rng(0)
    for _ in range(20):
        picked = informative_entries(gradient, 3, rng)
        assert len(set(picked)) == 3
        assert np.all(np.abs(gradient.ravel()[picked]) >= 0.5)
    assert len(informative_entries(np.zeros(5), 3, rng)) == 3  # nothing better: say so


def test_gradient_check_agrees_with_finite_differences(tanh_model):
    report = gradient_check(tanh_model, SENTENCE)
    assert set(report) == set(tanh_model.params)
    for check in report.values():
        assert check["relative_error"] < 1e-5
        assert check["entries"] == 3 and check["min_abs_gradient"] > 0


def test_diagnose_command_compares_models_and_writes_a_png(tmp_path, tanh_model):
    paths = []
    for cell in ("rnn-tanh", "lstm"):
        model = Model(ModelConfig(vocab_size=12, hidden_size=6, cell=cell), seed=2)
        paths += ["--model", save(model, tmp_path / f"{cell}.npz")]
    corpus = tmp_path / "text.txt"
    corpus.write_text(" ".join(WORDS * 2) + "\n")
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


def test_diagnose_gradcheck_checks_non_zero_gradients_of_one_hot_inputs(tmp_path, tanh_model):
    # No embedding: layer0/W_in has a row per word, and the sentence uses few of them.
    path = save(tanh_model, tmp_path / "tanh.npz")
    corpus = tmp_path / "text.txt"
    corpus.write_text("a b c b a\n")
    args = ["diagnose", "--model", path, "--corpus", corpus, "--out", tmp_path / "g.png"]
    args = [str(a) for a in [*args, "--max-distance", 3, "--gradcheck"]]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    [report] = json.loads(result.stdout)["models"]
    assert set(report["gradcheck"]) == set(tanh_model.params)
    for check in report["gradcheck"].values():
        assert check["relative_error"] < 1e-5
        assert check["entries"] == 3 and check["min_abs_gradient"] > 0
    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0, text.output
    line = next(line for line in text.stdout.splitlines() if "gradcheck layer0/W_in" in line)
    assert " over 3 entries (|gradient| " in line
    assert float(line.split("relative error ")[1].split()[0]) < 1e-5
