"""`python -m rnnlm ...`: the `rnnlm` command, for an environment whose scripts folder is not
on PATH (or to pick the interpreter explicitly)."""

from rnnlm.cli import main

main(prog_name="rnnlm")
