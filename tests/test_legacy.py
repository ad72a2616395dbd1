"""Importing the WildML tutorial's own model file: format conversion, vocabulary rebuild,
and every way `import_tutorial` must refuse a file."""

import itertools
from pathlib import Path

import nltk
import numpy as np
import pytest

from rnnlm import checkpoint
from rnnlm.config import DataConfig
from rnnlm.corpus import load_corpus
from rnnlm.errors import RnnlmError
from rnnlm.legacy import import_tutorial, tutorial_vocabulary
from rnnlm.vocab import SENTENCE_END, SENTENCE_START, UNKNOWN_TOKEN, Vocabulary

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared/data"
TUTORIAL_NPZ = SHARED_DATA / "wildml-tutorial/trained-model-theano.npz"
PREFIX_CSV = SHARED_DATA / "reddit-comments-2015-08/reddit-comments-2015-08.head.csv"


def synthetic_vocabulary(size: int) -> Vocabulary:
    """The tutorial's layout: markers first (the most frequent tokens), words, UNKNOWN_TOKEN."""
    words = (SENTENCE_START, SENTENCE_END, *(f"w{i}" for i in range(size - 3)), UNKNOWN_TOKEN)
    counts = (size, size, *range(size - 3, 0, -1), 0)
    return Vocabulary(words=words, counts=counts)


def tutorial_arrays() -> dict[str, np.ndarray]:
    if not TUTORIAL_NPZ.is_file():
        pytest.skip(f"the tutorial's model file is not at {TUTORIAL_NPZ}")
    with np.load(TUTORIAL_NPZ, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="module")
def tutorial():
    arrays = tutorial_arrays()
    return arrays, import_tutorial(TUTORIAL_NPZ, synthetic_vocabulary(8000))


@pytest.fixture(scope="module")
def prefix_vocab():
    if not PREFIX_CSV.is_file():
        pytest.skip(f"the tutorial CSV prefix is not at {PREFIX_CSV}")
    return tutorial_vocabulary(PREFIX_CSV)


# -- the real tutorial file --------------------------------------------------------------------


def test_tutorial_file_is_what_its_source_says():
    arrays = tutorial_arrays()
    assert {name: (a.shape, a.dtype) for name, a in arrays.items()} == {
        "U": ((50, 8000), np.float32),
        "V": ((8000, 50), np.float32),
        "W": ((50, 50), np.float32),
    }


def test_import_transposes_into_rnnlm_orientation(tutorial):
    arrays, ckpt = tutorial
    assert {name: value.shape for name, value in ckpt.params.items()} == {
        "layer0/W_in": (8000, 50),
        "layer0/W_rec": (50, 50),
        "out/W": (50, 8000),
    }
    np.testing.assert_array_equal(ckpt.params["layer0/W_in"], arrays["U"].T)
    np.testing.assert_array_equal(ckpt.params["layer0/W_rec"], arrays["W"].T)
    np.testing.assert_array_equal(ckpt.params["out/W"], arrays["V"].T)
    assert all(value.dtype == np.float32 for value in ckpt.params.values())


def test_import_config_is_the_tutorial_rnn(tutorial):
    _, ckpt = tutorial
    model = ckpt.config.model
    assert (model.vocab_size, model.hidden_size, model.cell) == (8000, 50, "rnn-tanh")
    assert (model.bias, model.embedding_size, model.bptt_truncate) == (False, 0, 4)
    assert ckpt.config.data.vocab_size == 8000
    assert ckpt.config.train.learning_rate == 0.005
    assert ckpt.progress == {"imported_from": str(TUTORIAL_NPZ)}


def test_imported_checkpoint_round_trips(tutorial, tmp_path):
    _, ckpt = tutorial
    path = tmp_path / "tutorial.npz"
    checkpoint.save(path, ckpt)
    loaded = checkpoint.load(path)
    assert loaded.config == ckpt.config
    assert loaded.vocab == ckpt.vocab
    assert loaded.progress == ckpt.progress
    assert loaded.params.keys() == ckpt.params.keys()
    for name, value in ckpt.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)


def test_imported_model_computes_the_tutorial_forward_pass(tutorial):
    """rnnlm's graph against the tutorial's equations in numpy, on the original arrays."""
    from rnnlm.model import Model

    arrays, ckpt = tutorial
    U, V, W = (arrays[name].astype(np.float64) for name in ("U", "V", "W"))
    ids = np.array([0, 7, 3, 150, 2, 7999, 42, 1], dtype=np.int32)  # start ... unknown ... end
    x, y = ids[:-1], ids[1:]

    s = np.zeros(50)
    expected = []
    for x_t, y_t in zip(x, y, strict=True):
        s = np.tanh(U[:, x_t] + W @ s)  # s_t = tanh(U x_t + W s_{t-1})
        o = V @ s
        log_o = o - o.max() - np.log(np.exp(o - o.max()).sum())  # log softmax(V s_t)
        expected.append(log_o[y_t])

    model = Model(ckpt.config.model, params=ckpt.params)
    got = model.log_probs(x[:, None], y[:, None], np.ones((len(x), 1)))[:, 0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_tutorial_file_puts_sentence_end_at_id_1():
    """The file itself shows the markers' tie order: SENTENCE_END is never an input, so its
    column of U keeps its initial values in ±1/sqrt(8000); SENTENCE_START's was trained."""
    U = tutorial_arrays()["U"]
    bound = 1 / np.sqrt(U.shape[1])
    assert np.abs(U[:, 1]).max() <= bound
    assert np.abs(U[:, 0]).max() > 10 * bound


# -- the vocabulary, rebuilt from the 96-comment prefix ----------------------------------------


def test_prefix_vocabulary_layout(prefix_vocab):
    vocab = prefix_vocab
    sentences = load_corpus(PREFIX_CSV, DataConfig(format="csv", column="body")).sentences
    distinct = len({token for sentence in sentences for token in sentence}) + 2  # + markers
    assert len(vocab) == min(8000, distinct + 1)
    assert vocab.words[-1] == UNKNOWN_TOKEN
    assert vocab.words[:2] == (SENTENCE_START, SENTENCE_END)  # first-occurrence tie order
    assert vocab.counts[0] == vocab.counts[1] == len(sentences)
    assert list(vocab.counts[:-1]) == sorted(vocab.counts[:-1], reverse=True)
    assert {".", "the", ","} <= set(vocab.words[2:6])
    assert vocab.counts[-1] == 0  # nothing falls outside a vocabulary this large


def test_prefix_vocabulary_is_freqdist_most_common(prefix_vocab):
    """The tutorial's own call on the same sentences gives the same words in the same order."""
    sentences = load_corpus(PREFIX_CSV, DataConfig(format="csv", column="body")).sentences
    wrapped = ([SENTENCE_START, *sentence, SENTENCE_END] for sentence in sentences)
    freq = nltk.FreqDist(itertools.chain.from_iterable(wrapped))
    assert list(prefix_vocab.words) == [w for w, _ in freq.most_common(7999)] + [UNKNOWN_TOKEN]
    small = tutorial_vocabulary(PREFIX_CSV, vocab_size=100)
    assert list(small.words) == [w for w, _ in freq.most_common(99)] + [UNKNOWN_TOKEN]
    assert small.counts[-1] == freq.N() - sum(c for _, c in freq.most_common(99))


def test_ties_keep_first_occurrence_order(tmp_path):
    csv_path = tmp_path / "comments.csv"
    csv_path.write_text('body\n"zebra apple."\n"apple zebra mango."\n', encoding="utf-8")
    vocab = tutorial_vocabulary(csv_path, vocab_size=8000)
    assert vocab.words == (
        SENTENCE_START,
        "zebra",
        "apple",
        ".",
        SENTENCE_END,
        "mango",
        "UNKNOWN_TOKEN",
    )


def test_vocabulary_size_too_small_is_refused(tmp_path):
    csv_path = tmp_path / "comments.csv"
    csv_path.write_text('body\n"a a a a b b b b."\n', encoding="utf-8")
    with pytest.raises(RnnlmError, match="too small"):
        tutorial_vocabulary(csv_path, vocab_size=4)
    with pytest.raises(RnnlmError, match="at least 4"):
        tutorial_vocabulary(csv_path, vocab_size=3)


def test_real_file_with_prefix_vocabulary_names_both_sizes(prefix_vocab):
    tutorial_arrays()
    with pytest.raises(RnnlmError) as error:
        import_tutorial(TUTORIAL_NPZ, prefix_vocab)
    message = str(error.value)
    assert "8000" in message and str(len(prefix_vocab)) in message
    assert "\n" not in message


# -- crafted files ------------------------------------------------------------------------------

H, V_SIZE = 3, 6


def good_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "U": rng.normal(size=(H, V_SIZE)).astype(np.float32),
        "V": rng.normal(size=(V_SIZE, H)).astype(np.float32),
        "W": rng.normal(size=(H, H)).astype(np.float32),
    }


def write(tmp_path, **arrays):
    path = tmp_path / "crafted.npz"
    np.savez(path, **arrays)
    return path


def test_crafted_good_file_imports(tmp_path):
    arrays = good_arrays()
    arrays["U"] = arrays["U"].astype(np.float64)  # a floatX=float64 run: cast to float32
    ckpt = import_tutorial(write(tmp_path, **arrays), synthetic_vocabulary(V_SIZE))
    assert ckpt.params["layer0/W_in"].dtype == np.float32
    np.testing.assert_allclose(ckpt.params["layer0/W_in"], arrays["U"].T, rtol=1e-6)


def with_changes(**changes):
    arrays = good_arrays()
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    return arrays


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        (with_changes(W=None), r"missing \['W'\]"),
        (with_changes(E=np.zeros((2, 2), np.float32)), r"unexpected \['E'\]"),
        (with_changes(U=np.zeros((H, V_SIZE, 1), np.float32)), "U is float32.*2-D float"),
        (with_changes(V=np.zeros(V_SIZE, np.float32)), "V is float32.*2-D float"),
        (with_changes(W=np.zeros((H, H), np.int32)), "W is int32.*2-D float"),
        (with_changes(W=np.zeros((H, H + 1), np.float32)), r"W is \[3, 4\].*\[3, 3\]"),
        (with_changes(V=np.zeros((V_SIZE, H + 1), np.float32)), r"V is \[6, 4\].*\[6, 3\]"),
        (with_changes(V=np.zeros((H, V_SIZE), np.float32)), r"V is \[3, 6\].*\[6, 3\]"),
        (with_changes(U=np.zeros((H, 0), np.float32)), "U is empty"),
        (with_changes(U=np.zeros((H, V_SIZE + 1), np.float32), V=np.zeros((7, H))), "7 words"),
    ],
    ids=["missing", "extra", "3d", "1d", "int", "W", "V-hidden", "V-transposed", "empty", "size"],
)
def test_crafted_bad_shapes_are_refused(tmp_path, arrays, match):
    with pytest.raises(RnnlmError, match=match):
        import_tutorial(write(tmp_path, **arrays), synthetic_vocabulary(V_SIZE))


@pytest.mark.parametrize("name", ["U", "V", "W"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_non_finite_values_are_refused(tmp_path, name, bad):
    arrays = good_arrays()
    arrays[name] = arrays[name].astype(np.float64)
    arrays[name][0, 0] = bad  # 1e300 is finite in float64 but not in float32
    with pytest.raises(RnnlmError, match=f"{name} holds NaN or infinite"):
        import_tutorial(write(tmp_path, **arrays), synthetic_vocabulary(V_SIZE))


UNPICKLED = []


def record_unpickling():
    UNPICKLED.append(True)
    return 0.0


class Tripwire:
    """An object whose unpickling would leave a trace."""

    def __reduce__(self):
        return (record_unpickling, ())


def test_object_arrays_are_never_unpickled(tmp_path):
    arrays = good_arrays()
    arrays["W"] = np.array([[Tripwire()] * H] * H, dtype=object)
    path = write(tmp_path, **arrays)
    with pytest.raises(RnnlmError, match="not a tutorial model file.*allow_pickle"):
        import_tutorial(path, synthetic_vocabulary(V_SIZE))
    assert UNPICKLED == []


def test_an_rnnlm_checkpoint_is_not_a_tutorial_file(tmp_path):
    arrays = with_changes(U=None, V=None, W=None)
    arrays.update({"meta": np.array("{}"), "param/out/W": np.zeros((H, V_SIZE), np.float32)})
    with pytest.raises(RnnlmError, match="needs no import"):
        import_tutorial(write(tmp_path, **arrays), synthetic_vocabulary(V_SIZE))


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", None])
def test_unreadable_files_are_refused(tmp_path, content):
    path = tmp_path / "model.npz"
    if content is None:
        np.save(tmp_path / "model.npy", good_arrays()["U"])
        (tmp_path / "model.npy").rename(path)  # a lone array, not an archive
    else:
        path.write_bytes(content)
    with pytest.raises(RnnlmError, match="not a tutorial model file"):
        import_tutorial(path, synthetic_vocabulary(V_SIZE))


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(RnnlmError, match="not found"):
        import_tutorial(tmp_path / "absent.npz", synthetic_vocabulary(V_SIZE))


def test_cli_import_of_the_real_file_with_the_prefix_explains_the_mismatch(prefix_vocab, tmp_path):
    tutorial_arrays()  # skips when the model file is absent
    from click.testing import CliRunner

    from rnnlm.cli import main

    out = tmp_path / "tutorial.npz"
    result = CliRunner().invoke(
        main,
        [
            "import-tutorial",
            "--npz",
            str(TUTORIAL_NPZ),
            "--vocab-corpus",
            str(PREFIX_CSV),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert "8000" in line and str(len(prefix_vocab)) in line
    assert not out.exists()
