"""Train and evaluate Penn Treebank configs end to end, and print the results table.

    python scripts/ptb.py                                   # configs/ptb-small.toml
    python scripts/ptb.py configs/ptb-small.toml configs/ptb-medium.toml --out-dir runs
    python scripts/ptb.py --eval-only configs/ptb-small.toml   # an existing run's numbers
    python scripts/ptb.py --minutes 60 configs/ptb-medium.toml  # what an hour reaches

Each config is trained with `rnnlm train --config C --out DIR/NAME.npz` (its progress on
stderr), then the best checkpoint (chosen on the validation set) is evaluated on ptb.valid
and ptb.test in stream mode, the PTB convention. The table gives the wall time of training
(compilation included), the epochs reached and both perplexities; below it, each run's
learning curve from NAME.metrics.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PTB = ROOT.parent / "shared" / "data" / "ptb"


def command(*args: str) -> list[str]:
    exe = shutil.which("rnnlm") or sys.exit("rnnlm is not installed: pip install -e .")
    return [exe, *args]


def rnnlm(*args: str, capture: bool = False) -> str:
    done = subprocess.run(command(*args), cwd=ROOT, stdout=subprocess.PIPE if capture else None)
    if done.returncode:
        sys.exit(f"rnnlm {args[0]} failed with exit code {done.returncode}")
    return done.stdout.decode() if capture else ""


def train(config: str, out: Path, minutes: float | None) -> float:
    """Train; at the time limit, Ctrl-C (training saves and exits 0). Returns the wall time."""
    start = time.perf_counter()
    process = subprocess.Popen(command("train", "--config", config, "--out", str(out)), cwd=ROOT)
    try:
        process.wait(timeout=minutes * 60 if minutes else None)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        process.wait()
    if process.returncode:
        sys.exit(f"rnnlm train failed with exit code {process.returncode}")
    return time.perf_counter() - start


def perplexity(model: Path, corpus: Path) -> float:
    result = json.loads(
        rnnlm(
            "eval",
            "--model",
            str(model),
            "--corpus",
            str(corpus),
            "--mode",
            "stream",
            "--quiet",
            "--json",
            capture=True,
        )
    )
    return result["perplexity"]


def curve(metrics: Path) -> list[dict]:
    return [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="*", default=["configs/ptb-small.toml"])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs")
    parser.add_argument("--data", type=Path, default=PTB)
    parser.add_argument("--eval-only", action="store_true", help="skip training")
    parser.add_argument("--minutes", type=float, help="stop training after this long (Ctrl-C)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    if not (args.data / "ptb.test.txt").exists():
        sys.exit(f"no Penn Treebank in {args.data} (see ../shared/data/ptb/SOURCE.md)")
    args.out_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    for config in args.configs:
        name = Path(config).stem
        out = (args.out_dir / name).with_suffix(".npz")
        wall = None
        if not args.eval_only:
            wall = train(config, out, args.minutes)
        best = out.with_name(name + ".best.npz")
        points = curve(out.with_name(name + ".metrics.jsonl"))
        rows.append(
            {
                "config": config,
                "epochs": points[-1]["epoch"] if points else 0.0,
                "train_wall_s": wall if wall is not None else points[-1].get("wall_s"),
                "valid_ppl": perplexity(best, args.data / "ptb.valid.txt"),
                "test_ppl": perplexity(best, args.data / "ptb.test.txt"),
                "curve": points,
            }
        )

    print(f"Penn Treebank, {time.strftime('%Y-%m-%d')}, stream evaluation of NAME.best.npz")
    print("| config | epochs | wall time | valid ppl | test ppl |")
    print("|---|---|---|---|---|")
    for row in rows:
        wall = row["train_wall_s"]
        minutes = f"{wall / 60:.1f} min" if wall is not None else "?"
        print(
            f"| {row['config']} | {row['epochs']:.2f} | {minutes} "
            f"| {row['valid_ppl']:.2f} | {row['test_ppl']:.2f} |"
        )
    for row in rows:
        print(f"\n{row['config']}: learning curve (epoch, lr, train ppl, valid ppl, tokens/s)")
        for p in row["curve"]:
            train_ppl = math.exp(p["train_loss"]) if p["train_loss"] is not None else math.nan
            print(
                f"  {p['epoch']:6.2f}  {p['learning_rate']:.4g}  {train_ppl:9.2f}  "
                f"{p['perplexity']:9.2f}  {p['tokens_per_s'] or 0:7.0f}"
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
