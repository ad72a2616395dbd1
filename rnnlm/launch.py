"""Starting `rnnlm train`: the config, the ranks of an MPI launch, the data, the trainer.

The command line calls `train_run` once `distributed.one_blas_thread_per_rank` has run,
before numpy loads a BLAS.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from rnnlm import checkpoint, distributed
from rnnlm.config import Config, DataConfig, load_config, resolve, resolve_dicts
from rnnlm.config import resume as resume_config
from rnnlm.data import load_training_data, read_word_list
from rnnlm.errors import RnnlmError
from rnnlm.shards import with_prepared_data
from rnnlm.train import Trainer

log = logging.getLogger(__name__)


def train_run(
    overrides: dict[str, dict[str, Any]],
    out: str | Path,
    *,
    config_file: str | Path | None = None,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    vocab: str | Path | None = None,
    show_progress: bool = False,
    cache: Any = None,
) -> dict[str, Any] | None:
    """`rnnlm train`: the config (defaults <- file <- overrides; resuming, the checkpoint's),
    the data, the ranks of an MPI launch if asked, the run. Returns rank 0's summary, None
    on the other ranks.

    `init_from`: start a fresh run (new data, a new optimizer state) from that model's
    weights and vocabulary; `vocab`: a vocabulary file or model whose tokens fix the
    vocabulary of a fresh run."""
    given = [name for name, value in (("resume", resume), ("init_from", init_from)) if value]
    if len(given) + (vocab is not None) > 1:
        raise RnnlmError("give one of resume, init_from and vocab: each decides the vocabulary")
    file_values = load_config(config_file) if config_file else None
    previous = checkpoint.load(resume) if resume is not None else None
    start = checkpoint.load(init_from) if init_from is not None else None
    if previous is not None:
        config = resume_config(previous.config, file_values, overrides)
    elif start is not None:
        config = init_config(start.config, file_values, overrides)
    else:
        config = resolve(file_values, overrides)
    words = read_word_list(vocab) if vocab is not None else None
    comm = distributed.connect(config.train.distributed)
    rnnlm_log = logging.getLogger("rnnlm")
    if comm.rank != 0:
        rnnlm_log.setLevel(logging.ERROR)  # rank 0 speaks for all
    elif comm.size > 1:
        log.info("Distributed: %d ranks, each on its share of every batch.", comm.size)
    config = with_prepared_data(config, overrides.get("data"))
    if config.data.corpus is None and not config.data.prepared:
        log.info(
            "No corpus given: training on the built-in sample corpus. Give your own "
            "(data.corpus): a .csv with a 'body' column, or a .txt."
        )
    elif not config.data.prepared:
        log.info("Corpus: %s", config.data.corpus)
    with distributed.fail_together(comm):
        known = previous or start
        data = load_training_data(config, vocab=known.vocab if known else None, words=words)
        if start is not None:
            log.info("Fine-tuning %s (its weights and vocabulary).", init_from)
        trainer = Trainer(
            config,
            data,
            out,
            show_progress=show_progress,
            resume=previous,
            comm=comm,
            cache=cache,  # compiled functions kept between runs (rnnlm.compiled), or None
            initial_params=start.params if start is not None else None,
            initial_tables=start.tables if start is not None else None,
        )
        summary = trainer.run()
    if data.new_words is not None:
        summary["new_tokens"], summary["new_words"] = data.new_words
    return summary if comm.rank == 0 else None


# What `init_from` keeps of its model's config, beyond the model section: how text becomes
# its tokens and how its vocabulary was chosen. Of the model section, only what leaves the
# parameters as they are may change.
KEPT_DATA = ("lowercase", "level", "unknown", "vocab_size", "min_count")
# None changes a parameter:
FREE_MODEL = (
    "dropout",
    "variational_dropout",
    "embedding_dropout",
    "weight_drop",
    "bptt_truncate",
    "fused",
)
NEW_DATA = ("corpus", "format", "column", "valid", "valid_fraction", "prepared")


def init_config(
    saved: Config, file_values: dict[str, Any] | None, overrides: dict[str, dict[str, Any]]
) -> Config:
    """The config of a run that starts from a model's weights: its model and tokenization
    settings (one given that differs is an error naming it, old -> new), its [train]
    settings with those given on top, and the new data files given (none of the old ones)."""
    given = resolve_dicts(file_values, overrides)
    stored = saved.to_dict()
    kept = {
        "model": {k: v for k, v in stored["model"].items() if k not in FREE_MODEL},
        "data": {k: stored["data"][k] for k in KEPT_DATA},
    }
    changed = [
        f"{section}.{key} {kept[section][key]!r} -> {value!r}"
        for section in kept
        for key, value in sorted(given.get(section, {}).items())
        if key in kept[section] and value != kept[section][key]
    ]
    if changed:
        raise RnnlmError(
            "a fine-tuned model keeps the architecture, tokenization and vocabulary of the "
            f"model it starts from; these differ from it: {', '.join(changed)}"
        )
    defaults = dataclasses.asdict(DataConfig())
    new_data = {k: given.get("data", {}).get(k, defaults[k]) for k in NEW_DATA}
    free_model = {k: v for k, v in given.get("model", {}).items() if k in FREE_MODEL}
    return resolve(stored, {"data": new_data, "model": free_model, "train": given.get("train", {})})
