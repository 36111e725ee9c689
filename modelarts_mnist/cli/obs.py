"""`modelarts-mnist obs cp|ls|rm|sync` and `upload`: OBS/S3 from the command line.

Connection settings come from the flags below or the environment (MODELARTS_OBS_ENDPOINT, _REGION,
_ACCESS_KEY, _SECRET_KEY, _ADDRESSING, _CONNECT_TIMEOUT, _READ_TIMEOUT, _MAX_ATTEMPTS, or the standard
AWS_* names). The secret key is read from the environment only, so it never appears in shell history
or the process list.
"""
from __future__ import annotations

import contextlib
import functools
import signal
import threading
from pathlib import Path
from typing import Callable

import click

from .context import make_storage
from .params import BucketName

ADDRESSING = click.Choice(["virtual", "path", "auto"])


def connection_options(command: Callable) -> Callable:
    """The OBS endpoint flags shared by every command here (the secret comes from the environment)."""
    options = [
        click.option("--endpoint", help="OBS/S3 endpoint URL, e.g. https://obs.cn-north-1.myhuaweicloud.com "
                                        "(env MODELARTS_OBS_ENDPOINT)."),
        click.option("--region", help="Signing region (env MODELARTS_OBS_REGION; default from the endpoint)."),
        click.option("--access-key", help="Access key id (env MODELARTS_OBS_ACCESS_KEY or AWS_ACCESS_KEY_ID); "
                                          "the secret is read from MODELARTS_OBS_SECRET_KEY only."),
        click.option("--addressing", type=ADDRESSING, help="Bucket in the host name (virtual, OBS's default) or "
                                                           "in the path (env MODELARTS_OBS_ADDRESSING)."),
        click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True),
                     help="Seconds to wait for a connection (env MODELARTS_OBS_CONNECT_TIMEOUT; default 3)."),
        click.option("--read-timeout", type=click.FloatRange(min=0, min_open=True),
                     help="Seconds to wait for the next bytes of an answer (env MODELARTS_OBS_READ_TIMEOUT; "
                          "default 4)."),
        click.option("--max-attempts", type=click.IntRange(min=1),
                     help="Tries per request, the first included (env MODELARTS_OBS_MAX_ATTEMPTS; default 3)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


CONNECTION_FLAGS = ("endpoint", "region", "access_key", "addressing", "connect_timeout", "read_timeout",
                    "max_attempts")


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Let SIGTERM stop a transfer as Ctrl-C does, so open multipart uploads are aborted, not left behind."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def with_storage(command: Callable) -> Callable:
    """Turn the connection flags into a `storage` argument (with --workers when the command has it)."""
    @functools.wraps(command)
    def wrapper(**kwargs):
        connection = {name: kwargs.pop(name) for name in CONNECTION_FLAGS}
        workers = kwargs.pop("workers", None)
        extra = {"workers": workers} if workers else {}
        with sigterm_as_interrupt():
            return command(storage=make_storage(connection, **extra), **kwargs)
    return connection_options(wrapper)


def workers_option(command: Callable) -> Callable:
    """The --workers/-j flag of commands that copy."""
    return click.option("--workers", "-j", type=click.IntRange(1, 64), default=8, show_default=True,
                        help="Files transferred in parallel.")(command)


def report_copy(report) -> None:
    """One line per path left out (on stderr), then one summary line for a copy."""
    for entry in report.left_out:
        click.echo(f"not copied: {entry}", err=True)
    left_out = f", {len(report.left_out)} not copied" if report.left_out else ""
    click.echo(f"{len(report.copied)} copied ({report.bytes_copied / 1e6:.1f} MB), "
               f"{len(report.skipped)} skipped as identical{left_out}")


@click.group()
def obs() -> None:
    """Copy, list, sync and remove files on OBS (obs://bucket/key), S3 (s3://...) or local paths."""


@obs.command()
@click.argument("src")
@click.argument("dst")
@click.option("--recursive", "-r", is_flag=True, help="Copy a folder's contents.")
@workers_option
@with_storage
def cp(storage, src: str, dst: str, recursive: bool) -> None:
    """Copy SRC to DST (either may be local or obs://); identical files are skipped, every file verified."""
    report_copy(storage.copy(src, dst, recursive=recursive))


@obs.command()
@click.argument("src")
@click.argument("dst")
@workers_option
@with_storage
def sync(storage, src: str, dst: str) -> None:
    """Make folder DST hold every file of folder SRC, copying only what differs (nothing is deleted)."""
    report_copy(storage.sync(src, dst))


@obs.command(name="ls")
@click.argument("url", default="obs://")
@with_storage
def ls(storage, url: str) -> None:
    """List one level under URL (buckets for obs://)."""
    folders, objects = storage.list(url)
    for folder in folders:
        click.echo(f"{'PRE':>12}  {folder}")
    for item in objects:
        click.echo(f"{item.size:>12}  {item.key}")


@obs.command()
@click.argument("url")
@click.option("--recursive", "-r", is_flag=True, help="Remove every object under the folder URL.")
@click.option("--force", is_flag=True, help="Allow -r on a whole bucket (obs://bucket/).")
@with_storage
def rm(storage, url: str, recursive: bool, force: bool) -> None:
    """Remove the object URL, or with -r everything under it (a whole bucket also needs --force)."""
    click.echo(f"deleted {storage.remove(url, recursive=recursive, force=force)} object(s)")


@click.command()
@click.option("--bucket", required=True, type=BucketName(), help="Target bucket, e.g. test-modelarts.")
@click.option("--version", "version", help="Model version to upload, e.g. V0002 (default: the newest).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("modelarts-demo"),
              show_default=True, help="Work folder laid out as test-modelarts/{dataset-mnist,train-mnist,mnist-model}.")
@click.option("--smoke/--no-smoke", default=True, show_default=True,
              help="Let the package check also load the model and predict one digit.")
@workers_option
@with_storage
def upload(storage, bucket: str, version: str | None, workdir: Path, smoke: bool) -> None:
    """Check the model, then lay out the tutorial's bucket: dataset, boot file and mnist-model/V000N/model."""
    from ..bucket import upload_tutorial

    upload_tutorial(workdir, bucket, version, storage=storage, smoke=smoke, echo=click.echo)
    click.echo(f"uploaded {workdir} to obs://{bucket}/")
