"""What the CLI builds its core objects from; tests hand in fakes through click's `obj` (CliRunner.invoke(obj=...))."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import click


@dataclass(frozen=True)
class Wiring:
    """The CLI's dependencies: how an object-store client is made from connection settings (None: boto3)."""

    make_client: Callable[[Any], Any] | None = None


def current_wiring() -> Wiring:
    """The Wiring the running command was invoked with, or the default one."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj if isinstance(obj, Wiring) else Wiring()


def make_storage(connection: dict[str, Any] | None = None, **storage_args: Any):
    """A Storage for these connection flags (None: not given) over the environment's settings."""
    from ..objectstore import ObjectStore
    from ..obs import from_env
    from ..storage import Storage

    settings = from_env(**(connection or {}))
    wiring = current_wiring()
    client = wiring.make_client(settings) if wiring.make_client is not None else None
    return Storage(ObjectStore(client, settings=settings), **storage_args)
