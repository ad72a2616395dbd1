"""rnnlm's contenders: compiled training steps on sentence batches and stream windows, the
GEMM peak, sampling; the reddit sentences read the one way `rnnlm train` reads them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchlib.configs import GEMM_SIZE, PTB, PTB_TRAIN, TUTORIAL
from rnnlm import backend
from rnnlm.architecture import param_shapes
from rnnlm.backend import tensor as tt
from rnnlm.batches import stream_batches
from rnnlm.config import DataConfig, ModelConfig, TrainConfig
from rnnlm.corpus import load_corpus
from rnnlm.model import Model
from rnnlm.ops.product import REWRITE
from rnnlm.optim import updates_for
from rnnlm.vocab import build_vocabulary, count_tokens


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


def gemm_runner(
    rng: np.random.Generator, calls: int, rewrite: bool = True
) -> tuple[Callable[[], None], int, str]:
    """One repetition: `calls` float32 products of two GEMM_SIZE^2 matrices, compiled by
    Aesara; also the FLOPs of one call (2 n^3) and the ops the product compiled to. Without
    `rewrite`, rnnlm's product rewrite is left out: the library's own BLAS op."""
    a, b = (
        backend.shared(rng.standard_normal((GEMM_SIZE, GEMM_SIZE)).astype("float32"))
        for _ in range(2)
    )
    mode = None if rewrite else backend.get_mode(None).excluding(REWRITE)
    product = backend.function([], tt.dot(a, b), mode=mode)
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


def reddit_sentences(path: Path, max_documents: int | None) -> list[np.ndarray]:
    """Encoded sentences of the CSV as `rnnlm train` reads it (lowercased, Punkt trained on
    the documents, nltk words), with the tutorial's vocabulary of 8000."""
    data = DataConfig(format="csv")
    sentences = load_corpus(path, data, max_documents=max_documents).sentences
    vocab = build_vocabulary(count_tokens(sentences), TUTORIAL.vocab_size)
    return [vocab.encode(tokens) for tokens in sentences]
