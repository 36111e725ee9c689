"""`modelarts-mnist runtime`: ModelArts' TensorFlow engines, and the local environments that reproduce them."""
from __future__ import annotations

import json

import click


@click.group()
def runtime() -> None:
    """ModelArts' TensorFlow engines: list them, install one locally."""


@runtime.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def list_runtimes(as_json: bool) -> None:
    """Show each engine: Python, TensorFlow, what it runs, and whether it is installed here."""
    from ..runtimes import list_rows

    rows = list_rows()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(row["name"]) for row in rows)
    click.echo(f"{'runtime':<{width}}  python  tensorflow  {'used for':<19}  installed")
    for row in rows:
        click.echo(f"{row['name']:<{width}}  {row['python']:<6}  {row['tensorflow']:<10}  {row['uses']:<19}  "
                   f"{row['installed'] or 'no'}")
        if row["aliases"]:
            click.echo(f"{'':<{width}}  also: {', '.join(row['aliases'])}")


@runtime.command()
@click.argument("name")
@click.option("--python", "interpreter", metavar="PATH",
              help="Interpreter of the runtime's Python version (default: found on PATH or under pyenv).")
def install(name: str, interpreter: str | None) -> None:
    """Build the local environment of runtime NAME (once; later calls reuse it)."""
    from ..runtimes import describe, find_runtime, install as install_runtime

    environment = install_runtime(find_runtime(name), python=interpreter, echo=click.echo)
    versions = describe(environment)
    click.echo(f"{environment.runtime.name}: Python {versions['python']}, TensorFlow {versions['tensorflow']}, "
               f"numpy {versions['numpy']} at {environment.path}")
