"""How many sentences per second `rnnlm serve` scores, against a process per request and
`rnnlm score --file`, and its latency under concurrent clients.

A bounded load test on localhost, every row measured in the same run:

  1. service, mixed: --clients keep-alive clients send --requests POST /v1/score requests of
     1..--max-sentences sentences each (drawn from the PTB validation text, else made up);
  2. service, single sentences: the same clients, --single-requests requests of one sentence:
     the latency that matters for rescoring one hypothesis at a time;
  3. one `rnnlm score` process per request (warm compiled-function cache), --cli-requests of
     the row-1 requests, --clients at a time;
  4. one `rnnlm score --file` process over all of row 1's sentences.

For each: sentences/s, requests, p50/p99 latency in ms, errors (any non-200 or failed
request) and 5xx. The model is --model, or a PTB-small-sized LSTM (vocabulary 10,001, 2x200,
embedding 200) with random weights, made in a temporary folder: speed does not depend on
the weights. The service starts first and fills the compiled-function cache, so rows 3-4
start warm, as a user's second run would.

    python scripts/bench_serve.py                     # the default run, a few minutes
    python scripts/bench_serve.py --requests 200 --single-requests 200 --cli-requests 8
    python scripts/bench_serve.py --json serve.json

The machine's load average is printed with the results: on a shared machine, compare only
figures from the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PTB = ROOT.parent / "shared" / "data" / "ptb"
RNNLM = [sys.executable, "-c", "from rnnlm.cli import main; main()"]
STARTUP_SECONDS = 900  # a cold compile of the PTB model's functions on a busy machine


@dataclass
class Row:
    name: str
    requests: int = 0
    sentences: int = 0
    wall_s: float = 0.0
    errors: int = 0
    server_errors: int = 0  # 5xx
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def sentences_per_s(self) -> float:
        return self.sentences / self.wall_s if self.wall_s else 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    def to_dict(self) -> dict:
        values = asdict(self)
        del values["latencies_ms"]
        return values | {
            "sentences_per_s": self.sentences_per_s,
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
        }


def ptb_sized_model(folder: Path) -> Path:
    """A checkpoint shaped like configs/ptb-small.toml, random weights, PTB's vocabulary
    when the corpus is here (else 10,000 made-up words)."""
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from rnnlm import checkpoint
    from rnnlm.config import Config, DataConfig, ModelConfig
    from rnnlm.model import init_params
    from rnnlm.vocab import build_vocabulary, count_tokens

    train = PTB / "ptb.train.txt"
    if train.exists():
        sentences = [line.split() for line in train.read_text().splitlines() if line.strip()]
    else:
        sentences = [[f"w{i}" for i in range(j, j + 10)] for j in range(0, 10_000, 10)]
    vocab = build_vocabulary(count_tokens(sentences), 10_001, 1, "<unk>")
    data = DataConfig(format="lines", level="whitespace", lowercase=False, unknown="<unk>")
    model = ModelConfig(
        vocab_size=len(vocab),
        hidden_size=200,
        cell="lstm",
        layers=2,
        embedding_size=200,
        init_scale=0.1,
        bptt_truncate=-1,
    )
    params = init_params(model, np.random.default_rng(0))
    path = folder / "ptb-small-random.npz"
    checkpoint.save(path, checkpoint.Checkpoint(Config(data=data, model=model), vocab, params))
    return path


def sentence_pool(limit: int = 5000) -> list[str]:
    valid = PTB / "ptb.valid.txt"
    if valid.exists():
        lines = [line.strip() for line in valid.read_text().splitlines() if line.strip()]
        return lines[:limit]
    rng = random.Random(0)
    return [" ".join(f"w{rng.randrange(10_000)}" for _ in range(rng.randint(5, 30)))] * limit


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_service(model: Path, port: int, log: Path) -> subprocess.Popen:
    command = [*RNNLM, "serve", "--model", str(model), "--port", str(port), "--quiet"]
    process = subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the service exited: {log.read_text()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/v1/health")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the service did not start in time")


def load_test(name: str, port: int, requests: list[list[str]], clients: int) -> Row:
    """`clients` threads, each on one keep-alive connection, share out `requests`."""
    row = Row(name)
    lock = threading.Lock()
    queue = iter(requests)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while True:
            with lock:
                sentences = next(queue, None)
            if sentences is None:
                break
            body = json.dumps({"sentences": sentences})
            started = time.perf_counter()
            try:
                connection.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = None
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                row.requests += 1
                row.latencies_ms.append(elapsed)
                if status == 200:
                    row.sentences += len(sentences)
                else:
                    row.errors += 1
                    row.server_errors += status is not None and status >= 500
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    row.wall_s = time.perf_counter() - started
    return row


def process_per_request(model: Path, requests: list[list[str]], clients: int) -> Row:
    row = Row("one `rnnlm score` process per request")

    def one(sentences: list[str]) -> tuple[float, bool]:
        started = time.perf_counter()
        result = subprocess.run(
            [*RNNLM, "score", "--model", str(model), "--json", "--quiet", *sentences],
            capture_output=True,
        )
        return (time.perf_counter() - started) * 1000, result.returncode == 0

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for (elapsed, ok), sentences in zip(pool.map(one, requests), requests, strict=True):
            row.requests += 1
            row.latencies_ms.append(elapsed)
            row.sentences += len(sentences) if ok else 0
            row.errors += not ok
    row.wall_s = time.perf_counter() - started
    return row


def score_file(model: Path, sentences: list[str], folder: Path) -> Row:
    row = Row("one `rnnlm score --file` process")
    path = folder / "sentences.txt"
    path.write_text("\n".join(sentences) + "\n")
    started = time.perf_counter()
    result = subprocess.run(
        [*RNNLM, "score", "--model", str(model), "--file", str(path), "--json", "--quiet"],
        capture_output=True,
    )
    row.wall_s = time.perf_counter() - started
    row.requests = 1
    row.latencies_ms.append(row.wall_s * 1000)
    if result.returncode == 0:
        row.sentences = len(json.loads(result.stdout)["sentences"])
    else:
        row.errors = 1
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="default: a PTB-small-sized random model")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=2000, help="row 1's requests")
    parser.add_argument("--max-sentences", type=int, default=20)
    parser.add_argument("--single-requests", type=int, default=2000, help="row 2's requests")
    parser.add_argument("--cli-requests", type=int, default=24, help="row 3's processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()

    os.chdir(ROOT)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env_path) if p)
    rng = random.Random(args.seed)
    pool = sentence_pool()
    mixed = [rng.sample(pool, rng.randint(1, args.max_sentences)) for _ in range(args.requests)]
    single = [[rng.choice(pool)] for _ in range(args.single_requests)]

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        model = args.model or ptb_sized_model(folder)
        port = free_port()
        started = time.perf_counter()
        service = start_service(model, port, folder / "serve.log")
        startup_s = time.perf_counter() - started
        try:
            load_test("warm-up", port, mixed[: 4 * args.clients], args.clients)
            rows = [
                load_test(f"service, 1-{args.max_sentences} sentences", port, mixed, args.clients),
                load_test("service, single sentences", port, single, args.clients),
            ]
        finally:
            service.terminate()
            service.wait(60)
        rows.append(process_per_request(model, mixed[: args.cli_requests], args.clients))
        rows.append(score_file(model, [s for request in mixed for s in request], folder))

    service_rate, process_rate = rows[0].sentences_per_s, rows[2].sentences_per_s
    summary = {
        "model": str(args.model or "PTB-small-sized, random weights"),
        "clients": args.clients,
        "service_startup_s": startup_s,
        "rows": [row.to_dict() for row in rows],
        "service_over_process_per_request": service_rate / process_rate if process_rate else None,
        "single_sentence_p99_ms": rows[1].percentile(99),
        "load_average_end": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    header = ("sent/s", 9), ("requests", 9), ("p50 ms", 8), ("p99 ms", 8), ("errors", 7)
    print(" " * 42, *(f"{name:>{width}}" for name, width in header), f"{'5xx':>4}")
    for row in rows:
        p50, p99 = row.percentile(50), row.percentile(99)
        print(
            f"{row.name:42} {row.sentences_per_s:9.1f} {row.requests:9d} "
            f"{p50 or 0:8.1f} {p99 or 0:8.1f} {row.errors:7d} {row.server_errors:4d}"
        )
    ratio = summary["service_over_process_per_request"]
    print(f"service / one process per request: {ratio:.1f}x" if ratio else "")
    print(
        f"service start-up {startup_s:.1f} s; load average at the end {summary['load_average_end']}"
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
