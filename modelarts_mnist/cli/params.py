"""Click parameter types for the CLI's paths, URLs and names: a bad value is one clear line before any work.

Each type checks what the command will need (a folder it can create and write, a file whose folder
exists, a reachable kind of URL) so a bad flag fails at once, not after TensorFlow has started.
"""
from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

import click


def writable_place(path: Path) -> str | None:
    """Why a folder cannot be created (or written) at `path`, or None when it can."""
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a folder"
    existing = path
    while not existing.exists():  # the nearest part of the path that is already there
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            return f"{existing} is a broken symbolic link"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, so no folder can be made under it"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


class OutputFolder(click.ParamType):
    """A folder to create or write into: not a file, not under a file, in a writable place."""

    name = "folder"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value).expanduser()
        problem = writable_place(path.absolute())
        if problem:
            self.fail(problem, param, ctx)
        return path


class NewFile(click.ParamType):
    """A file to write: its folder must already exist (no tree is made silently) and be writable."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value).expanduser()
        parent = path.absolute().parent
        if path.is_dir():
            self.fail(f"{path} is a folder, not a file", param, ctx)
        if not parent.is_dir():
            what = "does not exist" if not parent.exists() else "is not a folder"
            self.fail(f"{parent} {what} (create the folder first)", param, ctx)
        if not os.access(parent, os.W_OK | os.X_OK):
            self.fail(f"{parent} is not writable", param, ctx)
        return path


class FolderOrUrl(click.ParamType):
    """A local folder, or an obs:// / s3:// folder; with `stage`, mirrored into the local cache first.

    Without `stage` the URL is only checked (bucket name, key that stays inside a folder) and
    handed on as text, for commands whose core stages it (train).
    """

    name = "folder_or_url"

    def __init__(self, *, exists: bool = True, stage: bool = True):
        self.local = click.Path(exists=exists, file_okay=False, path_type=Path)
        self.stage = stage

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from ..storage import is_remote, parse_folder_url, stage_in
        from .context import make_storage

        if isinstance(value, str) and is_remote(value):
            parse_folder_url(value)  # a StorageError, one line, for a bad bucket or key: before any work
            if not self.stage:
                return value
            click.echo(f"downloading {value} ...", err=True)
            return stage_in(value, storage=make_storage())
        return self.local.convert(value, param, ctx)


class OutputFolderOrUrl(OutputFolder):
    """Where output goes: an obs:// / s3:// folder (checked, not touched) or a local OutputFolder."""

    name = "folder_or_url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from ..storage import is_remote, parse_folder_url

        if isinstance(value, str) and is_remote(value):
            parse_folder_url(value)
            return value
        return super().convert(value, param, ctx)


class HttpUrl(click.ParamType):
    """An http:// or https:// address with a host (a service to call)."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            parts = urllib.parse.urlsplit(text)
            parts.port  # noqa: B018 - read to raise ValueError for a port that is not a number or out of range
        except ValueError as exc:
            self.fail(f"{text!r} is not a valid URL ({exc})", param, ctx)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            self.fail(f"{text!r} is not an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080/",
                      param, ctx)
        if any(ord(c) < 33 for c in text):
            self.fail(f"{text!r} holds spaces or control characters", param, ctx)
        return text


class BucketName(click.ParamType):
    """An OBS bucket name (the rule lives in storage.check_bucket_name)."""

    name = "bucket"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from ..errors import StorageError
        from ..storage import check_bucket_name

        try:
            return check_bucket_name(str(value))
        except StorageError as exc:
            self.fail(exc.message, param, ctx)
