"""The local job runner: version allocation, locking, log and status records (fake boot file, no TF)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from modelarts_mnist import jobs
from modelarts_mnist.errors import DataError, StorageError, TrainingError


def test_format_version_pads_to_four_digits():
    assert [jobs.format_version(n) for n in (1, 12, 9999)] == ["V0001", "V0012", "V9999"]


def test_next_version_follows_the_highest_and_ignores_other_names(tmp_path):
    for name in ("V0001", "V0004", "v0009", "V12", "model", ".V0007.tmp-1"):
        (tmp_path / name).mkdir()
    assert jobs.next_version_name(tmp_path) == "V0005"  # the unlocked .V0007 temp is a dead job
    assert jobs.next_version_name(tmp_path / "missing") == "V0001"


def test_reservations_never_share_a_version_and_dead_ones_are_swept(tmp_path):
    dead = tmp_path / ".V0001.tmp-999999"
    dead.mkdir()
    first, second = jobs.reserve(tmp_path), jobs.reserve(tmp_path)
    assert (first.name, second.name) == ("V0001", "V0002")
    assert not dead.exists()
    assert jobs.next_version_name(tmp_path) == "V0003"  # live reservations count
    assert not any(jobs.VERSION_PATTERN.match(p.name) for p in tmp_path.iterdir())
    jobs.publish(second)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["V0002"]


def test_run_job_makes_v0001_then_v0002_with_log_and_status(tmp_path, small_dataset, fake_boot_file):
    root = tmp_path / "out"
    first = jobs.run_job(small_dataset, root, ["--max_steps=7", "--num_gpus=1"], boot_file=fake_boot_file)
    second = jobs.run_job(small_dataset, root, boot_file=fake_boot_file)
    assert (first, second) == (root / "V0001", root / "V0002")
    job = json.loads((first / "job.json").read_text())
    assert (job["status"], job["exit_code"], job["version"]) == ("succeeded", 0, "V0001")
    log_text = (first / "train.log").read_text()
    assert f"--train_url={root}" in log_text and "--max_steps=7 --num_gpus=1" in log_text
    assert (first / "model").is_dir() and (first / "metrics.json").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["V0001", "V0002"]  # no temp folders left


def test_boot_file_is_handed_the_version_folder_itself(tmp_path, small_dataset, fake_boot_file):
    version = jobs.run_job(small_dataset, tmp_path, boot_file=fake_boot_file)
    [train_url] = [arg for arg in json.loads((version / "job.json").read_text())["command"]
                   if arg.startswith("--train_url=")]
    assert train_url.endswith("/output/V0001")  # numbered by the runner, not by the boot file


def test_run_job_uses_the_given_interpreter(tmp_path, small_dataset, fake_boot_file):
    python = tmp_path / "engine-python"  # stands in for an engine's interpreter: marks the run, then execs ours
    python.write_text(f'#!/bin/sh\nFAKE_PYTHON_MARKER=engine exec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    version = jobs.run_job(small_dataset, tmp_path / "out", boot_file=fake_boot_file, interpreter=python)
    assert json.loads((version / "job.json").read_text())["command"][0] == str(python)
    assert "marker engine" in (version / "train.log").read_text()
    default = jobs.run_job(small_dataset, tmp_path / "out", boot_file=fake_boot_file)
    assert json.loads((default / "job.json").read_text())["command"][0] == sys.executable
    assert "marker -" in (default / "train.log").read_text()


def test_run_job_echoes_the_log_as_it_goes(tmp_path, small_dataset, fake_boot_file):
    lines = []
    jobs.run_job(small_dataset, tmp_path, boot_file=fake_boot_file, echo=lines.append)
    assert lines[0].startswith("fake boot file") and lines[-1] == "done"


def test_failed_job_leaves_no_version_but_a_failed_record(tmp_path, small_dataset, fake_boot_file):
    with pytest.raises(TrainingError, match=r"V0001 failed \(exit code 3\)"):
        jobs.run_job(small_dataset, tmp_path, ["--fail"], boot_file=fake_boot_file)
    assert jobs.next_version_name(tmp_path) == "V0001"
    [info] = jobs.list_versions(tmp_path)
    assert (info.name, info.status, info.exit_code) == ("V0001", "failed", 3)
    assert "fake boot file" in (info.path / "train.log").read_text()


def test_explicit_version_is_written_there_and_not_twice(tmp_path, small_dataset, fake_boot_file):
    target = tmp_path / "V0042"
    assert jobs.run_job(small_dataset, target, boot_file=fake_boot_file) == target
    with pytest.raises(TrainingError, match="already exists"):
        jobs.run_job(small_dataset, target, boot_file=fake_boot_file)


def test_missing_dataset_is_a_data_error(tmp_path, fake_boot_file):
    with pytest.raises(DataError, match="nowhere"):
        jobs.run_job(tmp_path / "nowhere", tmp_path / "out", boot_file=fake_boot_file)


def test_list_versions_reports_status_and_metrics(tmp_path, small_dataset, fake_boot_file):
    jobs.run_job(small_dataset, tmp_path, boot_file=fake_boot_file)
    (tmp_path / "V0002" / "model").mkdir(parents=True)  # written by the boot file alone, no job.json
    rows = jobs.list_versions(tmp_path)
    assert [(r.name, r.status) for r in rows] == [("V0001", "succeeded"), ("V0002", "succeeded")]
    assert rows[0].metrics["accuracy"] == 0.5 and rows[1].metrics == {}


RUNNER = "from modelarts_mnist.jobs import run_job; import sys; run_job(sys.argv[1], sys.argv[2], ['--sleep=60'], boot_file=sys.argv[3])"


def start_runner(tmp_path, small_dataset, fake_boot_file):
    """A runner process whose job is sleeping inside the boot file."""
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(small_dataset), str(tmp_path), str(fake_boot_file)])
    deadline = time.monotonic() + 30
    while not any(p.name.startswith(".V0001.tmp") and (p / "train.log").exists() and (p / "train.log").stat().st_size
                  for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline and runner.poll() is None, "the job never started"
        time.sleep(0.1)
    return runner


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["int", "term", "kill"])
def test_interrupted_runner_leaves_no_version(tmp_path, small_dataset, fake_boot_file, sig):
    runner = start_runner(tmp_path, small_dataset, fake_boot_file)
    os.kill(runner.pid, sig)
    runner.wait(timeout=30)
    assert not any(jobs.VERSION_PATTERN.match(p.name) for p in tmp_path.iterdir())
    assert [r.status for r in jobs.list_versions(tmp_path)] in ([], ["failed"])
    assert jobs.run_job(small_dataset, tmp_path, boot_file=fake_boot_file).name == "V0001"


def full_disk_on_call(n: int):
    """A writer that fails like a full disk on its `n`-th call (1-based), after writing half."""
    import errno

    from modelarts_mnist.files import write_bytes

    calls = []

    def write(path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == n:
            write_bytes(path, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_bytes(path, data)
    return write


@pytest.mark.parametrize("call, reason", [(1, "stopped: cannot write"), (2, "cannot write the version")],
                         ids=["at-start", "at-publish"])
def test_a_full_disk_publishes_no_version_and_names_the_file(tmp_path, small_dataset, fake_boot_file, call, reason):
    root = tmp_path / "models"
    with pytest.raises(TrainingError, match=f"{reason}.*job.json.*No space left on device") as caught:
        jobs.run_job(small_dataset, root, boot_file=fake_boot_file, write=full_disk_on_call(call))
    assert "\n" not in str(caught.value)
    [parked] = list(root.iterdir())  # no V0001, no partial job.json: one parked failure
    assert parked.name.startswith(".failed-V0001-") and not list(parked.glob(".*mnist-partial*"))
    assert jobs.run_job(small_dataset, root, boot_file=fake_boot_file).name == "V0001"


def test_a_job_on_obs_reads_its_data_from_the_bucket_and_numbers_versions_after_it(memory_storage, memory_s3,
                                                                                 small_dataset, fake_boot_file):
    memory_storage.copy(str(small_dataset), "obs://bkt/dataset-mnist", recursive=True)
    memory_s3.put("bkt", "mnist-model/V0007/model/saved_model.pb", b"an older version")
    said = []
    result = jobs.run_staged_job("obs://bkt/dataset-mnist", "obs://bkt/mnist-model", storage=memory_storage,
                                 say=said.append, boot_file=fake_boot_file)
    assert (result.name, result.url, str(result)) == ("V0008", "obs://bkt/mnist-model/V0008",
                                                      "obs://bkt/mnist-model/V0008")
    assert {"mnist-model/V0008/job.json", "mnist-model/V0008/train.log"} <= memory_s3.keys("bkt")
    assert said == ["downloading obs://bkt/dataset-mnist ...", "uploaded V0008 to obs://bkt/mnist-model/V0008"]
    explicit = jobs.run_staged_job("obs://bkt/dataset-mnist", "obs://bkt/mnist-model/V0042", storage=memory_storage,
                                   boot_file=fake_boot_file)
    assert explicit.url == "obs://bkt/mnist-model/V0042"


def test_a_local_job_needs_no_object_store(tmp_path, small_dataset, fake_boot_file):
    result = jobs.run_staged_job(small_dataset, tmp_path / "models", boot_file=fake_boot_file)
    assert (result.name, result.url, result.path) == ("V0001", None, tmp_path / "models" / "V0001")


def test_an_interrupted_upload_leaves_no_half_version_in_the_bucket(memory_storage, memory_s3, small_dataset,
                                                                    fake_boot_file):
    memory_storage.copy(str(small_dataset), "obs://bkt/dataset-mnist", recursive=True)
    sent = []

    def connection_lost_on_the_second_file(**details) -> None:
        sent.append(details["key"])
        if len(sent) == 2:
            raise ConnectionResetError(104, "Connection reset by peer")
    memory_s3.faults["upload_file"] = connection_lost_on_the_second_file
    with pytest.raises(StorageError, match="Connection reset by peer"):
        jobs.run_staged_job("obs://bkt/dataset-mnist", "obs://bkt/mnist-model", storage=memory_storage,
                            boot_file=fake_boot_file)
    assert len(sent) == 2 and not [k for k in memory_s3.keys("bkt") if k.startswith("mnist-model/")]
    del memory_s3.faults["upload_file"]
    result = jobs.run_staged_job("obs://bkt/dataset-mnist", "obs://bkt/mnist-model", storage=memory_storage,
                                 boot_file=fake_boot_file)
    assert result.name == "V0001" and "mnist-model/V0001/job.json" in memory_s3.keys("bkt")


def test_job_json_is_uploaded_last(memory_storage, memory_s3, small_dataset, fake_boot_file):
    memory_storage.copy(str(small_dataset), "obs://bkt/dataset-mnist", recursive=True)
    order = []
    memory_s3.faults["upload_file"] = lambda **details: order.append(details["key"])
    jobs.run_staged_job("obs://bkt/dataset-mnist", "obs://bkt/mnist-model", storage=memory_storage,
                        boot_file=fake_boot_file)
    assert len(order) > 2 and order[-1] == "mnist-model/V0001/job.json" and order.count(order[-1]) == 1
