"""The rows of the table: 1-2 in this process, 3-6 in fresh worker processes (this script
again, with --worker), 5's `rnnlm score` in fresh processes of the command itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchlib.configs import (
    BENCH_SCRIPT,
    GRU,
    MEDIUM,
    PTB,
    PTB_PLAIN,
    PTB_TRAIN,
    REDDIT_CSV,
    REPO,
    SAME_MODEL,
    SAME_MODEL_TRAIN,
    SCORE_SENTENCE,
    TUTORIAL,
    TUTORIAL_TRAIN,
    Sizes,
)
from benchlib.pytorch import torch_installed
from benchlib.pytorch_process import PyTorchProcess, windows_arrays
from benchlib.steps import (
    compile_sgd_step,
    gemm_runner,
    random_windows,
    real_tokens,
    reddit_sentences,
    sampling_runner,
    sentence_runner,
    stream_runner,
    train_gemm_flops_per_token,
)
from benchlib.threads import set_threads, thread_env
from benchlib.timing import Contender, alternate, peak_rss_mb, progress
from rnnlm.batches import training_batches


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


def other_models(sizes: Sizes) -> dict[str, tuple]:
    """The models timed beside PTB-small, on its first windows: name -> (config, windows)."""
    return {
        "ptb_plain": (PTB_PLAIN, sizes.ptb_steps),  # rnnlm only: the fused ops' oracle graph
        "gru": (GRU, sizes.ptb_steps),
        "medium": (MEDIUM, sizes.medium_steps),
    }


def ptb_worker(sizes: Sizes, threads: list[int], compile_only: bool) -> dict[str, Any]:
    """Compile the PTB training step and train a little (compile time, peak RSS), compile the
    one-step function; then, unless `compile_only`, compile the other models' steps, time
    training and the GEMM peak at each thread count, and sampling."""
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
    others, result["other_compile_s"] = {}, {}
    for name, (config, steps) in other_models(sizes).items():
        progress(f"{worker} worker: compiling the {name} training step ...")
        other, other_step, result["other_compile_s"][name] = compile_sgd_step(config, PTB_TRAIN)
        others[name] = (config, stream_runner(other, other_step, windows[:steps]), steps)
    progress(f"{worker} worker: timing training and GEMM at {threads} threads ...")
    result |= ptb_timings(sizes, threads, train, windows, others, rng)
    progress(f"{worker} worker: timing sampling ...")
    draw = sampling_runner(model, sizes.sample_tokens, rng)
    sampling = Contender("sampling", draw, sizes.sample_tokens, threads=max(threads))
    result["timings"] |= alternate([sampling], sizes.reps)
    progress(f"{worker} worker: done")
    return result


def ptb_timings(
    sizes: Sizes,
    threads: list[int],
    train: Callable,
    windows: list,
    others: dict[str, tuple],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """rnnlm, PyTorch (when installed) and the GEMM peak at each thread count, then each of
    `others` (name -> (config, rnnlm's run, steps)) in rnnlm and PyTorch, all alternated."""
    gemm, gemm_flops, gemm_ops = gemm_runner(rng, sizes.gemm_calls)
    blas, _, blas_ops = gemm_runner(rng, sizes.gemm_calls, rewrite=False)
    pytorch = PyTorchProcess() if torch_installed() else None
    tokens = real_tokens(windows)
    runs = {"ptb": (train, len(windows))} | {n: (run, k) for n, (_, run, k) in others.items()}
    contenders = []
    for n in threads:
        for name, (run, steps) in runs.items():
            counted = real_tokens(windows[:steps])
            contenders.append(Contender(f"rnnlm_{name}/{n}", run, steps, counted, n))
            if pytorch and name != "ptb_plain":  # the plain graph is rnnlm's alone
                data = windows_arrays(windows[:steps])
                contenders.append(
                    pytorch.contender(
                        f"pytorch_{name}/{n}", "lm", data, n, steps, counted, model=name
                    )
                )
            if name == "ptb":
                contenders.append(Contender(f"gemm/{n}", gemm, sizes.gemm_calls, threads=n))
                contenders.append(Contender(f"blas/{n}", blas, sizes.gemm_calls, threads=n))
    timings = alternate(contenders, sizes.reps)
    if pytorch:
        pytorch.close()
    return {
        "timings": timings,
        "gemm_flops_per_call": gemm_flops,
        "gemm_ops": gemm_ops,
        "blas_ops": blas_ops,
        "train_flops_per_step": train_gemm_flops_per_token(PTB) * tokens // len(windows),
        "other_flops_per_step": {
            name: train_gemm_flops_per_token(config) * tokens // len(windows)
            for name, (config, _, _) in others.items()
        },
    }


def run_worker(
    kind: str, sizes_flag: list[str], threads: list[int], compiledir: str | None
) -> dict[str, Any]:
    """Run this script as a worker in a fresh process; its last stdout line is its JSON."""
    extra = {}
    if compiledir is not None:
        flags = [os.environ.get("RNNLM_FLAGS", ""), f"compiledir={compiledir}"]
        extra["RNNLM_FLAGS"] = ",".join(flag for flag in flags if flag)  # either library
    command = [
        sys.executable,
        str(BENCH_SCRIPT),
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
        blas_ms = timings[f"blas/{n}"]["ms_step"]
        figures = {
            "rnnlm_ptb_ms_step": rnnlm_t["ms_step"],
            "rnnlm_ptb_tok_s": rnnlm_t["tok_s"],
            "pytorch_ptb_ms_step": torch_t and torch_t["ms_step"],
            "pytorch_ptb_tok_s": torch_t and torch_t["tok_s"],
            "rnnlm_over_pytorch": torch_t and rnnlm_t["tok_s"] / torch_t["tok_s"],
            "gemm_peak_gflops": peak_gflops,
            "blas_gemm_gflops": ptb["gemm_flops_per_call"] / (blas_ms / 1000) / 1e9,
            "train_step_gflops": step_gflops,
            "gemm_peak_share": step_gflops / peak_gflops,
        }
        figures |= other_figures(ptb, n, peak_gflops)
        for key, value in figures.items():
            per_thread.setdefault(key, {})[n] = value
    return per_thread | {
        "sample_ms_per_token": timings["sampling"]["ms_step"],
        "train_peak_rss_mb": ptb["peak_rss_mb"],
        "compile_cold_s": cold and cold["compile_s"],
        "compile_warm_s": ptb["compile_s"],
        "gemm_ops": ptb["gemm_ops"],
        "blas_ops": ptb["blas_ops"],
        "train_gflop_per_step": ptb["train_flops_per_step"] / 1e9,
        "sample_compile_s": ptb["sample_compile_s"],
        "ptb_loss_finite": ptb["loss_finite"],
        "compile_s": ptb["other_compile_s"],
        "notes": notes,
        "timings": timings,
    }


def other_figures(ptb: dict[str, Any], n: str, peak_gflops: float) -> dict[str, float | None]:
    """At `n` threads: the plain graph against the fused one on PTB-small, and the GRU and
    medium rows against PyTorch (None without it)."""
    timings = ptb["timings"]
    fused, plain = timings[f"rnnlm_ptb/{n}"], timings[f"rnnlm_ptb_plain/{n}"]
    figures = {
        "rnnlm_ptb_plain_tok_s": plain["tok_s"],
        "fused_over_plain": fused["tok_s"] / plain["tok_s"],
    }
    for name in ("gru", "medium"):
        mine, torch_t = timings[f"rnnlm_{name}/{n}"], timings.get(f"pytorch_{name}/{n}")
        gflops = ptb["other_flops_per_step"][name] / (mine["ms_step"] / 1000) / 1e9
        figures |= {
            f"rnnlm_{name}_tok_s": mine["tok_s"],
            f"pytorch_{name}_tok_s": torch_t and torch_t["tok_s"],
            f"rnnlm_over_pytorch_{name}": torch_t and mine["tok_s"] / torch_t["tok_s"],
            f"{name}_gemm_peak_share": gflops / peak_gflops,
        }
    return figures


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
