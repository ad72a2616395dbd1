"""Padded time-major batches: shapes, left padding, the mask, and padding invariance."""

import numpy as np
import pytest

from rnnlm.batches import length_batches, pad_batch, training_batches
from rnnlm.config import ModelConfig
from rnnlm.model import Model

VOCAB, HIDDEN = 9, 5

# Encoded sentences, both markers included (0 = start, 1 = end): 2, 5 and 4 predictions.
SENTENCES = [
    np.array([0, 4, 1], dtype=np.int32),
    np.array([0, 2, 3, 5, 6, 1], dtype=np.int32),
    np.array([0, 7, 8, 2, 1], dtype=np.int32),
]


@pytest.fixture(scope="module")
def padded():
    return pad_batch(SENTENCES, "float64")


def test_pad_batch_is_time_major_with_one_column_per_sentence(padded):
    x, y, mask = padded
    steps = max(len(s) for s in SENTENCES) - 1
    assert x.shape == y.shape == mask.shape == (steps, len(SENTENCES))


def test_pad_batch_dtypes(padded):
    x, y, mask = padded
    assert x.dtype == y.dtype == np.int32
    assert mask.dtype == np.float64
    assert pad_batch(SENTENCES)[2].dtype == np.float32


def test_pad_batch_pads_on_the_left_so_every_sentence_ends_at_the_last_step(padded):
    x, y, _ = padded
    steps = x.shape[0]
    for column, ids in enumerate(SENTENCES):
        n = len(ids) - 1
        np.testing.assert_array_equal(x[steps - n :, column], ids[:-1])
        np.testing.assert_array_equal(y[steps - n :, column], ids[1:])
        assert not x[: steps - n, column].any() and not y[: steps - n, column].any()


def test_pad_batch_mask_is_one_exactly_on_real_predictions(padded):
    _, _, mask = padded
    steps = mask.shape[0]
    for column, ids in enumerate(SENTENCES):
        n = len(ids) - 1
        np.testing.assert_array_equal(mask[:, column], [0] * (steps - n) + [1] * n)


def test_pad_batch_of_one_sentence_has_no_padding():
    x, y, mask = pad_batch(SENTENCES[1:2])
    np.testing.assert_array_equal(x[:, 0], SENTENCES[1][:-1])
    np.testing.assert_array_equal(y[:, 0], SENTENCES[1][1:])
    assert mask.all()


def test_length_batches_cover_every_sentence_once_in_batches_of_at_most_batch_size():
    rng = np.random.default_rng(0)
    sentences = [
        np.concatenate([[0], rng.integers(2, VOCAB, n), [1]]).astype(np.int32)
        for n in rng.integers(1, 8, 11)
    ]
    seen = []
    for rows, x, y, mask in length_batches(sentences, 4):
        assert len(rows) <= 4 and x.shape[1] == len(rows)
        for column, index in enumerate(rows):
            n = len(sentences[index]) - 1
            np.testing.assert_array_equal(y[-n:, column], sentences[index][1:])
            assert mask[:, column].sum() == n
        seen += list(rows)
    assert sorted(seen) == list(range(len(sentences)))


@pytest.fixture(scope="module", params=["rnn-tanh", "lstm"])
def model(request):
    """float64 so that padded and unpadded runs can be compared to rounding error."""
    config = ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN, cell=request.param, dtype="float64")
    return Model(config, seed=3)


def test_padding_does_not_change_a_sentences_log_probs(model, padded):
    x, y, mask = padded
    batched = model.log_probs(x, y, mask)
    steps = x.shape[0]
    for column, ids in enumerate(SENTENCES):
        n = len(ids) - 1
        alone = model.log_probs(ids[:-1, None], ids[1:, None], np.ones((n, 1)))
        np.testing.assert_allclose(batched[steps - n :, column], alone[:, 0], rtol=1e-12)
        assert not batched[: steps - n, column].any()  # padded positions contribute 0


@pytest.mark.parametrize("truncate", [-1, 2])
def test_padding_does_not_change_the_gradients(truncate):
    # Gradients of a padded batch are the sum of each sentence's own gradients; with
    # truncation too, since left padding puts each sentence's last words at the last steps.
    config = ModelConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        cell="gru",
        embedding_size=4,
        bptt_truncate=truncate,
        dtype="float64",
    )
    model = Model(config, seed=5)
    together = model.gradients(*pad_batch(SENTENCES, "float64"))
    alone = [model.gradients(*pad_batch([s], "float64")) for s in SENTENCES]
    for name, grad in together.items():
        assert np.abs(grad).max() > 0
        np.testing.assert_allclose(grad, sum(g[name] for g in alone), rtol=1e-10, atol=1e-12)


def test_training_batches_pad_only_when_read():
    """Batches hold sentence indices; reading one pads it, slicing keeps the order."""
    sentences = [np.arange(n, dtype=np.int32) + 2 for n in (3, 7, 4, 9, 5, 2, 6)]
    batches = training_batches(sentences, 2, np.random.default_rng(0), bucket_batches=2)
    assert len(batches) == 4
    assert all(isinstance(group[0], (int, np.integer)) for group in batches.groups)
    used = sorted(i for group in batches.groups for i in group)
    assert used == list(range(len(sentences)))
    for group, (x, y, mask) in zip(batches.groups, batches, strict=True):
        want = pad_batch([sentences[i] for i in group])
        for got, expected in zip((x, y, mask), want, strict=True):
            np.testing.assert_array_equal(got, expected)
    tail = batches[1:]
    assert len(tail) == 3
    np.testing.assert_array_equal(tail[0][0], batches[1][0])
