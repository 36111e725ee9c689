"""`package`, `check` and `predict`: build a model package, check it, and ask it for digits."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .params import FolderOrUrl, HttpUrl

DEFAULT_URL = "http://127.0.0.1:8080/"


@click.command()
@click.argument("version_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def package(version_dir: Path) -> None:
    """Copy customize_service.py and config.json (with measured metrics) into VERSION_DIR/model/."""
    from ..package import build_package

    model_dir = build_package(version_dir)
    click.echo(f"Packaged {model_dir}")
    click.echo(f"Check it with: modelarts-mnist check {model_dir}")


@click.command()
@click.argument("model_dir", type=FolderOrUrl(exists=False))
@click.option("--smoke/--no-smoke", default=True, show_default=True,
              help="Also load the model and send it the requests config.json declares.")
@click.option("--runtime", "runtime_name", metavar="NAME",
              help="The ModelArts engine to check against (default: config.json's runtime; see `runtime list`).")
@click.option("--live/--no-live", default=None,
              help="Also run the package inside that engine's environment  [default: when it is installed]")
def check(model_dir: Path, smoke: bool, runtime_name: str | None, live: bool | None) -> None:
    """Check MODEL_DIR (a folder or an obs:// URL) as ModelArts' import and deployment would; exit 1 on any problem.

    With an engine (config.json's `runtime`, or --runtime), also: every op and attr of the SavedModel
    against that TensorFlow, the code's syntax against that Python, the declared dependencies
    against what installs there, and (live) the package loaded and queried inside the engine's
    environment, its answers compared with the local ones.
    """
    from ..package import check_package

    problems = check_package(model_dir, smoke=smoke, runtime=runtime_name, live=live,
                             echo=lambda line: click.echo(line, err=True))
    for problem in problems:
        click.echo(str(problem))
    if problems:
        click.echo(f"{len(problems)} problem(s) in {model_dir}", err=True)
        raise click.exceptions.Exit(1)
    click.echo(f"OK: {model_dir} is a valid ModelArts model package")


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", type=HttpUrl(), help=f"Service to POST to (default {DEFAULT_URL}).")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Run this model folder in-process instead of calling a service.")
@click.option("--token", envvar="MODELARTS_TOKEN", help="X-Auth-Token header value (env MODELARTS_TOKEN).")
@click.option("--json", "raw", is_flag=True, help="Print each raw JSON answer (one line per image).")
def predict(images: tuple[Path, ...], url: str | None, model_dir: Path | None, token: str | None, raw: bool) -> None:
    """Predict the digit in each IMAGE with a running service, or in-process with --model."""
    if url and model_dir:
        raise click.UsageError("give --url or --model, not both")
    from ..errors import MnistSdkError
    from ..predictor import describe, in_process, over_http

    ask = in_process(model_dir) if model_dir else over_http(url or DEFAULT_URL, token)
    failures = 0
    for path in images:
        try:
            answer = ask(path)
        except MnistSdkError as exc:
            click.echo(f"{path}: error: {exc.message}", err=True)
            failures += 1
            continue
        click.echo(json.dumps(answer, ensure_ascii=False) if raw else f"{path}: {describe(answer)}")
    if failures:
        raise click.exceptions.Exit(1)
