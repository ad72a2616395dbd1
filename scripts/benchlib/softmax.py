"""Rows 9-11: the softmax kinds (full, class, adaptive, sampled) on the PTB-small LSTM at
V = 10,000 and 50,000, and rnnlm's adaptive softmax against PyTorch's
`AdaptiveLogSoftmaxWithLoss`; measured in a worker process of their own.

Word ids are drawn from a Zipf law (p ∝ 1 / rank, ids in frequency order), as words are:
the adaptive softmax's work depends on how many targets fall in its tails. Every kind takes
its defaults: class round(sqrt(V)) classes; adaptive cutoffs 2000 (V = 10,000) and
2000,10000 (V = 50,000), div_value 4, a head bias; sampled 1024 log-uniform negatives. The
tables are made from the Zipf counts, as `rnnlm train` makes them from a corpus's.

9-10. a whole training step (35 x 20 stream window, SGD 1.0, clip 5) of each kind, tokens/s
      over the full softmax's; at V = 50,000 also the same model in PyTorch (nn.LSTM +
      AdaptiveLogSoftmaxWithLoss, the same cutoffs);
11.   the output layer alone (N = 700 rows of 200, its loss, gradients and an SGD update of
      its weights), rnnlm's four kinds and PyTorch's adaptive softmax.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchlib.configs import PTB, PTB_TRAIN, Sizes
from benchlib.pytorch import torch_installed
from benchlib.pytorch_process import PyTorchProcess, windows_arrays
from benchlib.report import row
from benchlib.threads import set_threads
from benchlib.timing import Contender, alternate, progress
from rnnlm import backend
from rnnlm.backend import tensor as tt
from rnnlm.batches import stream_batches
from rnnlm.model import Model
from rnnlm.optim import updates_for
from rnnlm.output import init_params, output_layer
from rnnlm.output_tables import make_tables
from rnnlm.params import Params

KINDS = ("full", "class", "adaptive", "sampled")
FAST = KINDS[1:]  # what the speedups are of
BIG_VOCAB = 50_000


def zipf_counts(v: int) -> np.ndarray:
    return 1e7 / np.arange(1, v + 1)


def zipf_windows(rng: np.random.Generator, v: int, steps: int) -> list:
    """`steps` consecutive (35, 20) windows over a stream of Zipf-distributed ids."""
    counts = zipf_counts(v)
    shape = (steps * PTB_TRAIN.bptt + 1, PTB_TRAIN.batch_size)
    data = rng.choice(v, size=shape, p=counts / counts.sum()).astype(np.int32)
    return list(stream_batches(data, PTB_TRAIN.bptt, PTB.dtype))


def training_step(v: int, kind: str) -> tuple[Model, Callable]:
    """PTB-small's LSTM at vocabulary v with this softmax, and its compiled SGD step."""
    config = dataclasses.replace(PTB, vocab_size=v, softmax=kind)
    model = Model(config, tables=make_tables(config.output, zipf_counts(v)))
    lr = backend.shared(np.asarray(PTB_TRAIN.learning_rate, dtype=config.dtype), name="lr")
    step = model.compile_train_step(lambda p, g: updates_for(PTB_TRAIN, p, g, lr)[0])
    return model, step


def stream_run(model: Model, step: Callable, windows: list) -> Callable[[], None]:
    states = model.initial_states(PTB_TRAIN.batch_size)

    def run() -> None:
        nonlocal states
        for x, y, mask in windows:
            _, _, *states = step(x, y, mask, *states)

    return run


def pytorch_adaptive_run(v: int, cutoffs: tuple[int, ...], windows: list) -> Callable[[], None]:
    """The same model and training in PyTorch, its output layer AdaptiveLogSoftmaxWithLoss."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    embed = nn.Embedding(v, PTB.embedding_size)
    lstm = nn.LSTM(PTB.embedding_size, PTB.hidden_size, PTB.layers)
    head = nn.AdaptiveLogSoftmaxWithLoss(PTB.hidden_size, v, list(cutoffs), div_value=4.0,
                                         head_bias=True)  # fmt: skip
    params = [*embed.parameters(), *lstm.parameters(), *head.parameters()]
    for weights in params:
        nn.init.uniform_(weights, -PTB.init_scale, PTB.init_scale)
    optimizer = torch.optim.SGD(params, lr=PTB_TRAIN.learning_rate)
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
            h, state = lstm(embed(x), state)
            log_p = head(h.reshape(-1, PTB.hidden_size), y.reshape(-1)).output
            (-log_p.sum() / x.shape[1]).backward()  # rnnlm's objective
            nn.utils.clip_grad_norm_(params, PTB_TRAIN.clip_norm)
            optimizer.step()
            state = tuple(s.detach() for s in state)

    return run


# -- the output layer alone -------------------------------------------------------------------

ROWS, WIDTH, OUTPUT_LR = 700, 200, 0.1  # PTB-small's 35 x 20 rows of 200


def output_run(kind: str, v: int, h: np.ndarray, y: np.ndarray) -> Callable[[], object]:
    """One step of an output layer alone: loss, gradients by h and the weights, SGD."""
    config = dataclasses.replace(PTB, vocab_size=v, softmax=kind).output
    params = Params(init_params(config, np.random.default_rng(0)), "float32")
    layer = output_layer(
        config, params, make_tables(config, zipf_counts(v)), backend.RandomStream(0)
    )
    top, targets = tt.matrix("h", dtype="float32"), tt.ivector("y")
    loss = -layer.token_log_probs(top, targets, train=True).sum()
    grads = backend.grad(loss, [top, *params.values()])
    lr = np.float32(OUTPUT_LR)
    updates = [(p, p - lr * g) for p, g in zip(params.values(), grads[1:], strict=True)]
    step = backend.function([top, targets], [loss, grads[0]], updates=updates)
    return lambda: step(h, y)


def pytorch_output_run(v: int, cutoffs: tuple[int, ...], h: np.ndarray, y: np.ndarray):
    import torch

    torch.manual_seed(0)
    module = torch.nn.AdaptiveLogSoftmaxWithLoss(WIDTH, v, list(cutoffs), div_value=4.0,
                                                 head_bias=True)  # fmt: skip
    targets = torch.from_numpy(y.astype(np.int64))

    def run() -> None:
        inputs = torch.from_numpy(h).requires_grad_()
        (-module(inputs, targets).output.sum()).backward()
        with torch.no_grad():
            for p in module.parameters():
                p -= OUTPUT_LR * p.grad
                p.grad = None

    return run


# -- the worker and its figures ---------------------------------------------------------------


def softmax_worker(sizes: Sizes, threads: list[int]) -> dict[str, Any]:
    """Compile every contender, then time them alternated at the largest thread count."""
    n = max(threads)
    set_threads(n)
    rng = np.random.default_rng(0)
    contenders, cutoffs = [], {}
    pytorch = PyTorchProcess() if torch_installed() else None
    for v, label, steps in ((PTB.vocab_size, "ptb", sizes.ptb_steps),
                            (BIG_VOCAB, "50k", max(1, sizes.ptb_steps // 2))):  # fmt: skip
        windows = zipf_windows(rng, v, steps)
        tokens = int(sum(mask.sum() for _, _, mask in windows))
        for kind in KINDS:
            progress(f"softmax worker: compiling the V = {v:,} LSTM with the {kind} softmax ...")
            model, step = training_step(v, kind)
            run = stream_run(model, step, windows)
            contenders.append(Contender(f"softmax_{label}/{kind}", run, steps, tokens, n))
            cutoffs[label] = model.config.output.head_cutoffs
        if label == "50k" and pytorch:
            contenders.append(
                pytorch.contender("pytorch_softmax_50k/adaptive", "adaptive",
                                  windows_arrays(windows), n, steps, tokens,
                                  v=v, cutoffs=list(cutoffs[label]))
            )  # fmt: skip
    h = (rng.normal(size=(ROWS, WIDTH)) * 0.5).astype(np.float32)
    counts = zipf_counts(BIG_VOCAB)
    y = rng.choice(BIG_VOCAB, size=ROWS, p=counts / counts.sum()).astype(np.int32)
    for kind in KINDS:
        progress(f"softmax worker: compiling the V = 50,000 {kind} output layer alone ...")
        run = output_run(kind, BIG_VOCAB, h, y)
        contenders.append(Contender(f"output_50k/{kind}", run, 1, ROWS, n))
    if pytorch:
        contenders.append(
            pytorch.contender("pytorch_output_50k/adaptive", "output", {"h": h, "y": y}, n, 1,
                              ROWS, v=BIG_VOCAB, cutoffs=list(cutoffs["50k"]))
        )  # fmt: skip
    progress(f"softmax worker: timing {len(contenders)} contenders at {n} thread(s) ...")
    started = time.perf_counter()
    timings = alternate(contenders, sizes.reps)
    if pytorch:
        pytorch.close()
    progress(f"softmax worker: done in {time.perf_counter() - started:.0f} s")
    return {"timings": timings, "cutoffs": {k: list(c) for k, c in cutoffs.items()}}


def softmax_figures(worker: dict[str, Any]) -> dict[str, Any]:
    """The --json keys: tokens/s ratios over the full softmax, and over PyTorch."""
    t = worker["timings"]

    def speedups(prefix: str) -> dict[str, float]:
        return {k: t[f"{prefix}/{k}"]["tok_s"] / t[f"{prefix}/full"]["tok_s"] for k in FAST}

    def over_pytorch(prefix: str) -> float | None:
        theirs = t.get(f"pytorch_{prefix}/adaptive")
        return theirs and t[f"{prefix}/adaptive"]["tok_s"] / theirs["tok_s"]

    return {
        "softmax_speedup_ptb": speedups("softmax_ptb"),
        "softmax_speedup_50k": speedups("softmax_50k"),
        "adaptive_over_pytorch_50k": over_pytorch("softmax_50k"),
        "softmax_output_speedup_50k": speedups("output_50k"),
        "adaptive_over_pytorch_50k_output": over_pytorch("output_50k"),
        "softmax_cutoffs": worker["cutoffs"],
        "timings": t,
    }


def softmax_table(r: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows 9-11 in the table's columns (see `report.row`)."""
    t, rows = r["timings"], []
    groups = (
        ("9", "softmax_ptb", "PTB-small LSTM, V 10,000", r["softmax_speedup_ptb"]),
        ("10", "softmax_50k", "PTB-small LSTM, V 50,000", r["softmax_speedup_50k"]),
        ("11", "output_50k", "output layer alone, V 50,000", r["softmax_output_speedup_50k"]),
    )
    for number, prefix, label, speedup in groups:
        for kind in KINDS:
            result = "" if kind == "full" else f"{speedup[kind]:.2f}x full tokens/s"
            rows.append(row(number, f"{label}, {kind} softmax", t[f"{prefix}/{kind}"], result))
        theirs = t.get(f"pytorch_{prefix}/adaptive")
        if theirs is not None:
            ratio = t[f"{prefix}/adaptive"]["tok_s"] / theirs["tok_s"]
            result = f"rnnlm adaptive/PyTorch {ratio:.2f}x tokens/s"
            rows.append(row(number, f"{label}, PyTorch adaptive", theirs, result))
    return rows


def softmax_rows(sizes_flag: list[str], threads: list[int]) -> dict[str, Any]:
    """Rows 9-11, from a worker process of their own."""
    from benchlib.rows import run_worker

    progress("rows 9-11: the softmax kinds, compiling (minutes), then timing ...")
    return softmax_figures(run_worker("softmax", sizes_flag, threads, None))
