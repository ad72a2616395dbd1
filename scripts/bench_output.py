"""The output layer alone: full vs class vs adaptive vs sampled softmax, and rnnlm's adaptive
softmax against PyTorch's `AdaptiveLogSoftmaxWithLoss` with the same cutoffs.

One training step of the output layer: N = 700 rows (PTB-small's 35 steps x 20 columns) of
H = 200 inputs, targets drawn from a Zipf law over ids in frequency order, the loss summed,
its gradients by the inputs and by every output weight, and an SGD update of those weights
(a dense gradient costs its update too). Float32; V = 10,000 and 50,000 by default. Class:
round(sqrt(V)) classes; adaptive: cutoffs 2000 (V = 10,000) and 2000,10000 (V = 50,000),
div_value 4, a head bias; sampled: 1024 log-uniform negatives.

Contenders run in interleaved rounds (A, B, C, ... A, B, C, ...) after a warm-up call, so
drift on a shared machine hits them alike; each figure is the median over rounds, and the
ratios are tokens/s over the full softmax's (and over PyTorch's). With --whole-step the
PTB-small LSTM's whole training step (full softmax, SGD) is timed too, and each kind's
whole-step speedup is estimated as step / (step - full output layer + its output layer):
an estimate from the output layer's share, not a measured step of that kind.

    OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 python scripts/bench_output.py [--whole-step]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from rnnlm import backend, output
from rnnlm.backend import RandomStream
from rnnlm.backend import tensor as tt
from rnnlm.params import Params

N, H = 700, 200
LEARNING_RATE = 0.1


def zipf_counts(v: int) -> np.ndarray:
    return 1e7 / np.arange(1, v + 1)


def output_step(kind: str, v: int) -> Callable[[np.ndarray, np.ndarray], object]:
    """A compiled (h, y) -> loss step of one output layer, its weights updated by SGD."""
    config = output.OutputConfig(v, H, kind)
    rng = np.random.default_rng(0)
    params = Params(output.init_params(config, rng), "float32")
    tables = output.make_tables(config, zipf_counts(v))
    layer = output.output_layer(config, params, tables, RandomStream(0))
    h, y = tt.matrix("h", dtype="float32"), tt.ivector("y")
    loss = -layer.token_log_probs(h, y, train=True).sum()
    grads = backend.grad(loss, [h, *params.values()])
    lr = np.float32(LEARNING_RATE)
    updates = [(p, p - lr * g) for p, g in zip(params.values(), grads[1:], strict=True)]
    return backend.function([h, y], [loss, grads[0]], updates=updates, mode="FAST_RUN")


def pytorch_step(v: int, cutoffs: tuple[int, ...]) -> Callable[[np.ndarray, np.ndarray], object]:
    import torch

    torch.manual_seed(0)
    module = torch.nn.AdaptiveLogSoftmaxWithLoss(H, v, list(cutoffs), div_value=4.0, head_bias=True)

    def step(h: np.ndarray, y: np.ndarray) -> float:
        inputs = torch.from_numpy(h).requires_grad_()
        loss = -module(inputs, torch.from_numpy(y.astype(np.int64))).output.sum()
        loss.backward()
        with torch.no_grad():
            for p in module.parameters():
                p -= LEARNING_RATE * p.grad
                p.grad = None
        return float(loss.detach())

    return step


def whole_step(v: int) -> Callable[[], object]:
    """PTB-small's LSTM training step (35 x 20, full softmax, SGD 1.0, clip 5) at vocabulary v."""
    from rnnlm.batches import stream_batches
    from rnnlm.config import ModelConfig, TrainConfig
    from rnnlm.model import Model
    from rnnlm.optim import updates_for

    model_config = ModelConfig(cell="lstm", vocab_size=v, embedding_size=H, hidden_size=H,
                               layers=2, init_scale=0.1, bptt_truncate=-1)  # fmt: skip
    train = TrainConfig(mode="stream", batch_size=20, bptt=35, learning_rate=1.0, clip_norm=5.0)
    model = Model(model_config, mode="FAST_RUN")
    lr = backend.shared(np.float32(1.0), name="lr")
    step = model.compile_train_step(lambda p, g: updates_for(train, p, g, lr)[0])
    data = np.random.default_rng(0).integers(0, v, size=(36, 20), dtype=np.int32)
    x, y, mask = next(iter(stream_batches(data, 35, "float32")))
    states = model.initial_states(20)
    return lambda: step(x, y, mask, *states)


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each contender, timed in turn round after round."""
    for run in contenders.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,50000", help="vocabulary sizes")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--whole-step", action="store_true", help="also time the LSTM's step")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    except ImportError:
        torch = None
    results: dict[str, dict] = {}
    for v in (int(s) for s in args.sizes.split(",")):
        rng = np.random.default_rng(1)
        counts = zipf_counts(v)
        h = (rng.normal(size=(N, H)) * 0.5).astype(np.float32)
        y = rng.choice(v, size=N, p=counts / counts.sum()).astype(np.int32)
        steps = {kind: output_step(kind, v) for kind in output.SOFTMAX_KINDS}
        contenders = {kind: partial(f, h, y) for kind, f in steps.items()}
        cutoffs = output.OutputConfig(v, H, "adaptive").head_cutoffs
        if torch is not None:
            contenders["pytorch adaptive"] = partial(pytorch_step(v, cutoffs), h, y)
        if args.whole_step:
            contenders["whole step (full)"] = whole_step(v)
        seconds = interleaved(contenders, args.rounds)
        row = {name: {"ms": s * 1e3, "tok_s": N / s} for name, s in seconds.items()}
        speedup = {kind: seconds["full"] / seconds[kind] for kind in output.SOFTMAX_KINDS}
        row["speedup_over_full"] = speedup
        if torch is not None:
            row["adaptive_over_pytorch"] = seconds["pytorch adaptive"] / seconds["adaptive"]
        if args.whole_step:
            rest = seconds["whole step (full)"] - seconds["full"]
            row["whole_step_speedup_estimate"] = {
                kind: seconds["whole step (full)"] / (rest + seconds[kind])
                for kind in output.SOFTMAX_KINDS
            }
        results[str(v)] = row
        print(f"V = {v:,} (N = {N}, H = {H}, adaptive cutoffs {cutoffs}), median of {args.rounds}:")
        for name, s in seconds.items():
            ratio = f"  {seconds['full'] / s:6.2f}x full" if name in speedup else ""
            print(f"  {name:20s} {s * 1e3:9.1f} ms  {N / s:10,.0f} tokens/s{ratio}")
        if torch is not None:
            print(f"  rnnlm adaptive / PyTorch adaptive: {row['adaptive_over_pytorch']:.2f}x")
        if args.whole_step:
            estimate = row["whole_step_speedup_estimate"]
            print("  whole-step speedup, estimated: "
                  + ", ".join(f"{k} {x:.2f}x" for k, x in estimate.items()))  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
