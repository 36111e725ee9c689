"""Files written whole: partial naming and sweeping, the folder swap and its fallback, atomic file sets."""
from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from modelarts_mnist.files import (describe_os_error, exchange, partial_path, recover_folder, replace_files,
                                   replace_folder, sweep_partials, write_bytes)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_partials_of_stopped_processes_are_swept(tmp_path):
    target = tmp_path / "model.bin"
    mine = partial_path(target)
    dead = tmp_path / f".model.bin.mnist-partial-{dead_pid()}-0123abcd"
    dead_folder = tmp_path / f".other.mnist-partial-{dead_pid()}-4567cdef"
    live = tmp_path / ".model.bin.mnist-partial-1-89abcdef"  # pid 1 always runs
    lookalike = tmp_path / ".model.bin.mnist-partial-notes"
    for path in (mine, dead, live, lookalike):
        path.write_bytes(b"x")
    dead_folder.mkdir()
    (dead_folder / "inside.txt").write_text("x")
    assert sorted(sweep_partials(tmp_path, "model.bin")) == [dead]
    assert sorted(sweep_partials(tmp_path)) == [dead_folder]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (mine, live, lookalike))


def test_a_folder_left_aside_is_recovered_not_swept(tmp_path):
    aside = tmp_path / f".data.mnist-partial-{dead_pid()}-0123abcd.old"
    aside.mkdir()
    (aside / "f.txt").write_text("the only copy")
    assert sweep_partials(tmp_path) == []
    assert recover_folder(tmp_path / "data") == tmp_path / "data"
    assert (tmp_path / "data" / "f.txt").read_text() == "the only copy" and recover_folder(tmp_path / "data") is None


def test_exchange_swaps_two_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "from-a").touch()
    assert exchange(tmp_path / "a", tmp_path / "b") is True
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from-a"] and not any((tmp_path / "a").iterdir())


@pytest.mark.parametrize("can_swap", [True, False], ids=["exchange", "fallback"])
def test_replace_folder_leaves_only_the_new_one(tmp_path, can_swap):
    old, new = tmp_path / "target", tmp_path / "new"
    for folder, text in ((old, "old"), (new, "new")):
        folder.mkdir()
        (folder / "f.txt").write_text(text)
    replace_folder(new, old, swap=exchange if can_swap else lambda a, b: False)
    assert (old / "f.txt").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["target"]


def test_a_set_of_files_is_replaced_all_or_none(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")

    def full_on_b(path: Path, data: bytes) -> None:
        if path.name.startswith(".b.txt"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_bytes(path, data)
    with pytest.raises(OSError):
        replace_files({a: b"new a", b: b"new b"}, write=full_on_b)
    assert (a.read_text(), b.read_text()) == ("old a", "old b") and sorted(p.name for p in tmp_path.iterdir()) == [
        "a.txt", "b.txt"]
    replace_files({a: b"new a", b: b"new b"})
    assert (a.read_text(), b.read_text()) == ("new a", "new b")


def test_an_os_error_is_one_line_naming_the_path():
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/d/x")) == \
        "/d/x: No space left on device"
    assert describe_os_error(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")) == \
        "/a -> /b: Invalid cross-device link"
