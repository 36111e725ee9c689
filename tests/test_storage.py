"""The storage layer: its logic on an in-memory S3 (fixtures/memory_s3.py), on SeaweedFS what needs a real server."""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from modelarts_mnist import checksum
from modelarts_mnist.errors import StorageError
from modelarts_mnist.objectstore import ObjectStore
from modelarts_mnist.obs import ObsSettings, create_client, from_env
from fixtures.memory_s3 import MemoryS3
from modelarts_mnist.storage import Storage, is_remote, parse_url, safe_relative_key, stage_in, stage_out


def make_folder(root: Path, *, big_bytes: int = 6 * 1024 * 1024) -> Path:
    """A folder of mixed files: nested, empty, small text, binary, and one big enough for multipart."""
    rng = __import__("random").Random(7)
    files = {
        "a.txt": b"hello obs\n",
        "empty.bin": b"",
        "nested/deep/x.bin": bytes(rng.getrandbits(8) for _ in range(70_000)),
        "nested/y.json": b'{"k": 1}',
        "big.bin": os.urandom(big_bytes),
    }
    for i in range(6):
        files[f"many/file{i}.dat"] = os.urandom(1000 + i)
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under root by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "src")


def test_folder_round_trip_is_byte_for_byte(s3_storage, s3_bucket, folder, tmp_path):
    up = s3_storage.copy(str(folder), f"obs://{s3_bucket}/run/data", recursive=True)
    down = s3_storage.copy(f"obs://{s3_bucket}/run/data", str(tmp_path / "back"), recursive=True)
    assert sorted(up.copied) == sorted(tree_bytes(folder))
    assert sorted(down.copied) == sorted(up.copied)
    assert tree_bytes(tmp_path / "back") == tree_bytes(folder)


def test_big_file_goes_multipart_and_its_etag_checks(s3_store, s3_bucket, folder):
    info = s3_store.upload(folder / "big.bin", s3_bucket, "big.bin")
    assert info.etag.endswith("-2")  # 6 MiB in 5 MiB parts
    assert checksum.matches_etag(folder / "big.bin", info.etag, part_size=8 * 1024 * 1024) is True
    (folder / "big.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    assert checksum.matches_etag(folder / "big.bin", info.etag) is False


def test_identical_files_are_skipped_and_changed_ones_copied(memory_storage, memory_s3, folder):
    bucket = "bkt"
    target = f"s3://{bucket}/skip"
    memory_storage.sync(str(folder), target)
    (folder / "nested/y.json").write_bytes(b'{"k": 2}')
    again = memory_storage.sync(str(folder), target)
    assert again.copied == ["nested/y.json"]
    assert len(again.skipped) == len(tree_bytes(folder)) - 1


def test_interrupted_copy_resumes_and_redoes_only_the_rest(memory_store, memory_s3, folder, tmp_path):
    bucket = "bkt"
    done: list[str] = []

    def interrupt_after_three(relative: str) -> None:
        done.append(relative)
        if len(done) == 3:
            raise RuntimeError("simulated interruption")

    broken = Storage(memory_store, workers=1, after_each=interrupt_after_three, show_progress=False)
    with pytest.raises(StorageError, match="run the same command again") as caught:
        broken.copy(str(folder), f"obs://{bucket}/resume", recursive=True)
    assert 3 <= len(done) < 11  # a file already picked up by the worker may still finish
    assert f"stopped after {len(done)} of 11 files" in str(caught.value)
    report = Storage(memory_store, show_progress=False).copy(str(folder), f"obs://{bucket}/resume", recursive=True)
    assert sorted(report.skipped) == sorted(done)
    assert sorted(report.copied + report.skipped) == sorted(tree_bytes(folder))
    Storage(memory_store, show_progress=False).copy(f"obs://{bucket}/resume", str(tmp_path / "back"), recursive=True)
    assert tree_bytes(tmp_path / "back") == tree_bytes(folder)


def test_upload_interrupted_mid_file_leaves_no_object_and_no_open_parts(s3_store, s3_bucket, folder):
    seen = []

    def fail_midway(n_bytes: int) -> None:
        seen.append(n_bytes)
        if sum(seen) > 1024 * 1024:
            raise RuntimeError("connection lost")

    with pytest.raises(StorageError, match=f"obs://{s3_bucket}/half.bin"):
        s3_store.upload(folder / "big.bin", s3_bucket, "half.bin", callback=fail_midway)
    assert s3_store.stat(s3_bucket, "half.bin") is None
    assert s3_store.client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_upload_that_does_not_verify_is_removed(memory_store, memory_s3, folder):
    bucket = "bkt"
    memory_store.upload(folder / "a.txt", bucket, "a.txt")
    (folder / "a.txt").write_bytes(b"HELLO OBS\n")  # same size, other bytes
    with pytest.raises(StorageError, match="does not match.*removed"):
        memory_store.verify_upload(folder / "a.txt", bucket, "a.txt")
    assert memory_store.stat(bucket, "a.txt") is None


def test_single_file_copy_into_folder_url_and_remove(memory_storage, memory_s3, folder):
    bucket = "bkt"
    memory_storage.copy(str(folder / "a.txt"), f"obs://{bucket}/dir/")
    folders, objects = memory_storage.list(f"obs://{bucket}/")
    assert folders == ["dir/"] and objects == []
    assert [o.key for o in memory_storage.list(f"obs://{bucket}/dir")[1]] == ["dir/a.txt"]
    assert memory_storage.remove(f"obs://{bucket}/dir/a.txt") == 1
    assert memory_storage.list(f"obs://{bucket}/dir/")[1] == []


def test_recursive_remove_deletes_the_folder_only(memory_storage, memory_s3, folder):
    bucket = "bkt"
    memory_storage.copy(str(folder), f"obs://{bucket}/keep", recursive=True)
    memory_storage.copy(str(folder), f"obs://{bucket}/drop", recursive=True)
    assert memory_storage.remove(f"obs://{bucket}/drop", recursive=True) == len(tree_bytes(folder))
    assert memory_storage.list(f"obs://{bucket}/drop/")[1] == []
    assert len(memory_storage.list(f"obs://{bucket}/keep/many/")[1]) == 6


def test_stage_in_and_out(memory_storage, memory_s3, folder, tmp_path):
    bucket = "bkt"
    stage_out(folder, f"obs://{bucket}/staged", storage=memory_storage)
    local = stage_in(f"obs://{bucket}/staged", tmp_path / "cache", storage=memory_storage)
    assert local == tmp_path / "cache" / bucket / "staged"
    assert tree_bytes(local) == tree_bytes(folder)
    assert stage_in(str(folder), tmp_path / "cache") == folder
    (local / "stale.txt").write_text("not on the server")
    (local / "a.txt").write_text("changed locally")
    again = stage_in(f"obs://{bucket}/staged", tmp_path / "cache", storage=memory_storage)
    assert tree_bytes(again) == tree_bytes(folder)  # the cache mirrors the remote folder exactly


def test_stage_in_uses_the_cache_folder_from_the_environment(memory_storage, memory_s3, folder, tmp_path, monkeypatch):
    bucket = "bkt"
    monkeypatch.setenv("MODELARTS_MNIST_CACHE", str(tmp_path / "env-cache"))
    stage_out(folder, f"obs://{bucket}/m", storage=memory_storage)
    assert stage_in(f"obs://{bucket}/m", storage=memory_storage) == tmp_path / "env-cache" / bucket / "m"


# --- errors name bucket and key -------------------------------------------------------------------

def test_wrong_secret_is_refused_with_a_clear_error(s3_server, s3_bucket, folder):
    bad = ObjectStore(create_client(s3_server.settings(secret_key="not-the-secret")))
    with pytest.raises(StorageError, match=f"obs://{s3_bucket}/x.txt: access denied") as caught:
        Storage(bad, show_progress=False).copy(str(folder / "a.txt"), f"obs://{s3_bucket}/x.txt")
    assert caught.value.http_status == 403
    assert "not-the-secret" not in str(caught.value)
    with pytest.raises(StorageError, match=f"obs://{s3_bucket}/x.txt: access denied"):
        Storage(bad, show_progress=False).copy(f"obs://{s3_bucket}/x.txt", str(folder / "x.txt"))


def test_missing_bucket_is_named(memory_storage, folder, tmp_path):
    bucket = "bkt"
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist") as caught:
        memory_storage.copy(str(folder), "obs://no-such-bucket-here/data", recursive=True)
    assert caught.value.http_status == 404
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
        memory_storage.copy("obs://no-such-bucket-here/data/a.txt", str(tmp_path / "a.txt"))


def test_missing_key_is_named(memory_storage, memory_store, memory_s3, tmp_path):
    bucket = "bkt"
    with pytest.raises(StorageError, match=f"no such object 'nope.txt' in bucket '{bucket}'"):
        memory_storage.copy(f"obs://{bucket}/nope.txt", str(tmp_path / "nope.txt"))
    with pytest.raises(StorageError, match=f"nothing under key 'nope/' in bucket '{bucket}'"):
        memory_storage.copy(f"obs://{bucket}/nope", str(tmp_path / "nope"), recursive=True)
    with pytest.raises(StorageError, match="no such object 'nope.txt'"):
        memory_store.download(bucket, "nope.txt", tmp_path / "nope.txt")
    with pytest.raises(StorageError, match="cannot delete"):
        memory_storage.remove(f"obs://{bucket}/nope.txt")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_endpoint_fails_fast(folder):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    settings = ObsSettings(endpoint=f"http://127.0.0.1:{port}", access_key="ak", secret_key="sk",
                           connect_timeout=1, read_timeout=1, max_attempts=2)
    started = time.monotonic()
    with pytest.raises(StorageError, match="obs://bucket-x/k.txt: OBS endpoint unreachable"):
        ObjectStore(create_client(settings)).upload(folder / "a.txt", "bucket-x", "k.txt")
    assert time.monotonic() - started < 10


def test_silent_endpoint_times_out_instead_of_hanging(folder):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        settings = ObsSettings(endpoint=f"http://127.0.0.1:{listener.getsockname()[1]}", access_key="ak",
                               secret_key="sk", connect_timeout=1, read_timeout=1, max_attempts=2)
        started = time.monotonic()
        with pytest.raises(StorageError, match="obs://bucket-x/k.txt.*not answering"):
            ObjectStore(create_client(settings)).stat("bucket-x", "k.txt")
        assert time.monotonic() - started < 10


# --- settings -------------------------------------------------------------------------------------

def test_settings_from_env_accept_aws_names_and_flags_win():
    env = {"AWS_ACCESS_KEY_ID": "AKAWS", "AWS_SECRET_ACCESS_KEY": "SKAWS",
           "MODELARTS_OBS_ENDPOINT": "https://obs.cn-north-4.myhuaweicloud.com", "MODELARTS_OBS_MAX_ATTEMPTS": "5"}
    settings = from_env(env, access_key="AKFLAG", addressing="path")
    assert (settings.access_key, settings.secret_key) == ("AKFLAG", "SKAWS")
    assert settings.resolved_region == "cn-north-4"
    assert settings.max_attempts == 5 and settings.addressing == "path"


def test_secret_never_in_repr_or_logs(s3_server, s3_bucket, folder, caplog):
    settings = s3_server.settings()
    assert s3_server.secret_key not in repr(settings)
    store = ObjectStore(create_client(settings), settings=settings)
    assert s3_server.secret_key not in repr(store)
    with caplog.at_level(logging.DEBUG):
        Storage(store, show_progress=False).copy(str(folder), f"obs://{s3_bucket}/logged", recursive=True)
    assert caplog.text and s3_server.secret_key not in caplog.text


@pytest.mark.parametrize("style", ["virtual", "path"], ids=["virtual-host", "path-style"])
def test_client_is_configured_the_way_obs_needs(style):
    settings = ObsSettings(endpoint="https://obs.cn-north-1.myhuaweicloud.com", access_key="a", secret_key="s",
                           addressing=style, connect_timeout=3, read_timeout=7, max_attempts=4)
    config = create_client(settings).meta.config
    assert config.signature_version == "s3v4"
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3["addressing_style"] == style
    assert (config.connect_timeout, config.read_timeout, config.retries["total_max_attempts"]) == (3, 7, 4)


def test_missing_credentials_and_bad_settings_are_refused():
    with pytest.raises(StorageError, match="MODELARTS_OBS_ACCESS_KEY"):
        create_client(ObsSettings(endpoint="http://127.0.0.1:1"))
    with pytest.raises(StorageError, match="MODELARTS_OBS_READ_TIMEOUT"):
        from_env({"MODELARTS_OBS_READ_TIMEOUT": "soon"})
    with pytest.raises(StorageError, match="addressing style 'sideways'"):
        ObsSettings(addressing="sideways")
    for endpoint in ("obs.cn-north-1.myhuaweicloud.com", "ftp://host", "http://a host"):
        with pytest.raises(StorageError, match="is not an http:// or https:// URL with a host"):
            from_env({"MODELARTS_OBS_ENDPOINT": endpoint})
    assert ObsSettings(endpoint="http://[::1]:8333/").endpoint == "http://[::1]:8333/"


@pytest.mark.parametrize("url, remote", [("obs://b/k", True), ("s3://b/", True), ("/tmp/x", False),
                                         ("obs:/b", False), ("data/obs://", False)])
def test_is_remote(url, remote):
    assert is_remote(url) is remote


def test_parse_url_names_the_problem():
    assert parse_url("OBS://bkt/a/b.txt") == ("obs", "bkt", "a/b.txt")
    with pytest.raises(StorageError, match="names no bucket"):
        parse_url("obs:///key")


# --- object keys stay inside their destination ----------------------------------------------------

# Real OBS/S3 store such keys as they are; SeaweedFS refuses or normalises them on PUT, so they are
# planted in the in-memory S3 instead (see test_cli_obs.py for the commands).
UNSAFE_KEYS = ["data/../escape.txt", "data/../../../tmp/escape.txt", "data//etc/passwd", "data/a//b.txt",
               "data/./dot.txt", "data/back\\..\\slash.txt", "data/C:/win.txt", "data/sub/.."]


def written(root: Path) -> list[Path]:
    """Files under `root`, but the cache's lock files (housekeeping, not staged content)."""
    return [p for p in root.rglob("*") if p.is_file() and ".locks" not in p.relative_to(root).parts]


def planted(keys: list[str]) -> tuple[Storage, MemoryS3]:
    """A Storage over an in-memory bucket 'bkt' holding exactly `keys` (b'x' each)."""
    client = MemoryS3()
    client.create_bucket(Bucket="bkt")
    for key in keys:
        client.put("bkt", key, b"x")
    return Storage(ObjectStore(client), workers=1, show_progress=False), client


@pytest.mark.parametrize("key", UNSAFE_KEYS, ids=["dotdot", "dotdot-deep", "absolute", "empty-segment", "dot",
                                                   "backslash", "drive", "trailing-dotdot"])
def test_unsafe_key_is_refused_before_anything_is_written(key, tmp_path):
    storage, client = planted(["data/a-first.txt", key, "data/z-last.txt"])
    with pytest.raises(StorageError, match="nothing was copied") as caught:
        storage.copy("obs://bkt/data", str(tmp_path / "out" / "dest"), recursive=True)
    assert repr(key) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(StorageError, match="would land outside"):
        stage_in("obs://bkt/data", tmp_path / "out" / "cache", storage=storage)
    assert "download_file" not in client.calls and written(tmp_path / "out") == []


def test_every_unsafe_key_is_counted_and_safe_folders_still_copy(tmp_path):
    with pytest.raises(StorageError, match=f"and {len(UNSAFE_KEYS) - 1} more unsafe keys"):
        planted(["data/ok.txt", "data/sub/ok.txt", *UNSAFE_KEYS])[0].sync("obs://bkt/data", str(tmp_path / "dest"))
    report = planted(["data/ok.txt", "data/sub/ok.txt"])[0].sync("obs://bkt/data", str(tmp_path / "dest"))
    assert sorted(report.copied) == ["ok.txt", "sub/ok.txt"]


@pytest.mark.parametrize("url", ["obs://bkt/a/..", "obs://bkt/.", "obs://../x", "obs://bkt/a//b/", "obs://bkt/../.."],
                         ids=["key-dotdot", "key-dot", "bucket-dotdot", "empty-segment", "only-dotdot"])
def test_a_staged_url_cannot_leave_the_cache(url, tmp_path):
    with pytest.raises(StorageError, match="would land outside|not a valid bucket name"):
        stage_in(url, tmp_path / "cache", storage=planted([])[0])
    assert not (tmp_path / "cache").exists()


def test_a_single_object_named_dotdot_is_not_copied_into_a_folder(tmp_path):
    storage, client = planted(["x/.."])
    (tmp_path / "dest").mkdir()
    with pytest.raises(StorageError, match="'..' segment"):
        storage.copy("obs://bkt/x/..", str(tmp_path / "dest"))
    assert "download_file" not in client.calls


def test_safe_keys_pass_unchanged():
    assert safe_relative_key("data/sub/file.v1.txt", "data/") == "sub/file.v1.txt"
    assert safe_relative_key("..hidden/...", "") == "..hidden/..."  # dots inside a name are fine
    with pytest.raises(StorageError, match="not under the prefix"):
        safe_relative_key("other/x", "data/")


# --- symbolic links in a source folder -------------------------------------------------------------

@pytest.fixture()
def linked_folder(tmp_path) -> Path:
    """A folder with links: to a file and a folder outside it, inside it, to nowhere, and to itself."""
    root = tmp_path / "linked"
    (root / "sub").mkdir(parents=True)
    (root / "one.txt").write_text("one\n")
    (root / "sub" / "two.txt").write_text("two\n")
    (tmp_path / "secret.txt").write_text("outside secret\n")
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "key.pem").write_text("outside key\n")
    links = {"out-file": "../secret.txt", "out-dir": str(tmp_path / "secret-dir"), "in-file": "sub/two.txt",
             "sub/up-file": "../one.txt", "in-dir": "sub", "dangling": "nowhere.txt", "loop": "loop",
             "sub/escape": "../../secret.txt"}
    for name, target in links.items():
        (root / name).symlink_to(target)
    return root


LEFT_OUT = {"dangling", "in-dir", "loop", "out-dir", "out-file", "sub/escape"}


def test_copy_of_a_folder_never_reads_outside_it(linked_folder, tmp_path):
    report = Storage(show_progress=False).copy(str(linked_folder), str(tmp_path / "dest"), recursive=True)
    assert sorted(report.copied) == ["in-file", "one.txt", "sub/two.txt", "sub/up-file"]
    assert {entry.split(":")[0] for entry in report.left_out} == LEFT_OUT
    assert any(e.startswith("out-file: symbolic link to ") and e.endswith("outside the folder")
               for e in report.left_out)
    copied = tree_bytes(tmp_path / "dest")
    assert copied["in-file"] == b"two\n" and copied["sub/up-file"] == b"one\n"  # inside links: the content
    assert not any(b"outside" in data for data in copied.values())
    assert not any(p.is_symlink() for p in (tmp_path / "dest").rglob("*"))


def test_upload_of_a_folder_leaves_links_out_of_it(memory_storage, memory_store, memory_s3, linked_folder):
    bucket = "bkt"
    report = memory_storage.sync(str(linked_folder), f"obs://{bucket}/up")
    assert {entry.split(":")[0] for entry in report.left_out} == LEFT_OUT
    assert {o.key for o in memory_store.list(bucket)} == {"up/in-file", "up/one.txt", "up/sub/two.txt",
                                                         "up/sub/up-file"}


# --- no multipart upload is left open -------------------------------------------------------------

def open_uploads(s3_store, bucket: str) -> list[str]:
    return sorted(u["Key"] for u in s3_store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def test_uploads_a_killed_run_left_open_are_aborted_by_the_next_run(memory_storage, memory_store, memory_s3, folder):
    bucket = "bkt"
    for key in ("run/big.bin", "run/nested/y.json", "run/big.bin", "elsewhere/big.bin"):
        memory_store.client.create_multipart_upload(Bucket=bucket, Key=key)  # what `kill -9` mid-upload leaves
    assert open_uploads(memory_store, bucket) == ["elsewhere/big.bin", "run/big.bin", "run/big.bin",
                                                 "run/nested/y.json"]
    memory_storage.copy(str(folder), f"obs://{bucket}/run", recursive=True)
    assert open_uploads(memory_store, bucket) == ["elsewhere/big.bin"]  # only keys this copy writes are touched
    memory_store.client.create_multipart_upload(Bucket=bucket, Key="one/a.txt")
    memory_storage.copy(str(folder / "a.txt"), f"obs://{bucket}/one/a.txt")
    assert open_uploads(memory_store, bucket) == ["elsewhere/big.bin"]


class InterruptMidFile(Storage):
    """Sends this process SIGINT once 1 MiB of big.bin is out, as a user's Ctrl-C would."""

    sent = False

    def _advance(self, bar, n_bytes: int) -> None:
        if not self.sent and threading.current_thread() is not threading.main_thread():
            self.sent = True
            os.kill(os.getpid(), signal.SIGINT)
            assert self._stopping.wait(10), "the interrupt did not reach the copy"
        super()._advance(bar, n_bytes)


def test_ctrl_c_mid_upload_aborts_the_multipart_upload(s3_store, s3_bucket, folder):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            InterruptMidFile(s3_store, workers=1, show_progress=False).copy(str(folder / "big.bin"),
                                                                            f"obs://{s3_bucket}/big.bin")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert open_uploads(s3_store, s3_bucket) == []
    assert s3_store.stat(s3_bucket, "big.bin") is None


# --- partial files, full disks, two commands at once ----------------------------------------------

def dead_pid() -> int:
    """The id of a process that has exited."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_downloads_partial_files_are_removed_by_the_next_run(memory_storage, memory_s3, tmp_path):
    memory_s3.put("bkt", "data/a.txt", b"a")
    memory_s3.put("bkt", "data/sub/b.txt", b"b")
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    dead = [dest / f".a.txt.mnist-partial-{dead_pid()}-0123abcd.A1b2C3d4",  # s3transfer's own suffix too
            dest / "sub" / f".b.txt.mnist-partial-{dead_pid()}-4567cdef"]
    live = dest / ".a.txt.mnist-partial-1-89abcdef"  # pid 1 runs: another command's download in flight
    for path in [*dead, live]:
        path.write_bytes(b"half")
    memory_storage.copy("obs://bkt/data", str(dest), recursive=True)
    assert tree_bytes(dest) == {"a.txt": b"a", "sub/b.txt": b"b", live.name: b"half"}


def full_disk(path: Path, **_) -> None:
    """A download fault: half the file lands, then the disk is full."""
    path.write_bytes(b"half")
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_a_full_disk_during_a_download_names_the_file_and_leaves_nothing(memory_storage, memory_s3, tmp_path):
    memory_s3.put("bkt", "data/a.txt", b"a" * 100)
    memory_s3.faults["download_file"] = full_disk
    with pytest.raises(StorageError) as caught:
        memory_storage.copy("obs://bkt/data/a.txt", str(tmp_path / "a.txt"))
    message = str(caught.value)
    assert f"{tmp_path / 'a.txt'}: No space left on device" in message and "obs://bkt/data/a.txt" in message
    assert "\n" not in message and caught.value.http_status == 507
    assert list(tmp_path.iterdir()) == []


def test_two_commands_staging_one_url_at_once_both_succeed(memory_s3, folder, tmp_path):
    Storage(ObjectStore(memory_s3), show_progress=False).copy(str(folder), "obs://bkt/model", recursive=True)
    memory_s3.faults["download_file"] = lambda **_: time.sleep(0.02)  # long enough to overlap
    results, errors = [], []

    def stage() -> None:
        try:
            results.append(stage_in("obs://bkt/model", tmp_path / "cache",
                                    storage=Storage(ObjectStore(memory_s3), workers=2, show_progress=False)))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)
    threads = [threading.Thread(target=stage) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(results) == 3
    assert tree_bytes(results[0]) == tree_bytes(folder)


@pytest.mark.parametrize("code, status, expected", [
    ("AccessDenied", 403, "access denied"), ("NoSuchBucket", 404, "bucket 'bkt' does not exist"),
    ("SlowDown", 503, "SlowDown"),
], ids=["denied", "no-bucket", "other"])
def test_every_client_failure_becomes_one_named_storage_error(memory_store, memory_s3, code, status, expected):
    from fixtures.memory_s3 import client_error

    def fail(**_) -> None:
        raise client_error(code, status, "HeadObject")
    for operation in ("head_bucket", "head_object", "list_objects_v2", "delete_objects", "upload_file"):
        memory_s3.faults[operation] = fail
    calls = [lambda: memory_store.stat("bkt", "k/a.txt"), lambda: list(memory_store.list("bkt", "k/")),
             lambda: memory_store.remove("bkt", ["k/a.txt"]),
             lambda: memory_store.upload(Path(__file__), "bkt", "k/a.txt")]
    for call in calls:
        with pytest.raises(StorageError, match=expected) as caught:
            call()
        assert "obs://bkt/k/" in str(caught.value)
