"""Files and folders written whole: built beside their target, swapped in one step, leftovers swept.

Everything half-written lives in a hidden sibling named `.<name>.mnist-partial-<pid>-<random>`
(`partial_path`). A process that dies (kill -9, a full disk, a power cut) leaves only such siblings,
never a half-written target, and the next run removes those whose process no longer runs
(`sweep_partials`). This module is the one owner of that naming rule.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

PARTIAL_MARK = ".mnist-partial-"
_PARTIAL = re.compile(r"^\.(?P<name>.+)" + re.escape(PARTIAL_MARK) + r"(?P<pid>\d+)-[0-9a-f]{8}")
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100

Writer = Callable[[Path, bytes], None]


def partial_path(target: Path) -> Path:
    """A hidden sibling of `target` to build it in, named so a later run can tell whether its maker still runs."""
    return target.with_name(f".{target.name}{PARTIAL_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def is_running(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def sweep_partials(folder: Path, name: str | None = None) -> list[Path]:
    """Remove partial siblings in `folder` (of `name` only, when given) whose process is gone; returns them."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:  # no folder yet: nothing to sweep
        return removed
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if not match or (name is not None and match.group("name") != name):
            continue
        pid = int(match.group("pid"))
        if pid == os.getpid() or is_running(pid):
            continue
        if entry.name.endswith(".old") and not (folder / match.group("name")).exists():
            continue  # the only copy of a folder a killed swap left aside: recover_folder puts it back
        remove(entry)
        removed.append(entry)
    if removed:
        log.info("removed %d partial file(s) a stopped run left in %s", len(removed), folder)
    return removed


def remove(path: Path) -> None:
    """Delete a file or a folder tree, whichever `path` is; absent is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    """The default writer: put `data` in `path` (tests inject one that fails like a full disk)."""
    with open(path, "wb") as sink:
        sink.write(data)


def write_atomic(path: Path, data: bytes, *, write: Writer = write_bytes, mode: int = 0o644) -> None:
    """Write beside the target, then rename over it: readers never see half a file, a failure leaves none."""
    replace_files({path: data}, write=write, mode=mode)


def replace_files(contents: dict[Path, bytes], *, write: Writer = write_bytes, mode: int = 0o644) -> None:
    """Write every file beside its target first, then rename them all into place.

    A full disk fails while writing the partial copies, before any target changed, so a set of
    files (a package's code and config) is never left half old, half new.
    """
    temps = {path: partial_path(path) for path in contents}
    try:
        for path, data in contents.items():
            write(temps[path], data)
            os.chmod(temps[path], mode)
        for path, temp in temps.items():
            os.replace(temp, path)
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)


def exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc before 2.28, or another libc
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # a file system without exchange
        return False
    raise OSError(code, os.strerror(code), str(second))


def replace_folder(new: Path, target: Path, *, swap: Callable[[Path, Path], bool] = exchange) -> None:
    """Put folder `new` at `target` so that at every instant `target` is either the old folder or the new one.

    An existing target is swapped with `new` in one step and then deleted. Where the system cannot
    swap, the old folder is renamed aside first; a run killed between the two renames leaves it
    there, and `recover_folder` (called by the next run) puts it back.
    """
    if not target.exists():
        try:
            os.rename(new, target)
            return
        except OSError as exc:  # another run published it meanwhile: swap with that one
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    if swap(new, target):
        remove(new)  # `new` now holds the old folder
        return
    aside = partial_path(target)
    old = aside.with_name(aside.name + ".old")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    remove(old)


def recover_folder(target: Path) -> Path | None:
    """Put back an old folder that a run killed mid-swap left aside (only when `target` is missing)."""
    if target.exists():
        return None
    leftovers = sorted(p for p in target.parent.glob(f".{target.name}{PARTIAL_MARK}*.old")
                       if _PARTIAL.match(p.name) and p.is_dir())
    if not leftovers:
        return None
    os.rename(leftovers[-1], target)
    log.warning("restored %s from %s, which an interrupted run left aside", target, leftovers[-1].name)
    return target


def describe_os_error(exc: OSError) -> str:
    """One line naming the path and the problem, e.g. '/data/x: No space left on device'."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"{exc.filename}{target}: {reason}"
