"""Starting `rnnlm train`: the config, the ranks of an MPI launch, the data, the trainer.

The command line calls `train_run` once `distributed.one_blas_thread_per_rank` has run,
before numpy loads a BLAS.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rnnlm import checkpoint, distributed
from rnnlm.config import load_config, resolve
from rnnlm.config import resume as resume_config
from rnnlm.data import load_training_data
from rnnlm.shards import with_prepared_data
from rnnlm.train import Trainer

log = logging.getLogger(__name__)


def train_run(
    overrides: dict[str, dict[str, Any]],
    out: str | Path,
    *,
    config_file: str | Path | None = None,
    resume: str | Path | None = None,
    show_progress: bool = False,
    cache: Any = None,
) -> dict[str, Any] | None:
    """`rnnlm train`: the config (defaults <- file <- overrides; resuming, the checkpoint's),
    the data, the ranks of an MPI launch if asked, the run. Returns rank 0's summary, None
    on the other ranks."""
    file_values = load_config(config_file) if config_file else None
    previous = checkpoint.load(resume) if resume is not None else None
    if previous is not None:
        config = resume_config(previous.config, file_values, overrides)
    else:
        config = resolve(file_values, overrides)
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
        data = load_training_data(config, vocab=previous.vocab if previous else None)
        trainer = Trainer(
            config,
            data,
            out,
            show_progress=show_progress,
            resume=previous,
            comm=comm,
            cache=cache,  # compiled functions kept between runs (rnnlm.compiled), or None
        )
        summary = trainer.run()
    return summary if comm.rank == 0 else None
