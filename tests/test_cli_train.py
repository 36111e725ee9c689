"""`modelarts-mnist train` and `versions` through click's CliRunner (fake boot file, no TF)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from modelarts_mnist.cli import main


@pytest.fixture()
def runner():
    return CliRunner()


def test_train_passes_unknown_flags_through_and_prints_the_version(runner, tmp_path, small_dataset, fake_boot_file):
    root = tmp_path / "out"
    args = ["train", "--data_url", str(small_dataset), "--train_url", str(root), "--boot-file", str(fake_boot_file),
            "--max_steps=5", "--num_gpus", "1"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "--max_steps=5 --num_gpus 1" in result.output  # streamed log of the child
    assert result.output.splitlines()[-1] == f"version: V0001 ({root / 'V0001'})"
    assert json.loads((root / "V0001" / "job.json").read_text())["status"] == "succeeded"


def test_train_quiet_still_saves_the_log(runner, tmp_path, small_dataset, fake_boot_file):
    args = ["train", "--data_url", str(small_dataset), "--train_url", str(tmp_path), "--boot-file",
            str(fake_boot_file), "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0 and "fake boot file" not in result.output
    assert "fake boot file" in (tmp_path / "V0001" / "train.log").read_text()


def test_failed_training_is_a_clean_error(runner, tmp_path, small_dataset, fake_boot_file):
    args = ["train", "--data_url", str(small_dataset), "--train_url", str(tmp_path), "--boot-file",
            str(fake_boot_file), "--fail", "-q"]
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert "Error: training job V0001 failed (exit code 3)" in result.output


def test_versions_lists_status_and_metrics(runner, tmp_path, small_dataset, fake_boot_file):
    base = ["train", "--data_url", str(small_dataset), "--train_url", str(tmp_path), "--boot-file",
            str(fake_boot_file), "-q"]
    runner.invoke(main, base)
    runner.invoke(main, [*base, "--fail"])
    lines = runner.invoke(main, ["versions", str(tmp_path)]).output.splitlines()
    assert lines[0].split()[:3] == ["V0001", "succeeded", "accuracy"] and "0.5000" in lines[0]
    assert lines[1].startswith("V0002  failed (exit 3)") and "[.failed-V0002-" in lines[1]


def test_versions_of_an_empty_folder(runner, tmp_path):
    result = runner.invoke(main, ["versions", str(tmp_path)])
    assert result.exit_code == 0 and result.output == f"no versions under {tmp_path}\n"


def test_train_runtime_runs_the_boot_file_with_the_engines_python(runner, tmp_path, small_dataset, fake_boot_file,
                                                                  tf21_env):
    fake_boot_file.write_text(fake_boot_file.read_text().replace(
        'print("done", flush=True)', 'print("python", sys.version.split()[0], flush=True)'))
    args = ["train", "--data_url", str(small_dataset), "--train_url", str(tmp_path), "--boot-file",
            str(fake_boot_file), "--runtime", "tf2.1-python3.7"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "python 3.7." in result.output
    job = json.loads((tmp_path / "V0001" / "job.json").read_text())
    assert job["command"][0] == str(tf21_env.python)


def test_train_runtime_unknown_is_one_line(runner, tmp_path, small_dataset):
    args = ["train", "--data_url", str(small_dataset), "--train_url", str(tmp_path), "--runtime", "tf0.1"]
    result = runner.invoke(main, args)
    assert result.exit_code == 1 and result.output.startswith("Error: unknown runtime 'tf0.1'")
    assert not list(tmp_path.iterdir())


def test_train_from_obs_to_obs_through_the_injected_store(runner, memory_wiring, memory_s3, small_dataset,
                                                          fake_boot_file):
    for path in small_dataset.iterdir():
        memory_s3.put("bkt", f"dataset-mnist/{path.name}", path.read_bytes())
    args = ["train", "--data_url", "obs://bkt/dataset-mnist", "--train_url", "obs://bkt/mnist-model",
            "--boot-file", str(fake_boot_file), "-q"]
    result = runner.invoke(main, args, obj=memory_wiring)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "version: V0001 (obs://bkt/mnist-model/V0001)"
    assert "mnist-model/V0001/job.json" in memory_s3.keys("bkt")
