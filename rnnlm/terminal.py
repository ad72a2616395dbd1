"""Ctrl-C as a flag, and the progress bars drawn on stderr (only when asked: on a terminal).

Nothing here prints results; bars and log lines share stderr without tearing each other.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """Turn Ctrl-C into a flag the loop checks between steps, so no step is cut in half.

    SIGUSR1 does the same: mpirun forwards it to every rank, while its Ctrl-C kills them.
    """
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        flag.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGUSR1)}
    try:
        yield flag
    finally:
        for sig, action in previous.items():
            signal.signal(sig, action)


def logs_above_the_bar(show: bool) -> contextlib.AbstractContextManager:
    """Log lines go above the progress bar instead of onto its line."""
    if not show:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    # The command line gives the "rnnlm" logger its own stderr handler; a library user's
    # console handler sits on the root logger.
    logger = logging.getLogger("rnnlm")
    return logging_redirect_tqdm([logger if logger.handlers else logging.root])


def training_bar(total: int, initial: int, show: bool):
    """A bar of batches for the ETA; the trainer puts the speed that means something,
    tokens/s, and the running loss in its postfix."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        disable=not show,
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} batches [{elapsed}<{remaining}{postfix}]",
        dynamic_ncols=True,
        leave=False,
    )


class TokenProgress:
    """A tqdm bar counting predicted tokens (so its rate is tokens/s), with the running
    perplexity in its postfix; an `rnnlm.evaluate.BatchCallback`. Drawn only when `show`."""

    def __init__(self, total: int, show: bool) -> None:
        from tqdm import tqdm

        self.tokens, self.nll = 0, 0.0
        self.bar = tqdm(
            total=total,
            unit="tok",
            unit_scale=True,
            disable=not show,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
        )

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.nll / self.tokens, 700)) if self.tokens else math.nan

    def __call__(self, tokens: int, nll: float) -> None:
        self.tokens += tokens
        self.nll += nll
        # Drawn with the next refresh: tqdm limits redraws to a few per second.
        self.bar.set_postfix_str(f"ppl={self.perplexity:.2f}", refresh=False)
        self.bar.update(tokens)

    def __enter__(self) -> TokenProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
