"""`modelarts-mnist train` and `versions`: step 2 of the tutorial, the training job, run locally."""
from __future__ import annotations

import signal
from pathlib import Path

import click

from .context import make_storage
from .params import FolderOrUrl, OutputFolderOrUrl


def raise_on_sigterm(signum, frame):
    """SIGTERM stops the job like Ctrl-C does: the child is stopped and no version is left."""
    raise KeyboardInterrupt


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--data_url", "--data-url", "data_url", required=True, type=FolderOrUrl(stage=False),
              help="The dataset folder (four IDX files, raw or .gz): a local path, obs:// or s3://.")
@click.option("--train_url", "--train-url", "train_url", required=True, type=OutputFolderOrUrl(),
              help="The output root (versions V0001, V0002, ... go under it) or a V000N folder.")
@click.option("--boot-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Another boot file instead of codes/train_mnist_tf.py.")
@click.option("--quiet", "-q", is_flag=True, help="Do not echo the training log (it is still saved).")
@click.option("--runtime", "runtime_name", metavar="NAME",
              help="Run the boot file on this ModelArts engine's environment (see `runtime list`), "
                   "e.g. tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64; built on first use.")
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED)
def train(data_url, train_url, boot_file: Path | None, quiet: bool, runtime_name: str | None,
          extra_args: tuple[str, ...]) -> None:
    """Run the boot file as a ModelArts training job; flags it does not know (e.g. --max_steps=500) pass through.

    The log is streamed here and saved as train.log in the version folder, beside job.json (status)
    and the SavedModel in model/. Prints the version produced.
    """
    from ..jobs import run_staged_job
    from ..storage import is_remote

    storage = make_storage() if is_remote(str(data_url)) or is_remote(str(train_url)) else None
    interpreter = engine_python(runtime_name) if runtime_name else None
    previous = signal.signal(signal.SIGTERM, raise_on_sigterm)
    try:
        result = run_staged_job(data_url, train_url, extra_args, storage=storage, say=click.echo,
                                boot_file=boot_file, echo=None if quiet else click.echo, interpreter=interpreter)
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(f"version: {result.name} ({result})")


def engine_python(name: str) -> Path:
    """The interpreter of a ModelArts engine's environment, built first if needed."""
    from ..runtimes import find_runtime, install

    runtime = find_runtime(name)
    if "training" not in runtime.uses:
        click.echo(f"note: {runtime.name} is a model runtime, not a training engine on ModelArts", err=True)
    return install(runtime, echo=lambda line: click.echo(line, err=True)).python


def format_metrics(metrics: dict) -> str:
    """'accuracy 0.9910  f1 0.9909' style, or '-' when there are none."""
    shown = [f"{key} {metrics[key]:.4f}" for key in ("accuracy", "precision", "recall", "f1") if key in metrics]
    return "  ".join(shown) or "-"


@click.command()
@click.argument("root", metavar="DIR", type=click.Path(exists=True, file_okay=False, path_type=Path))
def versions(root: Path) -> None:
    """List the versions under a train_url DIR: status, exit code and test metrics."""
    from ..jobs import list_versions

    rows = list_versions(root)
    if not rows:
        click.echo(f"no versions under {root}")
        return
    for info in rows:
        code = f" (exit {info.exit_code})" if info.exit_code else ""
        location = "" if info.path.name == info.name else f"  [{info.path.name}]"
        click.echo(f"{info.name}  {info.status + code:<16} {format_metrics(info.metrics)}{location}")
