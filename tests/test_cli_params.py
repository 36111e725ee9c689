"""Bad paths, URLs and names on the command line: one line naming the problem, a non-zero exit, no traceback."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from modelarts_mnist.cli import main


@pytest.fixture()
def a_file(tmp_path) -> Path:
    path = tmp_path / "a-file.txt"
    path.write_text("not a folder\n")
    return path


def one_line_error(result) -> str:
    """The single line a failed command printed (asserting there is exactly one, and no traceback)."""
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


CASES = {
    "predict-url-not-a-url": (["predict", "{image}", "--url", "not-a-url"], "not an http:// or https:// URL"),
    "predict-url-no-host": (["predict", "{image}", "--url", "http://"], "not an http:// or https:// URL"),
    "predict-url-bad-port": (["predict", "{image}", "--url", "http://127.0.0.1:99999/"], "not a valid URL"),
    "predict-url-space": (["predict", "{image}", "--url", "http://local host/"], "spaces"),
    "train-url-a-file": (["train", "--data_url", "{tmp}", "--train_url", "{file}"], "exists and is not a folder"),
    "train-url-under-a-file": (["train", "--data_url", "{tmp}", "--train_url", "{file}/models"],
                               "is a file, so no folder can be made under it"),
    "train-data-url-bad-bucket": (["train", "--data_url", "obs://My Bucket/data", "--train_url", "{tmp}/m"],
                                  "is not a valid bucket name"),
    "train-url-bad-bucket": (["train", "--data_url", "{tmp}", "--train_url", "obs://a b/models"],
                             "is not a valid bucket name"),
    "train-url-dotdot-key": (["train", "--data_url", "{tmp}", "--train_url", "obs://bkt/models/../x"],
                             "would land outside"),
    "serve-dotdot-key": (["serve", "obs://bkt/a/../../b"], "would land outside"),
    "prepare-out-a-file": (["data", "prepare", "--out", "{file}"], "exists and is not a folder"),
    "prepare-out-under-a-file": (["data", "prepare", "--out", "{file}/deeper/dataset-mnist"], "is a file"),
    "demo-workdir-a-file": (["demo", "--workdir", "{file}"], "exists and is not a folder"),
    "demo-workdir-under-a-file": (["demo", "--workdir", "{file}/work"], "is a file"),
    "upload-bucket-space": (["upload", "--bucket", "my bucket", "--workdir", "{tmp}"], "not a valid bucket name"),
    "upload-bucket-upper": (["upload", "--bucket", "MyBucket", "--workdir", "{tmp}"], "not a valid bucket name"),
    "obs-ls-bucket-space": (["obs", "ls", "obs://my bucket/"], "'my bucket' is not a valid bucket name"),
    "obs-cp-bucket-ip": (["obs", "cp", "{file}", "obs://192.168.1.1/k"], "must not look like an IP address"),
    "obs-endpoint-not-a-url": (["obs", "ls", "obs://bkt/", "--endpoint", "not-a-url"],
                               "OBS endpoint 'not-a-url' is not an http:// or https:// URL"),
    "check-bucket-space": (["check", "obs://my bucket/model"], "'my bucket' is not a valid bucket name"),
    "sheet-missing-folder": (["data", "inspect", "{dataset}", "--sheet", "{tmp}/no/such/sheet.png"],
                             "does not exist (create the folder first)"),
    "sheet-a-folder": (["data", "inspect", "{dataset}", "--sheet", "{tmp}"], "is a folder, not a file"),
    "sheet-under-a-file": (["data", "inspect", "{dataset}", "--sheet", "{file}/sheet.png"], "is not a folder"),
    "obs-cp-under-a-file": (["obs", "cp", "{file}", "{file}/sub/copy.txt"], "Not a directory"),
    "unknown-flag": (["data", "prepare", "--out", "{tmp}/d", "--no-such-flag"], "No such option"),
    "unknown-command": (["no-such-command"], "No such command"),
}


@pytest.mark.parametrize("args, message", CASES.values(), ids=CASES.keys())
def test_a_bad_path_or_flag_is_one_line(args, message, tmp_path, a_file, embedded_dataset):
    before = sorted(p.name for p in tmp_path.rglob("*"))
    values = {"tmp": tmp_path, "file": a_file, "dataset": embedded_dataset, "image": a_file}
    result = CliRunner().invoke(main, [a.format(**values) for a in args])
    assert message in one_line_error(result)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created on the way


def test_a_failed_write_deep_in_a_command_is_one_line_naming_the_path(tmp_path, a_file):
    # The shared handler, not a parameter type: the bad place is only met while the command runs.
    result = CliRunner().invoke(main, ["obs", "cp", str(a_file), str(a_file / "x.txt")])
    assert str(a_file) in one_line_error(result)


def test_good_places_pass(tmp_path, embedded_dataset):
    sheet = tmp_path / "sheet.png"
    result = CliRunner().invoke(main, ["data", "inspect", str(embedded_dataset), "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    assert sheet.is_file()


@pytest.mark.parametrize("args", [
    ["train", "--data_url", "{dataset}", "--train_url", "{ro}/models"],
    ["data", "prepare", "--out", "{ro}/dataset-mnist"],
    ["demo", "--workdir", "{ro}/work"],
    ["data", "inspect", "{dataset}", "--sheet", "{ro}/sheet.png"],
], ids=["train-url", "prepare-out", "demo-workdir", "sheet"])
def test_a_read_only_place_is_one_line(args, read_only_disk, embedded_dataset):
    result = CliRunner().invoke(main, [a.format(ro=read_only_disk, dataset=embedded_dataset) for a in args])
    assert f"{read_only_disk} is not writable" in one_line_error(result)
