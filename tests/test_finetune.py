"""Fine-tuning on new text with a model's vocabulary (`train --init-from`), a vocabulary fixed
from a file (`train --vocab`), and `rnnlm vocab`, which writes such a file."""

import itertools
import json
import math

import pytest
from click.testing import CliRunner

from rnnlm import checkpoint
from rnnlm.cli import main
from rnnlm.config import resolve
from rnnlm.data import load_training_data, read_word_list
from rnnlm.errors import RnnlmError
from rnnlm.vocab import count_tokens, fixed_vocabulary, parse_word_list

SUBJECTS = ["the cat", "the dog", "a bird", "my sister"]
OLD = [f"{s} {v} {o} ." for s, v, o in itertools.product(SUBJECTS, ["sees", "likes"], ["a ball"])]
# The new domain: the same words in another order, and two words the old text never had.
NEW = [f"{o} rolls to {s} ." for s, o in itertools.product(SUBJECTS, ["a ball", "the ball"])]
NEW_TOKENS = {"rolls": 8, "to": 8}  # not in the old vocabulary


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("finetune")
    for name, lines in (("old.txt", OLD), ("new.txt", NEW)):
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def base(texts):
    out = texts / "base.npz"
    run("train", "--corpus", texts / "old.txt", "--vocab-size", 30, "--hidden-size", 8,
        "--epochs", 2, "--out", out)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def tuned(texts, base):
    out = texts / "tuned.npz"
    result = run(
        "train", "--init-from", base, "--corpus", texts / "new.txt", "--optimizer", "adam",
        "--lr", 0.02, "--epochs", 4, "--valid", texts / "new.txt", "--out", out, "--json",
    )  # fmt: skip
    return out, json.loads(result.stdout)


def perplexity(model, corpus):
    result = run("eval", "--model", model, "--corpus", corpus, "--json")
    return json.loads(result.stdout)["perplexity"]


def test_fine_tuning_lowers_the_perplexity_on_the_new_text(texts, base, tuned):
    assert perplexity(tuned[0], texts / "new.txt") < 0.7 * perplexity(base, texts / "new.txt")


def test_fine_tuning_keeps_the_vocabulary_and_counts_the_new_words(base, tuned):
    out, summary = tuned
    assert checkpoint.load(out).vocab == checkpoint.load(base).vocab
    assert summary["new_tokens"] == sum(NEW_TOKENS.values())
    assert summary["new_words"] == len(NEW_TOKENS)
    assert summary["steps"] > 0


def test_fine_tuning_starts_from_the_models_weights(texts, base, tuned):
    # The evaluation before the first update measures the base model's weights.
    initial = tuned[1]["initial_loss"]
    assert initial == pytest.approx(math.log(perplexity(base, texts / "new.txt")), rel=1e-6)


def test_a_vocabulary_file_round_trips(texts, base, tmp_path):
    listing = run("vocab", base).stdout
    (tmp_path / "vocab.txt").write_text(listing, encoding="utf-8")
    original = checkpoint.load(base)
    for source in (tmp_path / "vocab.txt", base):
        # The same corpus, the vocabulary fixed to the file's: the same words, ids and counts.
        data = load_training_data(original.config, words=read_word_list(source))
        assert data.vocab == original.vocab


def test_train_with_a_vocabulary_file_uses_it(texts, base, tmp_path):
    words = ["ball", "rolls", "the", "a"]
    (tmp_path / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    out = tmp_path / "fixed.npz"
    run("train", "--corpus", texts / "new.txt", "--vocab", tmp_path / "words.txt",
        "--hidden-size", 8, "--epochs", 1, "--out", out)  # fmt: skip
    vocab = checkpoint.load(out).vocab
    assert vocab.words == (*words, "SENTENCE_START", "SENTENCE_END", "UNKNOWN_TOKEN")
    counts = [sum(s.split().count(w) for s in NEW) for w in words]
    assert vocab.counts[:4] == tuple(counts) == (8, 8, 8, 6)
    assert vocab.counts[-1] == sum(len(s.split()) for s in NEW) - sum(counts)  # the rest


def test_vocab_json_lists_the_checkpoints_vocabulary(base):
    listed = json.loads(run("vocab", base, "--json").stdout)
    vocab = checkpoint.load(base).vocab
    assert listed["words"] == list(vocab.words) and listed["counts"] == list(vocab.counts)
    assert listed["unknown"] == vocab.unknown and listed["size"] == len(vocab)


def test_word_lists_take_counts_blank_lines_and_a_space_token():
    assert parse_word_list("a\t3\n\nb\n \t7\n", "f") == ["a", "b", " "]
    with pytest.raises(RnnlmError, match="line 3: 'a' is already on line 1"):
        parse_word_list("a\nb\na\n", "f")
    with pytest.raises(RnnlmError, match="line 1: the count 'x' is not a number"):
        parse_word_list("a\tx\n", "f")


def test_a_fixed_vocabulary_counts_the_rest_as_unknown():
    counts = count_tokens([["a", "b", "c"], ["a", "d"]])
    vocab = fixed_vocabulary(["b", "a"], counts)
    assert vocab.words[:2] == ("b", "a") and vocab.counts[:2] == (1, 2)
    assert vocab.counts[vocab.unknown_id] == 2  # c and d


@pytest.mark.parametrize(
    "options, fragment",
    [
        (("--hidden-size", 9), "model.hidden_size 8 -> 9"),
        (("--level", "char"), "data.level 'word' -> 'char'"),
        (("--resume", "BASE"), "give one of resume, init_from and vocab"),
    ],
)
def test_init_from_refuses_what_would_change_the_model(texts, base, options, fragment):
    options = [base if o == "BASE" else o for o in options]
    args = ["train", "--init-from", base, "--corpus", texts / "new.txt", *options]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert fragment in result.stderr


def test_init_from_a_prepared_folder_with_a_word_list_is_refused(texts, tmp_path):
    (tmp_path / "w.txt").write_text("a\n", encoding="utf-8")
    config = resolve(None, {"data": {"prepared": str(tmp_path)}})
    with pytest.raises(RnnlmError, match="prepared folder brings its own vocabulary"):
        load_training_data(config, words=read_word_list(tmp_path / "w.txt"))
