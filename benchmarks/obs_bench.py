"""Upload and download throughput of a 50 MB folder of mixed files against a local SeaweedFS S3 server.

    python benchmarks/obs_bench.py [--repeats 3] [--starts 3] [--workers 8] [--json]

Starts the test fixture's server (tests/fixtures/s3.py) in a temporary folder, timing each start
until it accepts writes; writes a 50 MB folder (one 20 MB and two 9 MB files, which go multipart,
plus 120 small and medium files); then uploads it to a fresh prefix and downloads it to a fresh
folder `repeats` times, checking the bytes once, and prints the median of each.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixtures.s3 import start_server, stop  # noqa: E402  (the suite's own fixture code)

from modelarts_mnist.objectstore import ObjectStore  # noqa: E402
from modelarts_mnist.obs import create_client  # noqa: E402
from modelarts_mnist.storage import Storage  # noqa: E402

MB = 1_000_000
TOTAL_BYTES = 50 * MB


def write_folder(root: Path, seed: int = 0) -> int:
    """The mixed 50 MB folder: 3 big files, then small and medium files filling up the rest; returns bytes."""
    rng = random.Random(seed)
    sizes = [20 * MB, 9 * MB, 9 * MB]
    remaining = TOTAL_BYTES - sum(sizes)
    for i in range(120):
        size = remaining if i == 119 else min(remaining, rng.choice([2_000, 30_000, 150_000, 400_000]))
        sizes.append(size)
        remaining -= size
    for i, size in enumerate(sizes):
        path = root / f"group{i % 7}" / f"file{i:03d}.{'bin' if size > MB else 'dat'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return sum(sizes)


def same_tree(a: Path, b: Path) -> bool:
    """Whether two folders hold the same files with the same bytes."""
    files = lambda root: {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}  # noqa: E731
    return files(a) == files(b)


def time_transfers(storage: Storage, folder: Path, work: Path, bucket: str, repeats: int) -> tuple[list, list]:
    """Seconds per upload (fresh prefix each time) and per download (fresh folder each time)."""
    ups, downs = [], []
    for run in range(repeats):
        started = time.perf_counter()
        storage.copy(str(folder), f"obs://{bucket}/run{run}", recursive=True)
        ups.append(time.perf_counter() - started)
        target = work / f"down{run}"
        started = time.perf_counter()
        storage.copy(f"obs://{bucket}/run{run}", str(target), recursive=True)
        downs.append(time.perf_counter() - started)
        if run == 0 and not same_tree(folder, target):
            raise SystemExit("downloaded folder differs from the uploaded one")
    return ups, downs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--starts", type=int, default=3, help="Server starts to time (median reported).")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark and print (or return) its figures."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="obs-bench-") as tmp:
        work = Path(tmp)
        starts = []
        for n in range(args.starts - 1):
            server = start_server(work / f"start{n}")
            starts.append(server.start_seconds)
            stop(server.process)
        server = start_server(work / "server")
        starts.append(server.start_seconds)
        try:
            size = write_folder(work / "folder")
            store = ObjectStore(create_client(server.settings(read_timeout=60)), settings=server.settings())
            store.client.create_bucket(Bucket="obs-bench")
            storage = Storage(store, workers=args.workers, show_progress=False)
            ups, downs = time_transfers(storage, work / "folder", work, "obs-bench", args.repeats)
        finally:
            stop(server.process)
    result = {"bytes": size, "files": 123, "workers": args.workers,
              "upload_MBps": size / MB / statistics.median(ups), "download_MBps": size / MB / statistics.median(downs),
              "upload_s": ups, "download_s": downs, "server_start_s": starts,
              "server_start_median_s": statistics.median(starts)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{size / MB:.0f} MB in 123 files, {args.workers} workers, median of {args.repeats}: "
              f"upload {result['upload_MBps']:.1f} MB/s, download {result['download_MBps']:.1f} MB/s")
        print(f"server start (fixture, until writes work): median {result['server_start_median_s']:.2f} s "
              f"of {', '.join(f'{s:.2f}' for s in starts)}")
    return result


if __name__ == "__main__":
    main()
