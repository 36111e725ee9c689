"""Build a ModelArts model package from a trained version, and check one as ModelArts' import would."""
from __future__ import annotations

import ast
import io
import json
import logging
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from .artifacts import CONFIG_JSON, INFERENCE_CODE, artifact_path
from .errors import MnistSdkError, PackageError
from .files import Writer, replace_files, write_bytes
from .deployment import check_on_engine, engine_for
from .runtimes import installed
from .package_rules import Problem, check_config

logger = logging.getLogger(__name__)

__all__ = ["Problem", "build_package", "check_package"]

METRIC_NAMES = ("f1", "accuracy", "precision", "recall")
REQUIRED_FILES = ("saved_model.pb", "variables/variables.index", "config.json", "customize_service.py")
# What a ModelArts TensorFlow image provides to inference code, besides the standard library.
PROVIDED_MODULES = {"numpy", "PIL", "tensorflow", "model_service", "log", "metric", "moxing"}
# Import names of distributions whose name differs, for those not installed here (keys: pip-normalized).
IMPORT_NAMES = {
    "pillow": ("PIL",), "scikit-image": ("skimage",), "scikit-learn": ("sklearn",), "pyyaml": ("yaml",),
    "opencv-python": ("cv2",), "opencv-python-headless": ("cv2",), "opencv-contrib-python": ("cv2",),
    "opencv-contrib-python-headless": ("cv2",), "beautifulsoup4": ("bs4",), "python-dateutil": ("dateutil",),
    "protobuf": ("google",), "tensorflow-cpu": ("tensorflow",), "tensorflow-gpu": ("tensorflow",),
    "attrs": ("attr", "attrs"), "pyjwt": ("jwt",), "msgpack-python": ("msgpack",), "python-magic": ("magic",),
    "pycryptodome": ("Crypto",),
}


def build_package(version_dir: str | Path, *, write: Writer = write_bytes) -> Path:
    """Copy customize_service.py and config.json (with the version's metrics) into <version>/model/.

    Both files are written beside their targets first and renamed into place together, so a full
    disk leaves the package as it was (PackageError naming the folder), never half old, half new.
    """
    version_dir = Path(version_dir)
    model_dir = version_dir / "model"
    if not (model_dir / "saved_model.pb").is_file():
        raise PackageError(f"{model_dir}: no saved_model.pb (is {version_dir} a trained version folder?)")
    config = json.loads(artifact_path(CONFIG_JSON).read_text(encoding="utf-8"))
    config["metrics"] = read_metrics(version_dir, config.get("metrics", {}))
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    try:
        replace_files({model_dir / "customize_service.py": artifact_path(INFERENCE_CODE).read_bytes(),
                       model_dir / "config.json": text.encode("utf-8")}, write=write)
    except OSError as exc:
        raise PackageError(f"cannot write the package in {model_dir}: {exc.strerror or exc}; "
                           "it was left as it was") from exc
    logger.info("packaged %s", model_dir)
    return model_dir


def read_metrics(version_dir: Path, defaults: dict[str, Any]) -> dict[str, float]:
    """The four ModelArts metrics from the version's metrics.json (defaults when it has none)."""
    path = version_dir / "metrics.json"
    if not path.is_file():
        logger.warning("%s not found; config.json keeps the template metrics", path)
        return dict(defaults)
    try:
        measured = json.loads(path.read_text(encoding="utf-8"))
        return {name: float(measured[name]) for name in METRIC_NAMES if name in measured}
    except (ValueError, TypeError) as exc:
        raise PackageError(f"{path}: unreadable metrics ({exc})") from exc


def check_package(model_dir: str | Path, *, smoke: bool = True, runtime: str | None = None,
                  live: bool | None = None, echo: Callable[[str], None] | None = None) -> list[Problem]:
    """Every problem found in a model folder: files, config.json, imports, service class, smoke run, engine.

    Args:
        runtime: the ModelArts engine to check against (default: the one config.json declares, when known).
        live: also load and query the package inside that engine's environment (default: when installed).
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return [Problem(str(model_dir), "not a folder")]
    problems = check_files(model_dir)
    config = read_config(model_dir, problems)
    if config is not None:
        problems += check_config(config)
    config = config if isinstance(config, dict) else {}
    # ModelArts does not compare request field names with the inputs: _preprocess may map any field to any tensor.
    read_signature_inputs(model_dir, problems)
    problems += check_imports(model_dir, config)
    service_ok = check_service_class(model_dir, problems)
    engine = engine_for(config, runtime)
    live = bool(smoke and engine is not None and (live if live is not None else installed(engine) is not None))
    answers: dict[str, Any] = {}
    if smoke and service_ok and not problems:
        local = smoke_test(model_dir, config, answers)
        if local and live:  # e.g. TF 1.x code (tf.Session): the engine it is written for decides
            logger.warning("the package does not run with this process's TensorFlow; judged on %s alone: %s",
                           engine.name, local[0])
        else:
            problems += local
    if engine is not None and not problems:  # a package ModelArts refuses anyway is not run on the engine
        problems += check_on_engine(model_dir, config, engine, live=live, local_answers=answers, echo=echo)
    return problems


def check_files(model_dir: Path) -> list[Problem]:
    """The files ModelArts requires in model/."""
    problems = [Problem(name, "required file missing") for name in REQUIRED_FILES
                if not (model_dir / name).is_file()]
    if not list(model_dir.glob("variables/variables.data-*")):
        problems.append(Problem("variables/variables.data-*", "required file missing"))
    return problems


def read_config(model_dir: Path, problems: list[Problem]) -> Any:
    """config.json parsed, or None (with a problem at its line) when it cannot be read."""
    path = model_dir / "config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        problems.append(Problem("config.json", f"not UTF-8 text ({exc})"))
    except json.JSONDecodeError as exc:
        problems.append(Problem(f"config.json:{exc.lineno}:{exc.colno}", f"invalid JSON: {exc.msg}"))
    return None


def read_signature_inputs(model_dir: Path, problems: list[Problem]) -> list[str]:
    """Input names of the signature ModelArts would serve, read from saved_model.pb without loading it."""
    path = model_dir / "saved_model.pb"
    if not path.is_file():
        return []
    from model_service.errors import SignatureError
    from model_service.tfserving_model_service import pick_signature
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(path.read_bytes())
        signatures = saved.meta_graphs[0].signature_def
        return sorted(signatures[pick_signature(signatures, str(model_dir))].inputs)
    except SignatureError as exc:
        problems.append(Problem("saved_model.pb", str(exc).split(": ", 1)[1]))
    except Exception as exc:  # a damaged protobuf can fail in many ways; all mean the same
        problems.append(Problem("saved_model.pb", f"not a readable SavedModel ({type(exc).__name__}: {exc})"))
    return []


def check_imports(model_dir: Path, config: dict[str, Any]) -> list[Problem]:
    """Top-level imports of customize_service.py that a ModelArts TensorFlow image cannot satisfy."""
    path = model_dir / "customize_service.py"
    if not path.is_file():
        return []
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError:
        return []  # reported with its line by the service-class check
    allowed = PROVIDED_MODULES | set(sys.stdlib_module_names) | local_modules(model_dir) | declared_modules(config)
    problems = []
    for node in ast.walk(tree):
        for name in imported_names(node):
            if name.split(".")[0] not in allowed:
                problems.append(Problem(f"customize_service.py:{node.lineno}",
                                        f"imports {name!r}, which ModelArts does not provide "
                                        "(declare it in config.json dependencies or ship it beside)"))
    return problems


def imported_names(node: ast.AST) -> list[str]:
    """Absolute module names an import statement loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and not node.level and node.module:
        return [node.module]
    return []


def local_modules(model_dir: Path) -> set[str]:
    """Helper modules and packages shipped beside customize_service.py.

    Any folder counts: without __init__.py it is a namespace package, importable all the same.
    """
    modules = {p.name.split(".")[0] for p in model_dir.iterdir() if p.is_file() and p.suffix in (".py", ".so")}
    return modules | {p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isidentifier()}


def declared_modules(config: dict[str, Any]) -> set[str]:
    """Import names of the pip packages config.json declares."""
    names: set[str] = set()
    for dependency in config.get("dependencies") or []:
        for package in (dependency.get("packages") or []) if isinstance(dependency, dict) else []:
            name = str(package.get("package_name", "")) if isinstance(package, dict) else ""
            if name:
                names |= distribution_modules(name)
    return names


def normalize(name: str) -> str:
    """A distribution name as pip compares it (PEP 503: case-insensitive, runs of - _ . alike)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution_modules(name: str) -> set[str]:
    """Top-level modules distribution `name` provides: its installed metadata, else the table, else its name."""
    installed = installed_top_level(name)
    if installed:
        return installed
    key = normalize(name)
    if key in IMPORT_NAMES:
        return set(IMPORT_NAMES[key])
    guess = re.sub(r"[-.]+", "_", name)
    return {guess, guess.lower()}


def installed_top_level(name: str) -> set[str]:
    """Top-level import names from the installed distribution's top_level.txt or RECORD (empty if absent)."""
    try:
        distribution = metadata.distribution(name)  # normalizes the name as pip does
    except (metadata.PackageNotFoundError, ValueError):
        return set()
    text = distribution.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    return {top for top in (record_top_level(str(f)) for f in distribution.files or []) if top}


def record_top_level(path: str) -> str | None:
    """The module a RECORD entry belongs to ('skimage/io/x.py' -> 'skimage'), None for metadata and scripts."""
    first = path.split("/")[0]
    if first.endswith((".dist-info", ".egg-info", ".data", ".pth")) or first in ("..", "__pycache__"):
        return None
    if "/" not in path and not first.endswith((".py", ".so", ".pyd")):
        return None
    name = first.split(".")[0]
    return name if name.isidentifier() else None


def check_service_class(model_dir: Path, problems: list[Problem]) -> bool:
    """Whether customize_service.py defines exactly one leaf service class (else a problem)."""
    from .loader import find_service_class

    if not (model_dir / "customize_service.py").is_file():
        return False
    try:
        find_service_class(model_dir)
    except PackageError as exc:
        location, _, message = exc.message.partition(": ")
        problems.append(Problem(Path(location).name if ".py" in location else location, message))
        return False
    return True


def smoke_test(model_dir: Path, config: dict[str, Any], answers: dict[str, Any]) -> list[Problem]:
    """Build the service and send each smoke request config.json's schema calls for; answers kept in `answers`.

    A service that loads its model in a thread started by __init__ is smoke-tested once that thread
    ends (at most LOADING_WAIT seconds), not raced: ModelArts' users send requests after deployment.
    """
    from model_service.discovery import LOADING_WAIT
    from model_service.errors import StepFailed

    from .loader import load_service
    from .smoke import json_problem, smoke_requests

    try:
        service = load_service(model_dir, wait_for_loading=LOADING_WAIT)
    except MnistSdkError as exc:
        return [Problem("customize_service.py", f"the service does not load: {exc.message}")]
    problems = []
    for request in smoke_requests(config):
        try:
            answer = service.inference(request.make())
        except (MnistSdkError, StepFailed) as exc:  # StepFailed: user code raised (the runtime says where)
            problems.append(Problem("customize_service.py", f"smoke request ({request.name}) failed: {exc}"))
            continue
        reason = json_problem(answer)
        if reason:
            problems.append(Problem("customize_service.py", f"smoke request ({request.name}): {reason}"))
        else:
            answers[request.name] = answer
    return problems
