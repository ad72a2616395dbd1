"""The table the benchmark prints, the machine it ran on, and the optional plot."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

import rnnlm
from benchlib import GIVEN_OMP_WAIT_POLICY
from benchlib.configs import GEMM_SIZE
from benchlib.threads import loaded_openblas
from rnnlm import backend


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
        "tensor_library": f"{backend.NAME} {backend.VERSION}",
        "rnnlm": rnnlm.__version__,
        "torch": torch_version,
        "omp_wait_policy": (  # each library's, in its own process (pytorch_process)
            f"rnnlm {os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
            f"PyTorch {GIVEN_OMP_WAIT_POLICY or '(unset)'}"
        ),
        # overrides OpenBLAS's CPU detection: its kernels, and so every GEMM figure here
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
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
        plain = f"fused/plain {r['fused_over_plain'][n]:.2f}x tokens/s"
        label = "PTB-small LSTM, rnnlm, model.fused = false"
        rows.append(row("3", label, t[f"rnnlm_ptb_plain/{n}"], plain))
        if r["rnnlm_over_pytorch"][n] is None:
            rows.append(row("4", "PTB-small LSTM, PyTorch", result="not installed"))
        else:
            ratio = f"rnnlm/PyTorch {r['rnnlm_over_pytorch'][n]:.2f}x tokens/s"
            rows.append(row("4", "PTB-small LSTM, PyTorch", t[f"pytorch_ptb/{n}"], ratio))
        label = f"GEMM peak: Aesara {r['gemm_ops']}, f32 {GEMM_SIZE}^2"
        peak = f"{r['gemm_peak_gflops'][n]:.1f} GFLOP/s"
        rows.append(row("6", label, t[f"gemm/{n}"], peak))
        label = f"GEMM: Aesara {r['blas_ops']} (its BLAS), f32 {GEMM_SIZE}^2"
        blas = f"{r['blas_gemm_gflops'][n]:.1f} GFLOP/s"
        rows.append(row("6", label, t[f"blas/{n}"], blas))
        for number, name, label in (
            ("7", "gru", "GRU 2x200"),
            ("8", "medium", "medium LSTM 2x650"),
        ):
            share = f"{r[f'{name}_gemm_peak_share'][n]:.0%} of GEMM peak"
            rows.append(row(number, f"{label}, rnnlm", t[f"rnnlm_{name}/{n}"], share))
            ratio = r[f"rnnlm_over_pytorch_{name}"][n]
            if ratio is None:
                rows.append(row(number, f"{label}, PyTorch", result="not installed"))
            else:
                text = f"rnnlm/PyTorch {ratio:.2f}x tokens/s"
                rows.append(row(number, f"{label}, PyTorch", t[f"pytorch_{name}/{n}"], text))
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


def render(
    r: dict[str, Any], threads: list[int], quick: bool, more_rows: list[tuple[str, ...]] = ()
) -> str:
    """The header and the one table, columns aligned; `more_rows` at its end."""
    m = r["machine"]
    header = [
        f"rnnlm {m['rnnlm']} benchmark, {m['date']}{', --quick' if quick else ''}, "
        f"{r['wall_s']:.0f} s",
        f"machine: {m['cores']} cores ({m['usable_cores']} usable), {m['cpu']}; "
        f"load average {m['load_average_1min']:.2f} at start, {r['load_average_end']:.2f} at end",
        f"BLAS (backend.config.blas__ldflags): {m['blas_ldflags'] or '(none: NumPy C-API GEMM)'}",
        f"Python {m['python']}, numpy {m['numpy']}, {m['tensor_library']}, "
        f"PyTorch {m['torch'] or 'not installed'}; OMP_WAIT_POLICY={m['omp_wait_policy']}, "
        f"OPENBLAS_CORETYPE={m['openblas_coretype']}",
        f"medians of {r['sizes']['reps']} repetitions after a warm-up round, contenders "
        "alternated; spread = (max - min) / median; tokens/s counts real tokens",
        "",
    ]
    columns = ("#", "measurement", "threads", "ms/step", "tokens/s", "spread", "result")
    rows = [columns, *sentence_table(r), *ptb_table(r, threads), *extras_table(r), *more_rows]
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


def plot(results: dict[str, Any], threads: list[int], path: Path) -> None:
    """Training tokens/s of every contender, on a log scale (the tutorial is far behind)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        ("tutorial: tanh RNN, per-sentence SGD, float64", results.get("tutorial_tok_s")),
        ("rnnlm: same model, batches of 32, float32", results.get("rnnlm_same_model_tok_s")),
    ]
    for model, name in (("PTB-small LSTM", "ptb"), ("GRU 2x200", "gru"), ("LSTM 2x650", "medium")):
        for n in threads:
            for who, key in (("rnnlm", "rnnlm"), ("PyTorch", "pytorch")):
                value = results[f"{key}_{name}_tok_s"].get(str(n))
                bars.append((f"{who}: {model}, {n} thread(s)", value))
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
