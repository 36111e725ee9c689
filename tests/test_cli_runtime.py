"""`modelarts-mnist runtime list` and `runtime install`."""
from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from modelarts_mnist import runtimes
from modelarts_mnist.cli import main


@pytest.fixture()
def runner():
    return CliRunner()


def test_list_shows_every_engine_and_what_is_installed(runner, tmp_path, monkeypatch):
    monkeypatch.setenv(runtimes.RUNTIMES_ENV, str(tmp_path))
    result = runner.invoke(main, ["runtime", "list"])
    assert result.exit_code == 0, result.output
    for runtime in runtimes.RUNTIMES:
        assert runtime.name in result.output
    assert "tf1.13-python3.6-gpu" in result.output  # aliases shown
    rows = json.loads(runner.invoke(main, ["runtime", "list", "--json"]).output)
    assert [row["installed"] for row in rows] == [None] * len(runtimes.RUNTIMES)


def test_install_unknown_runtime_is_one_line_and_exit_1(runner):
    result = runner.invoke(main, ["runtime", "install", "tf9.9-python9"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown runtime 'tf9.9-python9'") and "Traceback" not in result.output


def test_install_with_an_interpreter_of_the_wrong_python(runner, tmp_path, monkeypatch):
    monkeypatch.setenv(runtimes.RUNTIMES_ENV, str(tmp_path))
    result = runner.invoke(main, ["runtime", "install", "tf1.13-python3.6-cpu", "--python", sys.executable])
    assert result.exit_code == 1
    assert "this runtime needs Python 3.6" in result.output
    assert list(tmp_path.glob("tf1.13*")) == []
