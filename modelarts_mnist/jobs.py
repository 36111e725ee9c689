"""The local training-job runner: reserve a version V000N, run the boot file as ModelArts does, keep log and status.

A job works in a hidden folder `.V000N.tmp-<pid>` beside the versions, flock-ed for as long as the job runs
(the kernel drops the lock even on kill -9, so a dead job's folder is recognised and swept). The boot file is
told to write to `<that folder>/output/V000N`; when it succeeds, its files, `train.log` and `job.json` are
renamed into place as `V000N` in one step. A failed job is kept as `.failed-V000N-<time>` (not a version).
As on ModelArts, the platform numbers versions and the boot file writes where it is told: this module is
the one place that holds the version pattern and numbering.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .artifacts import BOOT_FILE, artifact_path
from .errors import DataError, TrainingError
from .files import Writer, describe_os_error, write_atomic, write_bytes

if TYPE_CHECKING:
    from .storage import Storage

log = logging.getLogger(__name__)

VERSION_PATTERN = re.compile(r"^V\d{4}$")
TEMP_PATTERN = re.compile(r"^\.(V\d{4})\.tmp-\d+$")
FAILED_PATTERN = re.compile(r"^\.failed-(V\d{4})-")
JOB_FILE = "job.json"
LOG_FILE = "train.log"
PR_SET_PDEATHSIG = 1


@dataclass
class VersionInfo:
    """One row of `modelarts-mnist versions`: a version, a running job or a failed one."""

    name: str
    path: Path
    status: str
    exit_code: int | None = None
    metrics: dict = field(default_factory=dict)


def format_version(number: int) -> str:
    """'V0001' for 1."""
    return f"V{number:04d}"


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on a folder while allocating or publishing versions."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def try_lock(folder: Path) -> int | None:
    """An fd holding a non-blocking flock on `folder`, or None when a live process holds it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_live(folder: Path) -> bool:
    """True when a running job holds the folder's lock."""
    fd = try_lock(folder)
    if fd is None:
        return True
    os.close(fd)
    return False


def live_reservations(root: Path, *, sweep: bool = False) -> set[str]:
    """Version names reserved by running jobs; with `sweep`, dead jobs' temp folders are removed."""
    names = set()
    for entry in root.iterdir() if root.is_dir() else ():
        match = TEMP_PATTERN.match(entry.name)
        if not match or not entry.is_dir():
            continue
        if is_live(entry):
            names.add(match.group(1))
        elif sweep:
            shutil.rmtree(entry, ignore_errors=True)
    return names


def next_version_name(root: str | os.PathLike) -> str:
    """The name the next job under `root` gets: one past the highest version or running job."""
    root = Path(root)
    taken = live_reservations(root)
    if root.is_dir():
        taken |= {p.name for p in root.iterdir() if VERSION_PATTERN.match(p.name)}
    return format_version(max((int(name[1:]) for name in taken), default=0) + 1)


def split_train_url(train_url: str | os.PathLike) -> tuple[Path, str | None]:
    """(root, explicit version name or None) for a --train_url."""
    path = Path(train_url)
    return (path.parent, path.name) if VERSION_PATTERN.match(path.name) else (path, None)


@dataclass
class Reservation:
    """A version number held by this process: its final path and the locked temp folder."""

    target: Path
    temp: Path
    fd: int

    @property
    def name(self) -> str:
        return self.target.name


def reserve(train_url: str | os.PathLike) -> Reservation:
    """Reserve the next version (or the one named by train_url) atomically under the root's lock."""
    root, explicit = split_train_url(train_url)
    root.mkdir(parents=True, exist_ok=True)
    with locked(root):
        live = live_reservations(root, sweep=True)
        name = explicit or next_version_name(root)
        target = root / name
        if name in live or (target.exists() and any(target.iterdir())):
            raise TrainingError(f"{target}: this version already exists or is being trained; "
                                "pass the output root as --train_url to get the next free version")
        temp = root / f".{name}.tmp-{os.getpid()}"
        temp.mkdir()
        fd = try_lock(temp)
    return Reservation(target, temp, fd)


def publish(reservation: Reservation) -> Path:
    """Rename the finished temp folder to its version name in one step; release the reservation."""
    with locked(reservation.target.parent):
        if reservation.target.is_dir():
            reservation.target.rmdir()  # an empty placeholder; a full folder was refused in reserve()
        os.replace(reservation.temp, reservation.target)
    os.close(reservation.fd)
    return reservation.target


def write_json(path: Path, payload: dict, *, write: Writer = write_bytes) -> None:
    """Write JSON beside the target, then rename (readers never see half a file, a full disk leaves none)."""
    write_atomic(path, (json.dumps(payload, indent=2) + "\n").encode("utf-8"), write=write)


def die_with_parent() -> None:
    """In the child: get SIGTERM when the runner dies, so no orphan keeps training (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def boot_command(boot_file: Path, data_url: str, output: Path, extra_args: Sequence[str], *,
                 interpreter: str | os.PathLike | None = None) -> list[str]:
    """The command line ModelArts would run: python <boot file> --data_url=... --train_url=... <extra>.

    `interpreter` is the engine's python (default: this one).
    """
    return [str(interpreter or sys.executable), "-u", str(boot_file), f"--data_url={data_url}",
            f"--train_url={output}", *extra_args]


def stream(process: subprocess.Popen, log_path: Path, echo: Callable[[str], None] | None) -> None:
    """Copy the child's output to train.log (and to `echo`) line by line while it runs."""
    with open(log_path, "a", encoding="utf-8") as log_file:
        for line in process.stdout:
            log_file.write(line)
            log_file.flush()
            if echo is not None:
                echo(line.rstrip("\n"))


def run_boot_file(command: list[str], log_path: Path, echo: Callable[[str], None] | None) -> int:
    """Run the boot file to completion; on Ctrl-C or SIGTERM, stop it first and re-raise."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace", env=env, preexec_fn=die_with_parent)
    try:
        stream(process, log_path, echo)
        return process.wait()
    except BaseException:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise


def now() -> str:
    """Local time, ISO 8601 with offset."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def settle(reservation: Reservation, job: dict, exit_code: int | None, output: Path, *,
           write: Writer = write_bytes) -> Path:
    """Publish a succeeded job as its version; park a failed one as .failed-V000N-<time>; return where.

    A version that cannot be written whole (a full disk) is parked as failed, never published half.
    """
    succeeded = exit_code == 0 and (output / "model").is_dir()
    job.update(status="succeeded" if succeeded else "failed", exit_code=exit_code, finished=now())
    if succeeded:
        try:
            for item in output.iterdir():
                os.replace(item, reservation.temp / item.name)
            shutil.rmtree(reservation.temp / "output")
            write_json(reservation.temp / JOB_FILE, job, write=write)
            return publish(reservation)
        except OSError as exc:
            job.update(status="failed", error=f"cannot write the version: {describe_os_error(exc)}")
    with contextlib.suppress(OSError):  # a full disk must not keep a failed job from being parked
        write_json(reservation.temp / JOB_FILE, job, write=write)
    parked = reservation.temp.with_name(f".failed-{reservation.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    os.replace(reservation.temp, parked)
    os.close(reservation.fd)
    return parked


def run_job(data_url: str | os.PathLike, train_url: str | os.PathLike, extra_args: Sequence[str] = (), *,
            boot_file: str | os.PathLike | None = None, echo: Callable[[str], None] | None = None,
            interpreter: str | os.PathLike | None = None, write: Writer = write_bytes) -> Path:
    """Run the boot file as a training job on local paths; returns the version folder it produced.

    The boot file runs under `interpreter` (an engine's python; default: this one) and is handed the
    version folder itself as --train_url. `write` writes job.json (tests inject a full disk).

    Raises:
        DataError: data_url is not a folder.
        TrainingError: the boot file failed (the log stays in the .failed-V000N-* folder it names).
    """
    if not Path(data_url).is_dir():
        raise DataError(f"{data_url}: dataset folder not found")
    boot = Path(boot_file) if boot_file else artifact_path(BOOT_FILE)
    reservation = reserve(train_url)
    output = reservation.temp / "output" / reservation.name
    command = boot_command(boot, str(Path(data_url).resolve()), output, extra_args, interpreter=interpreter)
    job = {"version": reservation.name, "status": "running", "exit_code": None, "started": now(),
           "data_url": str(data_url), "train_url": str(train_url), "command": command, "pid": os.getpid()}
    log.info("job %s: %s", reservation.name, " ".join(command))
    try:
        write_json(reservation.temp / JOB_FILE, job, write=write)
        exit_code = run_boot_file(command, reservation.temp / LOG_FILE, echo)
    except BaseException as exc:
        job["interrupted"] = not isinstance(exc, OSError)
        where = settle(reservation, job, None, output, write=write)
        if isinstance(exc, OSError):  # train.log or job.json could not be written: the disk, not the job
            raise TrainingError(f"training job {reservation.name} stopped: cannot write {describe_os_error(exc)}; "
                                f"no version was made (kept in {where})") from exc
        raise
    where = settle(reservation, job, exit_code, output, write=write)
    if job["status"] != "succeeded":
        reason = job.get("error") or f"exit code {exit_code}"
        raise TrainingError(f"training job {reservation.name} failed ({reason}); log: {where / LOG_FILE}")
    return where


def read_json(path: Path) -> dict:
    """A JSON file's content, or {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def describe(entry: Path) -> VersionInfo | None:
    """The VersionInfo of one entry under a train_url root, or None for anything else."""
    job = read_json(entry / JOB_FILE)
    metrics = read_json(entry / "metrics.json")
    if VERSION_PATTERN.match(entry.name):
        status = job.get("status") or ("succeeded" if (entry / "model").is_dir() else "incomplete")
        return VersionInfo(entry.name, entry, status, job.get("exit_code"), metrics)
    temp, failed = TEMP_PATTERN.match(entry.name), FAILED_PATTERN.match(entry.name)
    if temp and is_live(entry):
        return VersionInfo(temp.group(1), entry, "running")
    if failed:
        return VersionInfo(failed.group(1), entry, "failed", job.get("exit_code"), metrics)
    return None


def list_versions(root: str | os.PathLike) -> list[VersionInfo]:
    """Versions, running jobs and failed jobs under a train_url root, by version name."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = (describe(entry) for entry in root.iterdir() if entry.is_dir())
    return sorted((info for info in found if info is not None), key=lambda info: (info.name, info.path.name))


# --- jobs whose data or output is on OBS -----------------------------------------------------------

def remote_version_name(train_url: str, storage: "Storage") -> str:
    """The version a remote train_url names, or one past the highest V000N already under it in the bucket.

    Object stores have no atomic mkdir, so two jobs started at once on one remote root may pick the
    same number; local roots are safe (see reserve).
    """
    name = train_url.rstrip("/").rsplit("/", 1)[-1]
    if VERSION_PATTERN.match(name):
        return name
    prefixes, _ = storage.list(train_url.rstrip("/") + "/")  # full keys, e.g. 'mnist-model/V0001/'
    names = [prefix.rstrip("/").rsplit("/", 1)[-1] for prefix in prefixes]
    return format_version(max((int(n[1:]) for n in names if VERSION_PATTERN.match(n)), default=0) + 1)


@dataclass(frozen=True)
class JobResult:
    """A finished job: its version name, the local folder it was built in, and its remote URL when uploaded."""

    name: str
    path: Path
    url: str | None = None

    def __str__(self) -> str:
        return self.url or str(self.path)


def run_staged_job(data_url: str | os.PathLike, train_url: str | os.PathLike, extra_args: Sequence[str] = (), *,
                   storage: "Storage | None" = None, say: Callable[[str], None] = log.info,
                   **job_args) -> JobResult:
    """Run a job whose data_url and train_url may be obs:// URLs, as ModelArts does.

    Remote data is downloaded into a temporary folder, a remote train_url gets its next version
    number from the bucket and the finished version is uploaded there, each file verified; local
    paths are used as they are. `job_args` go to run_job.
    """
    from .storage import Storage, is_remote, parse_folder_url, stage_in

    data_url, train_url = str(data_url), str(train_url)
    for url in (data_url, train_url):
        if is_remote(url):
            parse_folder_url(url)  # a bad bucket or an escaping key fails before any work
    if not (is_remote(data_url) or is_remote(train_url)):
        version = run_job(data_url, train_url, extra_args, **job_args)
        return JobResult(version.name, version)
    storage = storage or Storage()
    with tempfile.TemporaryDirectory(prefix="modelarts-mnist-stage-") as cache:
        local_data, local_train = data_url, train_url
        if is_remote(data_url):
            say(f"downloading {data_url} ...")
            local_data = str(stage_in(data_url, Path(cache) / "data", storage=storage))
        if is_remote(train_url):
            local_train = str(Path(cache) / "output" / remote_version_name(train_url, storage))
        version = run_job(local_data, local_train, extra_args, **job_args)
        if not is_remote(train_url):
            return JobResult(version.name, version)
        root = train_url.rstrip("/")
        remote = root if root.endswith("/" + version.name) else f"{root}/{version.name}"
        upload_version(version, remote, storage)  # before the staging folder goes away
    say(f"uploaded {version.name} to {remote}")
    return JobResult(version.name, version, remote)


def upload_version(version: Path, remote: str, storage: "Storage") -> None:
    """Upload a finished version, job.json last, so a remote version without it is known to be unfinished.

    An upload that fails or is interrupted (Ctrl-C, SIGTERM) removes what it sent of a new version,
    so no half version stays in the bucket; a `kill -9` leaves one without job.json.
    """
    folders, objects = storage.list(remote + "/")
    fresh = not folders and not objects  # only a version this upload creates is removed on failure
    job = version / JOB_FILE
    held = version.parent / f".{version.name}-{JOB_FILE}"
    os.replace(job, held)
    try:
        storage.copy(str(version), remote, recursive=True)
        storage.copy(str(held), f"{remote}/{JOB_FILE}")
    except BaseException:
        if fresh:
            with contextlib.suppress(Exception):  # the first error is the one to report
                storage.remove(remote, recursive=True)
                log.warning("removed the half-uploaded version %s", remote)
        raise
    finally:
        os.replace(held, job)
