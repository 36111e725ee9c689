"""Training time and held-out accuracy: the default recipe vs the tutorial's original one, in one run.

Trains on the embedded dataset's 4,000 training digits and scores the 1,000 held-out ones, through the
boot file's own train() (its `datasets=` seam), so the figures are those of `modelarts-mnist train`
minus process start-up and TensorFlow import. Usage:

    python benchmarks/train_bench.py [--seeds 0 1 2] [--tutorial-seeds 0]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from modelarts_mnist.artifacts import BOOT_FILE, artifact_path  # noqa: E402
from modelarts_mnist.embedded import load_embedded  # noqa: E402

# The tutorial's recipe as the issue states it: one Dense(128) layer, Adam 0.01, 1000 steps of 128.
TUTORIAL_FLAGS = ["--model", "mlp", "--learning_rate", "0.01", "--max_steps", "1000", "--batch_size", "128"]


def load_boot_file():
    """codes/train_mnist_tf.py as a module."""
    spec = importlib.util.spec_from_file_location("train_mnist_tf", artifact_path(BOOT_FILE))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def embedded_datasets():
    """The embedded split in the boot file's format: flat uint8 images, int64 labels."""
    train_x, train_y, test_x, test_y = load_embedded()
    return {"train": (train_x.reshape(-1, 784), train_y.astype("int64")),
            "test": (test_x.reshape(-1, 784), test_y.astype("int64"))}


def run_recipe(boot, datasets, flags, seed):
    """(wall seconds of train(), CPU seconds per core, held-out accuracy) for one recipe and seed."""
    args, _ = boot.parse_args(["--data_url", "-", "--train_url", "-", "--seed", str(seed), *flags])
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        _, metrics = boot.train(args, out, datasets=datasets)
        # CPU time per core approximates the wall time on an idle machine when others share the CPUs.
        return time.perf_counter() - wall, (time.process_time() - cpu) / os.cpu_count(), metrics["accuracy"]


def report(name, runs):
    """One line per recipe: the medians, then each seed."""
    walls, cpus, accuracies = zip(*runs)
    each = ", ".join(f"{a:.2%} {w:.0f}/{c:.0f} s" for w, c, a in runs)
    print(f"{name:<30} median {statistics.median(accuracies):.2%}, wall {statistics.median(walls):.1f} s, "
          f"CPU/core {statistics.median(cpus):.1f} s  [{each}]", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the default recipe")
    parser.add_argument("--tutorial-seeds", type=int, nargs="+", default=[0], help="seeds of the tutorial recipe")
    options = parser.parse_args()
    boot, datasets = load_boot_file(), embedded_datasets()
    print(f"train {len(datasets['train'][0])} / held-out {len(datasets['test'][0])} images, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    report("tutorial (Dense128, Adam .01)", [run_recipe(boot, datasets, TUTORIAL_FLAGS, s) for s in options.tutorial_seeds])
    report("default (CNN, boot defaults)", [run_recipe(boot, datasets, [], s) for s in options.seeds])
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")


if __name__ == "__main__":
    main()
