"""`modelarts-mnist obs cp|ls|rm|sync` and `upload`: OBS/S3 from the command line.

Connection settings come from the flags below or the environment (MODELARTS_OBS_ENDPOINT, _REGION,
_ACCESS_KEY, _SECRET_KEY, _ADDRESSING, or the standard AWS_* names). The secret key is read from the
environment only, so it never appears in shell history or the process list.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import click

ADDRESSING = click.Choice(["virtual", "path", "auto"])


class FolderOrUrl(click.ParamType):
    """A local folder, or an obs:// / s3:// folder mirrored into the local cache first (settings from the env)."""

    name = "folder_or_url"

    def __init__(self, *, exists: bool = True):
        self.local = click.Path(exists=exists, file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        from ..storage import is_remote, stage_in

        if isinstance(value, str) and is_remote(value):
            click.echo(f"downloading {value} ...", err=True)
            return stage_in(value)
        return self.local.convert(value, param, ctx)


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
    ]
    for option in reversed(options):
        command = option(command)
    return command


def make_storage(endpoint: str | None, region: str | None, access_key: str | None, addressing: str | None,
                 **storage_args: Any):
    """A Storage for these flags over the environment's settings."""
    from ..objectstore import ObjectStore
    from ..obs import from_env
    from ..storage import Storage

    settings = from_env(endpoint=endpoint, region=region, access_key=access_key, addressing=addressing)
    return Storage(ObjectStore(settings=settings), **storage_args)


def with_storage(command: Callable) -> Callable:
    """Turn the connection flags into a `storage` argument (with --workers when the command has it)."""
    @functools.wraps(command)
    def wrapper(endpoint, region, access_key, addressing, **kwargs):
        workers = kwargs.pop("workers", None)
        extra = {"workers": workers} if workers else {}
        return command(storage=make_storage(endpoint, region, access_key, addressing, **extra), **kwargs)
    return connection_options(wrapper)


def workers_option(command: Callable) -> Callable:
    """The --workers/-j flag of commands that copy."""
    return click.option("--workers", "-j", type=click.IntRange(1, 64), default=8, show_default=True,
                        help="Files transferred in parallel.")(command)


def report_copy(report) -> None:
    """One summary line for a copy."""
    click.echo(f"{len(report.copied)} copied ({report.bytes_copied / 1e6:.1f} MB), "
               f"{len(report.skipped)} skipped as identical")


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
@with_storage
def rm(storage, url: str, recursive: bool) -> None:
    """Remove the object URL, or with -r everything under it."""
    click.echo(f"deleted {storage.remove(url, recursive=recursive)} object(s)")


@click.command()
@click.option("--bucket", required=True, help="Target bucket, e.g. test-modelarts.")
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
