"""ModelArts' TensorFlow engines as data, and local virtual environments that reproduce them.

Each `Runtime` names a ModelArts engine (a training-job engine or a model-import `runtime` of
config.json), its Python and TensorFlow versions, and the CPU packages from PyPI that reproduce it
here. `install()` builds one environment per runtime from an interpreter of the right Python
version, once: it is built in a hidden folder and renamed into place, so a half-built one is never
used. The local `model_service` runtime is copied into it (and refreshed when it changes), and a
model package's config.json `dependencies` are installed on top, in a layer of their own, as
ModelArts installs them at deployment.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import EngineError
from .package_rules import declared_requirements

logger = logging.getLogger(__name__)

RUNTIMES_ENV = "MODELARTS_MNIST_RUNTIMES"  # where the environments live
PIP_FOR_OLD_PYTHON = "pip<22"  # the newest pip for Python 3.6
STAMP = "modelarts-runtime.json"
SHIM_PACKAGES = ("model_service", "log", "metric")  # what the local runtime adds to every engine, as ModelArts' image does
PIP_TIMEOUT = 1800


@dataclass(frozen=True)
class Runtime:
    """One ModelArts engine and the packages that reproduce it on a CPU here."""

    name: str
    python: str            # "3.7"
    tensorflow: str        # the TensorFlow version installed here
    packages: tuple[str, ...]
    uses: str              # "training", "inference" or "training, inference"
    aliases: tuple[str, ...] = ()
    note: str = ""
    build_python: str = ""  # the Python used here when PyPI has no TensorFlow wheel for ModelArts' one

    @property
    def local_python(self) -> str:
        """The Python version the environment here is built with."""
        return self.build_python or self.python

    @property
    def tf_major(self) -> int:
        """1 or 2."""
        return int(self.tensorflow.split(".")[0])


# Sources: modelarts-runtimes.md section 1 (engine names) and 2 (pins measured to install and import here).
# ModelArts' images carry TensorFlow 1.13.1; PyPI's 1.13.2 is its bug-fix release, the oldest that installs cleanly.
RUNTIMES = (
    Runtime("tensorflow_2.1.0-cuda_10.1-py_3.7-ubuntu_18.04-x86_64", "3.7", "2.1.0",
            ("tensorflow-cpu==2.1.0", "numpy==1.18.5", "protobuf==3.20.3"), "training, inference",
            aliases=("tf2.1-python3.7", "tensorflow_2.1.0-cuda_10.1-py_3.7"),
            note="the training engine of the tutorial; also a model runtime"),
    Runtime("tf1.13-python3.6-cpu", "3.6", "1.13.2",
            ("tensorflow==1.13.2", "numpy==1.16.6", "protobuf==3.19.6"), "inference",
            aliases=("tf1.13-python3.6-gpu", "python3.6"),
            note="TF 1.x sessions; protobuf 3.19 is the last release for Python 3.6"),
    Runtime("tf1.13-python3.7-cpu", "3.7", "1.13.2",
            ("tensorflow==1.13.2", "numpy==1.16.6", "protobuf==3.20.3"), "inference",
            aliases=("tf1.13-python3.7-gpu", "tf1.13-python3.7-gpu-async", "tf1.13-python3.7-aiflow-gpu"),
            note="TF 1.x sessions"),
    Runtime("tensorflow_2.6.0-cuda_11.2-py_3.7-ubuntu_18.04-x86_64", "3.7", "2.6.5",
            ("tensorflow-cpu==2.6.5", "keras==2.6.0", "numpy==1.19.5", "protobuf==3.19.6"), "inference",
            aliases=("tf2.6-python3.7",),
            note="2.6.5 is the 2.6 bug-fix release with CPU wheels"),
    Runtime("tensorflow_1.15.5-cuda_11.4-py_3.8-ubuntu_20.04-x86_64", "3.8", "1.15.5",
            ("tensorflow==1.15.5", "numpy==1.18.5", "protobuf==3.20.3"), "inference",
            aliases=("tf1.15-python3.8",), build_python="3.7",
            note="PyPI has TF 1.15.5 for Python 3.6/3.7 only: built on 3.7 here; syntax is checked for 3.8"),
)


def find_runtime(name: str) -> Runtime:
    """The runtime with this name or alias (EngineError listing the known names otherwise)."""
    for runtime in RUNTIMES:
        if name == runtime.name or name in runtime.aliases:
            return runtime
    known = ", ".join(r.name for r in RUNTIMES)
    raise EngineError(f"unknown runtime {name!r}; known runtimes: {known} (see `modelarts-mnist runtime list`)")


def runtimes_root() -> Path:
    """$MODELARTS_MNIST_RUNTIMES, else ~/.cache/modelarts-mnist/runtimes."""
    if os.environ.get(RUNTIMES_ENV):
        return Path(os.environ[RUNTIMES_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "modelarts-mnist" / "runtimes"


# ---------------------------------------------------------------- interpreters


def interpreter_version(python: str | os.PathLike) -> str:
    """'3.7' for an interpreter path ('' if it does not run)."""
    try:
        out = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def interpreter_candidates(version: str) -> Iterator[str]:
    """Places a Python `version` may be: PATH, then pyenv's versions folder."""
    on_path = shutil.which(f"python{version}")
    if on_path:
        yield on_path
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    for found in sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin", "python")),
                        key=lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parent.parent.name)],
                        reverse=True):
        yield found


def find_interpreter(version: str, explicit: str | os.PathLike | None = None) -> str:
    """A Python `version` interpreter: `explicit` (checked), else PATH, else pyenv; EngineError if none."""
    if explicit:
        got = interpreter_version(explicit)
        if got != version:
            raise EngineError(f"{explicit}: is Python {got or '(does not run)'}, this runtime needs Python {version}")
        return str(explicit)
    for candidate in interpreter_candidates(version):
        if interpreter_version(candidate) == version:
            return candidate
    raise EngineError(f"no Python {version} interpreter found (looked for python{version} on PATH and under "
                      f"pyenv's versions/); install one, e.g. `pyenv install {version}`, or pass --python PATH")


# ---------------------------------------------------------------- environments


@dataclass(frozen=True)
class Environment:
    """A built runtime environment."""

    runtime: Runtime
    path: Path

    @property
    def python(self) -> Path:
        """Its interpreter."""
        return self.path / "bin" / "python"


def env_path(runtime: Runtime) -> Path:
    """Where the environment of `runtime` lives once built."""
    return runtimes_root() / runtime.name


def installed(runtime: Runtime) -> Environment | None:
    """The built environment of `runtime`, or None (a half-built or outdated one never counts)."""
    path = env_path(runtime)
    try:
        record = json.loads((path / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if record.get("requirements") != list(runtime.packages) or not (path / "bin" / "python").exists():
        return None  # built from other pins: rebuilt on the next install
    return Environment(runtime, path)


def install(runtime: Runtime, *, python: str | os.PathLike | None = None,
            echo: Callable[[str], None] | None = None) -> Environment:
    """The environment of `runtime`, built once (whole or not at all); the model_service shim kept current."""
    done = installed(runtime)
    if done is None:
        with build_lock(runtime.name):
            done = installed(runtime) or build(runtime, find_interpreter(runtime.local_python, python), echo)
    refresh_shim(done)
    return done


@contextlib.contextmanager
def build_lock(name: str) -> Iterator[None]:
    """An exclusive lock per environment name, so two processes never build the same one."""
    root = runtimes_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(runtime: Runtime, interpreter: str, echo: Callable[[str], None] | None,
          requirements: Sequence[str] | None = None, base: Environment | None = None,
          target: Path | None = None) -> Environment:
    """Create the venv in a hidden folder, install, stamp, rename into place (EngineError on failure)."""
    target = target or env_path(runtime)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    sweep_partials(target)
    say = echo or logger.info
    wanted = list(requirements if requirements is not None else runtime.packages)
    steps = [(f"creating a Python {runtime.local_python} virtual environment",
              lambda: run_step([interpreter, "-m", "venv", str(partial)], []))]
    if version_tuple(runtime.local_python) < (3, 7):  # its stock pip 18 does not skip releases needing a newer Python
        steps.append((f"installing {PIP_FOR_OLD_PYTHON}",
                      lambda: run_step(pip(partial, "install", "--upgrade", PIP_FOR_OLD_PYTHON), [])))
    if wanted:
        steps.append((f"installing {' '.join(wanted)}",  # an old wheel beats building a newer sdist for an hour
                      lambda: run_step(pip(partial, "install", "--prefer-binary", *wanted), wanted)))
    if base is None:
        steps.append(("adding the model_service runtime", lambda: copy_shim(Environment(runtime, partial))))
    else:
        steps.insert(1, ("layering over " + base.path.name, lambda: link_base(partial, base)))
    started = time.monotonic()
    try:
        for number, (label, action) in enumerate(steps, 1):
            say(f"[{number}/{len(steps)}] {target.name}: {label}")
            action()
        stamp(Environment(runtime, partial), interpreter, wanted, time.monotonic() - started)
        replace_folder(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    say(f"{target.name}: ready in {time.monotonic() - started:.0f} s ({target})")
    return Environment(runtime, target)


def replace_folder(new: Path, target: Path) -> None:
    """Put `new` at `target`; an outdated folder there is moved aside first, then removed."""
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


def version_tuple(version: str) -> tuple[int, ...]:
    """(3, 7) for '3.7'."""
    return tuple(int(part) for part in version.split("."))


def sweep_partials(target: Path) -> None:
    """Remove half-built folders left by killed builds of `target` (we hold its lock)."""
    for leftover in [*target.parent.glob(f".{target.name}.partial-*"), *target.parent.glob(f".{target.name}.old-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def pip(env: Path, *args: str) -> list[str]:
    """A pip command run by the environment's own interpreter."""
    return [str(env / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--no-input", *args]


def run_step(command: list[str], wanted: Sequence[str]) -> None:
    """Run one build step; EngineError with pip's reason when it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                              env={**os.environ, "PIP_PROGRESS_BAR": "off"})
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"{' '.join(command[:4])}: no result after {PIP_TIMEOUT} s") from exc
    if done.returncode != 0:
        raise EngineError(f"could not install {' '.join(wanted)}: {pip_reason(done.stderr + done.stdout)}")


def pip_reason(output: str) -> str:
    """The lines of pip's output that say why it failed (its ERROR lines), else the last line."""
    telling = ("ERROR", "requires Python", "Could not find a version", "No matching distribution")
    errors = [line.strip() for line in output.splitlines() if any(word in line for word in telling)]
    lines = [line.strip() for line in output.splitlines() if line.strip() and "is ignored" not in line]
    return " ".join(errors[:3]) or (lines[-1] if lines else "no output")


def site_packages(env: Path) -> Path:
    """The environment's site-packages folder."""
    found = sorted(env.glob("lib/python*/site-packages"))
    if not found:
        raise EngineError(f"{env}: no site-packages folder")
    return found[0]


def shim_source() -> Path:
    """The folder holding the local model_service runtime package."""
    import model_service

    return Path(model_service.__file__).resolve().parent.parent


def shim_digest() -> str:
    """A digest of the runtime shim's source files."""
    digest = hashlib.sha256()
    root = shim_source()
    for package in SHIM_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def copy_shim(environment: Environment) -> None:
    """Copy model_service into the environment (each package replaced whole, never half)."""
    site = site_packages(environment.path)
    for package in SHIM_PACKAGES:
        fresh = site / f".{package}.new-{os.getpid()}"
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(shim_source() / package, fresh, ignore=shutil.ignore_patterns("__pycache__"))
        old = site / f".{package}.old-{os.getpid()}"
        if (site / package).exists():
            os.replace(site / package, old)
        os.replace(fresh, site / package)
        shutil.rmtree(old, ignore_errors=True)
    (site / ".model_service.digest").write_text(shim_digest())


def refresh_shim(environment: Environment) -> None:
    """Recopy model_service when the SDK's copy changed since the environment got it."""
    marker = site_packages(environment.path) / ".model_service.digest"
    if not marker.is_file() or marker.read_text() != shim_digest():
        with build_lock(environment.path.name):
            copy_shim(environment)


def stamp(environment: Environment, interpreter: str, requirements: Sequence[str], seconds: float) -> None:
    """Record what the environment holds; its presence marks the build complete."""
    versions = probe(environment.python)
    record = {"runtime": environment.runtime.name, "interpreter": interpreter, "requirements": list(requirements),
              "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(seconds, 1), **versions}
    (environment.path / STAMP).write_text(json.dumps(record, indent=2) + "\n")


PROBE = """
import json, sys
found = {"python": "%d.%d.%d" % sys.version_info[:3]}
for name, module in (("tensorflow", "tensorflow"), ("numpy", "numpy"), ("pillow", "PIL")):
    try:
        found[name] = __import__(module).__version__
    except Exception:
        found[name] = None
print(json.dumps(found))
"""


def probe(python: str | os.PathLike) -> dict[str, Any]:
    """The Python, TensorFlow, numpy and Pillow versions an interpreter imports (None when missing)."""
    done = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise EngineError(f"{python}: cannot import its packages: {pip_reason(done.stderr)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def describe(environment: Environment) -> dict[str, Any]:
    """What the environment's stamp recorded."""
    return json.loads((environment.path / STAMP).read_text())


# ---------------------------------------------------------------- config.json dependencies


def requirements_of(config: dict[str, Any]) -> list[str]:
    """pip requirement strings for config.json's `dependencies` (EXACT ==, ATLEAST >=, ATMOST <=)."""
    return [requirement for _, requirement in declared_requirements(config)]


def link_base(layer: Path, base: Environment) -> None:
    """Make the base environment's packages visible in `layer`, after its own (so pip can upgrade them)."""
    site = site_packages(layer)
    (site / "_modelarts_base.pth").write_text(str(site_packages(base.path)) + "\n")


def with_dependencies(environment: Environment, requirements: Sequence[str], *,
                      echo: Callable[[str], None] | None = None) -> Environment:
    """The environment with `requirements` installed on top (a cached layer per set); itself when none."""
    if not requirements:
        return environment
    key = hashlib.sha256(json.dumps(sorted(requirements)).encode()).hexdigest()[:12]
    target = environment.path.with_name(f"{environment.path.name}+deps-{key}")
    if not (target / STAMP).is_file():
        with build_lock(target.name):
            if not (target / STAMP).is_file():
                base_python = describe(environment)["interpreter"]
                try:
                    build(environment.runtime, base_python, echo, requirements, base=environment, target=target)
                except EngineError as exc:
                    raise EngineError(f"config.json dependencies on {environment.runtime.name} "
                                      f"(Python {environment.runtime.python}): {exc}") from exc
    return Environment(environment.runtime, target)


def package_environment(name: str, model_dir: str | os.PathLike, *,
                        echo: Callable[[str], None] | None = None) -> Environment:
    """Runtime `name`'s environment with the package's config.json dependencies installed, as at deployment."""
    environment = install(find_runtime(name), echo=echo)
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineError(f"{path}: cannot read the package's dependencies ({exc})") from exc
    return with_dependencies(environment, requirements_of(config if isinstance(config, dict) else {}), echo=echo)


def list_rows() -> list[dict[str, Any]]:
    """One row per runtime for `runtime list`: name, versions, uses and where it is installed."""
    rows = []
    for runtime in RUNTIMES:
        environment = installed(runtime)
        rows.append({"name": runtime.name, "python": runtime.python, "tensorflow": runtime.tensorflow,
                     "uses": runtime.uses, "aliases": list(runtime.aliases), "note": runtime.note,
                     "installed": str(environment.path) if environment else None})
    return rows


def current_python() -> str:
    """This interpreter (for tests and the default local engine)."""
    return sys.executable
