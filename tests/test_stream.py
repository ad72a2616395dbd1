"""Stream mode against independent oracles.

The batch layout against arrays worked out by hand; states carried from window to window
against one long numpy forward pass (`rnnlm.reference.NumpyRNN`) and one long single-window
call; the training gradient of a window against finite differences with the carried states
held constant (full BPTT inside the window, nothing through the previous window's states,
the summed NLL divided by the batch columns); the trainer's carry within and across epochs.
All float64.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnnlm import backend, evaluate
from rnnlm.batches import stream, stream_batches, stream_ids
from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
from rnnlm.data import load_training_data
from rnnlm.evaluate import sentence_log_probs
from rnnlm.model import Model
from rnnlm.reference import NumpyRNN
from rnnlm.train import Trainer

# -- the layout, worked by hand ------------------------------------------------------------------

# Encoded sentences, both markers included (0 = SENTENCE_START, 1 = SENTENCE_END).
LAYOUT = [[0, 5, 6, 1], [0, 7, 1], [0, 8, 9, 4, 1], [0, 3, 2, 1]]


def test_stream_ids_keep_only_the_first_start_marker():
    sentences = [np.array(s, np.int32) for s in LAYOUT]
    assert stream_ids(sentences).tolist() == [0, 5, 6, 1, 7, 1, 8, 9, 4, 1, 3, 2, 1]


def test_stream_cuts_contiguous_columns_and_drops_the_tail():
    # 13 ids, 3 columns: 4 rows of 3 = 12 ids, the last SENTENCE_END is dropped.
    data = stream([np.array(s, np.int32) for s in LAYOUT], batch_size=3)
    want = [
        [0, 7, 4],
        [5, 1, 1],
        [6, 8, 3],
        [1, 9, 2],
    ]
    assert data.dtype == np.int32
    np.testing.assert_array_equal(data, want)


def test_stream_windows_offset_targets_by_one_step_and_end_with_a_short_window():
    data = stream([np.array(s, np.int32) for s in LAYOUT], batch_size=3)
    windows = list(stream_batches(data, bptt=2, dtype="float64"))
    # 3 predictions per column in windows of 2: a full window, then one step.
    want = [
        ([[0, 7, 4], [5, 1, 1]], [[5, 1, 1], [6, 8, 3]]),
        ([[6, 8, 3]], [[1, 9, 2]]),
    ]
    assert len(windows) == len(want)
    for (x, y, mask), (want_x, want_y) in zip(windows, want, strict=True):
        np.testing.assert_array_equal(x, want_x)
        np.testing.assert_array_equal(y, want_y)
        assert mask.dtype == np.float64 and mask.shape == x.shape and mask.all()


@pytest.mark.parametrize("bptt", [1, 3, 50])
def test_every_stream_position_but_the_first_of_a_column_is_predicted_once(bptt):
    data = stream([np.array(s, np.int32) for s in LAYOUT], batch_size=3)
    windows = list(stream_batches(data, bptt))
    assert [len(x) for x, _, _ in windows] == {1: [1, 1, 1], 3: [3], 50: [3]}[bptt]
    np.testing.assert_array_equal(np.concatenate([x for x, _, _ in windows]), data[:-1])
    np.testing.assert_array_equal(np.concatenate([y for _, y, _ in windows]), data[1:])


def test_a_stream_shorter_than_two_rows_is_an_error():
    with pytest.raises(ValueError, match="too short"):
        stream([np.array([0, 5, 6, 1], np.int32)], batch_size=3)  # 4 ids: one row of 3


# -- carried states = one long forward pass ------------------------------------------------------

VOCAB, HIDDEN = 7, 3


def tutorial_config(**overrides) -> ModelConfig:
    """The tutorial's RNN (one-hot input, tanh, no biases): what `NumpyRNN` computes."""
    values = dict(vocab_size=VOCAB, hidden_size=HIDDEN, bias=False, bptt_truncate=-1)
    return ModelConfig(**{**values, "dtype": "float64", **overrides})


def random_sentences(seed: int, count: int, vocab: int = VOCAB) -> list[np.ndarray]:
    """Encoded sentences of 1 to 6 words (ids 2 .. vocab-1) between the markers 0 and 1."""
    rng = np.random.default_rng(seed)
    return [
        np.array([0, *rng.integers(2, vocab, rng.integers(1, 7)), 1], np.int32)
        for _ in range(count)
    ]


@pytest.fixture(scope="module")
def tutorial_model():
    """A float64 tutorial RNN with weights large enough that every state matters."""
    model = Model(tutorial_config(), seed=4)
    rng = np.random.default_rng(8)
    model.params.assign(
        {name: rng.normal(0.0, 0.8, v.shape) for name, v in model.params.values_dict().items()}
    )
    return model


def numpy_stream_log_probs(model: Model, data: np.ndarray) -> np.ndarray:
    """(N - 1, B) log p of data[1:] given everything before it in its column, by one numpy
    forward pass per column over the whole column: no windows, nothing carried."""
    values = model.params.values_dict()
    rnn = NumpyRNN(U=values["layer0/W_in"].T, V=values["out/W"].T, W=values["layer0/W_rec"].T)
    columns = []
    for column in data.T:
        o, _ = rnn.forward(column[:-1])
        columns.append(np.log(o[np.arange(len(column) - 1), column[1:]]))
    return np.stack(columns, axis=1)


def windowed_log_probs(model: Model, data: np.ndarray, bptt: int, carry: bool = True):
    """Log-probs window by window, each window's final states carried into the next."""
    states, pieces = None, []
    for x, y, mask in stream_batches(data, bptt, "float64"):
        log_p, finals = model.log_probs_and_states(x, y, mask, states)
        pieces.append(log_p)
        states = finals if carry else None
    return np.concatenate(pieces), states


@pytest.fixture(scope="module")
def tutorial_stream():
    """3 columns of 14 rows: windows of 4, 4, 4 and a short last one of 1."""
    data = stream(random_sentences(1, 12), batch_size=3)[:14]
    assert data.shape == (14, 3)
    return data


def test_carried_states_equal_one_long_numpy_forward_pass(tutorial_model, tutorial_stream):
    got, _ = windowed_log_probs(tutorial_model, tutorial_stream, bptt=4)
    want = numpy_stream_log_probs(tutorial_model, tutorial_stream)
    assert got.shape == want.shape == (13, 3)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)
    # The oracle tells carried states from fresh ones: past the first window they differ.
    fresh, _ = windowed_log_probs(tutorial_model, tutorial_stream, bptt=4, carry=False)
    assert np.abs(fresh[4:] - want[4:]).max() > 1e-3


@pytest.fixture(scope="module")
def lstm_model():
    """Two LSTM layers: four state tensors to carry, in the right order."""
    config = ModelConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        cell="lstm",
        layers=2,
        embedding_size=4,
        bptt_truncate=-1,
        dtype="float64",
    )
    model = Model(config, seed=5)
    rng = np.random.default_rng(9)
    model.params.assign(
        {name: rng.normal(0.0, 0.8, v.shape) for name, v in model.params.values_dict().items()}
    )
    return model


def test_every_state_of_a_stacked_lstm_is_carried(lstm_model, tutorial_stream):
    data = tutorial_stream
    got, finals = windowed_log_probs(lstm_model, data, bptt=4)
    x, y = data[:-1], data[1:]
    want, long_finals = lstm_model.log_probs_and_states(x, y, np.ones(x.shape))
    assert len(finals) == lstm_model.n_states == 4
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)
    for state, long_state in zip(finals, long_finals, strict=True):
        np.testing.assert_allclose(state, long_state, rtol=1e-10, atol=1e-14)


def test_stream_evaluation_equals_one_long_numpy_forward_pass(tutorial_model, monkeypatch):
    """`sentence_log_probs(..., "stream")`: one column, cut into windows, split back into
    sentences; the same numbers as one pass over the whole text."""
    monkeypatch.setattr(evaluate, "STREAM_BPTT", 5)  # several windows over a short text
    sentences = random_sentences(2, 6)
    ids = stream_ids(sentences)
    assert len(ids) - 1 > 2 * evaluate.STREAM_BPTT
    streamed = sentence_log_probs(tutorial_model, sentences, "stream")
    want = numpy_stream_log_probs(tutorial_model, ids[:, None])[:, 0]
    assert [len(lp) for lp in streamed] == [len(s) - 1 for s in sentences]
    np.testing.assert_allclose(np.concatenate(streamed), want, rtol=1e-10, atol=0)


# -- gradients stop at window boundaries, and only there -----------------------------------------

FD_STEP = 1e-4  # fourth-order central differences, as in test_model


def fourth_order_difference(f, shared, index, h: float = FD_STEP) -> float:
    """d f / d shared[index] by (f(-2h) - 8 f(-h) + 8 f(h) - f(2h)) / 12h; restores the value."""
    base = shared.get_value()

    def at(delta):
        moved = base.copy()
        moved[index] += delta
        shared.set_value(moved)
        return f()

    value = (at(-2 * h) - 8 * at(-h) + 8 * at(h) - at(2 * h)) / (12 * h)
    shared.set_value(base)
    return value


@pytest.fixture(scope="module")
def window_gradients(tutorial_model):
    """For the second window of a 2-column stream, per parameter entry:

    - `step`: the gradient the compiled training step takes (captured by an update rule that
      stores it), the step fed the states carried out of window 1;
    - `held`: finite differences of window 2's summed NLL, window 1's final states held at
      their values (constants);
    - `through`: finite differences of window 2's summed NLL when window 1 is recomputed too:
      the long graph's gradient of window 2's loss, the part through the carried states
      included.
    """
    model = tutorial_model
    data = stream(random_sentences(3, 10), batch_size=2)
    (x1, y1, m1), (x2, y2, m2) = list(stream_batches(data, 4, "float64"))[:2]
    assert x1.shape == x2.shape == (4, 2)
    stores = {
        name: backend.shared(np.zeros_like(value), name=f"captured/{name}")
        for name, value in model.params.values_dict().items()
    }
    step = model.compile_train_step(lambda params, grads: {stores[n]: grads[n] for n in params})
    _, carried = model.log_probs_and_states(x1, y1, m1)
    nll, tokens, *finals = step(x2, y2, m2, *carried)
    captured = {name: store.get_value() for name, store in stores.items()}

    def window_2_held() -> float:
        return -float(model.log_probs(x2, y2, m2, carried).sum())

    def window_2_through() -> float:
        _, states = model.log_probs_and_states(x1, y1, m1)
        return -float(model.log_probs(x2, y2, m2, states).sum())

    rows = []
    for name, shared in model.params.items():
        for index in np.ndindex(shared.get_value().shape):
            rows.append(
                (
                    name,
                    captured[name][index],
                    fourth_order_difference(window_2_held, shared, index),
                    fourth_order_difference(window_2_through, shared, index),
                )
            )
    names = [r[0] for r in rows]
    step_grad, held, through = (np.array([r[k] for r in rows]) for k in (1, 2, 3))
    return dict(
        names=names,
        step=step_grad,
        held=held,
        through=through,
        columns=x2.shape[1],
        nll=float(nll),
        tokens=float(tokens),
        want_nll=window_2_held(),
    )


def relative_errors(a: np.ndarray, b: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    return np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)


def test_window_gradient_is_full_bptt_inside_the_window_with_carried_states_held(
    window_gradients,
):
    """bptt_truncate = -1: the step's gradient (times the columns, see the divisor test) is
    the finite difference of the window's loss with the carried states as constants, so
    the backward pass runs through every step of the window and stops at its start."""
    g = window_gradients
    errors = relative_errors(g["step"] * g["columns"], g["held"])
    worst = int(np.argmax(errors))
    assert errors[worst] < 1e-6, (g["names"][worst], errors[worst])
    assert g["nll"] == pytest.approx(g["want_nll"], rel=1e-12)
    assert g["tokens"] == 8


def test_window_gradient_has_nothing_through_the_previous_windows_states(window_gradients):
    """The long graph's gradient of the same loss differs by the part through window 1's
    states: nonzero here (so this test can tell), and absent from the training step."""
    g = window_gradients
    through_states = g["through"] - g["held"]
    recurrent = np.array([name == "layer0/W_rec" for name in g["names"]])
    assert np.abs(through_states[recurrent]).max() > 1e-2
    errors = relative_errors(g["step"] * g["columns"], g["through"])
    assert errors.max() > 1e-2  # the step did not take the long graph's gradient


def test_stream_objective_is_the_summed_nll_divided_by_the_batch_columns(window_gradients):
    """Zaremba et al.'s objective: per column, summed over time; not per token (8 here)."""
    g = window_gradients
    big = np.abs(g["held"]) > 1e-3
    ratios = g["held"][big] / g["step"][big]
    np.testing.assert_allclose(ratios, g["columns"], rtol=1e-6)


# -- the trainer carries states within an epoch and resets them at its start ---------------------

CORPUS = [
    "the cat sat on the mat .",
    "a dog ran to the cat .",
    "the bird sang on the mat .",
    "a cat saw the dog .",
    "the dog sat .",
    "a bird ran to the dog .",
]


def test_trainer_carries_states_from_window_to_window_and_resets_them_each_epoch(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n")
    config = Config(
        data=DataConfig(corpus=str(corpus), vocab_size=20),
        model=ModelConfig(
            vocab_size=20, hidden_size=4, cell="lstm", bptt_truncate=-1, dtype="float64"
        ),
        train=TrainConfig(
            mode="stream", batch_size=2, bptt=5, epochs=2, optimizer="sgd", learning_rate=0.1
        ),
    )
    trainer = Trainer(config, load_training_data(config), tmp_path / "m.npz")
    calls = []
    step = trainer.train_step

    def recording_step(x, y, mask, *states):
        out = step(x, y, mask, *states)
        finals = [np.array(s) for s in out[2:]]
        calls.append((x.copy(), y.copy(), [s.copy() for s in states], finals))
        return out

    trainer.train_step = recording_step
    summary = trainer.run()
    assert summary["epochs"] == 2 and len(calls) == summary["steps"]
    per_epoch = len(calls) // 2
    assert per_epoch >= 3 and len(calls) == 2 * per_epoch
    for epoch in range(2):
        first = epoch * per_epoch
        x, _, states, _ = calls[first]
        assert len(states) == 2  # an LSTM's h and c
        assert all(not s.any() for s in states), f"epoch {epoch + 1} did not start from zeros"
        for i in range(first + 1, first + per_epoch):
            x, _, states, _ = calls[i]
            _, previous_y, _, previous_finals = calls[i - 1]
            np.testing.assert_array_equal(x[0], previous_y[-1])  # the text goes on
            for state, final in zip(states, previous_finals, strict=True):
                np.testing.assert_array_equal(state, final)
    # The reset mattered: the first epoch ended in nonzero states.
    assert all(np.abs(s).max() > 1e-3 for s in calls[per_epoch - 1][3])
