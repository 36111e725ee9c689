"""CPU per service.inference call in-process (one 28x28 PNG, a 256-image JSON batch): a baseline tree against this one.

    python benchmarks/inference_bench.py MODEL_DIR --before OLD_TREE [--after NEW_TREE] [--rounds 3]
                                         [--calls 2000] [--json-out FILE]

MODEL_DIR is a packaged model folder (saved_model.pb, variables/). Each tree (a checkout of this
project, e.g. `git worktree add /tmp/before HEAD~5`) gets a copy of it holding that tree's
model/customize_service.py and config.json, and is timed in its own Python process with its own
sources first on PYTHONPATH: its runtime (model_service, metric) as well as its inference code, so
the whole of SingleNodeService.inference is compared, as a serving worker runs it (LiteRT when the
cache allows, as `serve` does). Per process:
- single: service.inference({"images": {"d.png": <file>}}) on the first held-out digit, as a
  multipart request reaches it; blocks of --calls calls, CPU time (process_time) per call;
- batch: service.inference({"images": [256 base64 PNGs]}) as a JSON request reaches it, per call;
- answers: a digest of the answers to the 1,000 held-out digits, one per call and in 4 batches.
Rounds alternate before and after (drift on a busy machine hits both); each figure is the best
block of all rounds (the least disturbed), with the median beside it. Ratios are after / before.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_bench import test_digits, tree_environ  # noqa: E402

SERVICE_FILES = ("model/customize_service.py", "config.json")
BATCH_SIZE = 256

CHILD = r"""
import base64, hashlib, io, json, statistics, sys, time
from model_service.discovery import load_service

model_dir, digits_file, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
pngs = [base64.b64decode(text) for text in json.load(open(digits_file))]
service = load_service(model_dir)
batch = [base64.b64encode(png).decode() for png in pngs[:256]]
single = lambda: service.inference({"images": {"d.png": io.BytesIO(pngs[0])}})
many = lambda: service.inference({"images": batch})

def blocks(call, per_block, count):
    for _ in range(max(5, per_block // 10)):
        call()
    found = []
    for _ in range(count):
        start = time.process_time()
        for _ in range(per_block):
            call()
        found.append(1e6 * (time.process_time() - start) / per_block)
    return found

answers = [service.inference({"images": {"x.png": io.BytesIO(png)}}) for png in pngs]
answers += [service.inference({"images": [base64.b64encode(p).decode() for p in pngs[i:i + 250]]})
            for i in range(0, len(pngs), 250)]
print(json.dumps({"single_us": blocks(single, calls, 5), "batch_us": blocks(many, max(5, calls // 100), 5),
                  "answers": hashlib.sha256(json.dumps(answers, sort_keys=True).encode()).hexdigest()[:16]}))
"""


def package_for(tree: Path, model_dir: Path, folder: Path) -> Path:
    """A folder holding model_dir's SavedModel (linked) and tree's customize_service.py and config.json."""
    copy = folder / "model"
    copy.mkdir(parents=True)
    for item in model_dir.iterdir():
        if item.name not in {Path(name).name for name in SERVICE_FILES}:
            (copy / item.name).symlink_to(item.resolve())
    for name in SERVICE_FILES:
        shutil.copy2(tree / name, copy / Path(name).name)
    return copy


def measure(tree: Path, package: Path, digits: Path, calls: int) -> dict:
    """One child process of tree's sources timing package's service."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **tree_environ(tree)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(package), str(digits), str(calls)], env=env,
                          cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"timing {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(values: list[float]) -> dict:
    """The best block and the median block (us per call)."""
    ordered = sorted(values)
    return {"best": round(ordered[0], 1), "median": round(ordered[len(ordered) // 2], 1)}


def run(args: argparse.Namespace) -> dict:
    """Figures of both trees, rounds alternating."""
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="inference-bench-") as folder:
        work = Path(folder)
        digits = work / "digits.json"
        digits.write_text(json.dumps([base64.b64encode(png).decode() for png in test_digits(1000)[0]]))
        packages = {name: package_for(tree, args.model_dir.resolve(), work / name) for name, tree in trees.items()}
        for round_number in range(args.rounds):
            for name, tree in trees.items():
                runs[name].append(measure(tree, packages[name], digits, args.calls))
                print(f"round {round_number + 1} {name}: single {summary(runs[name][-1]['single_us'])} us, "
                      f"batch {summary(runs[name][-1]['batch_us'])} us", flush=True)
    figures = {name: {"single_us": summary([v for r in found for v in r["single_us"]]),
                      "batch_us": summary([v for r in found for v in r["batch_us"]]),
                      "answers": sorted({r["answers"] for r in found})} for name, found in runs.items()}
    figures["ratio_after_before"] = {
        kind: round(figures["after"][kind]["best"] / figures["before"][kind]["best"], 3)
        for kind in ("single_us", "batch_us")}
    figures["same_answers"] = figures["before"]["answers"] == figures["after"]["answers"] and len(
        figures["after"]["answers"]) == 1
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--before", type=Path, required=True, help="the baseline source tree")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the tree to compare (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000, help="single-image calls per block (5 blocks a process)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    figures = run(args)
    for name in ("before", "after"):
        print(f"{name}: one 28x28 PNG {figures[name]['single_us']['best']} us per call (median block "
              f"{figures[name]['single_us']['median']}), 256-image JSON batch {figures[name]['batch_us']['best']} "
              f"us per call ({figures[name]['batch_us']['best'] / BATCH_SIZE:.1f} us per image)")
    ratios = figures["ratio_after_before"]
    print(f"after/before: single {ratios['single_us']}, batch {ratios['batch_us']}; "
          f"same answers on the 1,000 held-out digits: {figures['same_answers']}")
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
