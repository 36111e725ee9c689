"""`modelarts-mnist serve`: run a model package as ModelArts' online service, locally."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from .params import FolderOrUrl

TOKEN_ENV = "MODELARTS_MNIST_AUTH_TOKEN"


@click.command()
@click.argument("model_dir", type=FolderOrUrl())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (ModelArts uses 8080; 0 picks a free one).")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="gunicorn worker processes  [default: 1 per core]")
@click.option("--threaded", is_flag=True,
              help="One threaded process instead of gunicorn: slower, but answers /health 503 while loading.")
@click.option("--auth-token", envvar=TOKEN_ENV, default=None, show_envvar=True,
              help="Require this X-Auth-Token on POST requests (prefer the environment variable).")
@click.option("--time-budget", type=click.FloatRange(0.1, 3600), default=None, metavar="SECONDS",
              help="Longest a request may run in the model before it is answered 504 (ModelArts.4503) "
                   "and its worker replaced  [default: 10]")
@click.option("--runtime", "runtime_name", metavar="NAME",
              help="Run the model side inside this ModelArts engine's environment (see `runtime list`); "
                   "same HTTP API. Default: this process's TensorFlow, the fast path.")
def serve(model_dir: Path, host: str, port: int, workers: int | None, threaded: bool,
          auth_token: str | None, time_budget: float | None, runtime_name: str | None) -> None:
    """Serve MODEL_DIR (a folder or an obs:// URL) as an online service: POST / predicts, GET /health, page at /ui/."""
    if threaded and workers:
        raise click.UsageError("--threaded and --workers exclude each other")
    from ..server.app import ServeConfig
    from ..server.runner import default_workers, run

    engine_python = None
    if runtime_name:
        from ..runtimes import package_environment

        environment = package_environment(runtime_name, model_dir, echo=lambda line: click.echo(line, err=True))
        runtime_name, engine_python = environment.runtime.name, environment.python
    config = ServeConfig(model_dir=model_dir, auth_token=auth_token or None, runtime=runtime_name,
                         engine_python=engine_python)
    if time_budget is not None:
        config = replace(config, time_budget_seconds=time_budget)
    run(config, host=host, port=port, workers=None if threaded else workers or default_workers(),
        on_listening=lambda url: announce(url, model_dir, bool(auth_token)))


def announce(url: str, model_dir: Path, token_required: bool) -> None:
    """Say where the service listens (never the token itself)."""
    click.echo(f"Serving {model_dir} at {url}  (POST / to predict, GET /health, page at {url}/ui/)")
    if token_required:
        click.echo("X-Auth-Token required on POST /")
    click.echo("Stop with Ctrl+C (SIGTERM lets running requests finish).")
