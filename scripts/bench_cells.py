"""How fast the fused recurrent cells train, against the plain scan graph and PyTorch.

Rows (random ids, batch 20, state carried stream-style, full softmax, SGD 1.0, clip 5,
float32, one training step = forward, backward and update):

    ptb-35   Zaremba et al.'s PTB-small LSTM (vocabulary 10,000, embedding 200, 2x200), 35 steps
    ptb-20   the same at configs/ptb-small.toml's bptt of 20
    gru      the same sizes with a GRU (PyTorch: nn.GRU, whose reset gate sits after the
             product; the work is the same)
    medium   Zaremba et al.'s medium sizes: 2x650 LSTM, embedding 650, 35 steps

Contenders per row and thread count: rnnlm with `model.fused = true`, rnnlm with the plain
graph (`fused = false`), and PyTorch (`nn.Embedding` -> `nn.LSTM`/`nn.GRU` -> `nn.Linear`,
summed cross-entropy / batch, `clip_grad_norm_`, SGD). They run in turn (A, B, C, A, B, C,
...) after one untimed warm-up round; figures are medians over the repetitions. Besides the
wall time, the calling thread's CPU time (`time.thread_time`) is recorded: with one thread
all the work runs on it, so on a machine shared with other processes it measures the work
done rather than the time the scheduler gave us. Ratios are rnnlm tokens/s over PyTorch's.
The GEMM peak is an Aesara float32 `dot` of two 2000x2000 matrices; the step's matrix-product
FLOPs (3 x forward, as scripts/bench.py counts them) over its time are given as a share of it.

    python scripts/bench_cells.py --quick               # ptb-35 only, few repetitions
    python scripts/bench_cells.py --json cells.json     # every row at 1 and 2 threads
    python scripts/bench_cells.py --rows ptb-35,gru --threads 1
    python scripts/bench_cells.py --gemm                # the GEMM orientations behind the op
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlm import backend
from rnnlm.backend import tensor as tt
from rnnlm.batches import stream_batches
from rnnlm.config import ModelConfig, TrainConfig
from rnnlm.model import Model, param_shapes
from rnnlm.optim import updates_for

PTB = ModelConfig(
    cell="lstm",
    vocab_size=10_000,
    embedding_size=200,
    hidden_size=200,
    layers=2,
    init_scale=0.1,
    bptt_truncate=-1,  # stream mode: gradients stop at the batch boundary
)
TRAIN = TrainConfig(
    mode="stream", batch_size=20, bptt=35, optimizer="sgd", learning_rate=1.0, clip_norm=5.0
)


@dataclass(frozen=True)
class Row:
    model: ModelConfig
    bptt: int
    steps: int  # training steps per repetition


ROWS = {
    "ptb-35": Row(PTB, 35, 4),
    "ptb-20": Row(PTB, 20, 6),
    "gru": Row(dataclasses.replace(PTB, cell="gru"), 35, 4),
    "medium": Row(dataclasses.replace(PTB, hidden_size=650, embedding_size=650), 35, 1),
}


# -- threads ------------------------------------------------------------------------------------


def _loaded(name: str) -> list[str]:
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if name in line})


def set_threads(n: int) -> None:
    """Threads of every OpenBLAS and OpenMP runtime in the process, and of PyTorch."""
    for path in _loaded("libopenblas"):
        library = ctypes.CDLL(path)
        for suffix in ("", "64_"):
            if hasattr(library, f"openblas_set_num_threads{suffix}"):
                getattr(library, f"openblas_set_num_threads{suffix}")(n)
                break
    for path in _loaded("libgomp"):
        ctypes.CDLL(path).omp_set_num_threads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


# -- contenders ---------------------------------------------------------------------------------


def windows(row: Row, rng: np.random.Generator) -> list:
    shape = (row.steps * row.bptt + 1, TRAIN.batch_size)
    data = rng.integers(0, row.model.vocab_size, size=shape, dtype=np.int32)
    return list(stream_batches(data, row.bptt, row.model.dtype))


def rnnlm_runner(config: ModelConfig, batches: list) -> tuple[Callable[[], None], float]:
    """One repetition: a training step per batch, states carried; and the compile seconds."""
    model = Model(config)
    lr = backend.shared(np.asarray(TRAIN.learning_rate, dtype=config.dtype), name="lr")
    started = time.perf_counter()
    step = model.compile_train_step(lambda params, grads: updates_for(TRAIN, params, grads, lr)[0])
    compile_s = time.perf_counter() - started
    states = model.initial_states(TRAIN.batch_size)

    def run() -> None:
        nonlocal states
        for x, y, mask in batches:
            _, _, *states = step(x, y, mask, *states)

    return run, compile_s


def pytorch_runner(config: ModelConfig, batches: list) -> Callable[[], None]:
    import torch
    from torch import nn

    recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}[config.cell]

    class LanguageModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
            self.rnn = recurrent(config.embedding_size, config.hidden_size, config.layers)
            self.out = nn.Linear(config.hidden_size, config.vocab_size)

        def forward(self, x, state):
            h, state = self.rnn(self.embed(x), state)  # (T, B) -> (T, B, H)
            return self.out(h), state  # (T, B, V)

    model = LanguageModel()
    for weights in model.parameters():
        nn.init.uniform_(weights, -config.init_scale, config.init_scale)
    optimizer = torch.optim.SGD(model.parameters(), lr=TRAIN.learning_rate)
    summed_nll = nn.CrossEntropyLoss(reduction="sum")
    tensors = [
        (torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.int64)))
        for x, y, _ in batches
    ]
    shape = (config.layers, TRAIN.batch_size, config.hidden_size)
    zeros = torch.zeros(shape)
    state = (zeros, zeros.clone()) if config.cell == "lstm" else zeros

    def detach(s):
        return tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach()

    def run() -> None:
        nonlocal state
        for x, y in tensors:
            optimizer.zero_grad()
            logits, state = model(x, state)
            loss = summed_nll(logits.reshape(-1, config.vocab_size), y.reshape(-1)) / x.shape[1]
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), TRAIN.clip_norm)
            optimizer.step()
            state = detach(state)

    return run


def gemm_peak_runner(rng: np.random.Generator) -> tuple[Callable[[], None], int]:
    a, b = (backend.shared(rng.standard_normal((2000, 2000)).astype("float32")) for _ in "ab")
    product = backend.function([], tt.dot(a, b))
    return product, 2 * 2000**3


def step_flops(config: ModelConfig, tokens_per_step: int) -> int:
    """Matrix-product FLOPs of a training step: 3 x forward, the embedding a lookup."""
    forward = sum(
        2 * shape[0] * shape[1]
        for name, shape in param_shapes(config).items()
        if len(shape) == 2 and name != "embed/W"
    )
    return 3 * forward * tokens_per_step


# -- timing -------------------------------------------------------------------------------------


def alternate(contenders: dict[str, tuple[Callable, int]], reps: int) -> dict[str, dict]:
    """{name: (run, threads)} run in turn, one warm-up round, then `reps` timed rounds:
    per name the median wall and thread-CPU seconds of a repetition, and the wall spread."""
    wall: dict[str, list[float]] = {name: [] for name in contenders}
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(reps + 1):
        for name, (run, threads) in contenders.items():
            set_threads(threads)
            started, started_cpu = time.perf_counter(), time.thread_time()
            run()
            if round_:
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(time.thread_time() - started_cpu)
    return {
        name: {
            "wall_s": statistics.median(wall[name]),
            "cpu_s": statistics.median(cpu[name]),
            "spread": (max(wall[name]) - min(wall[name])) / statistics.median(wall[name]),
        }
        for name in contenders
    }


def measure_row(name: str, row: Row, threads: list[int], reps: int, plain: bool) -> dict:
    rng = np.random.default_rng(0)
    batches = windows(row, rng)
    tokens = row.steps * row.bptt * TRAIN.batch_size
    progress(f"{name}: compiling ...")
    fused_run, fused_compile = rnnlm_runner(dataclasses.replace(row.model, fused=True), batches)
    runs = {"fused": fused_run}
    compile_s = {"fused": fused_compile}
    if plain:
        runs["plain"], compile_s["plain"] = rnnlm_runner(
            dataclasses.replace(row.model, fused=False), batches
        )
    if importlib.util.find_spec("torch") is not None:
        runs["pytorch"] = pytorch_runner(row.model, batches)
    peak_run, peak_flops = gemm_peak_runner(rng)
    contenders = {f"{who}/{n}": (run, n) for n in threads for who, run in runs.items()}
    contenders |= {f"gemm/{n}": (peak_run, n) for n in threads}
    progress(f"{name}: timing {', '.join(contenders)} ...")
    timings = alternate(contenders, reps)
    result: dict = {"compile_s": compile_s, "timings": timings, "per_thread": {}}
    flops = step_flops(row.model, row.bptt * TRAIN.batch_size)
    for n in threads:
        figures: dict = {}
        for who in runs:
            t = timings[f"{who}/{n}"]
            figures[f"{who}_ms_step"] = 1000 * t["wall_s"] / row.steps
            figures[f"{who}_tok_s"] = tokens / t["wall_s"]
            figures[f"{who}_cpu_ms_step"] = 1000 * t["cpu_s"] / row.steps
        peak = peak_flops / timings[f"gemm/{n}"]["wall_s"]
        figures["gemm_peak_gflops"] = peak / 1e9
        figures["fused_gemm_peak_share"] = flops / (figures["fused_ms_step"] / 1000) / peak
        # by thread CPU time: the same share, robust to a shared machine at 1 thread
        peak_cpu = peak_flops / timings[f"gemm/{n}"]["cpu_s"]
        figures["fused_gemm_peak_share_cpu"] = (
            flops / (figures["fused_cpu_ms_step"] / 1000) / peak_cpu
        )
        for other in ("plain", "pytorch"):
            if other in runs:
                figures[f"fused_over_{other}"] = (
                    figures[f"{other}_ms_step"] / figures["fused_ms_step"]
                )
                figures[f"fused_over_{other}_cpu"] = (
                    figures[f"{other}_cpu_ms_step"] / figures["fused_cpu_ms_step"]
                )
        result["per_thread"][str(n)] = figures
    return result


# -- the GEMM orientations ----------------------------------------------------------------------


def gemm_orientations(reps: int) -> dict[str, float]:
    """Microseconds (thread CPU time, 1 thread) of the recurrent products at PTB and medium
    sizes, as the fused op calls them (the batch as BLAS's row count) and the other way round.
    scipy's sgemm is the OpenBLAS that Aesara links."""
    from scipy.linalg import blas

    set_threads(1)
    rng = np.random.default_rng(0)
    result = {}
    for hidden in (200, 650):
        h = rng.standard_normal((20, hidden)).astype(np.float32)  # (B, H)
        W = rng.standard_normal((hidden, 4 * hidden)).astype(np.float32)  # (H, 4H)
        W_t = np.ascontiguousarray(W.T)
        cases = {
            # C' = W'' h': C (B, 4H) row-major, the batch as the column-major column count
            "batch_as_columns": lambda h=h, W=W: blas.sgemm(1, W.T, h.T),
            # C = h W computed column-major with the batch as the row count (the op's way)
            "batch_as_rows": lambda h=h, W_t=W_t: blas.sgemm(1, h.T, W_t.T, trans_a=1),
        }
        calls = 50
        for case, call in cases.items():
            times = []
            for _ in range(reps):
                started = time.thread_time()
                for _ in range(calls):
                    call()
                times.append((time.thread_time() - started) / calls)
            result[f"{hidden}/{case}_us"] = 1e6 * min(times)
    return result


# -- report -------------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[bench_cells {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def render(results: dict) -> str:
    lines = [
        f"{'row':8} {'thr':>3} {'fused ms':>9} {'plain ms':>9} {'torch ms':>9} "
        f"{'fused/plain':>11} {'fused/torch':>11} {'(cpu time)':>10} {'peak share':>10} "
        f"{'(cpu time)':>10}"
    ]
    for name, row in results["rows"].items():
        for n, f in row["per_thread"].items():

            def cell(key: str, spec: str, f=f) -> str:
                value = f.get(key)
                return format(value, spec) if value is not None else "-"

            lines.append(
                f"{name:8} {n:>3} {cell('fused_ms_step', '9.1f')} {cell('plain_ms_step', '9.1f')} "
                f"{cell('pytorch_ms_step', '9.1f')} {cell('fused_over_plain', '10.2f')}x "
                f"{cell('fused_over_pytorch', '10.2f')}x {cell('fused_over_pytorch_cpu', '9.2f')}x "
                f"{cell('fused_gemm_peak_share', '10.0%')} "
                f"{cell('fused_gemm_peak_share_cpu', '10.0%')}"
            )
    lines.append(
        "ratios are speed ratios (>1: the fused cells are faster); '(cpu time)' columns "
        "are by thread CPU time, meaningful at 1 thread only"
    )
    lines.append(f"load average at the end: {results['load_average_end']}")
    lines.append(f"OPENBLAS_CORETYPE: {results['openblas_coretype'] or 'unset (detected)'}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ptb-35 only, 3 repetitions")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions per contender")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-graph contender")
    parser.add_argument("--gemm", action="store_true", help="only the GEMM orientations")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.gemm:
        print(json.dumps(gemm_orientations(max(args.reps, 5)), indent=1))
        return
    rows = ["ptb-35"] if args.quick else args.rows.split(",")
    unknown = set(rows) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; choose from {', '.join(ROWS)}")
    threads = [int(n) for n in args.threads.split(",")]
    reps = 3 if args.quick else args.reps
    results: dict = {"rows": {}, "threads": threads, "reps": reps, "torch": None}
    # OpenBLAS's kernels: OPENBLAS_CORETYPE, if set, overrides its CPU detection
    results["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE")
    if importlib.util.find_spec("torch") is not None:
        import torch

        results["torch"] = torch.__version__
    for name in rows:
        results["rows"][name] = measure_row(name, ROWS[name], threads, reps, not args.no_plain)
    results["load_average_end"] = os.getloadavg()
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
