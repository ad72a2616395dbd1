"""The PTB output layer, forward and backward: rnnlm's fused softmax + NLL op against
Aesara's `-log_softmax(logits)[arange, y]`, the product (700 x 200) x (200 x 10,000) included.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python scripts/bench_softmax.py
"""

import time

import numpy as np

from rnnlm.ops.softmax import softmax_nll

N, H, V = 700, 200, 10_000  # 35 steps x 20 columns, PTB-small's hidden size and vocabulary


def main() -> None:
    from rnnlm import backend
    from rnnlm.backend import log_softmax
    from rnnlm.backend import tensor as tt

    rng = np.random.default_rng(0)
    W = backend.shared((rng.normal(size=(H, V)) * 0.1).astype("float32"))
    h, y = tt.matrix(dtype="float32"), tt.ivector()
    logits = tt.dot(h, W)
    losses = {
        "fused softmax_nll": softmax_nll(logits, y).sum(),
        "-log_softmax[arange, y]": -log_softmax(logits, axis=1)[tt.arange(N), y].sum(),
    }
    hv = rng.normal(size=(N, H)).astype("float32")
    yv = rng.integers(0, V, N).astype("int32")
    for name, loss in losses.items():
        f = backend.function([h, y], [loss, *backend.grad(loss, [h, W])])
        f(hv, yv)
        times = []
        for _ in range(10):
            start = time.perf_counter()
            f(hv, yv)
            times.append(time.perf_counter() - start)
        print(f"{name:26s} {np.median(times) * 1000:7.1f} ms (median of 10)")


if __name__ == "__main__":
    main()
