"""Step 1 of the tutorial: build the `dataset-mnist` folder from a source, whole or not at all.

A source is `embedded` (the default), a local folder or `.zip`, an `http(s)://` address of a zip
or of a folder of the four `.gz` files, or `download` (the public mirrors, tried in order).
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from . import idx
from .errors import DataError
from .files import Writer, partial_path, recover_folder, replace_folder, sweep_partials, write_bytes
from .progress import progress

logger = logging.getLogger(__name__)

# Public copies of Yann LeCun's four .gz files, most reliable first (torchvision and TF use these).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
DOWNLOAD_SOURCES = ("download", "mirrors")
LARGE = 1 << 20  # files above 1 MB get a progress bar
CHUNK = 1 << 18
TIMEOUT = 30.0


@dataclass(frozen=True)
class Canonical:
    """What a full MNIST folder holds: images per split and SHA-256 of each decompressed file."""

    counts: dict[str, int]
    sha256: dict[str, str]


# Digests of the decompressed files: re-gzipped copies differ in their .gz bytes, not in these.
MNIST = Canonical(
    counts={"train": 60_000, "t10k": 10_000},
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
)


@dataclass
class Found:
    """One of the four IDX files as a source holds it: decompressed bytes, and its .gz if it had one."""

    name: str
    raw: bytes
    origin: str
    gz: bytes | None = field(default=None, repr=False)


def prepare_dataset(
    out: str | Path,
    source: str = "embedded",
    force: bool = False,
    verify: bool = True,
    *,
    mirrors: Iterable[str] = MIRRORS,
    canonical: Canonical = MNIST,
    write: Writer = write_bytes,
) -> Path:
    """Write the eight files of the tutorial's dataset folder to `out`, atomically; return `out`.

    The new folder is built beside `out` and swapped in with one rename, so `out` is at every
    instant the old folder or the new one, even when the run is killed; leftovers of killed runs
    are put back or swept first. `write` writes each file (tests inject a full disk).

    Raises DataError if `out` is a non-empty folder and `force` is not set, if the source is
    missing or malformed, if the disk is full or not writable (`out` is then left as it was),
    or (with `verify`) if a full-size set does not match `canonical`.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):  # the staging folder is named after the target
        out = out.resolve()
    recover_folder(out)
    sweep_partials(out.parent, out.name)
    check_target(out, force)
    staging = partial_path(out)
    try:
        with writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            # Not mkdtemp: its 0700 mode would stick to the published folder; mkdir honours the umask.
            staging.mkdir()
        found = read_source(source, staging / ".download", mirrors=mirrors)
        counts = check_found(found)
        if verify:
            verify_canonical({n: f.raw for n, f in found.items()}, counts, canonical, source)
        shutil.rmtree(staging / ".download", ignore_errors=True)
        with writing(out):
            write_files(found, staging, write=write)
            replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote %s: %d train / %d test images from %s", out, counts["train"], counts["t10k"], source)
    return out


@contextlib.contextmanager
def writing(out: Path) -> Iterator[None]:
    """Turn a failed write (full disk, read-only, a file in the way) into a DataError naming `out`."""
    try:
        yield
    except OSError as exc:
        state = "it was left as it was" if out.exists() else "nothing was written"
        raise DataError(f"cannot write {out}: {exc.strerror or exc} ({exc.filename or out}); {state}") from exc


def check_target(out: Path, force: bool) -> None:
    """Refuse a target that is a file, or a non-empty folder unless `force` is set."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"{out}: folder exists and is not empty (use --force to replace it)")


def read_source(source: str, workdir: Path, *, mirrors: Iterable[str] = MIRRORS) -> dict[str, Found]:
    """The four IDX files of `source`, keyed by raw file name; downloads go into `workdir`."""
    if source == "embedded":
        return read_embedded()
    if source in DOWNLOAD_SOURCES:
        return read_mirrors(tuple(mirrors), workdir)
    if source.startswith(("http://", "https://")):
        return read_url(source, workdir)
    path = Path(source).expanduser()
    if path.is_dir():
        return read_folder(path)
    if path.is_file():
        return read_zip(path)
    raise DataError(
        f"{source}: no such folder or file (a source is 'embedded', 'download', a folder, "
        "a .zip, or an http(s):// address)"
    )


def read_embedded() -> dict[str, Found]:
    """The embedded 4,000 / 1,000 split as IDX bytes."""
    from .embedded import load_embedded

    train_x, train_y, test_x, test_y = load_embedded()
    arrays = [train_x, train_y, test_x, test_y]
    return {
        name: Found(name, idx.encode(array), "embedded")
        for name, array in zip(idx.all_file_names(), arrays)
    }


def read_folder(folder: Path, label: str | None = None) -> dict[str, Found]:
    """The four files in `folder` or, when not there, in its shallowest sub-folder holding them."""
    label = label or str(folder)
    paths = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    chosen = choose_directory(paths, label)
    return collect(chosen, lambda rel: (folder / rel).read_bytes(), label)


def read_zip(path: Path, label: str | None = None) -> dict[str, Found]:
    """The four files inside a zip such as the tutorial's Mnist-Data-Set.zip, at any depth."""
    label = label or str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
            chosen = choose_directory(names, label)
            return collect(chosen, archive.read, label)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{label}: not a readable zip file ({exc})") from None


def read_url(url: str, workdir: Path) -> dict[str, Found]:
    """Download a zip, or the four .gz files of a folder address, then read them."""
    workdir.mkdir(parents=True, exist_ok=True)
    if url.split("?")[0].lower().endswith(".zip"):
        return read_zip(download(url, workdir / "source.zip"), url)
    base = url if url.endswith("/") else url + "/"
    for name in idx.all_file_names():
        download(base + f"{name}.gz", workdir / f"{name}.gz")
    return read_folder(workdir, base)


def read_mirrors(mirrors: tuple[str, ...], workdir: Path) -> dict[str, Found]:
    """Try each mirror in order; the first that yields four good files wins."""
    failures = []
    for mirror in mirrors:
        try:
            return read_url(mirror, workdir / f"mirror{len(failures)}")
        except DataError as exc:
            logger.warning("mirror %s failed: %s", mirror, exc)
            failures.append(f"{mirror}: {exc}")
    raise DataError("every MNIST mirror failed:\n  " + "\n  ".join(failures or ["(no mirrors given)"]))


def download(url: str, dest: Path, *, timeout: float = TIMEOUT) -> Path:
    """Stream `url` into `dest` (a bar on a terminal for large files); DataError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as sink:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with progress(total, f"download {dest.name}", enabled=None if (total or 0) > LARGE else False) as bar:
                while chunk := response.read(CHUNK):
                    sink.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if total is not None and received != total:
                raise DataError(f"{url}: download cut short at {received} of {total} bytes")
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise DataError(f"{url}: download failed: {getattr(exc, 'reason', exc)}") from None
    return dest


def choose_directory(paths: Iterable[str], where: str) -> dict[str, list[str]]:
    """The shallowest directory holding all four files (raw or .gz): raw name -> its paths there."""
    wanted = set(idx.all_file_names())
    dirs: dict[str, dict[str, list[str]]] = {}
    for path in paths:
        parent, _, base = path.rpartition("/")
        stem = base[:-3] if base.endswith(".gz") else base
        if stem in wanted and "__MACOSX" not in parent.split("/"):
            dirs.setdefault(parent, {}).setdefault(stem, []).append(path)
    complete = sorted((depth(d), d) for d, files in dirs.items() if len(files) == len(wanted))
    if not complete:
        best = max(dirs.values(), key=len, default={})
        missing = ", ".join(sorted(wanted - set(best)))
        raise DataError(f"{where}: no folder holds all four MNIST files (raw or .gz); missing {missing}")
    if len(complete) > 1 and complete[0][0] == complete[1][0]:
        raise DataError(
            f"{where}: several folders hold the MNIST files ({complete[0][1]}, {complete[1][1]}); "
            "point the source at one of them"
        )
    return dirs[complete[0][1]]


def depth(directory: str) -> int:
    """How deep a relative posix directory is ('' is the top)."""
    return directory.count("/") + 1 if directory else 0


def collect(chosen: dict[str, list[str]], read: Callable[[str], bytes], where: str) -> dict[str, Found]:
    """Read the chosen raw and .gz copies of each file; a raw/.gz pair must hold the same data."""
    found = {}
    for name in idx.all_file_names():
        raw = gz = None
        origin = ""
        for rel in sorted(chosen[name]):  # the raw name sorts before its .gz twin
            origin = f"{where.rstrip('/')}/{rel}"
            data = read(rel)
            if data[:2] == idx.GZIP_MAGIC:
                gz, data = data, decompress(data, origin)
            if raw is not None and data != raw:
                raise DataError(f"{origin}: content differs from its twin without .gz")
            raw = data
        found[name] = Found(name, raw, origin, gz)
    return found


def decompress(data: bytes, name: str) -> bytes:
    """Gunzip `data` (all members); a bar on a terminal for large files; DataError naming `name`."""
    out = io.BytesIO()
    enabled = None if len(data) > LARGE else False
    with progress(len(data), f"decompress {Path(name).name}", enabled=enabled) as bar:
        rest = data
        try:
            while rest:
                inflater = zlib.decompressobj(wbits=31)
                for start in range(0, len(rest), CHUNK):
                    out.write(inflater.decompress(rest[start:start + CHUNK]))
                    bar.update(min(CHUNK, len(rest) - start))
                    if inflater.eof:
                        break
                if not inflater.eof:
                    raise DataError(f"{name}: truncated gzip data")
                rest = inflater.unused_data
        except zlib.error as exc:
            raise DataError(f"{name}: corrupt gzip data ({exc})") from None
    return out.getvalue()


def compress(data: bytes, name: str) -> bytes:
    """Gzip `data` reproducibly (mtime 0); a bar on a terminal for large files."""
    out = io.BytesIO()
    enabled = None if len(data) > LARGE else False
    with progress(len(data), f"compress {name}", enabled=enabled) as bar:
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as sink:
            for start in range(0, len(data), CHUNK):
                sink.write(data[start:start + CHUNK])
                bar.update(min(CHUNK, len(data) - start))
    return out.getvalue()


def check_found(found: dict[str, Found]) -> dict[str, int]:
    """Parse and check the four files; return the image count of each split."""
    counts = {}
    for split in idx.SPLITS:
        images_name, labels_name = idx.file_names(split)
        images_file, labels_file = found[images_name], found[labels_name]
        images = idx.check_images(idx.parse(images_file.raw, images_file.origin), images_file.origin)
        labels = idx.check_labels(idx.parse(labels_file.raw, labels_file.origin), labels_file.origin)
        idx.check_counts(images, labels, images_file.origin, labels_file.origin)
        counts[split] = len(images)
    return counts


def is_full_size(counts: dict[str, int], canonical: Canonical = MNIST) -> bool:
    """Whether the split sizes are those of the canonical set."""
    return all(counts.get(split) == n for split, n in canonical.counts.items())


def digest_mismatches(raw: dict[str, bytes], canonical: Canonical = MNIST) -> list[str]:
    """One line per decompressed file whose SHA-256 differs from the canonical digest."""
    problems = []
    for name, expected in canonical.sha256.items():
        actual = hashlib.sha256(raw[name]).hexdigest()
        if actual != expected:
            problems.append(f"{name}: SHA-256 {actual} differs from the published {expected}")
    return problems


def verify_canonical(
    raw: dict[str, bytes], counts: dict[str, int], canonical: Canonical = MNIST, where: str = "the source"
) -> None:
    """For a full-size set, DataError unless every decompressed file has the published digest."""
    if not is_full_size(counts, canonical):
        logger.info("not the full set (%s); checksums not checked", counts)
        return
    problems = digest_mismatches(raw, canonical)
    if problems:
        raise DataError(
            f"{where}: not canonical MNIST (use --no-verify to accept it anyway):\n  " + "\n  ".join(problems)
        )


def write_files(found: dict[str, Found], folder: Path, *, write: Writer = write_bytes) -> None:
    """Write each file raw and as .gz (the source's own .gz bytes when it had them)."""
    for name, item in found.items():
        write(folder / name, item.raw)
        gz = item.gz if item.gz is not None else compress(item.raw, f"{name}.gz")
        write(folder / f"{name}.gz", gz)
