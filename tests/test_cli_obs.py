"""`modelarts-mnist obs ...` and `upload`: on the in-memory S3 (via click's obj), on SeaweedFS what needs a server."""
from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelarts_mnist.cli import main


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture()
def folder(tmp_path) -> Path:
    root = tmp_path / "src"
    (root / "sub").mkdir(parents=True)
    (root / "one.txt").write_text("one\n")
    (root / "sub" / "two.bin").write_bytes(bytes(range(256)) * 40)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def bucket_keys(s3_store, bucket: str) -> set[str]:
    return {o.key for o in s3_store.list(bucket)}


def test_cp_round_trip_then_skips_identical(runner, s3_env, s3_bucket, folder, tmp_path):
    url = f"obs://{s3_bucket}/data"
    first = runner.invoke(main, ["obs", "cp", "-r", str(folder), url])
    assert first.exit_code == 0, first.output
    assert "2 copied" in first.output
    again = runner.invoke(main, ["obs", "sync", str(folder), url])
    assert "0 copied (0.0 MB), 2 skipped as identical" in again.output
    back = runner.invoke(main, ["obs", "cp", "--recursive", url, str(tmp_path / "back")])
    assert back.exit_code == 0, back.output
    assert tree(tmp_path / "back") == tree(folder)


def test_ls_and_rm(runner, memory_wiring, folder):
    invoke = functools.partial(runner.invoke, main, obj=memory_wiring)
    invoke(["obs", "cp", "-r", str(folder), "obs://bkt/data"], catch_exceptions=False)
    listing = invoke(["obs", "ls", "obs://bkt/data/"])
    assert listing.output.split() == ["PRE", "data/sub/", "4", "data/one.txt"]
    assert invoke(["obs", "rm", "obs://bkt/data/one.txt"]).output == "deleted 1 object(s)\n"
    assert invoke(["obs", "rm", "-r", "obs://bkt/data"]).output == "deleted 1 object(s)\n"
    assert "bkt/" in invoke(["obs", "ls"]).output


def test_wrong_secret_exits_1_naming_bucket_and_key(runner, s3_env, s3_bucket, folder, monkeypatch):
    monkeypatch.setenv("MODELARTS_OBS_SECRET_KEY", "wrong-secret-value")
    result = runner.invoke(main, ["obs", "cp", str(folder / "one.txt"), f"obs://{s3_bucket}/k/one.txt"])
    assert result.exit_code == 1
    assert f"Error: cannot access obs://{s3_bucket}/k/one.txt: access denied" in result.output
    assert "wrong-secret-value" not in result.output


@pytest.mark.parametrize("args, message", [
    (["obs", "ls", "obs://missing-bucket-x/"], "bucket 'missing-bucket-x' does not exist"),
    (["obs", "rm", "obs://{bucket}/no/such.txt"], "no such object 'no/such.txt' in bucket '{bucket}'"),
    (["obs", "cp", "obs://{bucket}/no/such.txt", "{tmp}/x"], "no such object 'no/such.txt' in bucket '{bucket}'"),
], ids=["missing-bucket", "rm-missing-key", "cp-missing-key"])
def test_missing_things_are_named(runner, memory_wiring, tmp_path, args, message):
    args = [a.format(bucket="bkt", tmp=tmp_path) for a in args]
    result = runner.invoke(main, args, obj=memory_wiring)
    assert result.exit_code == 1
    assert message.format(bucket="bkt") in result.output


def test_unreachable_endpoint_flag_fails_fast(runner, s3_env, folder):
    started = time.monotonic()
    result = runner.invoke(main, ["obs", "ls", "obs://some-bucket/", "--endpoint", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "obs://some-bucket" in result.output and "unreachable" in result.output
    assert time.monotonic() - started < 15


def test_missing_credentials_are_explained(runner, folder, monkeypatch):
    for name in ("MODELARTS_OBS_ACCESS_KEY", "MODELARTS_OBS_SECRET_KEY", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(main, ["obs", "ls", "obs://bkt/", "--endpoint", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "MODELARTS_OBS_SECRET_KEY" in result.output


def test_obs_help_imports_no_boto3():
    code = ("import sys; from click.testing import CliRunner; from modelarts_mnist.cli import main; "
            "r = CliRunner().invoke(main, ['obs', 'cp', '--help']); assert r.exit_code == 0, r.output; "
            "print('boto3' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.mark.parametrize("root", ["obs://{bucket}", "obs://{bucket}/", "s3://{bucket}//"],
                         ids=["bare", "slash", "double-slash"])
def test_rm_r_of_a_whole_bucket_needs_force(runner, memory_wiring, memory_s3, folder, root):
    invoke = functools.partial(runner.invoke, main, obj=memory_wiring)
    invoke(["obs", "cp", "-r", str(folder), "obs://bkt/data"], catch_exceptions=False)
    url = root.format(bucket="bkt")
    refused = invoke(["obs", "rm", "-r", url])
    assert refused.exit_code == 1
    assert refused.output == "Error: refusing to delete every object in obs://bkt/: that is the whole " \
                             "bucket; add --force if you mean it\n"
    assert memory_s3.keys("bkt") == {"data/one.txt", "data/sub/two.bin"}
    forced = invoke(["obs", "rm", "-r", "--force", url])
    assert forced.output == "deleted 2 object(s)\n" and memory_s3.keys("bkt") == set()


@pytest.mark.parametrize("command", ["cp -r", "sync"])
def test_links_out_of_the_source_are_named_and_not_copied(runner, memory_wiring, memory_s3, folder, tmp_path,
                                                          command):
    (tmp_path / "secret.txt").write_text("outside\n")
    (folder / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (folder / "sub" / "again.txt").symlink_to("../one.txt")  # inside the tree: copied as its content
    result = runner.invoke(main, ["obs", *command.split(), str(folder), "obs://bkt/data"], obj=memory_wiring)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"not copied: leak.txt: symbolic link to {tmp_path / 'secret.txt'}, outside the folder\n"
    assert result.stdout.endswith("3 copied (0.0 MB), 0 skipped as identical, 1 not copied\n")
    assert memory_s3.keys("bkt") == {"data/one.txt", "data/sub/two.bin", "data/sub/again.txt"}


@pytest.fixture()
def silent_endpoint():
    """A loopback server that accepts every connection and never sends a byte."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept_forever() -> None:
        try:
            while True:
                held.append(listener.accept()[0])
        except OSError:  # the listener was closed: the test is over
            pass

    threading.Thread(target=accept_forever, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for conn in held:
        conn.close()


@pytest.mark.parametrize("command", [["obs", "ls", "obs://bkt/"], ["obs", "cp", "{file}", "obs://bkt/k/one.txt"],
                                     ["check", "obs://bkt/model", "--no-smoke"]], ids=["ls", "cp", "check"])
def test_silent_endpoint_fails_within_the_default_timeouts(runner, silent_endpoint, folder, monkeypatch, tmp_path,
                                                           command):
    for name in ("MODELARTS_OBS_CONNECT_TIMEOUT", "MODELARTS_OBS_READ_TIMEOUT", "MODELARTS_OBS_MAX_ATTEMPTS",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    values = {"MODELARTS_OBS_ENDPOINT": silent_endpoint, "MODELARTS_OBS_ACCESS_KEY": "ak",
              "MODELARTS_OBS_SECRET_KEY": "sk", "MODELARTS_OBS_ADDRESSING": "path",
              "MODELARTS_MNIST_CACHE": str(tmp_path / "cache")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    started = time.monotonic()
    result = runner.invoke(main, [a.format(file=folder / "one.txt") for a in command])
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    error = result.output.splitlines()[-1]
    assert error.startswith("Error: cannot ") and "obs://bkt" in error and "not answering" in error
    assert "Traceback" not in result.output and result.output.count("Error:") == 1
    assert 4 < elapsed < 30  # defaults: 3 attempts x 4 s read timeout + jitter; it did wait, but not 120 s


def test_timeouts_can_be_set_by_flag(runner, silent_endpoint, s3_env):
    started = time.monotonic()
    result = runner.invoke(main, ["obs", "ls", "obs://bkt/", "--endpoint", silent_endpoint, "--read-timeout", "0.5",
                                  "--max-attempts", "1"])
    assert result.exit_code == 1 and "not answering" in result.output
    assert time.monotonic() - started < 3


# --- object keys stay inside their destination ----------------------------------------------------

@pytest.mark.parametrize("command", [
    ["obs", "cp", "-r", "{url}", "{tmp}/out/dest"],
    ["obs", "sync", "{url}", "{tmp}/out/dest"],
    ["check", "{url}", "--no-smoke"],
    ["serve", "{url}", "--port", "1"],
    ["train", "--data_url", "{url}", "--train_url", "{tmp}/out/models"],
], ids=["cp", "sync", "check", "serve", "train"])
def test_escaping_key_is_refused_by_every_command(runner, memory_wiring, memory_s3, folder, tmp_path, monkeypatch,
                                                  command):
    # Real servers store such keys as they are (SeaweedFS refuses them), so it is planted in the fake.
    planted = "data/../../escaped.txt"
    monkeypatch.setenv("MODELARTS_MNIST_CACHE", str(tmp_path / "out" / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert runner.invoke(main, ["obs", "cp", "-r", str(folder), "obs://bkt/data"], obj=memory_wiring).exit_code == 0
    memory_s3.put("bkt", planted, b"gotcha")
    args = [a.format(url="obs://bkt/data", tmp=tmp_path) for a in command]
    result = runner.invoke(main, args, obj=memory_wiring)
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and repr(planted) in error[0] and "Traceback" not in result.output
    assert not (tmp_path / "escaped.txt").exists()
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file() and ".locks" not in p.parts] == []


# --- no multipart upload is left open -------------------------------------------------------------

# The CLI with each progress step slowed down, so a signal surely lands in the middle of an upload.
SLOW_CLI = """
import sys, time
from modelarts_mnist import storage
advance = storage.Storage._advance
storage.Storage._advance = lambda self, bar, n: (time.sleep(0.01), advance(self, bar, n))
from modelarts_mnist.cli import main
main(sys.argv[1:], prog_name="modelarts-mnist")
"""


def open_uploads(s3_store, bucket: str) -> list[str]:
    return [u["Key"] for u in s3_store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_sigterm_mid_upload_leaves_no_open_multipart_upload(s3_env, s3_store, s3_bucket, tmp_path):
    import os

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * 1024 * 1024))  # three 8 MiB parts
    process = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "obs", "cp", str(big), f"obs://{s3_bucket}/big.bin"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not open_uploads(s3_store, s3_bucket) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_uploads(s3_store, s3_bucket) == ["big.bin"], "the upload never started"
    process.terminate()
    started = time.monotonic()
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 1 and "Aborted!" in output, output
    assert time.monotonic() - started < 10
    assert open_uploads(s3_store, s3_bucket) == [] and s3_store.stat(s3_bucket, "big.bin") is None


def test_kill_9_mid_upload_leaves_parts_that_the_next_run_aborts(runner, s3_env, s3_store, s3_bucket, tmp_path):
    import os
    import signal

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * 1024 * 1024))
    url = f"obs://{s3_bucket}/big.bin"
    process = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "obs", "cp", str(big), url],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not open_uploads(s3_store, s3_bucket) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no handler runs: the parts stay open on the server
    process.wait(timeout=30)
    assert open_uploads(s3_store, s3_bucket) == ["big.bin"], "the upload never started"
    again = runner.invoke(main, ["obs", "cp", str(big), url])
    assert again.exit_code == 0, again.output
    assert open_uploads(s3_store, s3_bucket) == []
    assert s3_store.matches(big, s3_store.stat(s3_bucket, "big.bin")) is True


def test_kill_9_mid_download_leaves_a_partial_file_that_the_next_run_removes(runner, s3_env, s3_bucket, tmp_path):
    import os
    import signal

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(24 * 1024 * 1024))
    url = f"obs://{s3_bucket}/big.bin"
    assert runner.invoke(main, ["obs", "cp", str(big), url]).exit_code == 0
    dest = tmp_path / "dest"
    dest.mkdir()
    process = subprocess.Popen([sys.executable, "-c", SLOW_CLI, "obs", "cp", url, str(dest / "big.bin")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(dest.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    [partial] = list(dest.iterdir())
    assert partial.name.startswith(".big.bin.mnist-partial-"), partial.name
    again = runner.invoke(main, ["obs", "cp", url, str(dest / "big.bin")])
    assert again.exit_code == 0, again.output
    assert [p.name for p in dest.iterdir()] == ["big.bin"] and (dest / "big.bin").read_bytes() == big.read_bytes()


# --- upload: the tutorial's bucket ---------------------------------------------------------------

@pytest.fixture()
def workdir(tmp_path, embedded_dataset, tiny_package, repo_root) -> Path:
    """A work folder as `demo` lays it out, holding version V0002 of the tiny package."""
    root = tmp_path / "work" / "test-modelarts"
    shutil.copytree(embedded_dataset, root / "dataset-mnist")
    (root / "train-mnist").mkdir(parents=True)
    shutil.copyfile(repo_root / "codes" / "train_mnist_tf.py", root / "train-mnist" / "train_mnist_tf.py")
    for version in ("V0001", "V0002"):
        shutil.copytree(tiny_package, root / "mnist-model" / version / "model")
    (root / "mnist-model" / "V0002" / "metrics.json").write_text("{}")  # not part of the import layout
    return tmp_path / "work"


def expected_layout(workdir: Path, version: str) -> set[str]:
    root = workdir / "test-modelarts"
    keys = {f"dataset-mnist/{p.name}" for p in (root / "dataset-mnist").iterdir()}
    keys.add("train-mnist/train_mnist_tf.py")
    model = root / "mnist-model" / version / "model"
    keys |= {f"mnist-model/{version}/model/{p.relative_to(model).as_posix()}" for p in model.rglob("*") if p.is_file()}
    return keys


def test_upload_lays_out_the_tutorial_bucket(runner, memory_wiring, memory_s3, workdir):
    result = runner.invoke(main, ["upload", "--bucket", "bkt", "--workdir", str(workdir)], obj=memory_wiring)
    assert result.exit_code == 0, result.output
    keys = memory_s3.keys("bkt")
    assert keys == expected_layout(workdir, "V0002")  # the newest version by default
    assert {"mnist-model/V0002/model/saved_model.pb", "mnist-model/V0002/model/config.json",
            "mnist-model/V0002/model/customize_service.py", "train-mnist/train_mnist_tf.py"} <= keys
    chosen = runner.invoke(main, ["upload", "--bucket", "bkt", "--workdir", str(workdir), "--version", "V0001",
                                  "--no-smoke"], obj=memory_wiring)
    assert chosen.exit_code == 0, chosen.output
    assert memory_s3.keys("bkt") == keys | expected_layout(workdir, "V0001")


def test_upload_refuses_a_failing_package(runner, memory_wiring, memory_s3, workdir):
    (workdir / "test-modelarts" / "mnist-model" / "V0002" / "model" / "config.json").unlink()
    result = runner.invoke(main, ["upload", "--bucket", "bkt", "--workdir", str(workdir), "--no-smoke"],
                           obj=memory_wiring)
    assert result.exit_code == 1
    assert "refusing to upload" in result.output and "config.json" in result.output
    assert memory_s3.keys("bkt") == set()


def test_upload_names_a_missing_local_piece(runner, memory_wiring, workdir):
    (workdir / "test-modelarts" / "train-mnist" / "train_mnist_tf.py").unlink()
    result = runner.invoke(main, ["upload", "--bucket", "bkt", "--workdir", str(workdir), "--no-smoke"],
                           obj=memory_wiring)
    assert result.exit_code == 1 and "train_mnist_tf.py does not exist" in result.output


# --- two commands staging one obs:// URL at once (separate processes, a real server) --------------

def test_two_commands_staging_the_same_url_at_once_both_succeed(runner, s3_env, s3_bucket, tiny_package, tmp_path):
    import os

    url = f"obs://{s3_bucket}/mnist-model/V0001/model"
    assert runner.invoke(main, ["obs", "cp", "-r", str(tiny_package), url]).exit_code == 0
    env = {**os.environ, **s3_env, "MODELARTS_MNIST_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "modelarts_mnist", "check", url, "--no-smoke"]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert all("OK:" in output for output in outputs)
    staged = tmp_path / "cache" / s3_bucket / "mnist-model" / "V0001" / "model"
    assert tree(staged) == tree(tiny_package)


# --- integration: train from obs:// to obs://, then check and serve from obs:// -----------------

def png_bytes(image) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def test_train_from_obs_to_obs_then_serve_from_obs(runner, s3_env, s3_store, s3_bucket, small_dataset,
                                                   embedded_arrays, tmp_path, monkeypatch, start_serve):
    from fixtures.serving import multipart, request, wait_healthy
    from fixtures.training import TINY_FLAGS

    from modelarts_mnist.package import build_package
    from modelarts_mnist.storage import stage_in, stage_out

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("MODELARTS_MNIST_CACHE", str(tmp_path / "cache"))
    base = f"obs://{s3_bucket}"
    assert runner.invoke(main, ["obs", "cp", "-r", str(small_dataset), f"{base}/dataset-mnist"]).exit_code == 0
    trained = runner.invoke(main, ["train", "--data_url", f"{base}/dataset-mnist", "--train_url",
                                   f"{base}/mnist-model", "-q", *TINY_FLAGS])
    assert trained.exit_code == 0, trained.output
    keys = bucket_keys(s3_store, s3_bucket)
    assert {"mnist-model/V0001/model/saved_model.pb", "mnist-model/V0001/metrics.json"} <= keys
    # Numbering follows the bucket, not this machine: a fresh home still makes V0002.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "fresh-config"))
    again = runner.invoke(main, ["train", "--data_url", f"{base}/dataset-mnist", "--train_url",
                                 f"{base}/mnist-model", "-q", *TINY_FLAGS])
    assert again.exit_code == 0 and "V0002" in again.output, again.output
    assert "mnist-model/V0002/model/saved_model.pb" in bucket_keys(s3_store, s3_bucket)

    unpackaged = runner.invoke(main, ["check", f"{base}/mnist-model/V0001/model", "--no-smoke"])
    assert unpackaged.exit_code == 1 and "config.json" in unpackaged.output
    version = stage_in(f"{base}/mnist-model/V0001", tmp_path / "work")
    stage_out(build_package(version), f"{base}/mnist-model/V0001/model")
    checked = runner.invoke(main, ["check", f"{base}/mnist-model/V0001/model", "--no-smoke"])
    assert checked.exit_code == 0, checked.output

    serve = start_serve(f"{base}/mnist-model/V0001/model", **s3_env, MODELARTS_MNIST_CACHE=str(tmp_path / "serve"))
    wait_healthy(serve, timeout=120)
    _, _, test_x, test_y = embedded_arrays
    answers = [request(serve, "POST", "/", *multipart({"images": png_bytes(test_x[i])})) for i in range(10)]
    assert all(status == 200 for status, _, _ in answers), answers
    correct = sum(str(body.get("predicted_label")) == str(test_y[i]) for i, (_, _, body) in enumerate(answers))
    assert correct >= 6, answers


def test_a_download_onto_a_really_full_disk_is_one_line_and_leaves_nothing(runner, memory_wiring, memory_s3,
                                                                           small_disk):
    import os

    memory_s3.put("bkt", "data/big.bin", os.urandom(2 * 1024 * 1024))  # twice the disk
    memory_s3.put("bkt", "data/small.txt", b"fits")
    result = runner.invoke(main, ["obs", "cp", "-r", "obs://bkt/data", str(small_disk / "data")], obj=memory_wiring)
    assert result.exit_code == 1, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert f"{small_disk / 'data' / 'big.bin'}: No space left on device" in result.output
    assert [p for p in small_disk.rglob("*") if p.is_file() and p.name != "small.txt"] == []
