"""`rnnlm serve`: models behind an HTTP JSON API; `rnnlm cache`: the compiled-function cache."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import click

from rnnlm.cli.options import cache_option, json_option, quiet_option
from rnnlm.cli.output import echo_json, setup_logging
from rnnlm.errors import RnnlmError
from rnnlm.serve.limits import Limits


def model_names(values: tuple[str, ...]) -> dict[str, Path]:
    """`--model` values (PATH or NAME=PATH) -> {name: path}; a name defaults to the file stem."""
    named: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or Path(value).exists():
            name, path = Path(value).stem, value
        if not name:
            raise click.BadParameter(f"{value!r}: empty model name", param_hint="--model")
        if name in named:
            raise click.BadParameter(
                f"two models named {name!r}: name them, --model NAME=PATH", param_hint="--model"
            )
        named[name] = Path(path)
    return named


def limit_options(command: Callable) -> Callable:
    """One option per field of `Limits` (max_tokens: --max-tokens), default and help from it."""
    for field in reversed(dataclasses.fields(Limits)):
        kind = click.FloatRange(0) if field.type in (float, "float") else click.IntRange(1)
        command = click.option(
            "--" + field.name.replace("_", "-"),
            field.name,
            type=kind,
            default=field.default,
            show_default=True,
            help=field.metadata["help"],
        )(command)
    return command


@click.command()
@click.option(
    "--model",
    "models",
    multiple=True,
    default=("model.npz",),
    show_default=True,
    help="A checkpoint to serve, as PATH or NAME=PATH (the name defaults to the file's stem); "
    "repeat for several, chosen per request by name. The first is the default.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; 0.0.0.0 opens the service to the network (no authentication).",
)
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port."
)
@limit_options
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@quiet_option
@cache_option
def serve(models, host, port, access_log, quiet, cache, **limits) -> None:
    """An HTTP JSON service over one or more models, loaded once: POST /v1/score, /v1/next,
    /v1/sample; GET /v1/info, /v1/health; a playground page at /, the API docs at /docs.

    Concurrent requests share compiled calls. SIGTERM or Ctrl-C stops it once the requests
    in flight are answered.
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise RnnlmError(
            f"rnnlm serve needs FastAPI and uvicorn ({error}): pip install -e '.[serve]'"
        ) from None
    from rnnlm.serve.server import run

    setup_logging(quiet)
    run(
        model_names(models),
        host=host,
        port=port,
        limits=Limits(**limits),
        cache=cache,
        access_log=access_log,
    )


@click.group()
def cache() -> None:
    """The compiled-function cache: functions compiled once, loaded by later runs."""


@cache.command(name="info")
@json_option
def cache_info(as_json) -> None:
    """Where the cache is, how many compiled functions it holds, and their size."""
    from rnnlm.compiled import FunctionCache

    info = FunctionCache().info()
    if as_json:
        echo_json(info.to_dict())
        return
    state = "" if info.usable else " (not used: not a private folder of this user)"
    click.echo(f"{info.path}{state}")
    click.echo(f"{info.entries} compiled functions, {info.bytes / 1e6:.1f} MB")


@cache.command(name="clear")
def cache_clear() -> None:
    """Delete every compiled function in the cache (they are rebuilt when next needed)."""
    from rnnlm.compiled import FunctionCache

    function_cache = FunctionCache()
    removed = function_cache.clear()
    click.echo(f"removed {removed} compiled functions from {function_cache.root}")


COMMANDS = [serve, cache]
