"""What every command does on its way in and out: logging to stderr, JSON on stdout,
arguments made valid text."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

log = logging.getLogger("rnnlm")


def setup_logging(quiet: bool) -> None:
    """Library log lines on stderr, bare; only warnings and errors when `quiet`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def as_text(argument: str) -> str:
    """A command-line argument as valid text: bytes that were not UTF-8 become U+FFFD."""
    return argument.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def show_progress(quiet: bool) -> bool:
    """Progress bars only for a person watching: stderr is a terminal and not --quiet."""
    return not quiet and sys.stderr.isatty()


def mixed_line(ngram: dict) -> str:
    """What `rnnlm.interpolation.Interpolation.to_dict` says, as one line of text output."""
    return (
        f"interpolated: p = {ngram['weight']:g}·p_ngram + {1 - ngram['weight']:g}·p_rnn per token, "
        f"n-gram model {ngram['path']} (order {ngram['order']})"
    )
