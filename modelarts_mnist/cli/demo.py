"""`modelarts-mnist demo`: the whole tutorial on the embedded data, in one command."""
from __future__ import annotations

from pathlib import Path

import click

from .params import OutputFolder


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--workdir", default="modelarts-demo", show_default=True, type=OutputFolder(),
              help="Work folder, laid out like the tutorial's bucket (test-modelarts/...).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the service listens on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Service port (a free one is picked when it is taken).")
@click.option("--keep-serving", is_flag=True, help="Leave the service running until Ctrl+C.")
@click.argument("train_args", nargs=-1, type=click.UNPROCESSED)
def demo(workdir: Path, host: str, port: int, keep_serving: bool, train_args: tuple[str, ...]) -> None:
    """Prepare data, train V000N, package, serve and predict held-out digits over HTTP.

    Extra arguments go to the training boot file, e.g. `demo --max_steps 200`.
    """
    from ..demo import run_demo

    run_demo(workdir, host=host, port=port, train_args=train_args, keep_serving=keep_serving,
             say=click.echo)
