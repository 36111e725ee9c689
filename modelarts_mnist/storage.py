"""One storage layer for local paths, obs://bucket/key and s3://bucket/key: copy, sync, list, remove, stage.

Folder copies run in parallel (the `mox.file.copy_parallel` analogue), skip files that are already
identical (size and MD5/ETag), verify every file after transfer, and can simply be run again after
an interruption: finished files are skipped, unfinished ones are redone.

Nothing leaves its folder: keys that would escape a destination are refused before anything is
written (`safe_relative_key`); links out of a source folder are left out (`CopyReport.left_out`).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

from . import checksum
from .errors import StorageError
from .files import PARTIAL_MARK, partial_path, sweep_partials
from .objectstore import ObjectInfo, ObjectStore
from .progress import progress

log = logging.getLogger(__name__)

REMOTE_SCHEMES = ("obs", "s3")
DEFAULT_WORKERS = 8
_DRIVE = re.compile(r"^[A-Za-z]:")  # `C:` starts an absolute path on Windows
# OBS's bucket naming rule (S3's current one too): 3-63 lower-case letters, digits, '-' and '.'.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


class ObjectUrl(NamedTuple):
    """A parsed obs:// or s3:// URL."""

    scheme: str
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}"

    def child(self, relative: str) -> "ObjectUrl":
        """The URL of `relative` inside this one, taken as a folder."""
        prefix = self.key.rstrip("/")
        return self._replace(key=f"{prefix}/{relative}" if prefix else relative)


def is_remote(url: str | os.PathLike) -> bool:
    """Whether `url` names OBS/S3 (obs://, s3://) rather than a local path."""
    return isinstance(url, str) and url.split("://", 1)[0].lower() in REMOTE_SCHEMES and "://" in url


def parse_url(url: str) -> ObjectUrl:
    """Split obs://bucket/key into its parts; raise StorageError for anything else."""
    if not is_remote(url):
        raise StorageError(f"{url!r} is not an obs:// or s3:// URL")
    scheme, rest = url.split("://", 1)
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{url!r} names no bucket (expected {scheme}://bucket/key)")
    check_bucket_name(bucket)
    return ObjectUrl(scheme.lower(), bucket, key)


def parse_folder_url(url: str) -> ObjectUrl:
    """Parse an obs:// URL that names a folder (staged, trained into): its key must be a plain relative path."""
    parsed = parse_url(url)
    if parsed.key.strip("/"):
        safe_relative_key(parsed.key.strip("/"))
    return parsed


def check_bucket_name(bucket: str) -> str:
    """`bucket` unchanged when OBS accepts it as a bucket name; else a StorageError saying why."""
    problem = None
    if not _BUCKET.match(bucket):
        problem = ("use 3-63 lower-case letters, digits, '-' and '.', starting and ending with a letter "
                   "or digit")
    elif ".." in bucket or ".-" in bucket or "-." in bucket:
        problem = "no '..', '.-' or '-.' inside it"
    elif _IP_ADDRESS.match(bucket):
        problem = "it must not look like an IP address"
    if problem:
        raise StorageError(f"{bucket!r} is not a valid bucket name: {problem}", http_status=400)
    return bucket


def safe_relative_key(key: str, prefix: str = "") -> str:
    """`key` below `prefix` as a relative path that stays inside any destination folder.

    The one rule for every download and stage: a key that could land outside the folder (or on
    another key's file) is refused with a StorageError naming it, never silently cleaned up.
    """
    relative = key[len(prefix):] if key.startswith(prefix) else None
    problem = "it is not under the prefix " + repr(prefix) if relative is None else _key_problem(relative)
    if problem:
        raise StorageError(f"object key {key!r} would land outside the destination folder: {problem}")
    return relative


def _key_problem(relative: str) -> str | None:
    """Why `relative` is not a plain path inside a folder, or None when it is."""
    segments = relative.split("/")
    checks = [
        (relative.startswith("/"), "it is absolute (starts with '/')"),
        ("" in segments, "it has an empty segment (empty key or '//')"),
        (".." in segments, "it has a '..' segment"),
        ("." in segments, "it has a '.' segment"),
        ("\\" in relative, "it holds a backslash (a folder separator on Windows)"),
        (bool(_DRIVE.match(relative)), "it starts with a drive letter"),
        ("\0" in relative, "it holds a NUL character"),
    ]
    return next((reason for failed, reason in checks if failed), None)


@dataclass
class CopyReport:
    """What a copy did: files copied, skipped as identical, left out (with why), and bytes moved."""

    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    left_out: list[str] = field(default_factory=list)  # "path: reason", e.g. a symlink out of the folder


@dataclass(frozen=True)
class _Item:
    """One file to copy: its path relative to the source root, size, and remote info when remote."""

    relative: str
    size: int
    info: ObjectInfo | None = None


class Storage:
    """Copy, list and remove across local folders and OBS/S3, through one injected ObjectStore."""

    def __init__(self, store: ObjectStore | None = None, *, workers: int = DEFAULT_WORKERS,
                 after_each: Callable[[str], None] | None = None, show_progress: bool | None = None):
        self.store = store or ObjectStore()
        self.workers = workers
        self.after_each = after_each  # test seam: called after each file finishes (may raise to interrupt)
        self.show_progress = show_progress
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # set on Ctrl-C/SIGTERM: transfers in flight give up and clean up
        self._failed = threading.Event()  # set when one file failed: no new file is started

    def copy(self, src: str, dst: str, *, recursive: bool = False) -> CopyReport:
        """Copy a file, or with `recursive` a folder's contents, from `src` to `dst` (local or remote)."""
        report = CopyReport()
        items, root_is_file = self._plan(src, recursive, report)
        if root_is_file and (dst.endswith("/") or (not is_remote(dst) and Path(dst).is_dir())):
            dst = _join(dst, safe_relative_key(_basename(src)))
        for entry in report.left_out:
            log.info("not copied: %s", entry)  # callers show report.left_out (the CLI: one line each)
        with progress(sum(i.size for i in items), f"copy {len(items)} files", enabled=self.show_progress) as bar:
            self._run(items, src, dst, root_is_file, report, bar)
        log.info("copied %d files (%d bytes), skipped %d identical", len(report.copied), report.bytes_copied,
                 len(report.skipped))
        return report

    def sync(self, src: str, dst: str) -> CopyReport:
        """Make `dst` hold every file of folder `src`: copy what differs, skip what is identical."""
        return self.copy(src, dst, recursive=True)

    def _plan(self, src: str, recursive: bool, report: CopyReport) -> tuple[list[_Item], bool]:
        """The files to copy from `src`, and whether `src` is a single file; notes what is left out."""
        if not is_remote(src):
            path = Path(src)
            if path.is_file():
                return [_Item("", path.stat().st_size)], True
            if not path.is_dir():
                raise StorageError(f"cannot copy {src}: no such file or folder")
            if not recursive:
                raise StorageError(f"cannot copy {src}: it is a folder (use -r / recursive)")
            items, report.left_out = _local_items(path)
            return items, False
        url = parse_url(src)
        if url.key and not url.key.endswith("/"):
            info = self.store.stat(url.bucket, url.key)
            if info is not None:
                return [_Item("", info.size, info)], True
        if not recursive:
            raise StorageError(f"cannot copy {src}: no such object {url.key!r} in bucket {url.bucket!r}"
                               " (for a folder use -r / recursive)", http_status=404)
        prefix = url.key.rstrip("/") + "/" if url.key.strip("/") else ""
        items = _remote_items(src, self.store.list(url.bucket, prefix), prefix)
        if not items and url.key:
            raise StorageError(f"cannot copy {src}: nothing under key {prefix!r} in bucket {url.bucket!r}",
                               http_status=404)
        return items, False

    def _run(self, items: list[_Item], src: str, dst: str, single: bool, report: CopyReport, bar) -> None:
        """Copy `items` on a thread pool; on the first failure stop, clean up, and raise."""
        if is_remote(dst):  # fail once, early and clearly, rather than once per file
            self.store.require_bucket(parse_url(dst).bucket, parse_url(dst).key)
            self._abort_left_open(items, dst, single)
        else:  # partial files a killed earlier run left where this copy writes
            folders = {Path(dst).parent} if single else {Path(_join(dst, i.relative)).parent for i in items}
            for folder in folders:
                sweep_partials(folder)
        self._stopping.clear()
        self._failed.clear()
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="obs-copy") as pool:
            futures = [pool.submit(self._copy_item, item, src, dst, single, report, bar) for item in items]
            try:
                wait(futures, return_when=FIRST_EXCEPTION)
            except BaseException:  # Ctrl-C/SIGTERM: files in flight stop now, aborting their multipart uploads
                self._stopping.set()
                raise
            finally:  # start nothing new; after one file failed, the others in flight finish whole
                for future in futures:
                    future.cancel()
        failures = [f.exception() for f in futures if f.done() and not f.cancelled() and f.exception()]
        if failures:
            first = failures[0]
            finished = len(report.copied) + len(report.skipped)
            message = (f"copy {src} -> {dst} stopped after {finished} of {len(items)} files: {first}; "
                       "run the same command again to finish")
            raise StorageError(message, http_status=getattr(first, "http_status", None)) from first

    def _copy_item(self, item: _Item, src: str, dst: str, single: bool, report: CopyReport, bar) -> None:
        """Copy one file unless the destination already holds the same bytes (nothing once another failed)."""
        if self._failed.is_set():
            return
        try:
            self._copy_one(item, src, dst, single, report, bar)
        except BaseException:
            self._failed.set()
            raise

    def _copy_one(self, item: _Item, src: str, dst: str, single: bool, report: CopyReport, bar) -> None:
        """Copy one file unless the destination already holds the same bytes."""
        source = src if single else _join(src, item.relative)
        target = dst if single else _join(dst, item.relative)
        if self._identical(item, source, target):
            with self._lock:
                report.skipped.append(item.relative or _basename(src))
                bar.update(item.size)
        else:
            self._transfer(item, source, target, lambda n: self._advance(bar, n))
            with self._lock:
                report.copied.append(item.relative or _basename(src))
                report.bytes_copied += item.size
        if self.after_each is not None:
            self.after_each(item.relative or _basename(src))

    def _abort_left_open(self, items: list[_Item], dst: str, single: bool) -> None:
        """Abort multipart uploads that a killed earlier run left open for the keys this copy writes."""
        url = parse_url(dst)
        keys = {url.key} if single else {parse_url(_join(dst, item.relative)).key for item in items}
        prefix = url.key if single else (url.key.rstrip("/") + "/" if url.key.strip("/") else "")
        if keys:
            self.store.abort_open_uploads(url.bucket, prefix, keys)

    def _advance(self, bar, n_bytes: int) -> None:
        """Move the shared progress bar from any worker thread; raising here stops an interrupted transfer."""
        if self._stopping.is_set():
            raise StorageError("interrupted")
        with self._lock:
            bar.update(n_bytes)

    def _identical(self, item: _Item, source: str, target: str) -> bool:
        """Whether `target` already has `source`'s size and checksum."""
        if is_remote(target):
            url = parse_url(target)
            existing = self.store.stat(url.bucket, url.key)
            if existing is None or existing.size != item.size:
                return False
            if item.info is not None:
                return bool(existing.etag) and existing.etag == item.info.etag
            return self.store.matches(Path(source), existing) is True
        path = Path(target)
        if not path.is_file() or path.stat().st_size != item.size:
            return False
        if item.info is not None:
            return self.store.matches(path, item.info) is True
        return checksum.md5_of(path) == checksum.md5_of(Path(source))

    def _transfer(self, item: _Item, source: str, target: str, callback: Callable[[int], None]) -> None:
        """Move one file between any two places, verified."""
        if is_remote(source) and is_remote(target):
            src_url, dst_url = parse_url(source), parse_url(target)
            self.store.copy_object(item.info, src_url.bucket, dst_url.bucket, dst_url.key)
            callback(item.size)
        elif is_remote(source):
            url = parse_url(source)
            self.store.download(url.bucket, url.key, Path(target), callback, info=item.info)
        elif is_remote(target):
            url = parse_url(target)
            self.store.upload(Path(source), url.bucket, url.key, callback)
        else:
            _copy_local(Path(source), Path(target))
            callback(item.size)

    def list(self, url: str) -> tuple[list[str], list[ObjectInfo]]:
        """One level under `url`: (folder names ending in '/', objects); bucket names for obs://."""
        if not is_remote(url):
            raise StorageError(f"ls needs an obs:// or s3:// URL, got {url!r}")
        if url.split("://", 1)[1].strip("/") == "":
            return [f"{b}/" for b in self.store.list_buckets()], []
        parsed = parse_url(url)
        key = parsed.key
        if key and not key.endswith("/") and self.store.stat(parsed.bucket, key) is None:
            key += "/"
        return self.store.list_level(parsed.bucket, key)

    def remove(self, url: str, *, recursive: bool = False, force: bool = False) -> int:
        """Delete one object, or with `recursive` every object under the folder `url`; returns the count.

        Emptying a whole bucket (obs://bucket or obs://bucket/) also needs `force`.
        """
        parsed = parse_url(url)
        if recursive and not parsed.key.strip("/") and not force:
            raise StorageError(f"refusing to delete every object in obs://{parsed.bucket}/: "
                               "that is the whole bucket; add --force if you mean it")
        if not recursive:
            if not parsed.key or self.store.stat(parsed.bucket, parsed.key) is None:
                raise StorageError(f"cannot delete {url}: no such object {parsed.key!r} in bucket "
                                   f"{parsed.bucket!r} (for a folder use -r)", http_status=404)
            return self.store.remove(parsed.bucket, [parsed.key])
        prefix = parsed.key.rstrip("/") + "/" if parsed.key.strip("/") else ""
        self.store.require_bucket(parsed.bucket, parsed.key)
        return self.store.remove(parsed.bucket, [o.key for o in self.store.list(parsed.bucket, prefix)])


def _remote_items(src: str, objects: Iterable[ObjectInfo], prefix: str) -> list[_Item]:
    """The objects under `prefix` as items; refuses them all, before any is copied, if one key is unsafe."""
    items, refused = [], []
    for info in objects:
        try:
            items.append(_Item(safe_relative_key(info.key, prefix), info.size, info))
        except StorageError as exc:
            refused.append(exc)
    if refused:
        more = f" (and {len(refused) - 1} more unsafe keys)" if len(refused) > 1 else ""
        raise StorageError(f"cannot copy {src}: {refused[0]}{more}; nothing was copied")
    return items


def _local_items(root: Path) -> tuple[list[_Item], list[str]]:
    """Every regular file under `root` (relative paths with '/'), and "path: reason" for what is left out.

    Links are never walked into: a symlink to a file inside the tree is copied as that file's
    content; one pointing out of the tree, to a folder, or nowhere is left out, so a copy never
    reads outside the folder it was given. Our unfinished downloads are left out silently.
    """
    real_root = root.resolve()
    items, left_out = [], []
    for folder, dirs, files in os.walk(root):  # followlinks=False: linked folders show up but are not entered
        base = Path(folder)
        dirs.sort()
        for name in sorted(files + [d for d in dirs if (base / d).is_symlink()]):
            path = base / name
            relative = path.relative_to(root).as_posix()
            reason = _left_out_reason(path, real_root)
            if reason:
                left_out.append(f"{relative}: {reason}")
            elif PARTIAL_MARK not in name:
                items.append(_Item(relative, path.stat().st_size))
    return sorted(items, key=lambda item: item.relative), left_out


def _left_out_reason(path: Path, real_root: Path) -> str | None:
    """Why `path` is not copied from a folder, or None for a regular file (or a link to one) inside it."""
    if not path.is_symlink():
        return None if path.is_file() else "not a regular file"
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target, or a loop of links
        return f"symbolic link to {os.readlink(path)}, which does not exist"
    if not target.is_relative_to(real_root):
        return f"symbolic link to {target}, outside the folder"
    if not target.is_file():
        return f"symbolic link to a folder or special file ({os.readlink(path)}), not followed"
    return None


def _copy_local(source: Path, target: Path) -> None:
    """Copy a local file beside its target, then rename, so no half-written file takes its name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = partial_path(target)
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _join(base: str, relative: str) -> str:
    """`relative` inside `base`, for a URL or a local path."""
    if is_remote(base):
        return str(parse_url(base).child(relative))
    return str(Path(base) / relative)


def _basename(src: str) -> str:
    """The last name in a path or URL."""
    return src.rstrip("/").rsplit("/", 1)[-1]


CACHE_ENV = "MODELARTS_MNIST_CACHE"


def default_cache_dir() -> Path:
    """Where remote folders are staged: $MODELARTS_MNIST_CACHE, else ~/.cache/modelarts-mnist/obs."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "modelarts-mnist" / "obs"


def stage_in(url: str | os.PathLike, cache_dir: str | os.PathLike | None = None, *,
             storage: Storage | None = None) -> Path:
    """Mirror a remote folder into `cache_dir/<bucket>/<key>` (unchanged files reused); local paths pass through."""
    if not is_remote(url):
        return Path(url)
    parsed = parse_folder_url(str(url))
    cache = Path(cache_dir or default_cache_dir())
    local = cache / parsed.bucket / parsed.key.strip("/")  # both checked: the mirror stays inside the cache
    with _mirror_lock(cache, parsed.bucket):  # a second command staging it waits, then finds it up to date
        report = (storage or Storage()).copy(str(url), str(local), recursive=True)
        _prune(local, set(report.copied) | set(report.skipped))
    return local


@contextlib.contextmanager
def _mirror_lock(cache: Path, bucket: str) -> Iterator[None]:
    """Hold the cache's lock for `bucket` (an flock: the kernel releases it when a process dies)."""
    folder = cache / ".locks"  # bucket names never start with '.', so this is no bucket's mirror
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / f"{bucket}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _prune(root: Path, keep: set[str]) -> None:
    """Delete cached files the remote folder no longer has (and partials of killed runs), so the mirror is exact."""
    for path in sorted(root.rglob("*"), reverse=True):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and relative not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def stage_out(local_dir: str | os.PathLike, url: str, *, storage: Storage | None = None) -> CopyReport | None:
    """Upload a local folder to `url`, each file verified; for a local `url`, copy the folder there."""
    if not is_remote(url) and Path(url).resolve() == Path(local_dir).resolve():
        return None
    return (storage or Storage()).copy(str(local_dir), url, recursive=True)
