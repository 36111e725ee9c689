"""Which engine runs a package's SavedModel: LiteRT without TensorFlow when it can, else TensorFlow.

LiteRT (ai_edge_litert) serves the model when all of these hold; the first that fails is the reason
for TensorFlow, which the log and describe() say:
- Python 3.9 or later (the engines' old Pythons log this at INFO, as they log the settings below);
- MODELARTS_MNIST_LITE is not 0 and MODELARTS_MNIST_SAVEDMODEL_LOADER does not ask for the v1 Session;
- the package's code does not itself use TensorFlow (imports of tensorflow/keras, self.saved_model,
  its own _load_model, the signature's TensorFlow objects), read from its source without running it;
- ai_edge_litert is installed;
- the signature has one float input of fixed shape after the batch axis and one output, converts
  with builtin ops only, and LiteRT reproduces its outputs to TOLERANCE on the reference inputs.

The conversion runs once per SavedModel content (lite_path.saved_model_key) in a TensorFlow
subprocess (lite_convert.py), under a lock so that services starting together convert once, and is
cached in lite_path.cache_folder(): KEY.tflite, KEY.npz (reference inputs and the signature's
outputs) and KEY.json (the verdict, written last). A load compares LiteRT's outputs with KEY.npz
again (~10 ms), so a damaged cache falls back rather than answering wrong scores.
"""
import ast
import fcntl
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .lite_path import SWITCH_ENV, TOLERANCE, LitePath, cache_folder, difference, saved_model_key
from .saved_model import LOADER_ENV, TensorInfo

logger = logging.getLogger(__name__)

LITERT = "litert"
TENSORFLOW = "tensorflow"
CONVERT_TIMEOUT = 600  # seconds; a TensorFlow import and conversion take 5-10 s on 2 busy cores
TF_MODULES = ("tensorflow", "keras", "tf_keras")
TF_ATTRIBUTES = ("saved_model", "_load_model")  # on the service: the SavedModel TensorFlow loaded
SIGNATURE_TF_ATTRIBUTES = ("function", "session", "model")  # self.signature.<these> are TensorFlow objects
MAX_SOURCE_FILES = 200  # a package folder is a handful of files; do not walk a huge tree
RUNTIME_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # holds model_service/
# ai-edge-litert has no wheels for older Pythons: the engines' 3.6/3.7 environments always run TensorFlow.
OLD_PYTHON = "LiteRT needs Python 3.9 or later"
CONVERTER_SCRIPT = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                    "from model_service.lite_convert import main; main()")


class EnginePlan:
    """The engine chosen for a model folder, why, and (for LiteRT) the signature that runs on it."""

    def __init__(self, engine: str, reason: str = "", signature: Any = None, difference: Optional[float] = None):
        self.engine, self.reason, self.signature, self.difference = engine, reason, signature, difference

    @property
    def litert(self) -> bool:
        """True when the model runs on LiteRT in this process (no TensorFlow needed)."""
        return self.engine == LITERT

    def describe(self) -> Dict[str, Any]:
        """{"serving": "litert" | "tensorflow", "litert": version, "fallback_reason": why TensorFlow}."""
        return {"serving": self.engine, "litert": litert_version() if self.litert else None,
                "fallback_reason": None if self.litert else self.reason}

    def __repr__(self) -> str:
        return "EnginePlan({!r}, {!r})".format(self.engine, self.reason)


class LiteSignature:
    """The converted signature, called like saved_model's signatures: {input: array} -> {output: array}."""

    eager = False  # nothing for build_lite_path to do: it already runs on LiteRT

    def __init__(self, name: str, inputs: Dict[str, TensorInfo], outputs: Dict[str, TensorInfo], lite: LitePath):
        self.name, self.inputs, self.outputs, self.lite = name, inputs, outputs, lite

    def __call__(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """The outputs for one set of named inputs."""
        return self.lite(feeds)


def plan_engine(model_path: str, service_class: Optional[type] = None,
                convert: Optional[Callable[[str, str], None]] = None) -> EnginePlan:
    """The engine for the SavedModel in model_path, logged once per process and reason.

    service_class: the service being built, when known (its own _load_model means TensorFlow);
    convert(model_dir, prefix): runs the conversion (default: lite_convert.py in a subprocess).
    """
    reason = tensorflow_reason(model_path, service_class)
    plan = EnginePlan(TENSORFLOW, reason) if reason else prepared_plan(model_path, convert or run_converter)
    announce(model_path, plan)
    return plan


def prepare_engine(model_path: str, convert: Optional[Callable[[str, str], None]] = None) -> str:
    """Convert (once) what LiteRT will serve; '' when it will, else why TensorFlow will.

    For the process that starts the workers: it learns whether they need TensorFlow without loading
    the model itself (each worker's plan_engine then finds the conversion cached).
    """
    reason = tensorflow_reason(model_path)
    if not reason:
        reason = cached_verdict(model_path, convert or run_converter)[1]
    if reason:
        announce(model_path, EnginePlan(TENSORFLOW, reason))
    return reason


def cached_verdict(model_path: str, convert: Callable[[str, str], None]) -> Tuple[Optional[Dict[str, Any]], str]:
    """(verdict, '') when LiteRT passed the parity check for this content, else (verdict or None, why not)."""
    key = saved_model_key(Path(model_path))
    if key is None:
        return None, "no saved_model.pb in {}".format(model_path)
    try:
        verdict = prepare(model_path, key, convert)
    except Exception as exc:  # an unwritable cache, a broken interpreter: TensorFlow still serves
        logger.debug("preparing the LiteRT model failed", exc_info=True)
        return None, "LiteRT failed: {}: {}".format(type(exc).__name__, exc)
    return verdict, "" if verdict["ok"] else verdict["reason"]


def tensorflow_reason(model_path: str, service_class: Optional[type] = None) -> str:
    """Why the model needs TensorFlow before any conversion is tried ('' when LiteRT may serve it)."""
    if sys.version_info < (3, 9):
        return OLD_PYTHON
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return "{}=0 turns the LiteRT path off".format(SWITCH_ENV)
    if os.environ.get(LOADER_ENV, "").strip().lower() == "v1":
        return "{}=v1 asks for TensorFlow's Session loader".format(LOADER_ENV)
    if not os.path.isfile(os.path.join(model_path, "saved_model.pb")):
        return "no saved_model.pb in {}".format(model_path)
    if service_class is not None and overrides_load_model(service_class):
        return "{} loads its own model (_load_model)".format(service_class.__name__)
    use = tensorflow_in_code(model_path)
    if use:
        return "the package's code uses TensorFlow ({})".format(use)
    if importlib.util.find_spec("ai_edge_litert") is None:
        return "ai-edge-litert is not installed (pip install ai-edge-litert)"
    return ""


def overrides_load_model(service_class: type) -> bool:
    """Whether the class replaces TfServingBaseService._load_model (it then loads the model itself)."""
    for cls in service_class.__mro__:
        if "_load_model" in vars(cls):
            return not (cls.__module__ == "model_service" or cls.__module__.startswith("model_service."))
    return False


def tensorflow_in_code(model_path: str) -> str:
    """'file:line what' for the first use of TensorFlow in the folder's Python files, '' if none."""
    for path in source_files(model_path):
        try:
            with open(path, "rb") as file:
                tree = ast.parse(file.read(), filename=path)
        except (OSError, SyntaxError, ValueError):
            continue  # discovery reports a broken service file in its own words
        for node in ast.walk(tree):
            what = tensorflow_use(node)
            if what:
                return "{}:{} {}".format(os.path.relpath(path, model_path), getattr(node, "lineno", "?"), what)
    return ""


def source_files(model_path: str) -> List[str]:
    """The folder's .py files (subfolders too, hidden ones and variables/ skipped), at most MAX_SOURCE_FILES."""
    found = []  # type: List[str]
    for root, folders, files in os.walk(model_path):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and f not in ("variables", "__pycache__"))
        found.extend(os.path.join(root, name) for name in sorted(files) if name.endswith(".py"))
        if len(found) >= MAX_SOURCE_FILES:
            break
    return found[:MAX_SOURCE_FILES]


def tensorflow_use(node: ast.AST) -> str:
    """What in this node uses TensorFlow ('' for nothing)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        names = [node.module or ""] if not node.level else []
    elif is_tf_module(string_value(node)):
        return "names the module {!r}".format(string_value(node))  # __import__("tensorflow"), import_module
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "_load_model":
        return "defines _load_model"
    elif isinstance(node, ast.Attribute) and node.attr in TF_ATTRIBUTES:
        return "uses .{}".format(node.attr)
    elif (isinstance(node, ast.Attribute) and node.attr in SIGNATURE_TF_ATTRIBUTES
          and isinstance(node.value, ast.Attribute) and node.value.attr == "signature"):
        return "uses .signature.{}".format(node.attr)
    else:
        return ""
    used = [name for name in names if is_tf_module(name)]
    return "imports {}".format(used[0]) if used else ""


def string_value(node: ast.AST) -> Optional[str]:
    """The text of a string literal node (ast.Str before Python 3.8, ast.Constant since), else None."""
    value = getattr(node, "value", None) if type(node).__name__ == "Constant" else getattr(node, "s", None)
    return value if type(node).__name__ in ("Constant", "Str") and isinstance(value, str) else None


def is_tf_module(name: Any) -> bool:
    """Whether name is TensorFlow's or Keras' module (or one of their submodules)."""
    return isinstance(name, str) and name.split(".")[0] in TF_MODULES and all(
        part.isidentifier() for part in name.split("."))


def prepared_plan(model_path: str, convert: Callable[[str, str], None]) -> EnginePlan:
    """LiteRT with the cached (or freshly converted) model, or TensorFlow and why not."""
    verdict, reason = cached_verdict(model_path, convert)
    if reason:
        return EnginePlan(TENSORFLOW, reason)
    try:
        return load_plan(cache_folder() / saved_model_key(Path(model_path)), verdict)
    except Exception as exc:  # a damaged cache must not stop the service: TensorFlow still can
        logger.debug("loading the LiteRT model failed", exc_info=True)
        return EnginePlan(TENSORFLOW, "LiteRT failed: {}: {}".format(type(exc).__name__, exc))


def prepare(model_path: str, key: str, convert: Callable[[str, str], None]) -> Dict[str, Any]:
    """The cached verdict for this content, converting (once, under the key's lock) when there is none.

    Returns {"ok", "reason", "signature", "inputs", "outputs", "difference", ...}. A conversion that
    crashed (the subprocess died) is not cached: the next start tries again.
    """
    folder = cache_folder()
    target = folder / key
    verdict = read_verdict(target)
    if verdict is not None:
        return verdict
    with open(str(target) + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # services starting together: one converts, the others wait
        verdict = read_verdict(target)
        if verdict is not None:
            return verdict
        prefix = "{}.{}".format(target, os.getpid())
        try:
            verdict = converted_verdict(model_path, prefix, convert)
            if verdict.get("cache", True):
                for suffix in (".tflite", ".npz"):
                    if os.path.exists(prefix + suffix):
                        os.replace(prefix + suffix, str(target) + suffix)
                write_json(str(target) + ".json", verdict)  # last: its presence means the rest is there
        finally:
            for suffix in (".tflite", ".npz", ".result.json"):
                if os.path.exists(prefix + suffix):
                    os.remove(prefix + suffix)
    return verdict


def converted_verdict(model_path: str, prefix: str, convert: Callable[[str, str], None]) -> Dict[str, Any]:
    """Convert, then check LiteRT's outputs against the signature's in this process (the serving interpreter)."""
    logger.info("converting %s to LiteRT (once per SavedModel content)", model_path)
    try:
        convert(model_path, prefix)
        with open(prefix + ".result.json", encoding="utf-8") as file:
            result = json.load(file)
    except Exception as exc:  # the converter crashed: say so, and try again next time
        return {"ok": False, "reason": "the LiteRT converter failed: {}".format(exc), "cache": False}
    if not result.get("ok"):
        return {"ok": False, "reason": "LiteRT cannot take this model: {}".format(result.get("reason"))}
    with open(prefix + ".tflite", "rb") as file:
        flatbuffer = file.read()
    worst = checked_difference(flatbuffer, result, prefix + ".npz")
    verdict = dict(result, difference=worst)
    if not worst <= TOLERANCE:
        verdict.update(ok=False, reason="LiteRT's outputs differ from the signature's by {:.3g} (more than "
                                        "{:g}) on the reference inputs".format(worst, TOLERANCE))
    return verdict


def load_plan(target: Path, verdict: Dict[str, Any]) -> EnginePlan:
    """The LiteRT plan for a cached verdict, its outputs checked again on the stored references."""
    with open(str(target) + ".tflite", "rb") as file:
        flatbuffer = file.read()
    worst = checked_difference(flatbuffer, verdict, str(target) + ".npz")
    if not worst <= TOLERANCE:
        return EnginePlan(TENSORFLOW, "the cached LiteRT model in {} no longer gives the signature's outputs "
                                      "(differs by {:.3g})".format(target.parent, worst))
    inputs, outputs = tensor_infos(verdict["inputs"]), tensor_infos(verdict["outputs"])
    lite = LitePath(flatbuffer, next(iter(inputs)), next(iter(outputs)))
    return EnginePlan(LITERT, "", LiteSignature(verdict["signature"], inputs, outputs, lite), worst)


def checked_difference(flatbuffer: bytes, result: Dict[str, Any], references: str) -> float:
    """The largest |LiteRT - signature| over the reference inputs stored with the conversion."""
    inputs, outputs = tensor_infos(result["inputs"]), tensor_infos(result["outputs"])
    lite = LitePath(flatbuffer, next(iter(inputs)), next(iter(outputs)))
    (name,), (output,) = list(inputs), list(outputs)
    worst = 0.0
    with np.load(references, allow_pickle=False) as stored:
        count = len([k for k in stored.files if k.startswith("input_")])
        if not count:
            return float("inf")
        for i in range(count):
            got = lite({name: stored["input_{}".format(i)]})[output]
            worst = max(worst, difference(stored["expected_{}".format(i)], got))
    return worst


def tensor_infos(described: Dict[str, Any]) -> Dict[str, TensorInfo]:
    """TensorInfo per name from {"name": {"dtype", "shape"}} (numpy dtypes: no TensorFlow here)."""
    return {name: TensorInfo(d["dtype"], d["shape"], np.dtype(d["dtype"]).type) for name, d in described.items()}


def read_verdict(target: Path) -> Optional[Dict[str, Any]]:
    """The cached verdict, or None when there is none or its files are incomplete or unreadable."""
    try:
        with open(str(target) + ".json", encoding="utf-8") as file:
            verdict = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(verdict, dict) or "ok" not in verdict:
        return None
    if verdict["ok"] and not all(os.path.isfile(str(target) + s) for s in (".tflite", ".npz")):
        return None
    return verdict


def write_json(path: str, data: Dict[str, Any]) -> None:
    """data as JSON under path, never half-written."""
    partial = "{}.{}.tmp".format(path, os.getpid())
    with open(partial, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=1)
    os.replace(partial, path)


def run_converter(model_path: str, prefix: str) -> None:
    """lite_convert.py in a subprocess of this interpreter: TensorFlow is imported there, never here.

    Raises:
        RuntimeError: the subprocess failed or timed out (its last stderr line says why).
    """
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    command = [sys.executable, "-c", CONVERTER_SCRIPT, RUNTIME_ROOT, model_path, prefix]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                              timeout=CONVERT_TIMEOUT, universal_newlines=True)
    except subprocess.TimeoutExpired:
        raise RuntimeError("no result after {} s".format(CONVERT_TIMEOUT))
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        raise RuntimeError("exit status {}: {}".format(done.returncode, lines[-1] if lines else "no message"))


_announced = set()  # type: set


def announce(model_path: str, plan: EnginePlan) -> None:
    """Log the engine once per process, folder and outcome (workers and their master each say it once)."""
    key = (model_path, plan.engine, plan.reason)
    if key in _announced:
        return
    _announced.add(key)
    if plan.litert:
        logger.info("serving %s on LiteRT %s, without TensorFlow (largest difference from the signature %.3g)",
                    model_path, litert_version(), plan.difference)
    elif plan.reason == OLD_PYTHON or plan.reason.startswith(SWITCH_ENV):
        logger.info("serving %s on TensorFlow: %s", model_path, plan.reason)  # as configured: nothing to fix
    else:
        logger.warning("serving %s on TensorFlow: %s", model_path, plan.reason)


def litert_version() -> Optional[str]:
    """The installed ai-edge-litert's version (None when unknown)."""
    try:
        from importlib.metadata import version  # Python 3.8+; LiteRT is never used on older engines
        return version("ai-edge-litert")
    except Exception:  # not installed, or no metadata: the version is only informative
        return None
