"""The `modelarts-mnist` command: a thin click edge over the SDK's core."""
from __future__ import annotations

import importlib
import logging

import click

from .. import __version__
from ..errors import MnistSdkError
from ..files import describe_os_error

# Subcommands import lazily, so `data inspect` never pays for `import tensorflow`.
COMMANDS = {
    "data": "modelarts_mnist.cli.data:data",
    "train": "modelarts_mnist.cli.train:train",
    "versions": "modelarts_mnist.cli.train:versions",
    "package": "modelarts_mnist.cli.model:package",
    "check": "modelarts_mnist.cli.model:check",
    "predict": "modelarts_mnist.cli.model:predict",
    "serve": "modelarts_mnist.cli.serve:serve",
    "obs": "modelarts_mnist.cli.obs:obs",
    "upload": "modelarts_mnist.cli.obs:upload",
    "demo": "modelarts_mnist.cli.demo:demo",
    "runtime": "modelarts_mnist.cli.runtime:runtime",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when used, and whose SDK errors exit cleanly."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)

    def invoke(self, ctx: click.Context):
        """Run the subcommand; every error a user can cause ends as one line (the one place that says how)."""
        try:
            return super().invoke(ctx)
        except MnistSdkError as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # a full disk, a read-only folder, a file where a folder should be
            raise click.ClickException(describe_os_error(exc)) from exc
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:  # a bad flag: the one line that names it, without the usage block
            exc.ctx = None
            raise


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="modelarts-mnist")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def main(verbose: int) -> None:
    """Huawei Cloud ModelArts' MNIST tutorial, run locally: data, train, package, serve, predict."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
