"""Training time and held-out accuracy of the boot file's recipes, in one run.

    python benchmarks/train_bench.py [--seeds 0 1 2] [--tutorial-seeds 0]
    python benchmarks/train_bench.py --data DIR [--holdout 10000] [--full-seeds 0 1 2] [--seeds] [--tutorial-seeds]

Without --data: the default recipe (and the tutorial's Dense(128) one) on the embedded dataset's 4,000
training digits, scored on its 1,000 held-out ones. With --data, a folder a user provides with the
MNIST IDX files, also the full-set recipe (FULL_FLAGS, the command README.md documents) on it: trained
on its training files and scored on its t10k files, or, with --holdout N, trained on all but the last N
training images and scored on those N (for a folder that holds only the 60,000 training images).
Everything goes through the boot file's own train() (its `datasets=` seam), so the figures are those of
`modelarts-mnist train` minus process start-up and the TensorFlow import.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from modelarts_mnist.artifacts import BOOT_FILE, artifact_path  # noqa: E402
from modelarts_mnist.embedded import load_embedded  # noqa: E402

log = logging.getLogger("train_bench")

# The tutorial's recipe as the issue states it: one Dense(128) layer, Adam 0.01, 1000 steps of 128, plain loss.
TUTORIAL_FLAGS = ["--model", "mlp", "--learning_rate", "0.01", "--max_steps", "1000", "--batch_size", "128",
                  "--label_smoothing", "0"]
# The full 60,000-image recipe, as README.md's "Training on the full set" gives it.
FULL_FLAGS = ["--width", "2", "--max_steps", "9000", "--eval_every", "3000"]


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


def user_datasets(boot, folder: Path, holdout: int):
    """The folder's split as the boot file reads it, or its training files split at the last `holdout` images."""
    if not holdout:
        return boot.load_mnist(folder)
    images = boot.read_idx(boot.find_idx(folder, boot.FILES["train"][0])).reshape(-1, 784)
    labels = boot.read_idx(boot.find_idx(folder, boot.FILES["train"][1])).astype("int64")
    if not 0 < holdout < len(images):
        raise SystemExit(f"--holdout {holdout}: {folder} has {len(images)} training images")
    return {"train": (images[:-holdout], labels[:-holdout]), "test": (images[-holdout:], labels[-holdout:])}


def run_recipe(boot, datasets, flags, seed):
    """(wall seconds of train(), CPU seconds per core, held-out accuracy) for one recipe and seed."""
    args, _ = boot.parse_args(["--data_url", "-", "--train_url", "-", "--seed", str(seed), *flags])
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        _, metrics = boot.train(args, out, datasets=datasets)
        # CPU time per core approximates the wall time on an idle machine when others share the CPUs.
        return time.perf_counter() - wall, (time.process_time() - cpu) / os.cpu_count(), metrics["accuracy"]


def report(name, runs):
    """One line per recipe: the medians, then each seed (accuracy, wall / CPU-per-core seconds)."""
    walls, cpus, accuracies = zip(*runs.values())
    each = ", ".join(f"seed {s}: {a:.2%} {w:.0f}/{c:.0f} s" for s, (w, c, a) in runs.items())
    print(f"{name:<34} median {statistics.median(accuracies):.2%}, wall {statistics.median(walls):.1f} s, "
          f"CPU/core {statistics.median(cpus):.1f} s  [{each}]", flush=True)


def bench(name, boot, datasets, flags, seeds):
    """Train the recipe once per seed, a line per seed as it ends (long runs), then the recipe's line."""
    runs = {}
    for seed in seeds:
        runs[seed] = wall, cpu, accuracy = run_recipe(boot, datasets, flags, seed)
        log.info("%s seed %d: %.2f%% in %.0f s (CPU/core %.0f s)", name, seed, 100 * accuracy, wall, cpu)
    if runs:
        report(name, runs)


def describe(name, datasets):
    """One line on a dataset's split and the machine."""
    print(f"{name}: train {len(datasets['train'][0])} / held-out {len(datasets['test'][0])} images, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds of the default recipe")
    parser.add_argument("--tutorial-seeds", type=int, nargs="*", default=[0], help="seeds of the tutorial recipe")
    parser.add_argument("--data", type=Path, help="a folder with MNIST IDX files, for the full-set recipe")
    parser.add_argument("--holdout", type=int, default=0,
                        help="score on the last N training images of --data instead of its t10k files")
    parser.add_argument("--full-seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds of the full-set recipe")
    options = parser.parse_args()
    # The boot file's progress lines (one per evaluation) show that a long run is moving.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    boot = load_boot_file()
    embedded = embedded_datasets()
    describe("embedded", embedded)
    bench("tutorial (Dense128, Adam .01)", boot, embedded, TUTORIAL_FLAGS, options.tutorial_seeds)
    bench("default (CNN, boot defaults)", boot, embedded, [], options.seeds)
    if options.data:
        full = user_datasets(boot, options.data, options.holdout)
        describe(str(options.data), full)
        bench(f"full set ({' '.join(FULL_FLAGS)})", boot, full, FULL_FLAGS, options.full_seeds)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other work on the machine slows every figure)")


if __name__ == "__main__":
    main()
