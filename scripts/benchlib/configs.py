"""The models, training settings and amounts of work the benchmark measures."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from rnnlm.config import ModelConfig, TrainConfig

REPO = Path(__file__).resolve().parents[2]
BENCH_SCRIPT = REPO / "scripts" / "bench.py"  # the driver: workers are this script again
REDDIT_CSV = "../shared/data/reddit-posts/reddit-posts.csv"  # relative to the repository root
SCORE_SENTENCE = "i think this is a good idea ."
GEMM_SIZE = 2000

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
# The same training step on other recurrent layers (issue 12): GRU cells at PTB-small's sizes
# (PyTorch: nn.GRU), and Zaremba et al.'s medium sizes, 2x650 LSTM with a 650 embedding
# (their dropout left out, as PTB-small has none: the rows compare speed, not perplexity).
GRU = dataclasses.replace(PTB, cell="gru")
MEDIUM = dataclasses.replace(PTB, embedding_size=650, hidden_size=650, init_scale=0.05)
# rnnlm's own oracle for the fused cell ops: the plain scan graph of small ops.
PTB_PLAIN = dataclasses.replace(PTB, fused=False)
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
    ptb_steps: int  # PTB training steps per repetition (rows 3-4, and the GRU row's)
    medium_steps: int  # the medium LSTM's training steps per repetition (5x a PTB step's work)
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
    medium_steps=1,
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
    medium_steps=2,
    gemm_calls=3,
    sample_tokens=400,
    score_runs=5,
    cold_compile=True,
)
