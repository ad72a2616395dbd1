"""`rnnlm prepare` on Dask and `rnnlm train --data`: same bytes whatever the workers, same
sentences and vocabulary as reading the corpus directly, one-line errors for bad folders.

Dask runs in-process (LocalCluster(processes=False)) except in one test of `--workers`.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rnnlm import checkpoint, shards
from rnnlm.cli import main
from rnnlm.config import Config, DataConfig, ModelConfig, TrainConfig
from rnnlm.corpus import load_corpus
from rnnlm.data import load_training_data
from rnnlm.errors import RnnlmError
from rnnlm.executor import Runner
from rnnlm.prepare import DEFAULT_PUNKT_SAMPLE, sample_shares
from rnnlm.shards import ShardedSentences, open_prepared
from rnnlm.vocab import build_vocabulary, count_tokens

try:
    import distributed  # noqa: F401  (the `distributed` extra)

    HAVE_DASK = True
except ImportError:
    HAVE_DASK = False
needs_dask = pytest.mark.skipif(
    not HAVE_DASK, reason="dask.distributed not installed (pip install 'rnnlm[distributed]')"
)

WORDS = "the cat dog sat on mat a bird sang red blue ran to saw e.g. dr. mr. smith".split()
ROWS_PER_FILE = [2, 40, 5, 90]  # uneven on purpose


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_ok(result):
    assert result.exit_code == 0, result.output
    assert result.exception is None


def assert_one_line_error(result, *fragments, code=1):
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert sum(line.startswith("Error") for line in lines) == 1, result.stderr
    message = lines[-1]
    assert message.startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in message, message
    return message


def text(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(1, 4)):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9)))
        sentences.append(words.capitalize() + rng.choice([".", "!", "?"]))
    return " ".join(sentences)


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    """CSV files of uneven sizes, and one-sentence-per-line text files beside them."""
    folder = tmp_path_factory.mktemp("dump")
    rng = random.Random(7)
    for k, rows in enumerate(ROWS_PER_FILE):
        with (folder / f"part-{k}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "body"])
            writer.writerows([i, text(rng)] for i in range(rows))
        lines = [text(rng).replace(".", " .") for _ in range(rows)]
        (folder / f"part-{k}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def scheduler():
    """The address of a two-worker Dask cluster running in this process."""
    if not HAVE_DASK:
        pytest.skip("dask.distributed not installed (pip install 'rnnlm[distributed]')")
    from dask.distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",
        scheduler_kwargs={"dashboard": False},
    ) as cluster:
        yield cluster.scheduler_address


def prepare(pattern, out, *options):
    result = run("prepare", "--corpus", pattern, "--out", out, "--vocab-size", 20, *options)
    assert_ok(result)
    return out


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def one_process(dump, tmp_path_factory):
    """The CSV files prepared without Dask, in small shards and a small Punkt sample."""
    out = tmp_path_factory.mktemp("prep") / "one"
    options = ("--shard-size", 300, "--punkt-sample", 2000)
    return prepare(dump / "*.csv", out, "--workers", 0, *options), options


# -- the same bytes whatever the workers ----------------------------------------------------


@needs_dask
def test_two_dask_workers_write_the_same_bytes_as_one_process(
    dump, one_process, scheduler, tmp_path
):
    reference, options = one_process
    out = prepare(dump / "*.csv", tmp_path / "two", "--scheduler", scheduler, *options)
    written = folder_bytes(out)
    assert written == folder_bytes(reference)
    assert sum(name.endswith(".ids.npy") for name in written) > 2  # cut into several shards
    index = json.loads(written["index.json"])
    assert [f["path"] for f in index["files"]] == sorted(str(p) for p in dump.glob("*.csv"))
    assert [f["documents"] for f in index["files"]] == ROWS_PER_FILE


@needs_dask
def test_a_local_cluster_of_worker_processes_writes_the_same_bytes(dump, tmp_path):
    one = prepare(dump / "*.txt", tmp_path / "one", "--workers", 0, "--level", "whitespace")
    two = prepare(dump / "*.txt", tmp_path / "two", "--workers", 2, "--level", "whitespace")
    assert folder_bytes(one) == folder_bytes(two)


@needs_dask
def test_a_bad_file_on_a_worker_is_a_one_line_error_naming_it(dump, scheduler, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("part-1.csv", "part-3.csv"):
        (corpus / name).write_bytes((dump / name).read_bytes())
    (corpus / "part-2.csv").write_bytes(b"id,body\n1,caf\xe9 au lait\n")
    result = run(
        "prepare", "--corpus", corpus / "*.csv", "--out", tmp_path / "o", "--scheduler", scheduler
    )
    assert_one_line_error(result, "part-2.csv", "not UTF-8")
    assert not (tmp_path / "o" / shards.INDEX_NAME).exists()


# -- the same sentences and vocabulary as reading the corpus directly -----------------------


def test_a_single_csv_gives_the_sentences_and_vocabulary_of_load_corpus(dump, tmp_path):
    path = dump / "part-3.csv"
    prepared = open_prepared(prepare(path, tmp_path / "p", "--workers", 0, "--shard-size", 100))
    direct = load_corpus(path).sentences  # Punkt trained on the file itself
    vocab = build_vocabulary(count_tokens(direct), 20)
    assert prepared.vocab == vocab
    assert len(prepared.sentences) == len(direct)
    for got, tokens in zip(prepared.sentences, direct, strict=True):
        np.testing.assert_array_equal(got, vocab.encode(tokens))
    assert prepared.num_tokens == sum(len(s) for s in direct)


def test_many_files_give_the_sentences_of_each_in_sorted_order(dump, tmp_path):
    prepared = open_prepared(prepare(dump / "part-*.txt", tmp_path / "p", "--workers", 0))
    direct = [s for p in sorted(dump.glob("*.txt")) for s in load_corpus(p).sentences]
    assert prepared.vocab == build_vocabulary(count_tokens(direct), 20)
    expected = [prepared.vocab.encode(tokens) for tokens in direct]
    assert len(prepared.sentences) == len(expected)
    for i in (0, 1, len(expected) // 2, -1):
        np.testing.assert_array_equal(prepared.sentences[i], expected[i])
    assert all(np.array_equal(a, b) for a, b in zip(prepared.sentences, expected, strict=True))


@pytest.mark.parametrize("shard_size", [1, 7, 64, 10**9])
def test_the_shard_size_changes_the_files_not_the_sentences(
    dump, one_process, tmp_path, shard_size
):
    reference, _ = one_process
    out = prepare(
        dump / "*.csv",
        tmp_path / "p",
        "--workers",
        0,
        "--punkt-sample",
        2000,
        "--shard-size",
        shard_size,
    )
    got, want = open_prepared(out).sentences, open_prepared(reference).sentences
    assert [s.tolist() for s in got] == [s.tolist() for s in want]
    index = json.loads((out / shards.INDEX_NAME).read_text())
    sizes = [record["ids_count"] for record in index["shards"]]
    longest = max(len(s) for s in got)
    assert all(size <= max(shard_size, longest) for size in sizes)


def test_sentences_index_like_a_list():
    ids = np.array([0, 5, 1, 0, 6, 7, 1, 0, 8, 1], dtype=np.int32)
    sentences = ShardedSentences([(ids[:7], np.array([0, 3, 7])), (ids[7:], np.array([0, 3]))])
    assert len(sentences) == 3
    assert [s.tolist() for s in sentences] == [[0, 5, 1], [0, 6, 7, 1], [0, 8, 1]]
    assert sentences[-1].tolist() == [0, 8, 1]
    assert [s.tolist() for s in sentences[1:]] == [[0, 6, 7, 1], [0, 8, 1]]
    with pytest.raises(IndexError):
        sentences[3]


def test_the_punkt_sample_is_shared_out_by_size():
    assert sample_shares([10, 1000, 50], 300) == [10, 240, 50]  # small files come whole
    assert sample_shares([10, 20], 1000) == [10, 20]
    assert sum(sample_shares([5, 500, 5000, 7], 1001)) <= 1001


# -- train --data ---------------------------------------------------------------------------


def tiny_config(**data) -> Config:
    return Config(
        data=DataConfig(vocab_size=20, **data),
        model=ModelConfig(hidden_size=4, bptt_truncate=-1, dtype="float64"),
        train=TrainConfig(batch_size=8, epochs=1, eval_every=20, eval_sentences=50),
    )


def test_training_on_prepared_data_equals_training_on_the_corpus(dump, tmp_path):
    corpus = dump / "part-3.csv"
    folder = prepare(corpus, tmp_path / "p", "--workers", 0)
    common = ["--hidden-size", 4, "--batch-size", 8, "--epochs", 1, "--eval-every", 20]
    common += ["--bptt-truncate", -1, "--eval-sentences", 50, "--json", "-q"]
    direct = run(
        "train", "--corpus", corpus, "--vocab-size", 20, "--out", tmp_path / "a.npz", *common
    )
    shard = run("train", "--data", folder, "--out", tmp_path / "b.npz", *common)
    assert_ok(direct)
    assert_ok(shard)
    a, b = json.loads(direct.stdout), json.loads(shard.stdout)
    assert a["steps"] == b["steps"] > 5
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]
    assert b["corpus"] == str(folder)
    data = checkpoint.load(tmp_path / "b.npz").config.data
    assert (data.prepared, data.corpus, data.level) == (str(folder), str(corpus), "word")


def test_a_validation_fraction_splits_the_prepared_sentences(one_process):
    folder, _ = one_process
    stored = open_prepared(folder)
    prepared = load_training_data(tiny_config(prepared=str(folder), valid_fraction=0.25))
    assert len(prepared.valid) == int(len(stored.sentences) * 0.25)
    assert len(prepared.valid) + len(prepared.sentences) == len(stored.sentences)
    every = sorted(s.tobytes() for part in (prepared.valid, prepared.sentences) for s in part)
    assert every == sorted(s.tobytes() for s in stored.sentences)


def test_a_validation_file_is_read_like_the_prepared_corpus(dump, one_process):
    folder, _ = one_process
    prepared = load_training_data(tiny_config(prepared=str(folder), valid=str(dump / "part-0.csv")))
    direct = load_corpus(dump / "part-0.csv").sentences
    assert [s.tolist() for s in prepared.valid] == [
        prepared.vocab.encode(t).tolist() for t in direct
    ]


def test_resuming_with_a_folder_prepared_again_is_refused(one_process, dump):
    folder, _ = one_process
    other = build_vocabulary(count_tokens(load_corpus(dump / "part-0.csv").sentences), 10)
    with pytest.raises(RnnlmError, match="prepared again"):
        load_training_data(tiny_config(prepared=str(folder)), vocab=other)


# -- bad input ------------------------------------------------------------------------------


def test_no_matching_files_is_a_one_line_error(tmp_path):
    result = run("prepare", "--corpus", tmp_path / "nothing" / "*.csv", "--out", tmp_path / "o")
    assert_one_line_error(result, "no files match", "nothing")


def test_no_corpus_at_all_is_a_one_line_error(tmp_path):
    result = run("prepare", "--out", tmp_path / "o", "--workers", 0)
    assert_one_line_error(result, "--corpus")


def test_a_missing_corpus_file_is_a_one_line_error(tmp_path):
    result = run("prepare", "--corpus", tmp_path / "no.csv", "--out", tmp_path / "o")
    assert_one_line_error(result, "no.csv", "no such file")


def test_a_folder_as_corpus_asks_for_a_pattern(dump, tmp_path):
    result = run("prepare", "--corpus", dump, "--out", tmp_path / "o", "--workers", 0)
    assert_one_line_error(result, "is a folder", "*.csv")


def test_a_config_file_gives_the_data_options(dump, tmp_path):
    config = tmp_path / "c.toml"
    pattern = str(dump / "*.txt")
    config.write_text(f'[data]\ncorpus = "{pattern}"\nlevel = "whitespace"\nvocab_size = 12\n')
    result = run("prepare", "--config", config, "--out", tmp_path / "o", "--workers", 0, "--json")
    assert_ok(result)
    assert json.loads(result.stdout)["vocab_size"] == 12
    stored = open_prepared(tmp_path / "o").data
    assert (stored.corpus, stored.level, stored.vocab_size) == (pattern, "whitespace", 12)


@needs_dask
def test_workers_that_keep_dying_are_a_one_line_error():
    from distributed import KilledWorker

    class Client:
        def scheduler_info(self):
            return {"workers": {}}

    class Dying:
        def result(self):
            raise KilledWorker("tokenize_file-1234", None, 3)

    runner = Runner(Client(), show_progress=False)
    with pytest.raises(RnnlmError, match="kept dying while running tokenize_file-1234"):
        runner.result(Dying())


def test_a_non_empty_output_folder_is_refused(dump, one_process):
    folder, _ = one_process
    result = run("prepare", "--corpus", dump / "*.csv", "--out", folder, "--workers", 0)
    assert_one_line_error(result, "not empty")


def test_files_of_mixed_kinds_need_a_format(dump, tmp_path):
    result = run("prepare", "--corpus", dump / "part-1.*", "--out", tmp_path / "o", "--workers", 0)
    assert_one_line_error(result, "--format")


def test_scheduler_and_workers_together_are_a_usage_error(dump, tmp_path):
    result = run(
        "prepare",
        "--corpus",
        dump / "*.csv",
        "--out",
        tmp_path / "o",
        "--scheduler",
        "tcp://127.0.0.1:1",
        "--workers",
        2,
    )
    assert_one_line_error(result, "--scheduler", "--workers", code=2)
    assert "Usage: " in result.stderr and " prepare [OPTIONS]" in result.stderr


def test_without_dask_the_error_says_what_to_install(dump, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails
    result = run("prepare", "--corpus", dump / "*.csv", "--out", tmp_path / "o", "--workers", 2)
    assert_one_line_error(result, "rnnlm[distributed]", "--workers 0")


@pytest.fixture
def copy(one_process, tmp_path):
    folder, _ = one_process
    target = tmp_path / "copy"
    target.mkdir()
    for path in folder.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def train_on(folder, *options):
    return run("train", "--data", folder, "--hidden-size", 4, "--epochs", 1, *options)


def test_train_data_without_an_index_is_a_one_line_error(copy):
    (copy / shards.INDEX_NAME).unlink()
    assert_one_line_error(train_on(copy), "index.json", "rnnlm prepare")


def test_train_data_with_a_corrupt_index_is_a_one_line_error(copy):
    (copy / shards.INDEX_NAME).write_text('{"format": "rnnlm-prepared", "format_vers')
    assert_one_line_error(train_on(copy), "corrupt index")


def test_train_data_with_an_index_from_the_future_is_a_one_line_error(copy):
    index = json.loads((copy / shards.INDEX_NAME).read_text())
    index["format_version"] = 99
    (copy / shards.INDEX_NAME).write_text(json.dumps(index))
    assert_one_line_error(train_on(copy), "format version 99")


def test_train_data_with_a_missing_shard_is_a_one_line_error(copy):
    (copy / "shard-00001.ids.npy").unlink()
    assert_one_line_error(train_on(copy), "shard-00001.ids.npy", "missing shard")


def test_train_data_with_a_shard_of_the_wrong_dtype_is_a_one_line_error(copy):
    ids = np.load(copy / "shard-00000.ids.npy")
    np.save(copy / "shard-00000.ids.npy", ids.astype(np.float64))
    assert_one_line_error(train_on(copy), "shard-00000.ids.npy", "float64", "int32")


def test_train_data_with_ids_outside_the_vocabulary_is_a_one_line_error(copy):
    ids = np.load(copy / "shard-00000.ids.npy")
    ids[1] = 20
    np.save(copy / "shard-00000.ids.npy", ids)
    assert_one_line_error(train_on(copy), "outside the vocabulary")


def test_train_data_with_a_truncated_shard_is_a_one_line_error(copy):
    path = copy / "shard-00000.offsets.npy"
    path.write_bytes(path.read_bytes()[:-16])
    assert_one_line_error(train_on(copy), "shard-00000.offsets.npy")


def test_train_data_with_tokenization_options_is_refused(copy):
    assert_one_line_error(train_on(copy, "--vocab-size", 50), "--vocab-size", "rnnlm prepare")


def test_help_shows_the_defaults_the_code_uses():
    result = run("prepare", "--help")
    assert_ok(result)
    flat = " ".join(result.output.split())
    assert f"[default: {DEFAULT_PUNKT_SAMPLE}]" in flat
    assert f"[default: {shards.DEFAULT_SHARD_SIZE}]" in flat
