"""The one way to open a model file for use, and to read text as its training corpus was read.

Every command that runs a model (sample, fill, score, rescore, eval, compare, diagnose)
opens it here; `rnnlm info` reads the checkpoint alone (`rnnlm.checkpoint.load`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from rnnlm import checkpoint
from rnnlm.config import DataConfig, ModelConfig
from rnnlm.corpus import load_corpus, tokenize
from rnnlm.errors import RnnlmError

if TYPE_CHECKING:
    from rnnlm.compiled import FunctionCache
    from rnnlm.model import Model


def open_model(
    path: str | Path, *, left_to_right: str | None = None, cache: FunctionCache | None = None
) -> tuple[Model, checkpoint.Checkpoint]:
    """The model stored in `path`, ready to run, and its checkpoint.

    `left_to_right` says what the caller will do with it ("score sentences"): something only
    a language model can do, so a bidirectional model is refused for it. `cache`: where its
    compiled functions are kept between runs (`rnnlm.compiled`); None compiles afresh.
    """
    from rnnlm.model import Model

    ckpt = checkpoint.load(path)
    if left_to_right is not None:
        refuse_bidirectional(ckpt.config.model, left_to_right)
    model = Model(ckpt.config.model, params=ckpt.params, cache=cache, tables=ckpt.tables)
    return model, ckpt


def refuse_bidirectional(config: ModelConfig, what: str) -> None:
    if config.bidirectional:
        raise RnnlmError(
            f"a bidirectional model sees the words after each one, so it cannot {what} as a "
            "language model: use `rnnlm fill`"
        )


def read_like_training(
    data: DataConfig, path: str | Path, format: str | None = None, column: str | None = None
) -> list[list[str]]:
    """The sentences of `path`, tokenized as the training corpus (`data`) was.

    The training format carries over to a file of the same kind (a .txt of prose, say);
    `format` and `column`, when given, win.
    """
    same_kind = Path(path).suffix == Path(data.corpus or ".txt").suffix
    reading = dataclasses.replace(
        data, format=format or (data.format if same_kind else None), column=column or data.column
    )
    return load_corpus(path, reading).sentences


def tokenize_like_training(data: DataConfig, text: str) -> list[str]:
    """One sentence's tokens, as the training corpus's sentences were tokenized."""
    return tokenize(text, lowercase=data.lowercase, level=data.level)
