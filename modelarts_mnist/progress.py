"""Progress bars that show on a terminal and stay quiet otherwise."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import IO, Iterator

import click


class _Silent:
    """A stand-in bar for when output is not a terminal."""

    def update(self, n_steps: int) -> None:
        """Ignore progress."""


def is_terminal(stream: IO[str] | None = None) -> bool:
    """Whether progress should be drawn on `stream` (stderr by default)."""
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


@contextmanager
def progress(total: int | None, label: str, *, enabled: bool | None = None) -> Iterator:
    """Yield an object with update(n); draws a bar on stderr only when it is a terminal."""
    show = is_terminal() if enabled is None else enabled
    if not show:
        yield _Silent()
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar
