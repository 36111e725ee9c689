"""Preparing the dataset folder: every source, atomic writes, refusals and checksum verification."""
from __future__ import annotations

import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import write_dataset
from modelarts_mnist import idx
from modelarts_mnist.dataset import Canonical, decompress, prepare_dataset, read_source
from modelarts_mnist.errors import DataError

EIGHT = sorted(idx.all_file_names() + [f"{n}.gz" for n in idx.all_file_names()])


def tiny_arrays(seed=0, n_train=30, n_test=20):
    """Random digits: enough to check that bytes travel unchanged."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), (np.arange(n_train) % 10).astype(np.uint8),
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), (np.arange(n_test) % 10).astype(np.uint8))


def assert_dataset(folder: Path, arrays) -> None:
    """`folder` holds exactly the eight files, raw and .gz agreeing with `arrays`."""
    assert sorted(p.name for p in folder.iterdir()) == EIGHT
    expected = dict(zip(idx.all_file_names(), arrays))
    for name, array in expected.items():
        np.testing.assert_array_equal(idx.read_idx(folder / name), array)
        assert gzip.decompress((folder / f"{name}.gz").read_bytes()) == (folder / name).read_bytes()


def leftovers(parent: Path, keep: str = "") -> list[str]:
    """Entries of `parent` other than `keep`: staging or backup folders must not survive."""
    return sorted(p.name for p in parent.iterdir() if p.name != keep)


def make_zip(path: Path, folder: Path, prefix: str, extra: dict[str, bytes] | None = None) -> Path:
    """Zip every file of `folder` under `prefix`, plus `extra` members."""
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"{prefix}{file.name}")
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


def test_embedded_source_writes_the_eight_files(tmp_path, embedded_arrays):
    out = prepare_dataset(tmp_path / "dataset-mnist")
    assert out == tmp_path / "dataset-mnist"
    assert_dataset(out, embedded_arrays)
    assert leftovers(tmp_path, keep="dataset-mnist") == []


def test_embedded_gz_files_are_reproducible(tmp_path):
    first = prepare_dataset(tmp_path / "a")
    second = prepare_dataset(tmp_path / "b")
    for name in EIGHT:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.parametrize("layout", ["raw", "gz", "both"])
def test_local_folder_source(tmp_path, layout):
    arrays = tiny_arrays()
    source = write_dataset(tmp_path / "src", *arrays, gz=layout != "raw")
    if layout == "gz":
        for name in idx.all_file_names():
            (source / name).unlink()
    assert_dataset(prepare_dataset(tmp_path / "out", str(source)), arrays)


def test_source_gz_bytes_are_kept_unchanged(tmp_path):
    source = write_dataset(tmp_path / "src", *tiny_arrays())
    # A re-gzipped copy, as most mirrors hold: different .gz bytes, same content.
    name = "t10k-labels-idx1-ubyte.gz"
    (source / name).write_bytes(gzip.compress(gzip.decompress((source / name).read_bytes()), 9, mtime=123))
    out = prepare_dataset(tmp_path / "out", str(source))
    assert (out / name).read_bytes() == (source / name).read_bytes()


def test_nested_zip_like_the_tutorials_is_found_at_any_depth(tmp_path):
    arrays = tiny_arrays(seed=1)
    source = write_dataset(tmp_path / "src", *arrays)
    junk = {"__MACOSX/Mnist-Data-Set/a/b/._train-images-idx3-ubyte": b"junk", "Mnist-Data-Set/readme.txt": b"hi"}
    archive = make_zip(tmp_path / "Mnist-Data-Set.zip", source, "Mnist-Data-Set/a/b/", junk)
    assert_dataset(prepare_dataset(tmp_path / "out", str(archive)), arrays)


def test_zip_prefers_the_shallowest_complete_folder(tmp_path):
    top, deep = tiny_arrays(seed=2), tiny_arrays(seed=3)
    archive = make_zip(tmp_path / "two.zip", write_dataset(tmp_path / "top", *top), "data/")
    with zipfile.ZipFile(archive, "a") as handle:
        for file in write_dataset(tmp_path / "deep", *deep).iterdir():
            handle.write(file, f"data/old/{file.name}")
    assert_dataset(prepare_dataset(tmp_path / "out", str(archive)), top)


def test_zip_with_two_folders_at_the_same_depth_is_ambiguous(tmp_path):
    source = write_dataset(tmp_path / "src", *tiny_arrays())
    archive = make_zip(tmp_path / "two.zip", source, "one/")
    with zipfile.ZipFile(archive, "a") as handle:
        for file in source.iterdir():
            handle.write(file, f"two/{file.name}")
    with pytest.raises(DataError, match="several folders.*one.*two"):
        prepare_dataset(tmp_path / "out", str(archive))


def test_zip_missing_a_file_names_it(tmp_path):
    source = write_dataset(tmp_path / "src", *tiny_arrays())
    for suffix in ("", ".gz"):
        (source / f"t10k-labels-idx1-ubyte{suffix}").unlink()
    archive = make_zip(tmp_path / "part.zip", source, "x/")
    with pytest.raises(DataError, match=r"part\.zip.*missing t10k-labels-idx1-ubyte"):
        prepare_dataset(tmp_path / "out", str(archive))
    assert leftovers(tmp_path) == ["part.zip", "src"]


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    bogus = tmp_path / "data.zip"
    bogus.write_bytes(b"not a zip at all")
    with pytest.raises(DataError, match=r"data\.zip: not a readable zip"):
        prepare_dataset(tmp_path / "out", str(bogus))


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(DataError, match="no-such-thing: no such folder or file"):
        prepare_dataset(tmp_path / "out", str(tmp_path / "no-such-thing"))


def test_raw_and_gz_twins_that_differ_are_refused(tmp_path):
    source = write_dataset(tmp_path / "src", *tiny_arrays())
    labels = np.zeros(20, dtype=np.uint8)
    idx.write_idx(source / "t10k-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: content differs"):
        prepare_dataset(tmp_path / "out", str(source))


def test_a_defective_source_file_is_named_and_nothing_is_written(tmp_path):
    source = write_dataset(tmp_path / "src", *tiny_arrays(), gz=False)
    data = bytearray((source / "train-labels-idx1-ubyte").read_bytes())
    data[8] = 12  # the first label
    (source / "train-labels-idx1-ubyte").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"src/train-labels-idx1-ubyte: 1 labels outside 0-9"):
        prepare_dataset(tmp_path / "out", str(source))
    assert leftovers(tmp_path) == ["src"]


def test_mismatched_counts_are_refused(tmp_path):
    train_x, train_y, test_x, test_y = tiny_arrays()
    source = write_dataset(tmp_path / "src", train_x, train_y, test_x[:5], test_y, gz=False)
    with pytest.raises(DataError, match="has 5 images but .*t10k-labels-idx1-ubyte has 20 labels"):
        prepare_dataset(tmp_path / "out", str(source))


def test_non_empty_folder_is_refused_without_force(tmp_path):
    out = tmp_path / "dataset-mnist"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"dataset-mnist: folder exists and is not empty \(use --force"):
        prepare_dataset(out)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]


def test_empty_folder_is_filled_and_force_replaces(tmp_path, embedded_arrays):
    out = tmp_path / "dataset-mnist"
    out.mkdir()
    prepare_dataset(out)
    (out / "stale.txt").write_text("old")
    assert_dataset(prepare_dataset(out, force=True), embedded_arrays)
    assert leftovers(tmp_path, keep="dataset-mnist") == []


def test_a_failure_under_force_keeps_the_old_folder(tmp_path):
    out = tmp_path / "dataset-mnist"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(DataError):
        prepare_dataset(out, str(tmp_path / "missing"), force=True)
    assert (out / "precious.txt").read_text() == "keep me"
    assert leftovers(tmp_path, keep="dataset-mnist") == []


def test_the_current_folder_can_be_the_target(tmp_path, monkeypatch, embedded_arrays):
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    prepare_dataset(".")
    assert_dataset(tmp_path / "here", embedded_arrays)
    assert leftovers(tmp_path, keep="here") == []


def test_a_file_as_target_is_refused(tmp_path):
    target = tmp_path / "dataset-mnist"
    target.write_text("a file")
    with pytest.raises(DataError, match="exists and is not a folder"):
        prepare_dataset(target, force=True)


def test_http_zip_source(tmp_path, http_root):
    arrays = tiny_arrays(seed=4)
    served, url = http_root.folder("zip")
    make_zip(served / "Mnist-Data-Set.zip", write_dataset(tmp_path / "src", *arrays), "Mnist-Data-Set/")
    assert_dataset(prepare_dataset(tmp_path / "out", url + "Mnist-Data-Set.zip"), arrays)
    assert leftovers(tmp_path, keep="out") == ["src"]


def test_http_folder_of_gz_files(tmp_path, http_root):
    arrays = tiny_arrays(seed=5)
    served, url = http_root.folder("gz-folder")
    write_dataset(served, *arrays)
    assert_dataset(prepare_dataset(tmp_path / "out", url.rstrip("/")), arrays)


def test_failed_download_leaves_no_partial_folder(tmp_path, http_root):
    served, url = http_root.folder("incomplete")
    write_dataset(served, *tiny_arrays())
    (served / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"incomplete/t10k-images-idx3-ubyte\.gz: download failed: HTTP 404"):
        prepare_dataset(tmp_path / "out", url)
    assert leftovers(tmp_path) == []


def test_download_cut_short_is_an_error(tmp_path, http_root):
    with pytest.raises(DataError, match=r"cut/.*(cut short|download failed)"):
        prepare_dataset(tmp_path / "out", http_root.url + "cut/")
    assert leftovers(tmp_path) == []


def test_mirrors_are_tried_in_order(tmp_path, http_root):
    arrays = tiny_arrays(seed=6)
    served, good = http_root.folder("mirror-good")
    write_dataset(served, *arrays)
    bad = http_root.url + "mirror-missing/"
    out = prepare_dataset(tmp_path / "out", "download", mirrors=[bad, good])
    assert_dataset(out, arrays)


def test_all_mirrors_failing_names_each(tmp_path, http_root):
    first, second = http_root.url + "nothing-1/", http_root.url + "nothing-2/"
    with pytest.raises(DataError, match="every MNIST mirror failed") as caught:
        prepare_dataset(tmp_path / "out", "download", mirrors=[first, second])
    assert first in str(caught.value) and second in str(caught.value)
    assert leftovers(tmp_path) == []


def canonical_of(folder: Path) -> Canonical:
    """A verifier table that takes `folder`'s sizes and digests as the published ones."""
    counts = {split: len(idx.read_idx(folder / idx.file_names(split)[1])) for split in idx.SPLITS}
    digests = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in idx.all_file_names()}
    return Canonical(counts, digests)


def test_full_size_set_with_matching_digests_is_accepted(tmp_path):
    source = write_dataset(tmp_path / "src", *tiny_arrays(), gz=False)
    out = prepare_dataset(tmp_path / "out", str(source), canonical=canonical_of(source))
    assert sorted(p.name for p in out.iterdir()) == EIGHT


def test_full_size_set_with_a_wrong_digest_is_refused(tmp_path):
    source = write_dataset(tmp_path / "src", *tiny_arrays(), gz=False)
    table = canonical_of(source)
    table.sha256["t10k-images-idx3-ubyte"] = "0" * 64
    with pytest.raises(DataError, match=r"(?s)src: not canonical MNIST \(use --no-verify.*t10k-images-idx3-ubyte: SHA-256 \w+ differs"):
        prepare_dataset(tmp_path / "out", str(source), canonical=table)
    assert leftovers(tmp_path) == ["src"]
    assert prepare_dataset(tmp_path / "out", str(source), verify=False, canonical=table).is_dir()


def test_digests_are_checked_only_at_full_size(tmp_path):
    source = write_dataset(tmp_path / "src", *tiny_arrays(), gz=False)
    table = Canonical({"train": 60_000, "t10k": 10_000}, {name: "0" * 64 for name in idx.all_file_names()})
    assert prepare_dataset(tmp_path / "out", str(source), canonical=table).is_dir()


def test_decompress_reads_multi_member_gzip_and_names_truncation():
    data = b"abc" * 1000
    assert decompress(gzip.compress(data[:1500]) + gzip.compress(data[1500:]), "x.gz") == data
    with pytest.raises(DataError, match="x.gz: truncated gzip"):
        decompress(gzip.compress(data)[:-10], "x.gz")
    with pytest.raises(DataError, match="x.gz: corrupt gzip"):
        decompress(b"\x1f\x8b" + b"\xff" * 40, "x.gz")


def test_read_source_embedded_matches_the_embedded_arrays(tmp_path, embedded_arrays):
    found = read_source("embedded", tmp_path)
    np.testing.assert_array_equal(idx.parse(found["t10k-labels-idx1-ubyte"].raw), embedded_arrays[3])


# --- never missing, never half-written ------------------------------------------------------------

def dead_pid() -> int:
    """The id of a process that has exited (so its leftovers count as abandoned)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def full_disk_after(n_files: int):
    """A writer that writes `n_files` files, then fails on the next like a full disk (after half of it)."""
    import errno

    from modelarts_mnist.files import write_bytes

    written = []

    def write(path: Path, data: bytes) -> None:
        if len(written) == n_files:
            write_bytes(path, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_bytes(path, data)
        written.append(path)
    return write


@pytest.mark.parametrize("n_files", [0, 5], ids=["first-file", "sixth-file"])
def test_a_full_disk_names_the_folder_and_leaves_the_old_one_whole(tmp_path, embedded_arrays, n_files):
    out = tmp_path / "dataset-mnist"
    prepare_dataset(out)
    with pytest.raises(DataError, match=f"cannot write {out}: No space left on device .*left as it was") as caught:
        prepare_dataset(out, force=True, write=full_disk_after(n_files))
    assert "\n" not in str(caught.value)
    assert_dataset(out, embedded_arrays)
    assert leftovers(tmp_path, keep="dataset-mnist") == []


def test_a_full_disk_on_a_new_folder_leaves_nothing(tmp_path):
    with pytest.raises(DataError, match="No space left on device.*nothing was written"):
        prepare_dataset(tmp_path / "dataset-mnist", write=full_disk_after(3))
    assert leftovers(tmp_path) == []


def test_force_swaps_in_one_step_and_the_fallback_restores_a_half_done_swap(tmp_path, embedded_arrays):
    from modelarts_mnist.files import replace_folder

    out, new = tmp_path / "target", tmp_path / "new"
    for folder, text in ((out, "old"), (new, "new")):
        folder.mkdir()
        (folder / "f.txt").write_text(text)
    seen = []

    def swap_and_look(a: Path, b: Path) -> bool:
        from modelarts_mnist.files import exchange

        done = exchange(a, b)
        seen.append((out / "f.txt").read_text())  # the target is whole right after the one step
        return done
    replace_folder(new, out, swap=swap_and_look)
    assert seen == ["new"] and (out / "f.txt").read_text() == "new" and leftovers(tmp_path, keep="target") == []


def test_a_run_killed_between_the_fallback_renames_is_recovered_by_the_next(tmp_path, embedded_arrays):
    out = tmp_path / "dataset-mnist"
    prepare_dataset(out)
    # What the no-exchange fallback leaves when killed after moving the old folder aside, plus a dead staging.
    out.rename(tmp_path / f".dataset-mnist.mnist-partial-{dead_pid()}-0123abcd.old")
    (tmp_path / f".dataset-mnist.mnist-partial-{dead_pid()}-4567cdef").mkdir()
    with pytest.raises(DataError, match="not empty"):
        prepare_dataset(out)  # the old folder is back, and not overwritten without --force
    assert_dataset(out, embedded_arrays)
    assert leftovers(tmp_path, keep="dataset-mnist") == []
    live = tmp_path / ".dataset-mnist.mnist-partial-1-89abcdef"  # pid 1 runs: a concurrent run's staging
    live.mkdir()
    prepare_dataset(out, force=True)
    assert leftovers(tmp_path, keep="dataset-mnist") == [live.name]


def test_prepare_killed_at_any_moment_never_leaves_the_folder_missing(tmp_path):
    import random
    import signal
    import subprocess
    import sys
    import threading
    import time

    out = tmp_path / "dataset-mnist"
    command = [sys.executable, "-m", "modelarts_mnist", "data", "prepare", "--out", str(out), "--force"]
    subprocess.run(command, check=True, capture_output=True)
    missing, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not (out / "train-images-idx3-ubyte.gz").is_file():
                missing.append(time.monotonic())
    watcher = threading.Thread(target=watch)
    watcher.start()
    rng = random.Random(13)
    try:
        for _ in range(6):
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.6, 1.6))  # import, build, swap or clean-up: wherever it is
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert sorted(p.name for p in out.iterdir()) == EIGHT
    finally:
        stop.set()
        watcher.join()
    assert missing == []
    subprocess.run(command, check=True, capture_output=True)
    assert leftovers(tmp_path, keep="dataset-mnist") == []
