"""The parts of scripts/bench.py: what it measures (configs), how (timing, threads), the
contenders (steps: rnnlm's; pytorch: the same model in PyTorch), where each row runs (rows:
in this process or in fresh worker processes) and the table and JSON it writes (report)."""
