"""Wall time of `data prepare` (embedded source) and `data inspect` on its output, median of 5.

Each run is a fresh `python -m modelarts_mnist` subprocess, so interpreter start-up and imports
count, as they do for a user. Usage: python benchmarks/data_bench.py [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "modelarts_mnist", "data"]


def time_command(args: list[str]) -> float:
    """Seconds one CLI run takes; raises if the command fails."""
    start = time.perf_counter()
    subprocess.run(CLI + args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def bench(runs: int) -> dict[str, list[float]]:
    """Run prepare (into a fresh folder each time) then inspect on it, `runs` times."""
    times: dict[str, list[float]] = {"prepare": [], "inspect": []}
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(runs):
            out = Path(scratch) / f"dataset-mnist-{run}"
            times["prepare"].append(time_command(["prepare", "--out", str(out)]))
            times["inspect"].append(time_command(["inspect", str(out)]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    for name, samples in bench(runs).items():
        spread = ", ".join(f"{s:.3f}" for s in samples)
        print(f"data {name:<8} median {statistics.median(samples):.3f} s over {runs} runs ({spread})")


if __name__ == "__main__":
    main()
