"""The package, check and predict commands."""
from __future__ import annotations

import io
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from click.testing import CliRunner
from PIL import Image

from modelarts_mnist.cli import main


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture()
def digit_files(tmp_path, embedded_arrays):
    """Three held-out digits as PNG files, and their labels."""
    test_x, test_y = embedded_arrays[2], embedded_arrays[3]
    paths = []
    for i in range(3):
        path = tmp_path / f"digit-{i}.png"
        Image.fromarray(test_x[i]).save(path)
        paths.append(path)
    return paths, [int(y) for y in test_y[:3]]


def test_package_then_check(runner, tiny_version, tmp_path):
    version = shutil.copytree(tiny_version, tmp_path / "V0001")
    result = runner.invoke(main, ["package", str(version)])
    assert result.exit_code == 0, result.output
    assert f"Packaged {version / 'model'}" in result.output
    result = runner.invoke(main, ["check", str(version / "model")])
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output


def test_check_prints_each_problem_and_exits_1(runner, tiny_package, tmp_path):
    model_dir = shutil.copytree(tiny_package, tmp_path / "model")
    (model_dir / "variables" / "variables.index").unlink()
    config = json.loads((model_dir / "config.json").read_text())
    config["apis"][0]["url"] = "/x"
    (model_dir / "config.json").write_text(json.dumps(config))
    result = runner.invoke(main, ["check", "--no-smoke", str(model_dir)])
    assert result.exit_code == 1
    assert "variables/variables.index: required file missing" in result.output
    assert "config.json $.apis[0].url: '/x'" in result.output
    assert "2 problem(s)" in result.output


def test_predict_in_process(runner, tiny_package, digit_files):
    paths, labels = digit_files
    result = runner.invoke(main, ["predict", "--model", str(tiny_package), *map(str, paths)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(p) for p in paths]
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert sum(p == y for p, y in zip(predicted, labels)) >= 2


def test_predict_in_process_reports_bad_files_and_exits_1(runner, tiny_package, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    result = runner.invoke(main, ["predict", "--model", str(tiny_package), str(bad)])
    assert result.exit_code == 1
    assert "bad.png: not a readable PNG" in result.output and "HTTP 400" in result.output


class FakeService(BaseHTTPRequestHandler):
    """Records the request; answers like the MNIST service, or 400 for a file named bad.png."""

    seen: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FakeService.seen.append((dict(self.headers), body))
        if b'filename="bad.png"' in body:
            self.send_response(400)
            self.send_header("X-Error-Detail", "bad.png: not a readable PNG")
            payload = b'{"erno": "MR.0105", "msg": "Recognition failed", "words_result": {}}'
        else:
            self.send_response(200)
            payload = json.dumps({"predicted_label": "7", "scores": [["7", "0.982"]]}).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def fake_url():
    FakeService.seen = []
    server = HTTPServer(("127.0.0.1", 0), FakeService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_predict_url_posts_multipart_images_with_token(runner, fake_url, digit_files):
    path = digit_files[0][0]
    result = runner.invoke(main, ["predict", "--url", fake_url, "--token", "T0K", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{path}: 7 (0.982)"
    [(headers, body)] = FakeService.seen
    assert headers["X-Auth-Token"] == "T0K"
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert b'name="images"; filename="digit-0.png"' in body and path.read_bytes() in body


def test_predict_url_json_prints_raw_answer(runner, fake_url, digit_files):
    result = runner.invoke(main, ["predict", "--url", fake_url, "--json", str(digit_files[0][0])])
    assert json.loads(result.output) == {"predicted_label": "7", "scores": [["7", "0.982"]]}


def test_predict_url_error_shows_detail_and_continues(runner, fake_url, digit_files, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"x")
    good = digit_files[0][0]
    result = runner.invoke(main, ["predict", "--url", fake_url, str(bad), str(good)])
    assert result.exit_code == 1
    assert "bad.png: error: HTTP 400: bad.png: not a readable PNG" in result.output
    assert f"{good}: 7 (0.982)" in result.output


def test_predict_unreachable_service(runner, digit_files):
    result = runner.invoke(main, ["predict", "--url", "http://127.0.0.1:9/", str(digit_files[0][0])])
    assert result.exit_code == 1 and "cannot reach http://127.0.0.1:9/" in result.output


def test_predict_refuses_url_and_model_together(runner, digit_files, tmp_path):
    result = runner.invoke(main, ["predict", "--url", "http://x/", "--model", str(tmp_path), str(digit_files[0][0])])
    assert result.exit_code == 2 and "not both" in result.output
