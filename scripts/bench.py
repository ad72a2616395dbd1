"""How fast rnnlm trains, samples, compiles and scores, with PyTorch on the same model for scale.

Prints one table; every row is measured in the same run:

  1. the WildML tutorial's training as it did it: a bias-free tanh RNN (vocabulary 8000,
     100 units, float64, bptt_truncate 4), per-sentence SGD (lr 0.005) on the sentences of
     ../shared/data/reddit-posts/reddit-posts.csv (rows 1-2 are skipped when it is absent);
  2. the same model trained the fast way: float32, 32 length-bucketed sentences per batch;
  3. Zaremba et al.'s PTB-small LSTM (vocabulary 10,000, embedding 200, 2x200 LSTM, batch 20,
     35 steps of random ids carried stream-style, full softmax, SGD 1.0, global-norm clip 5),
     and 4. the same model in PyTorch, at each thread count of --threads;
  5. sampling from the PTB model (batch 1), the peak RSS of a PTB training process, the
     compile time of its training graph with a cold and a warm Aesara cache, and the wall
     time of `rnnlm score "a sentence"` from a fresh process with a warm cache;
  6. the GFLOP/s of the PTB step's matrix products, as a share of a GEMM peak measured here
     (an Aesara float32 dot of two 2000x2000 matrices, i.e. scipy's OpenBLAS sgemm).

Method: contenders that are compared run in turn (A, B, A, B, ...) so that drift of a shared
machine hits them alike; each figure is the median over repetitions of a fixed amount of
work, after one untimed warm-up round; tokens/s counts real (masked) tokens. Subprocesses
start with OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = the largest --threads; a contender's
thread count is set before each of its repetitions, with openblas_set_num_threads on
every OpenBLAS loaded (scipy's, which Aesara calls, and numpy's), omp_set_num_threads on every
OpenMP runtime (rnnlm's fused softmax op) and torch.set_num_threads,
so the PTB graph is compiled once for all thread counts. The PTB rows run in a fresh process
(its compile time is the warm one, its peak RSS that of training); the cold compile runs
before it in another, on an empty compiledir (AESARA_FLAGS=compiledir=<temp folder>).

Run from anywhere (paths are taken relative to the repository root):

    python scripts/bench.py --quick             # about two minutes; no cold compile
    python scripts/bench.py --json bench.json   # the full run, under 20 minutes
    python scripts/bench.py --threads 1,2,4

--json PATH writes every figure. Scalars: tutorial_ms_step, tutorial_tok_s,
rnnlm_same_model_ms_step, rnnlm_same_model_tok_s, same_model_speedup (row 2 / row 1 tokens/s;
these five are null when the CSV is absent), sample_ms_per_token, sample_compile_s,
train_peak_rss_mb, compile_cold_s (null with --quick), compile_warm_s, score_cli_s,
train_gflop_per_step. Per thread count, nested as {"1": value, "2": value, ...}:
rnnlm_ptb_ms_step, rnnlm_ptb_tok_s, pytorch_ptb_ms_step, pytorch_ptb_tok_s,
rnnlm_over_pytorch (rnnlm tokens/s / PyTorch tokens/s; these three null without PyTorch),
gemm_peak_gflops, train_step_gflops, gemm_peak_share. Also: machine, sizes, threads, notes,
compile_s (rows 1-2), wall_s, load_average_end, and timings (per contender: median_s,
ms_step, tok_s, spread, reps, threads).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import rnnlm
from rnnlm import backend
from rnnlm.backend import tensor as tt
from rnnlm.batches import stream_batches, training_batches
from rnnlm.config import ModelConfig, TrainConfig
from rnnlm.corpus import read_documents, split_sentences, tokenize
from rnnlm.model import Model, param_shapes
from rnnlm.optim import updates_for
from rnnlm.vocab import build_vocabulary, count_tokens

REPO = Path(__file__).resolve().parents[1]
REDDIT_CSV = "../shared/data/reddit-posts/reddit-posts.csv"  # relative to the repository root
SCORE_SENTENCE = "i think this is a good idea ."
GEMM_SIZE = 2000
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
STARTED = time.perf_counter()

TUTORIAL = ModelConfig(
    cell="rnn-tanh", vocab_size=8000, hidden_size=100, bptt_truncate=4, bias=False, dtype="float64"
)
TUTORIAL_TRAIN = TrainConfig(optimizer="sgd", learning_rate=0.005, batch_size=1)
SAME_MODEL = dataclasses.replace(TUTORIAL, dtype="float32")
SAME_MODEL_TRAIN = dataclasses.replace(TUTORIAL_TRAIN, batch_size=32)
PTB = ModelConfig(
    cell="lstm",
    vocab_size=10_000,
    embedding_size=200,
    hidden_size=200,
    layers=2,
    init_scale=0.1,
    bptt_truncate=-1,  # stream mode: gradients stop at the batch boundary
)
PTB_TRAIN = TrainConfig(
    mode="stream", batch_size=20, bptt=35, optimizer="sgd", learning_rate=1.0, clip_norm=5.0
)


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    reps: int  # timed repetitions per contender; figures are medians over them
    reddit_documents: int | None  # CSV rows read for rows 1-2; None: all
    tutorial_sentences: int  # per-sentence SGD steps per repetition (row 1)
    same_model_batches: int  # batches of 32 per repetition (row 2)
    ptb_steps: int  # PTB training steps per repetition (rows 3-4)
    gemm_calls: int  # 2000x2000 products per repetition (row 6)
    sample_tokens: int  # tokens drawn per repetition
    score_runs: int  # timed `rnnlm score` processes
    cold_compile: bool  # compile once more on an empty compiledir (minutes)


QUICK = Sizes(
    reps=3,
    reddit_documents=300,
    tutorial_sentences=30,
    same_model_batches=3,
    ptb_steps=1,
    gemm_calls=1,
    sample_tokens=50,
    score_runs=2,
    cold_compile=False,
)
FULL = Sizes(
    reps=7,
    reddit_documents=None,
    tutorial_sentences=300,
    same_model_batches=25,
    ptb_steps=8,
    gemm_calls=3,
    sample_tokens=400,
    score_runs=5,
    cold_compile=True,
)


# -- timing -------------------------------------------------------------------------------------


@dataclass
class Contender:
    """A fixed amount of work, run once per round: `steps` steps over `tokens` real tokens."""

    name: str
    run: Callable[[], object]
    steps: int = 1
    tokens: int = 0
    threads: int | None = None  # BLAS and PyTorch threads while it runs; None: as they are


def alternate(
    contenders: Sequence[Contender], reps: int, warmup: int = 1
) -> dict[str, dict[str, float | None]]:
    """Run the contenders in turn (A, B, A, B, ...): `warmup` untimed rounds, `reps` timed.

    Returns, per contender: the median seconds per repetition, ms per step, tokens/s (None
    without tokens), the spread (max - min) / median, and the repetitions.
    """
    seconds: dict[str, list[float]] = {c.name: [] for c in contenders}
    for round_ in range(warmup + reps):
        for contender in contenders:
            if contender.threads is not None:
                set_threads(contender.threads)
            started = time.perf_counter()
            contender.run()
            elapsed = time.perf_counter() - started
            if round_ >= warmup:
                seconds[contender.name].append(elapsed)
    return {c.name: summarize(c, seconds[c.name]) for c in contenders}


def summarize(contender: Contender, seconds: list[float]) -> dict[str, float | None]:
    median = statistics.median(seconds)
    return {
        "median_s": median,
        "ms_step": 1000 * median / contender.steps,
        "tok_s": contender.tokens / median if contender.tokens else None,
        "spread": (max(seconds) - min(seconds)) / median,
        "reps": len(seconds),
        "threads": contender.threads,
    }


# -- threads ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenBlas:
    path: str
    set_threads: Callable[[int], object]
    get_threads: Callable[[], int]


def loaded_openblas() -> list[OpenBlas]:
    """Every OpenBLAS mapped into this process: scipy's, which Aesara's compiled code calls,
    and numpy's own (ILP64, its symbols suffixed `64_`)."""
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "libopenblas" in line})
    found = []
    for path in paths:
        library = ctypes.CDLL(path)  # already loaded: the same handle, no second copy
        for suffix in ("", "64_"):
            if hasattr(library, f"openblas_set_num_threads{suffix}"):
                setter = getattr(library, f"openblas_set_num_threads{suffix}")
                getter = getattr(library, f"openblas_get_num_threads{suffix}")
                found.append(OpenBlas(path, setter, getter))
                break
    return found


def loaded_openmp() -> list[str]:
    """Every OpenMP runtime mapped into this process: the system libgomp that rnnlm's fused
    softmax op runs its rows on, and PyTorch's own copy."""
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if "libgomp" in line})


def set_threads(n: int) -> None:
    """Threads of every loaded OpenBLAS and OpenMP, and of PyTorch if imported; checked."""
    for blas in loaded_openblas():
        blas.set_threads(n)
        if blas.get_threads() != n:
            raise RuntimeError(f"{blas.path} runs {blas.get_threads()} threads, not {n}")
    for path in loaded_openmp():
        openmp = ctypes.CDLL(path)
        openmp.omp_set_num_threads(n)
        if openmp.omp_get_max_threads() != n:
            raise RuntimeError(f"{path} runs {openmp.omp_get_max_threads()} threads, not {n}")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def thread_env(threads: int, **extra: str) -> dict[str, str]:
    """This process's environment with the thread variables set, plus `extra`."""
    return {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads)), **extra}


# -- building and compiling ---------------------------------------------------------------------


def compile_sgd_step(
    model_config: ModelConfig, train_config: TrainConfig
) -> tuple[Model, Callable, float]:
    """A model, its compiled training step (rnnlm.optim's updates) and the seconds it took."""
    model = Model(model_config)
    lr = backend.shared(np.asarray(train_config.learning_rate, dtype=model_config.dtype), name="lr")

    def updates(params, grads):
        return updates_for(train_config, params, grads, lr)[0]

    started = time.perf_counter()
    step = model.compile_train_step(updates)
    return model, step, time.perf_counter() - started


def sentence_runner(model: Model, step: Callable, batches: list) -> Callable[[], None]:
    """One repetition: a training step on each (x, y, mask) batch, states from zero."""
    prepared = [(x, y, mask, model.initial_states(x.shape[1])) for x, y, mask in batches]

    def run() -> None:
        for x, y, mask, states in prepared:
            step(x, y, mask, *states)

    return run


def stream_runner(model: Model, step: Callable, windows: list) -> Callable[[], float]:
    """One repetition: a training step on each window, the states carried (stream mode);
    returns the last step's summed NLL."""
    states = model.initial_states(windows[0][0].shape[1])

    def run() -> float:
        nonlocal states
        for x, y, mask in windows:
            nll, _, *states = step(x, y, mask, *states)
        return float(nll)

    return run


def random_windows(rng: np.random.Generator, steps: int) -> list:
    """`steps` consecutive (x, y, mask) windows, (35, 20) each, over a stream of random ids."""
    shape = (steps * PTB_TRAIN.bptt + 1, PTB_TRAIN.batch_size)
    data = rng.integers(0, PTB.vocab_size, size=shape, dtype=np.int32)
    return list(stream_batches(data, PTB_TRAIN.bptt, PTB.dtype))


def real_tokens(batches: list) -> int:
    return int(sum(mask.sum() for _, _, mask in batches))


def train_gemm_flops_per_token(config: ModelConfig) -> int:
    """Matrix-product FLOPs of one training step, per token: forward + backward = 3 x forward.

    Forward, each weight matrix W (n_in x n_out) costs 2 * n_in * n_out per token (a multiply
    and an add per entry). The embedding is a row lookup and costs none (so would a one-hot
    first layer). For the PTB-small LSTM (gates stacked: n_out = 4 * 200):
        layer l, input and recurrent:  2*200*800 + 2*200*800 = 0.64 MFLOP, twice = 1.28 MFLOP
        output layer:                  2*200*10,000            = 4.00 MFLOP
    Backward computes two products of the same size per matrix (the gradients with respect to
    its input and to W), so a step costs 3 * 5.28 = 15.84 MFLOP per token: 11.1 GFLOP per
    batch of 20 x 35. Elementwise work (gates, softmax, the SGD update) is not counted, nor
    is a tied output layer (embed/W reused; no model here ties its weights).
    """

    def is_lookup(name: str) -> bool:
        return name == "embed/W" or (not config.embedding_size and name.endswith("0/W_in"))

    forward = sum(
        2 * shape[0] * shape[1]
        for name, shape in param_shapes(config).items()
        if len(shape) == 2 and not is_lookup(name)
    )
    return 3 * forward


def gemm_runner(rng: np.random.Generator, calls: int) -> tuple[Callable[[], None], int, str]:
    """One repetition: `calls` float32 products of two GEMM_SIZE^2 matrices, compiled by
    Aesara; also the FLOPs of one call (2 n^3) and the ops the product compiled to."""
    a, b = (
        backend.shared(rng.standard_normal((GEMM_SIZE, GEMM_SIZE)).astype("float32"))
        for _ in range(2)
    )
    product = backend.function([], tt.dot(a, b))
    ops = "+".join(sorted({type(node.op).__name__ for node in product.maker.fgraph.toposort()}))

    def run() -> None:
        for _ in range(calls):
            product()

    return run, 2 * GEMM_SIZE**3, ops


def sampling_runner(model: Model, tokens: int, rng: np.random.Generator) -> Callable[[], None]:
    """One repetition: `tokens` draws, each a Model.step (batch 1) and a numpy softmax draw."""

    def run() -> None:
        ids, states = np.zeros(1, dtype=np.int32), model.initial_states(1)
        for _ in range(tokens):
            logits, states = model.step(ids, states)
            p = np.exp(logits[0].astype(np.float64) - logits[0].max())
            ids[0] = rng.choice(len(p), p=p / p.sum())

    return run


def pytorch_lstm_lm(config: ModelConfig):
    """nn.Embedding -> nn.LSTM(E, H, layers) -> nn.Linear(H, V), weights uniform ±init_scale."""
    from torch import nn

    class LSTMLanguageModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
            self.lstm = nn.LSTM(config.embedding_size, config.hidden_size, config.layers)
            self.out = nn.Linear(config.hidden_size, config.vocab_size)

        def forward(self, x, state):
            h, state = self.lstm(self.embed(x), state)  # x (T, B) -> h (T, B, H)
            return self.out(h), state  # logits (T, B, V)

    model = LSTMLanguageModel()
    for weights in model.parameters():
        nn.init.uniform_(weights, -config.init_scale, config.init_scale)
    return model


def pytorch_runner(windows: list) -> Callable[[], None]:
    """One repetition of PyTorch training steps on the same windows, as rnnlm trains."""
    import torch
    from torch import nn

    model = pytorch_lstm_lm(PTB)
    optimizer = torch.optim.SGD(model.parameters(), lr=PTB_TRAIN.learning_rate)
    summed_nll = nn.CrossEntropyLoss(reduction="sum")
    batches = [
        (torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64)))
        for x, y, _ in windows
    ]
    shape = (PTB.layers, PTB_TRAIN.batch_size, PTB.hidden_size)
    state = (torch.zeros(shape), torch.zeros(shape))

    def run() -> None:
        nonlocal state
        for x, y in batches:
            optimizer.zero_grad()
            logits, state = model(x, state)
            # rnnlm's objective: the summed NLL divided by the batch size
            loss = summed_nll(logits.reshape(-1, PTB.vocab_size), y.reshape(-1)) / x.shape[1]
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), PTB_TRAIN.clip_norm)
            optimizer.step()
            state = tuple(s.detach() for s in state)  # carried, gradients cut (stream mode)

    return run


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


# -- rows 1-2: the tutorial's model, in this process --------------------------------------------


def reddit_sentences(path: Path, max_documents: int | None) -> list[np.ndarray]:
    """Encoded sentences of the CSV as `rnnlm train` reads it (lowercased, Punkt trained on
    the documents, nltk words), with the tutorial's vocabulary of 8000."""
    documents = [d.lower() for d in read_documents(path, "csv")[:max_documents]]
    sentences = [tokenize(s, lowercase=False) for s in split_sentences(documents, "csv")]
    sentences = [tokens for tokens in sentences if tokens]
    vocab = build_vocabulary(count_tokens(sentences), TUTORIAL.vocab_size)
    return [vocab.encode(tokens) for tokens in sentences]


def sentence_rows(sizes: Sizes, threads: int) -> dict[str, Any]:
    """Rows 1-2: per-sentence SGD in float64 against batches of 32 in float32, alternated."""
    path = (REPO / REDDIT_CSV).resolve()
    if not path.exists():
        missing = dict.fromkeys(
            (
                "tutorial_ms_step",
                "tutorial_tok_s",
                "rnnlm_same_model_ms_step",
                "rnnlm_same_model_tok_s",
                "same_model_speedup",
            )
        )
        return missing | {"notes": {"rows_1_2": f"skipped: {REDDIT_CSV} not found"}}
    set_threads(threads)
    progress(f"rows 1-2: reading {REDDIT_CSV} ...")
    sentences = reddit_sentences(path, sizes.reddit_documents)
    rng = np.random.default_rng(0)
    contenders, compile_s = [], {}
    for name, model_config, train_config, count in (
        ("tutorial", TUTORIAL, TUTORIAL_TRAIN, sizes.tutorial_sentences),
        ("rnnlm_same_model", SAME_MODEL, SAME_MODEL_TRAIN, sizes.same_model_batches),
    ):
        progress(f"rows 1-2: compiling {name} ...")
        model, step, compile_s[name] = compile_sgd_step(model_config, train_config)
        batches = training_batches(sentences, train_config.batch_size, rng, model_config.dtype)
        batches = batches[:count]
        run = sentence_runner(model, step, batches)
        contenders.append(Contender(name, run, len(batches), real_tokens(batches), threads))
    progress("rows 1-2: timing ...")
    timings = alternate(contenders, sizes.reps)
    tutorial, same = timings["tutorial"], timings["rnnlm_same_model"]
    return {
        "tutorial_ms_step": tutorial["ms_step"],
        "tutorial_tok_s": tutorial["tok_s"],
        "rnnlm_same_model_ms_step": same["ms_step"],
        "rnnlm_same_model_tok_s": same["tok_s"],
        "same_model_speedup": same["tok_s"] / tutorial["tok_s"],
        "compile_s": compile_s,
        "reddit_sentences": len(sentences),
        "timings": timings,
    }


# -- rows 3-6: the PTB model, in fresh processes ------------------------------------------------


def ptb_worker(sizes: Sizes, threads: list[int], compile_only: bool) -> dict[str, Any]:
    """Compile the PTB training step and train a little (compile time, peak RSS), compile the
    one-step function; then, unless `compile_only`, time training and the GEMM peak at each
    thread count, and sampling."""
    worker = "compile" if compile_only else "ptb"
    set_threads(max(threads))
    progress(f"{worker} worker: compiling the PTB training step ...")
    model, step, compile_s = compile_sgd_step(PTB, PTB_TRAIN)
    rng = np.random.default_rng(0)
    windows = random_windows(rng, sizes.ptb_steps)
    train = stream_runner(model, step, windows)
    nll = train()  # a little training, so the peak RSS is that of training, not only compiling
    result = {
        "compile_s": compile_s,
        "peak_rss_mb": peak_rss_mb(),
        "loss_finite": bool(np.isfinite(nll)),
    }
    progress(f"{worker} worker: compiling the one-step function that sampling uses ...")
    started = time.perf_counter()
    model.step(np.zeros(1, dtype=np.int32), model.initial_states(1))
    result["sample_compile_s"] = time.perf_counter() - started
    if compile_only:
        return result
    progress(f"{worker} worker: timing training and GEMM at {threads} threads ...")
    result |= ptb_timings(sizes, threads, train, windows, rng)
    progress(f"{worker} worker: timing sampling ...")
    draw = sampling_runner(model, sizes.sample_tokens, rng)
    sampling = Contender("sampling", draw, sizes.sample_tokens, threads=max(threads))
    result["timings"] |= alternate([sampling], sizes.reps)
    progress(f"{worker} worker: done")
    return result


def ptb_timings(
    sizes: Sizes, threads: list[int], train: Callable, windows: list, rng: np.random.Generator
) -> dict[str, Any]:
    """rnnlm, PyTorch (when installed) and the GEMM peak at each thread count, alternated."""
    gemm, gemm_flops, gemm_ops = gemm_runner(rng, sizes.gemm_calls)
    pytorch = pytorch_runner(windows) if torch_installed() else None
    steps, tokens = len(windows), real_tokens(windows)
    contenders = []
    for n in threads:
        contenders.append(Contender(f"rnnlm_ptb/{n}", train, steps, tokens, n))
        if pytorch is not None:
            contenders.append(Contender(f"pytorch_ptb/{n}", pytorch, steps, tokens, n))
        contenders.append(Contender(f"gemm/{n}", gemm, sizes.gemm_calls, threads=n))
    return {
        "timings": alternate(contenders, sizes.reps),
        "gemm_flops_per_call": gemm_flops,
        "gemm_ops": gemm_ops,
        "train_flops_per_step": train_gemm_flops_per_token(PTB) * tokens // steps,
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_worker(
    kind: str, sizes_flag: list[str], threads: list[int], compiledir: str | None
) -> dict[str, Any]:
    """Run this script as a worker in a fresh process; its last stdout line is its JSON."""
    extra = {}
    if compiledir is not None:
        flags = [os.environ.get("AESARA_FLAGS", ""), f"compiledir={compiledir}"]
        extra["AESARA_FLAGS"] = ",".join(flag for flag in flags if flag)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        kind,
        "--threads",
        ",".join(map(str, threads)),
    ]
    env = thread_env(max(threads), **extra)
    # stderr passes through: the worker's progress lines, and its traceback if it fails
    done = subprocess.run(command + sizes_flag, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} worker failed (exit code {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_quietly(command: list[str], env: dict[str, str]) -> str:
    """stdout of a command; its stderr only if it fails."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-3000:]}")
    return done.stdout


def ptb_rows(sizes: Sizes, sizes_flag: list[str], threads: list[int]) -> dict[str, Any]:
    """Rows 3-6 from the worker processes, and the figures derived from them."""
    notes = {}
    with tempfile.TemporaryDirectory(prefix="rnnlm-bench-compiledir-") as compiledir:
        cold = None
        if sizes.cold_compile:
            progress("compiling the PTB training graph on an empty compiledir (minutes) ...")
            cold = run_worker("compile", sizes_flag, threads, compiledir)
        else:
            notes["compile_cold"] = "skipped with --quick (minutes of gcc)"
        notes["compile_warm"] = (
            "a fresh process on the same compiledir" if cold else "the default Aesara cache"
        )
        progress("rows 3-6: compiling the PTB graph, then timing ...")
        ptb = run_worker("ptb", sizes_flag, threads, compiledir if cold else None)
    if not torch_installed():
        notes["pytorch"] = "not installed"
    timings = ptb["timings"]
    per_thread: dict[str, dict[str, float | None]] = {}
    for n in map(str, threads):
        rnnlm_t, gemm_t = timings[f"rnnlm_ptb/{n}"], timings[f"gemm/{n}"]
        torch_t = timings.get(f"pytorch_ptb/{n}")
        step_gflops = ptb["train_flops_per_step"] / (rnnlm_t["ms_step"] / 1000) / 1e9
        peak_gflops = ptb["gemm_flops_per_call"] / (gemm_t["ms_step"] / 1000) / 1e9
        figures = {
            "rnnlm_ptb_ms_step": rnnlm_t["ms_step"],
            "rnnlm_ptb_tok_s": rnnlm_t["tok_s"],
            "pytorch_ptb_ms_step": torch_t and torch_t["ms_step"],
            "pytorch_ptb_tok_s": torch_t and torch_t["tok_s"],
            "rnnlm_over_pytorch": torch_t and rnnlm_t["tok_s"] / torch_t["tok_s"],
            "gemm_peak_gflops": peak_gflops,
            "train_step_gflops": step_gflops,
            "gemm_peak_share": step_gflops / peak_gflops,
        }
        for key, value in figures.items():
            per_thread.setdefault(key, {})[n] = value
    return per_thread | {
        "sample_ms_per_token": timings["sampling"]["ms_step"],
        "train_peak_rss_mb": ptb["peak_rss_mb"],
        "compile_cold_s": cold and cold["compile_s"],
        "compile_warm_s": ptb["compile_s"],
        "gemm_ops": ptb["gemm_ops"],
        "train_gflop_per_step": ptb["train_flops_per_step"] / 1e9,
        "sample_compile_s": ptb["sample_compile_s"],
        "ptb_loss_finite": ptb["loss_finite"],
        "notes": notes,
        "timings": timings,
    }


# -- row 5: `rnnlm score` from a fresh process --------------------------------------------------


def rnnlm_command() -> list[str]:
    """The console script beside this Python, else the CLI through `python -c`."""
    script = Path(sys.executable).with_name("rnnlm")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from rnnlm.cli import main; main()"]


def score_cli_row(sizes: Sizes, threads: int) -> dict[str, Any]:
    """Train and save a tiny model, score once to warm the cache, then time fresh processes."""
    env = thread_env(threads)
    cli = rnnlm_command()
    with tempfile.TemporaryDirectory(prefix="rnnlm-bench-") as folder:
        model = str(Path(folder) / "tiny.npz")
        progress("row 5: training a tiny model for `rnnlm score` ...")
        tiny = ["--vocab-size", "200", "--hidden-size", "16", "--epochs", "1"]
        run_quietly([*cli, "train", *tiny, "--eval-sentences", "20", "--out", model, "-q"], env)
        score = [*cli, "score", SCORE_SENTENCE, "--model", model]
        progress("row 5: timing `rnnlm score` ...")
        timing = alternate(
            [Contender("score_cli", lambda: run_quietly(score, env))], sizes.score_runs
        )
    return {"score_cli_s": timing["score_cli"]["median_s"], "timings": timing}


# -- the report ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "load_average_1min": os.getloadavg()[0],
        "blas_ldflags": backend.config.blas__ldflags,
        "openblas_loaded": [Path(blas.path).name for blas in loaded_openblas()],
        "python": platform.python_version(),
        "numpy": np.__version__,
        "aesara": backend.VERSION,
        "rnnlm": rnnlm.__version__,
        "torch": torch_version,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
    }


def fmt(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def row(number: str, label: str, timing: dict | None = None, result: str = "") -> tuple[str, ...]:
    """A table row; a timed one shows its threads, ms/step, tokens/s and spread."""
    if timing is None:
        return (number, label, "", "", "", "", result)
    return (
        number,
        label,
        fmt(timing["threads"], "d"),
        fmt(timing["ms_step"], ",.2f"),
        fmt(timing["tok_s"], ",.0f"),
        fmt(100 * timing["spread"], ".0f") + "%",
        result,
    )


def sentence_table(r: dict[str, Any]) -> list[tuple[str, ...]]:
    t = r["timings"]
    if "tutorial" not in t:
        return [row("1-2", "tutorial model", result=r["notes"]["rows_1_2"])]
    return [
        row("1", "tutorial: tanh RNN 100, V 8000, f64, batch 1", t["tutorial"], "SGD 0.005"),
        row(
            "2",
            "same model: f32, batch 32, bucketed",
            t["rnnlm_same_model"],
            f"{r['same_model_speedup']:.1f}x row 1 tokens/s",
        ),
    ]


def ptb_table(r: dict[str, Any], threads: list[int]) -> list[tuple[str, ...]]:
    t, rows = r["timings"], []
    for n in map(str, threads):
        gflops, share = r["train_step_gflops"][n], r["gemm_peak_share"][n]
        rnnlm_result = f"{gflops:.1f} GFLOP/s = {share:.0%} of GEMM peak"
        rows.append(row("3", "PTB-small LSTM, rnnlm", t[f"rnnlm_ptb/{n}"], rnnlm_result))
        if r["rnnlm_over_pytorch"][n] is None:
            rows.append(row("4", "PTB-small LSTM, PyTorch", result="not installed"))
        else:
            ratio = f"rnnlm/PyTorch {r['rnnlm_over_pytorch'][n]:.2f}x tokens/s"
            rows.append(row("4", "PTB-small LSTM, PyTorch", t[f"pytorch_ptb/{n}"], ratio))
        label = f"GEMM peak: Aesara {r['gemm_ops']}, f32 {GEMM_SIZE}^2"
        peak = f"{r['gemm_peak_gflops'][n]:.1f} GFLOP/s"
        rows.append(row("6", label, t[f"gemm/{n}"], peak))
    return rows


def extras_table(r: dict[str, Any]) -> list[tuple[str, ...]]:
    t, notes = r["timings"], r["notes"]
    cold = r["compile_cold_s"]
    return [
        row(
            "5",
            "sampling, PTB model, batch 1 (ms/token)",
            t["sampling"],
            f"one-step function compiled in {r['sample_compile_s']:.1f} s",
        ),
        row("5", "peak RSS of PTB training", result=f"{r['train_peak_rss_mb']:.0f} MB"),
        row(
            "5",
            "compile PTB training step, cold",
            result=notes["compile_cold"] if cold is None else f"{cold:.1f} s, empty compiledir",
        ),
        row(
            "5",
            "compile PTB training step, warm",
            result=f"{r['compile_warm_s']:.1f} s, {notes['compile_warm']}",
        ),
        row(
            "5",
            "`rnnlm score` from a fresh process",
            t["score_cli"],
            f"{r['score_cli_s']:.2f} s wall, warm cache",
        ),
    ]


def render(r: dict[str, Any], threads: list[int], quick: bool) -> str:
    """The header and the one table, columns aligned."""
    m = r["machine"]
    header = [
        f"rnnlm {m['rnnlm']} benchmark, {m['date']}{', --quick' if quick else ''}, "
        f"{r['wall_s']:.0f} s",
        f"machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}; "
        f"load average {m['load_average_1min']:.2f} at start, {r['load_average_end']:.2f} at end",
        f"BLAS (backend.config.blas__ldflags): {m['blas_ldflags'] or '(none: NumPy C-API GEMM)'}",
        f"Python {m['python']}, numpy {m['numpy']}, Aesara {m['aesara']}, "
        f"PyTorch {m['torch'] or 'not installed'}; OMP_WAIT_POLICY={m['omp_wait_policy']}",
        f"medians of {r['sizes']['reps']} repetitions after a warm-up round, contenders "
        "alternated; spread = (max - min) / median; tokens/s counts real tokens",
        "",
    ]
    columns = ("#", "measurement", "threads", "ms/step", "tokens/s", "spread", "result")
    rows = [columns, *sentence_table(r), *ptb_table(r, threads), *extras_table(r)]
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(columns))]
    numeric = {2, 3, 4, 5}
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
            for i, cell in enumerate(cells)
        ).rstrip()
        for cells in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(header + lines)


def merge(results: dict[str, Any], part: dict[str, Any]) -> None:
    """Fold one measurement's figures in; their `timings` and `notes` are merged, not replaced."""
    for key in ("timings", "notes", "compile_s"):
        if key in part:
            results.setdefault(key, {}).update(part.pop(key))
    results.update(part)


def progress(message: str) -> None:
    """A line on stderr, stamped with the seconds since the script started."""
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def parse_threads(text: str) -> list[int]:
    try:
        threads = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not threads or min(threads) < 1:
        raise argparse.ArgumentTypeError("thread counts must be at least 1")
    return threads


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer steps and repetitions, no cold compile"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure here")
    parser.add_argument(
        "--threads",
        type=parse_threads,
        default=[1, 2],
        metavar="N,N",
        help="thread counts for rows 3, 4 and 6 (default 1,2)",
    )
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also draw tokens/s per contender")
    parser.add_argument("--worker", choices=("ptb", "compile"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sizes_flag = ["--quick"] if args.quick else []
    if args.worker:
        print(json.dumps(ptb_worker(sizes, args.threads, compile_only=args.worker == "compile")))
        return
    results: dict[str, Any] = {
        "machine": machine(),
        "sizes": dataclasses.asdict(sizes),
        "threads": args.threads,
        "notes": {},
        "timings": {},
    }
    most = max(args.threads)
    merge(results, sentence_rows(sizes, most))
    merge(results, ptb_rows(sizes, sizes_flag, args.threads))
    merge(results, score_cli_row(sizes, most))
    results["wall_s"] = time.perf_counter() - STARTED
    results["load_average_end"] = os.getloadavg()[0]
    print(render(results, args.threads, args.quick))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, args.threads, args.plot)


def plot(results: dict[str, Any], threads: list[int], path: Path) -> None:
    """Training tokens/s of every contender, on a log scale (the tutorial is far behind)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        ("tutorial: tanh RNN, per-sentence SGD, float64", results.get("tutorial_tok_s")),
        ("rnnlm: same model, batches of 32, float32", results.get("rnnlm_same_model_tok_s")),
    ]
    for n in threads:
        for who, key in (("rnnlm", "rnnlm_ptb_tok_s"), ("PyTorch", "pytorch_ptb_tok_s")):
            bars.append((f"{who}: PTB-small LSTM, {n} thread(s)", results[key].get(str(n))))
    bars = [(label, value) for label, value in bars if value]
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(bars) + 1.2))
    axes.barh([label for label, _ in bars][::-1], [value for _, value in bars][::-1])
    for i, (_, value) in enumerate(bars[::-1]):
        axes.text(value, i, f" {value:,.0f}", va="center")
    axes.set_xscale("log")
    axes.set_xlabel("training tokens/s (log scale)")
    machine = results["machine"]
    axes.set_title(f"scripts/bench.py, {machine['date'][:10]}, {machine['cores']} cores")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
