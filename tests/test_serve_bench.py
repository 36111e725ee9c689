"""benchmarks/serve_bench.py: its pure helpers on canned wrk output (no server, no wrk run)."""
from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_bench.py"


@pytest.fixture(scope="module")
def bench():
    """The benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("serve_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:40000/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    20.01ms    3.10ms  61.00ms   90.00%
  16000 requests in 10.00s, 3.00MB read
Requests/sec:   1600.00
SERVE_BENCH {"requests": 16000, "duration_us": 8000000, "p50_us": 12500, "p99_us": 40250, \
"max_us": 61000, "non2xx": 3, "errors": 1, "timeouts": 2}
"""


def test_parse_wrk_report_reads_the_marker_line(bench):
    report = bench.parse_wrk_report(WRK_OUTPUT)
    assert report["rps"] == pytest.approx(2000.0)  # 16000 requests over the script's 8 s
    assert (report["p50_ms"], report["p99_ms"], report["max_ms"]) == (12.5, 40.25, 61.0)
    assert (report["non2xx"], report["errors"], report["timeouts"]) == (3, 1, 2)


def test_parse_wrk_report_without_marker_raises(bench):
    with pytest.raises(ValueError, match="no SERVE_BENCH line"):
        bench.parse_wrk_report("Requests/sec: 10\n")


def test_lua_script_posts_the_body_file_and_reports_json(bench, tmp_path):
    body = tmp_path / "single.body"
    script = bench.lua_script(body, "multipart/form-data; boundary=abc")
    assert f'io.open("{body}", "rb")' in script
    assert 'wrk.headers["Content-Type"] = "multipart/form-data; boundary=abc"' in script
    assert "latency:percentile(99)" in script and bench.MARKER in script
    assert "wrk.method" not in bench.lua_script()  # the floor script keeps wrk's GET


def row(kind, config, c, rps):
    return {"kind": kind, "config": config, "c": c, "rps": rps, "p50_ms": 1.0, "p99_ms": 2.0,
            "non2xx": 0, "errors": 0, "timeouts": 0}


def test_add_ratios_uses_same_config_floor_and_same_concurrency_naive(bench):
    rows = bench.add_ratios([row("floor", "default", 32, 4000), row("floor", "workers=2", 32, 5000),
                             row("ours", "default", 32, 3000), row("ours", "workers=2", 8, 2500),
                             row("naive", "naive", 32, 300), row("naive", "naive", 8, 250)])
    assert (rows[2]["vs_floor"], rows[2]["vs_naive"]) == (0.75, 10.0)
    assert (rows[3]["vs_floor"], rows[3]["vs_naive"]) == (0.5, 10.0)
    assert "vs_floor" not in rows[0]


def test_add_ratios_without_baseline_gives_none(bench):
    rows = bench.add_ratios([row("ours", "default", 1, 100)])
    assert rows[0]["vs_floor"] is None and rows[0]["vs_naive"] is None


def test_format_table_shows_images_per_second_and_ratios(bench):
    batch = {**row("batch", "default", 4, 80), "images": 256}
    ours = {**row("ours", "default", 32, 900), "vs_floor": 0.6, "vs_naive": 5.25, "server_cpu_ms_per_req": 1.234}
    lines = bench.format_table([batch, ours]).splitlines()
    assert lines[0].split()[:5] == ["kind", "config", "c", "req/s", "img/s"]
    assert lines[1].split()[3:5] == ["80", "20480"]
    assert lines[2].split()[-4:] == ["1.23", "0", "0.60", "5.25"]
    assert lines[1].split()[7] == "-"  # no CPU figure for that row


def test_pick_best_prefers_fewer_workers_on_a_tie(bench):
    assert bench.pick_best({4: 900.0, 2: 900.0, 1: 500.0}) == 2
    assert bench.pick_best({1: 100.0, 3: 300.0}) == 3


def test_multipart_and_batch_bodies_round_trip(bench):
    body, content_type = bench.multipart(b"\x89PNGdata")
    boundary = content_type.split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\n".encode()) and body.endswith(f"--{boundary}--\r\n".encode())
    assert b'name="images"; filename="digit.png"' in body and b"\r\n\r\n\x89PNGdata\r\n" in body
    images = json.loads(bench.batch_json([b"a", b"bc"]))["images"]
    assert [base64.b64decode(text) for text in images] == [b"a", b"bc"]


def test_tree_environ_runs_the_cli_and_model_service_from_that_tree(bench, tmp_path):
    paths = bench.tree_environ(tmp_path)["PYTHONPATH"].split(":")
    assert paths == [str(tmp_path), str(tmp_path / "modelarts_mnist" / "runtime")]
