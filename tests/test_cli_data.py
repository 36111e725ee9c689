"""The `modelarts-mnist data prepare|inspect` commands, end to end through click."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import write_dataset
from modelarts_mnist import idx
from modelarts_mnist.cli import main


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def full_size_blank(tmp_path_factory):
    """A 60,000 / 10,000 set of blank digits, .gz only: full size, but not canonical MNIST."""
    folder = tmp_path_factory.mktemp("blank-full")
    for split, count in (("train", 60_000), ("t10k", 10_000)):
        images_name, labels_name = idx.file_names(split)
        idx.write_idx(folder / f"{images_name}.gz", np.zeros((count, 28, 28), np.uint8))
        idx.write_idx(folder / f"{labels_name}.gz", (np.arange(count) % 10).astype(np.uint8))
    return folder


def test_data_help_lists_prepare_and_inspect(runner):
    result = runner.invoke(main, ["data", "--help"])
    assert result.exit_code == 0
    assert "prepare" in result.output and "inspect" in result.output


def test_prepare_embedded_by_default(runner, tmp_path):
    out = tmp_path / "dataset-mnist"
    result = runner.invoke(main, ["data", "prepare", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4,000 training and 1,000 test images" in result.output
    assert len(list(out.iterdir())) == 8


def test_prepare_refuses_a_non_empty_folder_without_force(runner, tmp_path):
    out = tmp_path / "dataset-mnist"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = runner.invoke(main, ["data", "prepare", "--out", str(out)])
    assert result.exit_code == 1
    assert "Error:" in result.output and "--force" in result.output
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    result = runner.invoke(main, ["data", "prepare", "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert not (out / "notes.txt").exists()


def test_prepare_from_a_local_folder_source(runner, tmp_path, synthetic_digits):
    source = write_dataset(tmp_path / "src", *synthetic_digits, *synthetic_digits, gz=False)
    result = runner.invoke(main, ["data", "prepare", "--out", str(tmp_path / "out"), "--source", str(source)])
    assert result.exit_code == 0, result.output
    assert "32 training and 32 test images" in result.output


def test_full_size_set_is_verified_unless_no_verify(runner, tmp_path, full_size_blank):
    args = ["data", "prepare", "--out", str(tmp_path / "out"), "--source", str(full_size_blank)]
    refused = runner.invoke(main, args)
    assert refused.exit_code == 1
    assert "not canonical MNIST" in refused.output and "train-images-idx3-ubyte: SHA-256" in refused.output
    assert not (tmp_path / "out").exists()
    accepted = runner.invoke(main, args + ["--no-verify"])
    assert accepted.exit_code == 0, accepted.output
    assert "60,000 training and 10,000 test images" in accepted.output
    assert "SHA-256 not checked (--no-verify)" in accepted.output
    assert "decompress" not in accepted.output  # no bar when output is not a terminal


def test_inspect_prints_counts_histograms_and_verdict(runner, embedded_dataset):
    result = runner.invoke(main, ["data", "inspect", str(embedded_dataset)])
    assert result.exit_code == 0, result.output
    assert "train    4,000 images" in result.output
    assert "  train      400    400    400" in result.output
    assert "canonical MNIST: no (4,000 / 1,000 images" in result.output


def test_inspect_writes_a_contact_sheet(runner, embedded_dataset, tmp_path):
    sheet = tmp_path / "sheet.png"
    result = runner.invoke(main, ["data", "inspect", str(embedded_dataset), "--sheet", str(sheet),
                                  "--split", "t10k", "--per-class", "4"])
    assert result.exit_code == 0, result.output
    assert f"contact sheet: {sheet}" in result.output
    with Image.open(sheet) as picture:
        assert picture.format == "PNG" and picture.width < picture.height  # 10 rows of 4


def test_inspect_names_a_bad_file_and_exits_non_zero(runner, tmp_path, synthetic_digits):
    folder = write_dataset(tmp_path / "d", *synthetic_digits, *synthetic_digits, gz=False)
    bad = folder / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:1000])
    result = runner.invoke(main, ["data", "inspect", str(folder)])
    assert result.exit_code == 1
    assert f"Error: {bad}: truncated" in result.output


def test_data_commands_import_no_heavy_framework(embedded_dataset):
    code = (
        "import sys\nfrom modelarts_mnist.cli import main\n"
        "try:\n    main(['data', 'inspect', sys.argv[1]])\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'flask', 'boto3') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(embedded_dataset)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def noisy_source(http_root):
    """A served folder whose t10k images .gz is over 1 MB (noise does not compress)."""
    served, url = http_root.folder("noisy")
    rng = np.random.default_rng(0)
    test_x = rng.integers(0, 256, (1500, 28, 28), dtype=np.uint8)
    test_y = (np.arange(1500) % 10).astype(np.uint8)
    write_dataset(served, test_x[:20], test_y[:20], test_x, test_y)
    return url


def run_with_stderr_on_a_terminal(args):
    """Run the CLI with stderr on a pseudo-terminal; return (exit code, what the terminal showed)."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        ready, _, _ = select.select([controller], [], [], 60)
        try:
            chunk = os.read(controller, 4096) if ready else b""
        except OSError:  # the terminal closed: the command has exited
            chunk = b""
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    return proc.wait(timeout=60), shown.decode(errors="replace")


def test_downloads_show_a_bar_on_a_terminal_only(tmp_path, http_root):
    url = noisy_source(http_root)
    args = [sys.executable, "-m", "modelarts_mnist", "data", "prepare", "--source", url, "--out"]
    code, shown = run_with_stderr_on_a_terminal(args + [str(tmp_path / "tty")])
    assert code == 0, shown
    assert "download t10k-images-idx3-ubyte.gz" in shown and "decompress" in shown
    assert "download train-" not in shown  # small files stay quiet
    piped = subprocess.run(args + [str(tmp_path / "pipe")], capture_output=True, text=True)
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""


def test_a_really_full_disk_is_one_line_and_leaves_nothing(runner, small_disk):
    out = small_disk / "dataset-mnist"
    result = runner.invoke(main, ["data", "prepare", "--out", str(out)])  # ~6 MB into 1 MiB
    assert result.exit_code == 1 and isinstance(result.exception, (SystemExit, type(None)))
    assert result.output.splitlines() == [result.output.strip()], result.output
    assert result.output.startswith(f"Error: cannot write {out}: No space left on device")
    assert list(small_disk.iterdir()) == []
