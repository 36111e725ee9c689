"""Static checks of a model package against one ModelArts engine: ops, Python syntax, installable dependencies.

Each check returns Problems naming the file and line, or the op, and runs without the engine itself:
- `check_saved_model_ops`: every op and attr of the SavedModel (graphs and function libraries) against the op
  registry of the engine's TensorFlow, shipped as data in data/op_registry/ (made by scripts/dump_op_registry.py);
- `check_python_syntax`: the user code against the grammar and `__future__` features of the engine's Python;
- `check_dependencies_installable`: config.json's pip packages against the releases pip finds for that Python
  (the one check that needs the network; its verdicts are cached).
"""
from __future__ import annotations

import __future__
import ast
import gzip
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from .errors import EngineError
from .package_rules import Problem, declared_requirements, problem

logger = logging.getLogger(__name__)

__all__ = ["OpRegistry", "check_against_engine", "check_dependencies_installable", "check_python_syntax", "check_saved_model_ops",
           "load_op_registry", "registry_versions"]

REGISTRY_DIR = Path(__file__).parent / "data" / "op_registry"
CACHE_ENV = "MODELARTS_MNIST_CACHE"
VERDICTS_FILE = "pip-verdicts.json"
VERDICT_TTL = 7 * 24 * 3600  # a new release can make a requirement installable; look again after a week
# ModelArts' oldest images are Ubuntu 18.04 (glibc 2.27) on x86_64: a wheel that installs there installs on all.
ENGINE_PLATFORMS = ("manylinux2014_x86_64", *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 28)),
                    "linux_x86_64")
PIP_TIMEOUT = 120
PIP_WORKERS = 4
BUILTIN_GENERICS = {"list", "dict", "tuple", "set", "frozenset", "type"}
UNREGISTERED, UNKNOWN_ATTR, DEFAULT_ATTR, MISSING_ATTR = range(4)  # kinds of op finding, in report order


def check_against_engine(model_dir: str | os.PathLike, config: Any, *, python_version: str, tf_version: str,
                         cache_dir: str | os.PathLike | None = None) -> list[Problem]:
    """The three static checks of a model folder against one engine (ops, code syntax, dependencies)."""
    return [*check_saved_model_ops(model_dir, tf_version), *check_python_syntax(model_dir, python_version),
            *check_dependencies_installable(config, python_version, cache_dir=cache_dir)]


# ---------------------------------------------------------------- op registries


@dataclass(frozen=True)
class OpRegistry:
    """The ops one TensorFlow registers: {op: {attr: default value as protobuf text, None if required}}."""

    tensorflow: str
    ops: dict[str, dict[str, str | None]]
    ignores_unknown_attrs: bool  # newer TensorFlows log an attr their op lacks and go on; older ones refuse
    header: dict[str, Any]


def version_key(version: str) -> tuple[int, ...]:
    """'2.6.5' -> (2, 6, 5), for sorting."""
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def registry_versions() -> list[str]:
    """TensorFlow versions whose op registry the SDK ships, oldest first."""
    names = (p.name[len("tf-"):-len(".json.gz")] for p in REGISTRY_DIR.glob("tf-*.json.gz"))
    return sorted(names, key=version_key)


@lru_cache(maxsize=None)
def load_op_registry(tf_version: str) -> OpRegistry:
    """The registry of `tf_version`, or of the same major.minor (patch releases add no ops); EngineError if none."""
    shipped = registry_versions()
    same_minor = [v for v in shipped if v.split(".")[:2] == tf_version.split(".")[:2]]
    if tf_version in shipped:
        chosen = tf_version
    elif same_minor:
        chosen = same_minor[-1]
    else:
        raise EngineError(f"no op registry for TensorFlow {tf_version} (shipped: {', '.join(shipped)}); "
                          "make one with scripts/dump_op_registry.py under that TensorFlow")
    header = json.loads(gzip.decompress((REGISTRY_DIR / f"tf-{chosen}.json.gz").read_bytes()))
    ops = header.pop("ops")
    return OpRegistry(header["tensorflow"], ops, bool(header.get("ignores_unknown_attrs")), header)


# ---------------------------------------------------------------- SavedModel ops


@dataclass
class MetaGraphScope:
    """What a node is read against: its meta graph's library function names and the producer's attr defaults."""

    functions: set[str]
    producer_defaults: dict[str, dict[str, Any]]


def check_saved_model_ops(model_dir: str | os.PathLike, tf_version: str) -> list[Problem]:
    """Ops of saved_model.pb the engine does not register, and attrs its ops lack or require; one line per kind."""
    registry = load_op_registry(tf_version)
    path = Path(model_dir) / "saved_model.pb"
    if not path.is_file():
        return [Problem("saved_model.pb", "required file missing")]
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(path.read_bytes())
    except Exception as exc:  # a damaged protobuf can fail in many ways; all mean the same
        return [Problem("saved_model.pb", f"not a readable SavedModel ({type(exc).__name__}: {exc})")]
    findings: dict[tuple[int, str, str], list] = {}
    for where, node, scope in saved_model_nodes(saved):
        if node.op not in scope.functions:  # a call of a library function, not an op
            for kind, attr in node_findings(node, registry, scope.producer_defaults.get(node.op, {})):
                entry = findings.setdefault((kind, node.op, attr), [0, f"{node.name!r} in {where}"])
                entry[0] += 1
    return [finding_problem(key, count, first, registry.tensorflow)
            for key, (count, first) in sorted(findings.items())]


def saved_model_nodes(saved: Any) -> Iterator[tuple[str, Any, MetaGraphScope]]:
    """(where, NodeDef, scope) for every node of every meta graph's graph and library functions."""
    for index, meta in enumerate(saved.meta_graphs):
        suffix = f" of meta graph {index}" if len(saved.meta_graphs) > 1 else ""
        library = meta.graph_def.library.function
        producer = {op.name: {a.name: a.default_value for a in op.attr if a.HasField("default_value")}
                    for op in meta.meta_info_def.stripped_op_list.op}
        scope = MetaGraphScope({function.signature.name for function in library}, producer)
        for node in meta.graph_def.node:
            yield f"the graph{suffix}", node, scope
        # The library is flat: functions called from functions (while bodies, restore functions) are all here.
        for function in library:
            for node in function.node_def:
                yield f"function {function.signature.name}{suffix}", node, scope


def node_findings(node: Any, registry: OpRegistry, producer_defaults: dict[str, Any]) -> Iterator[tuple[int, str]]:
    """(kind, attr name or '') of each way one NodeDef does not fit the registry."""
    attrs = registry.ops.get(node.op)
    if attrs is None:
        yield UNREGISTERED, ""
        return
    if not registry.ignores_unknown_attrs:
        for name, value in node.attr.items():
            if not name.startswith("_") and name not in attrs:  # underscore attrs are internal; loaders skip them
                yield (DEFAULT_ATTR if producer_defaults.get(name) == value else UNKNOWN_ATTR), name
    for name, default in attrs.items():
        if default is None and name not in node.attr:
            yield MISSING_ATTR, name


def finding_problem(key: tuple[int, str, str], count: int, first: str, tensorflow: str) -> Problem:
    """One Problem for all nodes sharing a finding."""
    kind, op, attr = key
    nodes = f"node {first}" if count == 1 else f"{count} nodes, first {first}"
    if kind == UNREGISTERED:
        message = f"op {op!r} ({nodes}) is not registered in TensorFlow {tensorflow}"
    elif kind == MISSING_ATTR:
        message = (f"NodeDef lacks attr {attr!r}, which Op {op} of TensorFlow {tensorflow} requires "
                   f"(it has no default there) ({nodes})")
    else:
        message = f"NodeDef mentions attr {attr!r} not in Op {op} of TensorFlow {tensorflow} ({nodes})"
        if kind == DEFAULT_ATTR:
            message += ("; it holds its default, which TensorFlow's Python v1 loader drops but the C++ loader "
                        "(TF Serving) refuses: export with strip_default_attrs=True")
    return Problem("saved_model.pb", message)


# ---------------------------------------------------------------- Python syntax


def check_python_syntax(path: str | os.PathLike, python_version: str) -> list[Problem]:
    """Syntax the engine's Python rejects in a .py file, or in every .py under a folder (file:line each)."""
    path = Path(path)
    version = parse_python_version(python_version)
    files = sorted(python_files(path)) if path.is_dir() else [path]
    base = path if path.is_dir() else path.parent
    return [found for file in files for found in check_python_file(file, file.relative_to(base).as_posix(), version)]


def parse_python_version(python_version: str) -> tuple[int, int]:
    """'3.6' -> (3, 6); EngineError for what cannot be checked (Python 2)."""
    try:
        major, minor = (int(part) for part in python_version.split(".")[:2])
    except ValueError:
        raise EngineError(f"{python_version!r} is not a Python version like 3.7") from None
    if major != 3:
        raise EngineError(f"Python {python_version}: only Python 3 code can be checked")
    return major, minor


def python_files(folder: Path) -> Iterator[Path]:
    """The .py files under `folder`, outside hidden folders and caches."""
    for file in folder.rglob("*.py"):
        if not any(part.startswith(".") or part == "__pycache__" for part in file.relative_to(folder).parts):
            yield file


def check_python_file(path: Path, name: str, version: tuple[int, int]) -> list[Problem]:
    """One file: the grammar of `version`, then what that grammar check misses."""
    python = "%d.%d" % version
    source = path.read_bytes()
    try:
        # feature_version flags newer grammar (walrus, positional-only, f"{x=}", match); the host's is the cap.
        tree = ast.parse(source, filename=name, feature_version=min(version, sys.version_info[:2]))
    except SyntaxError as exc:
        return [Problem(f"{name}:{exc.lineno}", f"{exc.msg}; the runtime has Python {python}")]
    lines = source.decode("utf-8", "replace").splitlines()
    found = [*future_findings(tree), *star_return_findings(tree, lines), *decorator_findings(tree)]
    if not has_future(tree, "annotations"):
        found += annotation_findings(tree)
    return [Problem(f"{name}:{line}", f"{message}; the runtime has Python {python}")
            for line, needs, message in sorted(found) if needs > version]


def future_findings(tree: ast.Module) -> Iterator[tuple[int, tuple[int, int], str]]:
    """(line, Python needed, message) for each `from __future__ import X` newer than the runtime."""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            for alias in node.names:
                feature = getattr(__future__, alias.name, None)
                if alias.name not in __future__.all_feature_names or feature is None:
                    yield node.lineno, (99, 0), f"future feature {alias.name!r} is not defined"
                else:
                    needs = tuple(feature.optional[:2])
                    yield node.lineno, needs, f"`from __future__ import {alias.name}` needs Python %d.%d" % needs


def has_future(tree: ast.Module, feature: str) -> bool:
    """Whether the module imports `feature` from __future__."""
    return any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
               and any(alias.name == feature for alias in node.names) for node in tree.body)


def star_return_findings(tree: ast.AST, lines: list[str]) -> Iterator[tuple[int, tuple[int, int], str]]:
    """`return a, *b` / `yield a, *b` without parentheses: Python 3.8 grammar the 3.11 parser does not flag."""
    for node in ast.walk(tree):
        value = node.value if isinstance(node, (ast.Return, ast.Yield)) else None
        if isinstance(value, ast.Tuple) and any(isinstance(e, ast.Starred) for e in value.elts):
            if lines[value.lineno - 1][value.col_offset:value.col_offset + 1] != "(":
                yield node.lineno, (3, 8), "unparenthesized `*` unpacking in return/yield needs Python 3.8"


def decorator_findings(tree: ast.AST) -> Iterator[tuple[int, tuple[int, int], str]]:
    """Decorators other than a dotted name with one optional call (PEP 614, Python 3.9)."""
    for node in ast.walk(tree):
        for decorator in getattr(node, "decorator_list", []):
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if not is_dotted_name(target):
                yield decorator.lineno, (3, 9), "a decorator that is not a dotted name (PEP 614) needs Python 3.9"


def is_dotted_name(node: ast.AST) -> bool:
    """`a` or `a.b.c`."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def annotation_findings(tree: ast.AST) -> list[tuple[int, tuple[int, int], str]]:
    """Annotations evaluated at import that use `list[int]` (3.9) or `X | Y` (3.10): TypeError there."""
    found = []
    for annotation in evaluated_annotations(tree, in_function=False):
        for node in ast.walk(annotation):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) \
                    and node.value.id in BUILTIN_GENERICS:
                found.append((node.lineno, (3, 9), f"`{node.value.id}[...]` in an evaluated annotation needs "
                              "Python 3.9 (use typing, or quote it)"))
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
                found.append((node.lineno, (3, 10), "`X | Y` in an evaluated annotation needs Python 3.10 "
                              "(use typing.Union/Optional, or quote it)"))
    return found


def evaluated_annotations(node: ast.AST, in_function: bool) -> Iterator[ast.expr]:
    """Annotations Python evaluates: of def signatures, and of variables outside function bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = child.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]:
                if arg is not None and arg.annotation is not None:
                    yield arg.annotation
            if child.returns is not None:
                yield child.returns
            yield from evaluated_annotations(child, in_function=True)
        elif isinstance(child, ast.AnnAssign) and not in_function:
            yield child.annotation
        else:  # a class body runs when the class is created, even inside a function
            yield from evaluated_annotations(child, in_function and not isinstance(child, ast.ClassDef))


# ---------------------------------------------------------------- pip dependencies


class IndexUnavailable(Exception):
    """pip could not reach the package index."""


def check_dependencies_installable(config: Any, python_version: str, *,
                                   cache_dir: str | os.PathLike | None = None) -> list[Problem]:
    """config.json pip packages no release of which installs on Python `python_version` (ModelArts' Linux)."""
    python = "%d.%d" % parse_python_version(python_version)
    cache = VerdictCache(Path(cache_dir) if cache_dir else default_cache_dir())
    declared = list(declared_requirements(config))
    problems = []
    try:
        unknown = sorted({requirement for _, requirement in declared if cache.get(python, requirement) is None})
        for requirement, verdict in pip_verdicts(unknown, python).items():
            cache.put(python, requirement, verdict)
    except IndexUnavailable as exc:
        problems.append(problem("$.dependencies", f"could not check that the packages install on Python {python}: "
                                f"pip could not reach the package index ({exc})"))
    cache.save()
    for path, requirement in declared:
        verdict = cache.get(python, requirement)
        if verdict and not verdict["ok"]:
            newest = f"newest there is {verdict['newest']}" if verdict["newest"] else "no release there"
            problems.append(problem(path, f"{requirement} is not installable on Python {python} ({newest})"))
    return problems


def pip_verdicts(requirements: list[str], python: str) -> dict[str, dict[str, Any]]:
    """{requirement: {'ok', 'newest'}}: whether a release satisfying it exists for `python` on ModelArts' Linux."""
    from packaging.requirements import Requirement

    parsed = {requirement: Requirement(requirement) for requirement in requirements}
    names = sorted({r.name for r in parsed.values()})
    with ThreadPoolExecutor(max_workers=PIP_WORKERS) as pool:  # pip waits on the network most of the time
        versions = dict(zip(names, pool.map(lambda name: available_versions(name, python), names)))
    return {requirement: {"ok": any(True for _ in r.specifier.filter(versions[r.name])),
                          "newest": versions[r.name][0] if versions[r.name] else ""}
            for requirement, r in parsed.items()}


def available_versions(name: str, python: str) -> list[str]:
    """Releases of `name` pip finds for `python` on ModelArts' Linux, newest first (IndexUnavailable if offline).

    pip counts a wheel whose tags fit that Python and platform, and an sdist whose requires-python allows it.
    """
    command = [sys.executable, "-m", "pip", "index", "versions", name, "--pre", "--python-version", python,
               "--retries", "1", "--timeout", "20", "--disable-pip-version-check",
               *(arg for platform in ENGINE_PLATFORMS for arg in ("--platform", platform))]
    # Only the configured index counts: ModelArts has no local find-links or extra indexes ("" would be one URL).
    env = {**os.environ, "PIP_FIND_LINKS": " ", "PIP_EXTRA_INDEX_URL": " "}
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise IndexUnavailable(f"pip index versions {name} took over {PIP_TIMEOUT} s") from None
    for line in result.stdout.splitlines():
        if line.startswith("Available versions:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
    if "No matching distribution found" in result.stderr and "Retrying (" not in result.stderr:
        return []
    raise IndexUnavailable(pip_failure(result.stderr) or f"pip exited with {result.returncode}")


def pip_failure(stderr: str) -> str:
    """Why pip failed, in one short line: the connection error of its last retry, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    retries = [line.split("broken by ", 1)[-1] for line in lines if "Retrying (" in line]
    reason = retries[-1] if retries else (lines[-1] if lines else "")
    return re.sub(r"<[^>]*>: ", "", reason)[:300]  # drop `<...Connection object at 0x...>: `


def default_cache_dir() -> Path:
    """$MODELARTS_MNIST_CACHE, else ~/.cache/modelarts-mnist (XDG_CACHE_HOME honoured)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelarts-mnist"


class VerdictCache:
    """pip verdicts per (Python version, requirement) in one JSON file, written atomically."""

    def __init__(self, folder: Path):
        self.path = folder / VERDICTS_FILE
        self.changed = False
        try:
            self.entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}

    def get(self, python: str, requirement: str) -> dict[str, Any] | None:
        """The cached verdict, if fresh."""
        entry = self.entries.get(f"{python} {requirement}")
        fresh = isinstance(entry, dict) and time.time() - entry.get("checked", 0) < VERDICT_TTL
        return entry if fresh else None

    def put(self, python: str, requirement: str, verdict: dict[str, Any]) -> dict[str, Any]:
        """Remember a verdict; returns it."""
        self.entries[f"{python} {requirement}"] = {**verdict, "checked": time.time()}
        self.changed = True
        return verdict

    def save(self) -> None:
        """Write the file beside itself and rename over it (readers never see half a file)."""
        if not self.changed:
            return
        temp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(self.entries, out, indent=1, sort_keys=True)
            os.replace(temp, self.path)
        except OSError as exc:  # a cache that cannot be written costs time, not correctness
            logger.warning("could not write %s: %s", self.path, exc)
            if temp:
                Path(temp).unlink(missing_ok=True)
