"""The `rnnlm` command: a thin layer over the library. Each command parses its options, calls
one library function and prints the result, as text or with --json.

Exit codes: 0 success (Ctrl-C during training too: the model is saved), 1 bad input or an
unusable file (one line on stderr), 2 bad command-line usage (click's usage line, then the
error), 130 interrupted otherwise.

Start-up stays cheap: the command modules import the library, and through it the tensor
library, inside the commands, so `rnnlm --help` never compiles or imports a graph.
"""

from __future__ import annotations

import sys

import click

from rnnlm import __version__
from rnnlm.cli import evaluation, files, serving, text, train
from rnnlm.cli.options import option_name
from rnnlm.errors import RnnlmError, SettingError


class Group(click.Group):
    """Turns library errors into one-line messages, and Ctrl-C into exit code 130."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SettingError as error:
            command = self.commands.get(ctx.invoked_subcommand or "")
            raise click.ClickException(
                error.shown(lambda setting: option_name(command, setting))
            ) from None
        except RnnlmError as error:
            raise click.ClickException(str(error)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnlm")
def main() -> None:
    """Recurrent neural network language models as Aesara (Theano) graphs.

    Train on a CSV or text corpus, then sample sentences or score text.
    """


for module in (train, text, evaluation, files, serving):
    for command in module.COMMANDS:
        main.add_command(command)
