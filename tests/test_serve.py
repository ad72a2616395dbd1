"""`rnnlm serve` through a real uvicorn process on a free localhost port: the numbers of the
command line, a one-line 4xx for every bad request, many clients at once answered and
batched, several models by name, and a clean exit on SIGTERM with nothing dropped."""

import json
import signal
import socket
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi", reason="the service needs the serve extra: pip install -e .[serve]")
pytest.importorskip("uvicorn", reason="the service needs the serve extra: pip install -e .[serve]")

from servers import Server, tiny_model  # noqa: E402

from rnnlm import checkpoint  # noqa: E402
from rnnlm.cli import main  # noqa: E402
from rnnlm.model import Model  # noqa: E402
from rnnlm.next_word import next_distribution, next_words  # noqa: E402
from rnnlm.serve.server import is_loopback  # noqa: E402

SENTENCES = ["the cat sat on the mat", "a dog ran", "the zebra sat on a log ."]
LIMITS = {"max_wait_ms": 50.0, "max_sentences": 20, "max_chars": 100, "max_tokens": 12}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {
        "a": tiny_model(folder / "a.npz", seed=0),
        "b": tiny_model(folder / "b.npz", seed=1, cell="lstm"),
    }


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def server(models, cache):
    running = Server(models, cache, **LIMITS)
    yield running
    running.stop()


def cli_json(*arguments):
    result = CliRunner().invoke(main, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_scores_are_the_command_lines(server, models):
    expected = cli_json("score", "--model", str(models["a"]), *SENTENCES)
    status, got = server.request("POST", "/v1/score", {"sentences": SENTENCES, "per_word": True})
    assert status == 200
    assert got["model"] == "a"
    assert got["corpus_perplexity"] == pytest.approx(expected["corpus_perplexity"], rel=1e-9)
    for mine, theirs in zip(got["sentences"], expected["sentences"], strict=True):
        assert mine.keys() == theirs.keys()
        for key in ("text", "n_tokens", "n_unknown"):
            assert mine[key] == theirs[key]
        for key in ("log_prob", "log10_prob", "perplexity"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-9)
        assert [t["token"] for t in mine["tokens"]] == [t["token"] for t in theirs["tokens"]]
        np.testing.assert_allclose(
            [t["prob"] for t in mine["tokens"]], [t["prob"] for t in theirs["tokens"]], rtol=1e-9
        )
    status, short = server.request("POST", "/v1/score", {"sentences": SENTENCES[:1]})
    assert "tokens" not in short["sentences"][0]  # per_word is off by default
    assert "corpus_perplexity" not in short


def test_next_is_the_librarys_and_sums_to_at_most_one(server, models):
    ckpt = checkpoint.load(models["a"])
    model = Model(ckpt.config.model, params=ckpt.params)
    (expected,) = next_words(model, ckpt.vocab, [["the", "cat"]], top_k=5)
    status, got = server.request("POST", "/v1/next", {"context": "The cat", "top_k": 5})
    assert status == 200
    assert got["tokens"] == ["the", "cat"]
    assert [c["token"] for c in got["next"]] == [word for word, _ in expected]
    np.testing.assert_allclose([c["prob"] for c in got["next"]], [p for _, p in expected])
    _, everything = server.request("POST", "/v1/next", {"context": "the cat", "top_k": 1000})
    total = sum(c["prob"] for c in everything["next"])
    assert len(everything["next"]) == len(ckpt.vocab) - 1  # all but SENTENCE_START
    start = next_distribution(model, ckpt.vocab, [["the", "cat"]])[0, ckpt.vocab.start_id]
    assert total == pytest.approx(1 - start, abs=1e-12)  # the whole vocabulary sums to 1


def test_samples_are_the_command_lines_for_the_same_seed(server, models):
    expected = cli_json("sample", "--model", str(models["a"]), "-n", "3", "--seed", "5")
    status, got = server.request("POST", "/v1/sample", {"n": 3, "seed": 5})
    assert status == 200
    assert [s["text"] for s in got["samples"]] == [s["text"] for s in expected]
    _, primed = server.request("POST", "/v1/sample", {"prompt": "the dog", "n": 2, "seed": 1})
    assert primed["prompt_tokens"] == 2
    assert all(s["text"].startswith("the dog") for s in primed["samples"])


def test_models_are_chosen_by_name(server):
    body = {"sentences": SENTENCES[:1]}
    _, a = server.request("POST", "/v1/score", body)
    _, b = server.request("POST", "/v1/score", {**body, "model": "b"})
    assert b["model"] == "b"
    assert a["sentences"][0]["log_prob"] != b["sentences"][0]["log_prob"]
    status, info = server.request("GET", "/v1/info")
    assert status == 200
    assert [m["name"] for m in info["models"]] == ["a", "b"]
    assert [m["cell"] for m in info["models"]] == ["gru", "lstm"]
    assert info["limits"]["max_tokens"] == LIMITS["max_tokens"]
    status, missing = server.request("POST", "/v1/score", {**body, "model": "c"})
    assert (status, missing["error"]) == (404, "no model named 'c' (serving: a, b)")


BAD_REQUESTS = [
    ("POST", "/v1/score", b'{"sentences": ["a"', 400, "malformed JSON"),
    ("POST", "/v1/score", b"", 422, "JSON object"),
    ("POST", "/v1/score", b"[1, 2]", 422, "JSON object"),
    ("POST", "/v1/score", b"{}", 422, "sentences: required"),
    ("POST", "/v1/score", b'{"sentences": []}', 422, "empty"),
    ("POST", "/v1/score", b'{"sentences": "the cat"}', 422, "sentences: Input should be"),
    ("POST", "/v1/score", b'{"sentences": [1]}', 422, "sentences.0"),
    ("POST", "/v1/score", b'{"sentences": ["a"], "per_word": "yes"}', 422, "per_word"),
    ("POST", "/v1/score", b'{"sentences": ["a"], "verbose": true}', 422, "unknown field"),
    ("POST", "/v1/score", b'{"sentences": ["  "]}', 422, "sentence 1 has no words"),
    ("POST", "/v1/score", json.dumps({"sentences": ["a"] * 21}).encode(), 422, "limit is 20"),
    ("POST", "/v1/score", json.dumps({"sentences": ["x" * 101]}).encode(), 422, "characters"),
    ("POST", "/v1/score", json.dumps({"sentences": ["a " * 13]}).encode(), 422, "13 tokens"),
    ("POST", "/v1/score", b'{"sentences": ["a"]}' + b" " * 1_000_000, 413, "body over"),
    ("POST", "/v1/next", b'{"context": "the", "top_k": 0}', 422, "top_k"),
    ("POST", "/v1/next", b'{"context": "the", "top_k": 2.5}', 422, "top_k"),
    ("POST", "/v1/next", b'{"context": null}', 422, "context"),
    ("POST", "/v1/sample", b'{"n": 0}', 422, "n must be"),
    ("POST", "/v1/sample", b'{"n": 1000}', 422, "n must be"),
    ("POST", "/v1/sample", b'{"temperature": 0}', 422, "temperature"),
    ("POST", "/v1/sample", b'{"max_length": 1, "prompt": "the cat"}', 422, "prompt"),
    ("POST", "/v1/sample", b'{"seed": -1}', 422, "seed"),
    ("GET", "/v1/score", None, 405, "Method Not Allowed"),
    ("GET", "/v2/score", None, 404, "Not Found"),
]


@pytest.mark.parametrize(("method", "path", "raw", "status", "reason"), BAD_REQUESTS)
def test_a_bad_request_gets_a_4xx_with_a_one_line_reason(server, method, path, raw, status, reason):
    got_status, body = server.request(method, path, raw=raw)
    assert got_status == status
    assert reason in body["error"]
    assert "\n" not in body["error"] and len(body["error"]) < 300


def test_not_json_at_all(server):
    status, body = server.request(
        "POST", "/v1/score", raw=b"sentences=a", headers={"Content-Type": "text/plain"}
    )
    assert status in (400, 415, 422)
    assert "JSON" in body["error"]
    assert server.request("GET", "/v1/health")[0] == 200  # and the server is still there


def test_many_clients_at_once_are_all_answered_and_batched(server):
    _, alone = server.request("POST", "/v1/score", {"sentences": SENTENCES})
    _, info_before = server.request("GET", "/v1/info")
    answers, errors = [], []

    def client(number):
        try:
            for _ in range(4):
                answers.append(server.request("POST", "/v1/score", {"sentences": SENTENCES}))
                context = {"context": SENTENCES[number % 3], "top_k": 3}
                answers.append(server.request("POST", "/v1/next", context))
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(answers) == 16 * 8
    assert all(status == 200 for status, _ in answers)
    scored = [body for _, body in answers if "sentences" in body]
    for body in scored:  # a sentence scores the same whoever shares its batch
        for mine, theirs in zip(body["sentences"], alone["sentences"], strict=True):
            assert mine["log_prob"] == pytest.approx(theirs["log_prob"], rel=1e-9)
    _, info = server.request("GET", "/v1/info")
    before, after = info_before["batches"]["a"]["score"], info["batches"]["a"]["score"]
    requests, calls = after["requests"] - before["requests"], after["calls"] - before["calls"]
    assert requests == 64
    assert calls < requests  # concurrent requests shared compiled calls


def test_the_playground_and_the_api_docs_are_served(server):
    status, page = server.request("GET", "/")
    assert status == 200 and "rnnlm playground" in page
    status, spec = server.request("GET", "/openapi.json")
    assert status == 200
    assert {"/v1/score", "/v1/next", "/v1/sample", "/v1/info", "/v1/health"} <= set(spec["paths"])


def test_it_binds_to_this_machine_only_unless_told_and_says_so(server):
    assert "127.0.0.1" in server.log.read_text()
    assert "this machine only" in server.log.read_text()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_sigterm_lets_open_requests_finish_then_exits(models, cache):
    # A second server starts from the compiled-function cache the first one filled.
    server = Server({"a": models["a"]}, cache, max_sentences=100, max_tokens=200)
    long_sentences = [" ".join(["the cat sat on the mat"] * 20)] * 100
    answers = []

    def client():
        answers.append(server.request("POST", "/v1/score", {"sentences": long_sentences}))

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    # Once the first of at least three batches is done, the rest are in flight: stop now.
    while server.request("GET", "/v1/info")[1]["batches"]["a"]["score"]["calls"] < 1:
        time.sleep(0.01)
    code = server.stop(signal.SIGTERM)
    for thread in threads:
        thread.join()
    assert code == 0
    assert [status for status, _ in answers] == [200] * 6
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", server.port), 1):
        pass
    assert "Stopped." in server.log.read_text()
