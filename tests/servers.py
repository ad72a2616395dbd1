"""A real `rnnlm serve` process on a free localhost port, and tiny models to serve; shared by
the service and the browser tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from rnnlm import checkpoint
from rnnlm.config import Config, DataConfig, ModelConfig
from rnnlm.model import init_params
from rnnlm.vocab import build_vocabulary, count_tokens

CORPUS = [
    "the cat sat on the mat".split(),
    "the dog sat on the log".split(),
    "a cat saw a dog".split(),
    "the dog ran to the cat".split(),
]
STARTUP_SECONDS = 300  # a cold compile of three small functions, on a busy machine
# The command line as `rnnlm` runs it, from whichever checkout is being tested.
RNNLM = [sys.executable, "-c", "from rnnlm.cli import main; main()"]


def tiny_model(path: Path, seed: int = 0, cell: str = "gru") -> Path:
    """A float64 checkpoint with random weights over a 13-word vocabulary."""
    vocab = build_vocabulary(count_tokens(CORPUS), 50)
    model = ModelConfig(
        vocab_size=len(vocab), hidden_size=8, cell=cell, embedding_size=6, dtype="float64"
    )
    config = Config(data=DataConfig(), model=model)
    params = init_params(model, np.random.default_rng(seed))
    checkpoint.save(path, checkpoint.Checkpoint(config, vocab, params))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`rnnlm serve` in a child process; `request` speaks JSON to it."""

    def __init__(self, models: dict[str, Path], cache: Path, **limits: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [*RNNLM, "serve", "--port", str(self.port)]
        for name, path in models.items():
            command += ["--model", f"{name}={path}"]
        for name, value in limits.items():
            command += ["--" + name.replace("_", "-"), str(value)]
        env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
        self.log = cache / f"server-{self.port}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                status, _ = self.request("GET", "/v1/health", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not start: {self.log.read_text()[-2000:]}")

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: dict | None = None,
        timeout: float = 120,
    ) -> tuple[int, object]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent_headers = {"Content-Type": "application/json"} if data is not None else {}
        sent_headers.update(headers or {})
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers=sent_headers
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, _decode(response.read(), response.headers)
        except urllib.error.HTTPError as error:
            return error.code, _decode(error.read(), error.headers)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _decode(data: bytes, headers) -> object:
    if "json" in headers.get("content-type", ""):
        return json.loads(data)
    return data.decode("utf-8", "replace")
