"""How fast rnnlm trains, samples, compiles and scores, with PyTorch on the same model for scale.

Prints one table; every row is measured in the same run:

  1. the WildML tutorial's training as it did it: a bias-free tanh RNN (vocabulary 8000,
     100 units, float64, bptt_truncate 4), per-sentence SGD (lr 0.005) on the sentences of
     ../shared/data/reddit-posts/reddit-posts.csv (rows 1-2 are skipped when it is absent);
  2. the same model trained the fast way: float32, 32 length-bucketed sentences per batch;
  3. Zaremba et al.'s PTB-small LSTM (vocabulary 10,000, embedding 200, 2x200 LSTM, batch 20,
     35 steps of random ids carried stream-style, full softmax, SGD 1.0, global-norm clip 5),
     and 4. the same model in PyTorch (in a process of its own, with its own OpenMP setting:
     benchlib/pytorch_process.py), at each thread count of --threads; row 3 again with
     model.fused = false (the plain scan graph the fused cell ops replace);
  5. sampling from the PTB model (batch 1), the peak RSS of a PTB training process, the
     compile time of its training graph with a cold and a warm Aesara cache, and the wall
     time of `rnnlm score "a sentence"` from a fresh process with a warm cache;
  6. the GFLOP/s of the PTB step's matrix products, as a share of a GEMM peak measured here
     (an Aesara float32 dot of two 2000x2000 matrices, i.e. scipy's OpenBLAS sgemm);
  7. the PTB training step with GRU cells (PyTorch: nn.GRU), and 8. with Zaremba et al.'s
     medium sizes (embedding 650, 2x650 LSTM), each in rnnlm and PyTorch, at each thread count.
  9-11. the PTB-small LSTM with each softmax kind (full, class, adaptive, sampled) on Zipf
     ids at V = 10,000 and 50,000, PyTorch's AdaptiveLogSoftmaxWithLoss on the same V = 50,000
     model, and the V = 50,000 output layers alone (see benchlib/softmax.py), at the largest
     --threads.

Method: contenders that are compared run in turn (A, B, A, B, ...) so that drift of a shared
machine hits them alike; each figure is the median over repetitions of a fixed amount of
work, after one untimed warm-up round; tokens/s counts real (masked) tokens. Subprocesses
start with OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = the largest --threads; a contender's
thread count is set before each of its repetitions, with openblas_set_num_threads on
every OpenBLAS loaded (scipy's, which Aesara calls, and numpy's), omp_set_num_threads on every
OpenMP runtime (rnnlm's fused softmax op) and torch.set_num_threads,
so the PTB graph is compiled once for all thread counts. The PTB rows run in a fresh process
(its compile time is the warm one, its peak RSS that of training); the cold compile runs
before it in another, on an empty compiledir (RNNLM_FLAGS=compiledir=<temp folder>).

Run from anywhere (paths are taken relative to the repository root):

    python scripts/bench.py --quick             # a few minutes; no cold compile
    python scripts/bench.py --json bench.json   # the full run, under 20 minutes
    python scripts/bench.py --threads 1,2,4

--json PATH writes every figure. Scalars: tutorial_ms_step, tutorial_tok_s,
rnnlm_same_model_ms_step, rnnlm_same_model_tok_s, same_model_speedup (row 2 / row 1 tokens/s;
these five are null when the CSV is absent), sample_ms_per_token, sample_compile_s,
train_peak_rss_mb, compile_cold_s (null with --quick), compile_warm_s, score_cli_s,
train_gflop_per_step. Per thread count, nested as {"1": value, "2": value, ...}:
rnnlm_ptb_ms_step, rnnlm_ptb_tok_s, pytorch_ptb_ms_step, pytorch_ptb_tok_s,
rnnlm_over_pytorch (rnnlm tokens/s / PyTorch tokens/s; these three null without PyTorch),
gemm_peak_gflops, train_step_gflops, gemm_peak_share, rnnlm_ptb_plain_tok_s, fused_over_plain
(row 3 tokens/s / its plain-graph tokens/s), rnnlm_gru_tok_s, pytorch_gru_tok_s,
rnnlm_over_pytorch_gru, gru_gemm_peak_share, rnnlm_medium_tok_s, pytorch_medium_tok_s,
rnnlm_over_pytorch_medium, medium_gemm_peak_share. Rows 9-11: softmax_speedup_ptb and
softmax_speedup_50k ({"class": x, "adaptive": y, "sampled": z}: whole training steps, tokens/s
over the full softmax's), adaptive_over_pytorch_50k (rnnlm tokens/s over PyTorch's, whole
model; null without PyTorch), softmax_output_speedup_50k and adaptive_over_pytorch_50k_output
(the output layer alone), softmax_cutoffs. Also: machine (OPENBLAS_CORETYPE among
it), sizes, threads, notes, compile_s (rows 1-2, gru, medium, ptb_plain), wall_s,
load_average_end, and timings (per contender: median_s, ms_step, tok_s, spread, reps,
threads).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from benchlib.configs import FULL, QUICK
from benchlib.report import machine, merge, plot, render
from benchlib.rows import ptb_rows, ptb_worker, score_cli_row, sentence_rows
from benchlib.softmax import softmax_rows, softmax_table, softmax_worker
from benchlib.timing import STARTED


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
        help="thread counts for rows 3, 4, 6, 7 and 8 (default 1,2)",
    )
    parser.add_argument("--plot", type=Path, metavar="PNG", help="also draw tokens/s per contender")
    parser.add_argument("--worker", choices=("ptb", "compile", "softmax"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    sizes_flag = ["--quick"] if args.quick else []
    if args.worker == "softmax":
        print(json.dumps(softmax_worker(sizes, args.threads)))
        return
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
    merge(results, softmax_rows(sizes_flag, args.threads))
    results["wall_s"] = time.perf_counter() - STARTED
    results["load_average_end"] = os.getloadavg()[0]
    print(render(results, args.threads, args.quick, more_rows=softmax_table(results)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results, args.threads, args.plot)


if __name__ == "__main__":
    main()
