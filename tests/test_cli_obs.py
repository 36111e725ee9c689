"""`modelarts-mnist obs ...` and `upload` against a real S3 server (SeaweedFS)."""
from __future__ import annotations

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


def test_ls_and_rm(runner, s3_env, s3_bucket, folder):
    runner.invoke(main, ["obs", "cp", "-r", str(folder), f"obs://{s3_bucket}/data"], catch_exceptions=False)
    listing = runner.invoke(main, ["obs", "ls", f"obs://{s3_bucket}/data/"])
    assert listing.output.split() == ["PRE", "data/sub/", "4", "data/one.txt"]
    assert runner.invoke(main, ["obs", "rm", f"obs://{s3_bucket}/data/one.txt"]).output == "deleted 1 object(s)\n"
    assert runner.invoke(main, ["obs", "rm", "-r", f"obs://{s3_bucket}/data"]).output == "deleted 1 object(s)\n"
    assert f"{s3_bucket}/" in runner.invoke(main, ["obs", "ls"]).output


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
def test_missing_things_are_named(runner, s3_env, s3_bucket, tmp_path, args, message):
    args = [a.format(bucket=s3_bucket, tmp=tmp_path) for a in args]
    result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert message.format(bucket=s3_bucket) in result.output


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
    result = runner.invoke(main, ["obs", "ls", "obs://b/", "--endpoint", "http://127.0.0.1:9"])
    assert result.exit_code == 1 and "MODELARTS_OBS_SECRET_KEY" in result.output


def test_obs_help_imports_no_boto3():
    code = ("import sys; from click.testing import CliRunner; from modelarts_mnist.cli import main; "
            "r = CliRunner().invoke(main, ['obs', 'cp', '--help']); assert r.exit_code == 0, r.output; "
            "print('boto3' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


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


def test_upload_lays_out_the_tutorial_bucket(runner, s3_env, s3_store, s3_bucket, workdir):
    result = runner.invoke(main, ["upload", "--bucket", s3_bucket, "--workdir", str(workdir)])
    assert result.exit_code == 0, result.output
    keys = bucket_keys(s3_store, s3_bucket)
    assert keys == expected_layout(workdir, "V0002")  # the newest version by default
    assert {"mnist-model/V0002/model/saved_model.pb", "mnist-model/V0002/model/config.json",
            "mnist-model/V0002/model/customize_service.py", "train-mnist/train_mnist_tf.py"} <= keys
    chosen = runner.invoke(main, ["upload", "--bucket", s3_bucket, "--workdir", str(workdir), "--version", "V0001",
                                  "--no-smoke"])
    assert chosen.exit_code == 0, chosen.output
    assert bucket_keys(s3_store, s3_bucket) == keys | expected_layout(workdir, "V0001")


def test_upload_refuses_a_failing_package(runner, s3_env, s3_store, s3_bucket, workdir):
    (workdir / "test-modelarts" / "mnist-model" / "V0002" / "model" / "config.json").unlink()
    result = runner.invoke(main, ["upload", "--bucket", s3_bucket, "--workdir", str(workdir), "--no-smoke"])
    assert result.exit_code == 1
    assert "refusing to upload" in result.output and "config.json" in result.output
    assert bucket_keys(s3_store, s3_bucket) == set()


def test_upload_names_a_missing_local_piece(runner, s3_env, s3_bucket, workdir):
    (workdir / "test-modelarts" / "train-mnist" / "train_mnist_tf.py").unlink()
    result = runner.invoke(main, ["upload", "--bucket", s3_bucket, "--workdir", str(workdir), "--no-smoke"])
    assert result.exit_code == 1 and "train_mnist_tf.py does not exist" in result.output


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
