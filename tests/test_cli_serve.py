"""`modelarts-mnist serve`: options, the token kept secret, and a real package served over HTTP."""
from __future__ import annotations

import subprocess
import sys
import time

from click.testing import CliRunner
from PIL import Image

from modelarts_mnist.cli import main
from fixtures.serving import multipart, request, wait_healthy


def test_help_is_instant_and_imports_nothing_heavy():
    code = ("import sys, modelarts_mnist.cli.serve; "
            "heavy = [m for m in ('flask', 'tensorflow', 'gunicorn') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "--workers" in result.output and "MODELARTS_MNIST_AUTH_TOKEN" in result.output


def test_missing_model_dir_and_bad_port_are_usage_errors(tmp_path):
    runner = CliRunner()
    assert runner.invoke(main, ["serve", str(tmp_path / "nope")]).exit_code == 2
    assert runner.invoke(main, ["serve", str(tmp_path), "--port", "70000"]).exit_code == 2
    assert runner.invoke(main, ["serve", str(tmp_path), "--workers", "0"]).exit_code == 2
    assert runner.invoke(main, ["serve", str(tmp_path), "--threaded", "--workers", "2"]).exit_code == 2


def test_token_from_environment_is_required_and_never_echoed(echo_package, start_serve):
    serve = start_serve(echo_package, MODELARTS_MNIST_AUTH_TOKEN="t0p-s3cret")
    wait_healthy(serve)
    body, headers = multipart({"images": b"x"})
    status, _, answer = request(serve, "POST", "/", body, headers)
    assert status == 401 and answer["error_code"] == "APIG.0301"
    assert request(serve, "POST", "/", body, {**headers, "X-Auth-Token": "t0p-s3cret"})[0] == 200
    assert serve.stop() == 0
    assert "X-Auth-Token required" in serve.output
    assert "t0p-s3cret" not in serve.output + serve.log.read_text()


def test_real_package_is_healthy_warm_and_predicts_held_out_digits(tiny_package, start_serve, embedded_arrays,
                                                                  tmp_path):
    _, _, test_x, test_y = embedded_arrays
    serve = start_serve(tiny_package)
    wait_healthy(serve, timeout=180)
    right, latencies = 0, []
    for i in range(200, 220):  # digits the tiny model never saw (it used the first 200 for testing)
        path = tmp_path / f"{i}.png"
        Image.fromarray(test_x[i]).save(path)
        body, headers = multipart({"images": path.read_bytes()})
        started = time.perf_counter()
        status, _, answer = request(serve, "POST", "/", body, headers)
        latencies.append(time.perf_counter() - started)
        assert status == 200 and set(answer) == {"predicted_label", "scores"}
        right += answer["predicted_label"] == str(test_y[i])
    assert right >= 15
    # Warmed up before /health said 200: the first request is not the slow one.
    assert latencies[0] < 0.5 + 5 * sorted(latencies)[len(latencies) // 2]
    status, _, answer = request(serve, "POST", "/", b"\x89PNG broken", {"Content-Type": "application/json"})
    assert status == 400 and answer["erno"] == "MR.0101"
    body, headers = multipart({"images": b"not an image"})
    status, _, answer = request(serve, "POST", "/", body, headers)
    assert status == 400 and answer == {"erno": "MR.0105", "msg": "Recognition failed", "words_result": {}}


def test_time_budget_help_names_the_services_default():
    from modelarts_mnist.server.app import ServeConfig

    output = CliRunner().invoke(main, ["serve", "--help"]).output
    assert f"[default: {ServeConfig().time_budget_seconds:g}]" in " ".join(output.split())
