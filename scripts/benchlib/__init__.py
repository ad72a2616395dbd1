"""The parts of scripts/bench.py: what it measures (configs), how (timing, threads), the
contenders (steps: rnnlm's; pytorch: the same model in PyTorch), where each row runs (rows:
in this process or in fresh worker processes) and the table and JSON it writes (report)."""

import os

# OMP_WAIT_POLICY as the user gave it, read before rnnlm is imported (which sets it to PASSIVE
# unless given): workers get it back (threads.thread_env), and the PyTorch process runs with it
# (pytorch_process), so that each library runs with the setting it has on its own.
GIVEN_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
