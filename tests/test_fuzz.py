"""Bad input, generated: random and adversarial files and arguments through the corpus reader
and the command line.

The contract under test: `load_corpus` returns well-formed sentences or raises `RnnlmError`
with a one-line message; a command exits 0, 1 or 2, never shows a traceback, and on failure
prints exactly one `Error:` line (after click's `Usage:` block for exit code 2). Hypothesis
runs derandomized with a small, fixed number of examples, so every run tries the same inputs.
The bugs the fuzzers found are fixed; each keeps a plain regression test at the end of this
file. Inputs that are valid but slow (a huge sentence count) are kept out of the fuzzers with
`assume` and tried once there instead.
"""

import codecs
import itertools
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from rnnlm.cli import main
from rnnlm.config import DataConfig
from rnnlm.corpus import FORMATS, LEVELS, Corpus, load_corpus, tokenize
from rnnlm.errors import RnnlmError

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SENTENCES = [
    f"{s} {v} {o} ."
    for s, v, o in itertools.product(
        ["the cat", "a dog", "my sister"], ["sees", "likes"], ["the river", "a red ball"]
    )
]

BOM = codecs.BOM_UTF8
# Fragments an adversarial file is glued together from: text Punkt and the CSV reader care
# about, line ends of every kind, bytes that are not UTF-8, NULs, BOMs, exotic whitespace.
PIECES = [
    b"The cat sat on the mat. ",
    b"Mr. Smith went to Washington! ",
    b"e.g. this... ",
    b"body",
    b"text",
    b",",
    b";",
    b'"',
    b'""',
    b"\n",
    b"\r\n",
    b"\r",
    b"\n\n",
    b"\x00",
    BOM,
    b"caf\xe9",
    b"\xff\xfe",
    b"\x80",
    "naïve café 🐈‍⬛ 日本語 ".encode(),
    b" ",
    b"\t",
    b"\x0b\x0c",
    "\u2028\u2029\x85\u00a0\u200b\u3000".encode(),
    b"\x1c\x1d\x1e\x1f",
    b"<unk>",
    b"'",
    b"--",
    b"(",
    b")",
]


def adversarial_bytes(min_pieces=0):
    piece = st.one_of(
        st.sampled_from(PIECES), st.binary(max_size=8), st.text(max_size=8).map(str.encode)
    )
    return st.lists(piece, min_size=min_pieces, max_size=30).map(b"".join)


csv_cells = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", '"', '""', "a,b", "body", "\n", "\r\n", '"open', 'x"y', "Hi. Bye."]),
)


@st.composite
def csv_bytes(draw):
    """A CSV with or without a `body` column, ragged rows, any line end, maybe quoted."""
    width = draw(st.integers(1, 6))
    header = draw(st.lists(csv_cells, min_size=width, max_size=width))
    if draw(st.booleans()):
        header[draw(st.integers(0, width - 1))] = "body"
    rows = draw(st.lists(st.lists(csv_cells, max_size=width + 2), max_size=8))
    quoted = draw(st.booleans())
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))

    def cell(text):
        return '"' + text.replace('"', '""') + '"' if quoted else text

    text = end.join(",".join(map(cell, row)) for row in [header, *rows])
    return draw(st.sampled_from([b"", BOM])) + text.encode() + draw(st.sampled_from(PIECES))


corpus_bytes = st.one_of(st.binary(max_size=300), adversarial_bytes(), csv_bytes(), csv_bytes())


def note_outcome(text):
    """Tally for `pytest --hypothesis-show-statistics`: what the generated inputs reached."""
    if currently_in_test_context():
        event(text)


# -- the contract -----------------------------------------------------------------------------


def assert_well_formed(corpus, level):
    assert isinstance(corpus, Corpus)
    assert corpus.sentences
    for sentence in corpus.sentences:
        assert isinstance(sentence, list) and sentence
        for token in sentence:
            assert isinstance(token, str) and token
            assert token.splitlines() == [token], repr(token)  # no line break of any kind
            if level == "char":
                assert len(token) == 1 and (token == " " or not token.isspace()), repr(token)
            else:
                assert not any(c.isspace() for c in token), repr(token)


def load_or_refuse(path, **options):
    """load_corpus's result, or None when it refused with a one-line RnnlmError."""
    try:
        corpus = load_corpus(path, DataConfig(**options))
    except RnnlmError as error:
        message = str(error)
        note_outcome(f"refused: {message.split(': ', 1)[-1][:30]}")
        assert message.strip() and len(message.splitlines()) == 1, repr(message)
        return None
    assert_well_formed(corpus, options.get("level", "word"))
    note_outcome("loaded")
    return corpus


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def assert_clean_exit(result):
    """Exit 0, 1 or 2; no traceback; a failure is one `Error:` line, the last on stderr."""
    detail = f"exit {result.exit_code}, {result.exception!r}\n{result.output[-2000:]}"
    assert result.exit_code in (0, 1, 2), detail
    assert result.exception is None or isinstance(result.exception, SystemExit), detail
    assert "Traceback" not in result.output, detail
    note_outcome(f"exit {result.exit_code}")
    if result.exit_code == 0:
        return None
    assert result.stdout == "", detail
    lines = result.stderr.splitlines()
    assert sum(line.startswith("Error") for line in lines) == 1, detail
    assert lines[-1].startswith("Error: "), detail
    note_outcome(f"exit {result.exit_code}: {lines[-1][7:47]}")
    if result.exit_code == 2:
        assert any(line.startswith("Usage:") for line in lines), detail
    return lines[-1]


# -- load_corpus: named adversarial files ------------------------------------------------------

MEGABYTE = 2**20
MANY_COLUMNS = ",".join(f"c{i}" for i in range(5000))
NAMED_FILES = {
    "binary-junk": np.random.default_rng(0).bytes(4096),
    "empty-file": b"",
    "empty-rows": b'body\n\n\n,\n""\n\n"hello there."\n\n',
    "unbalanced-quotes": b'body\n"hello there.\nnever closed\n',
    "stray-quote": b'body\nhello "there" you.\n',
    "latin1-inside-utf8": "café au lait.\n".encode() + "café noir.\n".encode("latin-1"),
    "bom": BOM + b"body\nhello there.\n",
    "two-boms": BOM + BOM + b"body\nhello there.\n",
    "utf16": "body\nhello there.\n".encode("utf-16"),
    "nul-bytes": b"body\nhel\x00lo there.\n\x00\n\x00,\x00\n",
    "only-whitespace": b" \t\n\r\n\x0b\x0c \n",
    "only-unicode-whitespace": "\u2028\u00a0\u3000\x85\n".encode(),
    "crlf": b"body\r\nhello there.\r\nsecond row.\r\n",
    "cr-only": b"body\rhello there.\rsecond row.\r",
    "header-without-column": b"subreddit,title\nfoo,bar\n",
    "header-only": b"body\n",
    "blank-header": b" , ,\nhello,there\n",
    "duplicate-column": b"body,body\nhello,there\n",
    "short-row": b"a,b,body\n1,2\n",
    "thousands-of-columns": (
        f"{MANY_COLUMNS},body\n{','.join('x' * 5000)},hello there.\n".encode()
    ),
    "thousands-of-columns-without-ours": f"{MANY_COLUMNS}\n{','.join('x' * 5000)}\n".encode(),
    "control-characters": bytes(range(1, 32)) + b" hello there.\n",
    "punctuation-only": b"... !!! ??? ,,, ;;;\n",
    "emoji-and-combining": "body\n👩‍👩‍👧 e\u0301 \U0001f408\u200d\u2b1b.\n".encode(),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("name", NAMED_FILES)
def test_load_corpus_named_adversarial_file(tmp_path, name, format, level):
    path = tmp_path / f"{name}.data"
    path.write_bytes(NAMED_FILES[name])
    load_or_refuse(path, format=format, level=level)


HUGE_LINE = b"x" * MEGABYTE + b"\n"
HUGE_CSV_FIELD = b'body\n"' + b"x" * MEGABYTE + b'"\nhello there.\n'


@pytest.mark.parametrize(
    ("data", "format", "level"),
    [
        (HUGE_LINE, "lines", "char"),
        (HUGE_LINE, "prose", "word"),
        (HUGE_LINE, "csv", "word"),  # a 1 MB header: the message shortens the name
        (HUGE_CSV_FIELD, "csv", "whitespace"),
    ],
    ids=["line-char", "prose-word", "csv-header", "csv-field"],
)
def test_load_corpus_a_one_megabyte_token(tmp_path, data, format, level):
    path = tmp_path / "huge.data"
    path.write_bytes(data)
    load_or_refuse(path, format=format, level=level)


def test_load_corpus_a_one_megabyte_line_of_words(tmp_path):
    path = tmp_path / "words.txt"
    path.write_bytes(b"word " * (MEGABYTE // 5) + b"\n")
    corpus = load_or_refuse(path, format="lines", level="word")
    assert corpus is not None and corpus.num_tokens == MEGABYTE // 5


def test_load_corpus_a_header_without_the_column_is_one_line_naming_it(tmp_path):
    path = tmp_path / "posts.csv"
    path.write_bytes(b'"sub\nreddit","ti\rtle"\nfoo,bar\n')
    with pytest.raises(RnnlmError) as caught:
        load_corpus(path)
    assert len(str(caught.value).splitlines()) == 1
    assert "'body'" in str(caught.value)


# -- load_corpus: generated files -------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


FILE_NUMBERS = itertools.count()


def write(folder, data, suffix=".txt"):
    path = folder / f"f{next(FILE_NUMBERS)}{suffix}"
    path.write_bytes(data)
    return path


@settings(FUZZ, max_examples=100)
@given(
    data=corpus_bytes,
    format=st.sampled_from(FORMATS),
    level=st.sampled_from(LEVELS),
    lowercase=st.booleans(),
    column=st.one_of(st.just("body"), st.text(max_size=4)),
)
def test_load_corpus_fuzzed_file(fuzz_dir, data, format, level, lowercase, column):
    path = write(fuzz_dir, data)
    load_or_refuse(path, format=format, level=level, lowercase=lowercase, column=column)


@settings(FUZZ, max_examples=25)
@given(data=corpus_bytes, level=st.sampled_from(LEVELS))
def test_load_corpus_fuzzed_file_format_from_the_suffix(fuzz_dir, data, level):
    for suffix in (".csv", ".CSV", ".txt", ""):
        load_or_refuse(write(fuzz_dir, data, suffix), level=level)


# -- the command line: a tiny model -----------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-fuzz")


@pytest.fixture(scope="module")
def tiny(workdir):
    path = workdir / "tiny.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model(workdir, tiny):
    out = workdir / "m.npz"
    result = run(
        "train", "--corpus", tiny, "--vocab-size", 20, "--hidden-size", 4, "--epochs", 1,
        "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


# -- score ------------------------------------------------------------------------------------

# Control characters, separators, emoji and unassigned code points (no lone surrogates here:
# see test_score_an_argument_that_was_not_utf8).
exotic_text = st.text(
    alphabet=st.characters(
        categories=["Cc", "Cf", "Zs", "Zl", "Zp", "So", "Sk", "Mn", "Co", "Cn", "Lo", "Po"]
    ),
    max_size=40,
)
long_text = st.builds(
    lambda word, count: (word + " ") * count,
    st.text(min_size=1, max_size=6),
    st.integers(200, 1000),
)
sentence_text = st.one_of(st.text(min_size=1, max_size=60), exotic_text, long_text)


@settings(FUZZ, max_examples=8)
@given(sentences=st.lists(sentence_text, min_size=1, max_size=3))
def test_score_fuzzed_sentences(model, sentences):
    result = run("score", "--model", model, "--", *sentences)
    assert_clean_exit(result)
    has_words = all(tokenize(s) for s in sentences)
    assert (result.exit_code == 0) == has_words, result.output[-2000:]


@settings(FUZZ, max_examples=8)
@given(data=corpus_bytes, as_json=st.booleans(), per_word=st.booleans())
def test_score_fuzzed_file(model, fuzz_dir, data, as_json, per_word):
    path = write(fuzz_dir, data)
    options = ["--json"] * as_json + ["--per-word"] * per_word
    assert_clean_exit(run("score", "--model", model, "--file", path, *options))


@settings(FUZZ, max_examples=4)
@given(data=adversarial_bytes(min_pieces=3))
def test_score_fuzzed_stdin(model, data):
    assert_clean_exit(run("score", "--model", model, "--file", "-", input=data))


def test_score_an_argument_that_was_not_utf8(model):
    assert_clean_exit(run("score", "--model", model, "caf\udce9 au lait"))


# -- train ------------------------------------------------------------------------------------


def unmakeable(workdir):
    """A folder `rnnlm train --out` cannot create: its parent is a file."""
    blocker = workdir / "a-file"
    blocker.write_text("not a folder\n")
    return blocker / "run"


@settings(FUZZ, max_examples=30)
@given(
    data=corpus_bytes,
    format=st.sampled_from(FORMATS),
    level=st.sampled_from(LEVELS),
    split=st.sampled_from([[], ["--valid-fraction", "0.5"]]),
)
def test_train_fuzzed_corpus_up_to_the_model(workdir, fuzz_dir, data, format, level, split):
    """Everything before compiling (read, tokenize, vocabulary, split) on a fuzzed corpus;
    an output folder that cannot be made stops each run just before the model is built."""
    path = write(fuzz_dir, data)
    result = run(
        "train", "--corpus", path, "--format", format, "--level", level, "--vocab-size", 20,
        "--hidden-size", 4, "--epochs", 1, *split, "--out", unmakeable(workdir) / "m.npz",
    )  # fmt: skip
    message = assert_clean_exit(result)
    assert result.exit_code == 1
    expected = (str(path), "cannot create the output folder", "valid_fraction")
    assert any(fragment in message for fragment in expected), message


HOSTILE_BUT_VALID = (
    BOM
    + "The Cat sat.\r\nnaïve café 🐈‍⬛ here !\r\n\x00 nul \x00 bytes .\r\n"
    "\x1c\u2028separators\u2029 and \x85 next-lines .\n"
    "e\u0301 combining , \u200b zero-width , \u00a0 nbsp .\n"
    "x\n\n\n   \n"
    "(( )) \"\" '' -- ...\n".encode()
    + b"y" * 5000
    + b"\n"
)


def test_train_on_a_hostile_but_valid_corpus_then_sample_and_score(workdir):
    """One real run (it compiles): the vocabulary holds odd tokens; sample and score cope."""
    path = workdir / "hostile.txt"
    path.write_bytes(HOSTILE_BUT_VALID)
    out = workdir / "hostile.npz"
    result = run(
        "train", "--corpus", path, "--vocab-size", 20, "--hidden-size", 4, "--epochs", 1,
        "--out", out,
    )  # fmt: skip
    assert assert_clean_exit(result) is None
    assert_clean_exit(run("sample", "--model", out, "-n", 3, "--seed", 1, "--json"))
    text = HOSTILE_BUT_VALID.decode("utf-8-sig").splitlines()[0]
    assert assert_clean_exit(run("score", "--model", out, "--", text)) is None


# -- numeric options --------------------------------------------------------------------------

odd_numbers = st.sampled_from(
    ["nan", "-nan", "inf", "-inf", "1e309", "1e-320", "5e-324", "-0", "0x10", "1_000", "", " 3",
     "3.0", "1e3", "2" * 40, "-" + "9" * 40, "½", "٣", "0.5"]
)  # fmt: skip
any_number = st.one_of(
    st.integers(-3, 30),
    st.floats(0, 1),
    st.integers(),
    st.floats(),
    odd_numbers,
    st.text(max_size=6),
)

TRAIN_NUMERIC = [
    "--vocab-size", "--min-count", "--valid-fraction", "--hidden-size", "--embedding-size",
    "--layers", "--dropout", "--init-scale", "--bptt-truncate", "--batch-size", "--bptt",
    "--epochs", "--lr", "--momentum", "--rho", "--clip-norm", "--weight-decay", "--lr-decay",
    "--lr-decay-start", "--patience", "--eval-every", "--eval-sentences", "--seed",
]  # fmt: skip


def as_int(value):
    """The integer click would parse from `value`, or None."""
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def as_float(value):
    try:
        return float(str(value).strip())
    except ValueError:
        return None


@settings(FUZZ, max_examples=50)
@given(options=st.dictionaries(st.sampled_from(TRAIN_NUMERIC), any_number, max_size=3))
def test_train_fuzzed_numeric_options(workdir, tiny, options):
    """Validation of every numeric training option, up to the model (see above)."""
    args = [item for pair in options.items() for item in pair]
    result = run("train", "--corpus", tiny, *args, "--out", unmakeable(workdir) / "m.npz")
    message = assert_clean_exit(result)
    assert result.exit_code in (1, 2)
    if result.exit_code == 1:
        expected = ("bad config value for", "cannot create the output folder", "valid_fraction")
        assert any(fragment in message for fragment in expected), message


# Valid values stay small, so that a run that is accepted ends quickly: a count of 10**12
# sentences is not bad input, only a long wait (but see test_a_huge_count).
def count_in(low, high):
    return st.one_of(st.integers(low, high), st.integers(-(2**70), 0), odd_numbers)


SAMPLE_OPTIONS = {
    "-n": count_in(1, 4),
    "--max-length": count_in(1, 30),
    "--min-length": count_in(1, 30),
    "--temperature": st.one_of(st.floats(0.05, 20), st.floats(), odd_numbers),
    "--top-k": st.one_of(st.integers(0, 30), st.integers(), odd_numbers),
    "--seed": st.one_of(st.integers(0, 2**70), st.integers(), odd_numbers),
    "--prompt": st.one_of(st.text(max_size=20), exotic_text),
}


@settings(FUZZ, max_examples=15)
@given(
    options=st.fixed_dictionaries({}, optional=SAMPLE_OPTIONS),
    flags=st.lists(st.sampled_from(["--greedy", "--json"]), unique=True),
)
def test_sample_fuzzed_options(model, options, flags):
    count, max_length = as_int(options.get("-n", 5)), as_int(options.get("--max-length", 40))
    assume(count is None or count <= 5)  # test_a_huge_count
    assume(max_length is None or max_length <= 40)  # else a long wait
    args = [item for pair in options.items() for item in pair]
    result = run("sample", "--model", model, *args, *flags)
    assert_clean_exit(result)
    if result.exit_code == 0 and "--json" in flags:
        assert len(json.loads(result.stdout)) == count


@settings(FUZZ, max_examples=8)
@given(
    command=st.sampled_from(["eval", "compare", "rescore"]),
    count=count_in(1, 20),
    seed=st.one_of(st.integers(0, 2**70), st.integers(), odd_numbers),
    weight=st.one_of(st.floats(), odd_numbers),
    mode=st.sampled_from(["sentence", "stream", "Stream", ""]),
)
def test_other_commands_fuzzed_options(model, tiny, command, count, seed, weight, mode):
    assume(as_int(count) is None or as_int(count) <= 1000)  # test_a_huge_count
    if command == "eval":
        args = ["--corpus", tiny, "--bootstrap", count, "--seed", seed, "--mode", mode]
    elif command == "compare":
        args = ["--model", model, "--corpus", tiny, "--samples", count, "--seed", seed]
    else:
        args = ["--nbest", tiny, "--lm-weight", weight]
    assert_clean_exit(run(command, "--model", model, *args))


# -- regressions: inputs that once failed, and the huge counts the fuzzers leave out ----------


@pytest.mark.parametrize("command", ["train", "sample", "eval", "compare"])
def test_a_negative_seed(workdir, tiny, model, command):
    args = {
        "train": ["--corpus", tiny, "--valid-fraction", 0.5, "--out", workdir / "nowhere" / "x"],
        "sample": ["--model", model],
        "eval": ["--model", model, "--corpus", tiny, "--bootstrap", 2],
        "compare": ["--model", model, "--model", model, "--corpus", tiny, "--samples", 2],
    }[command]
    message = assert_clean_exit(run(command, *args, "--seed", -1))
    assert "seed" in message


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_subnormal_temperature(model):
    result = run("sample", "--model", model, "--temperature", "1e-320", "--seed", 0)
    assert_clean_exit(result)


@pytest.mark.parametrize("command", ["sample", "eval", "compare"])
def test_a_huge_count(model, tiny, command):
    args = {
        "sample": ["--model", model, "-n", 2**50],
        "eval": ["--model", model, "--corpus", tiny, "--bootstrap", 2**50],
        "compare": ["--model", model, "--model", model, "--corpus", tiny, "--samples", 2**50],
    }[command]
    assert assert_clean_exit(run(command, *args)) is not None


def test_fill_with_a_left_to_right_model(model):
    result = run("fill", "--model", model, "the cat ___")
    assert assert_clean_exit(result) is None
    assert math.isfinite(float(result.stdout.split()[0]))
