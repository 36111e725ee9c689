"""A faster way to run a one-input, one-output signature: LiteRT (TFLite, XNNPACK), checked before use.

Calling a SavedModel signature costs 0.4-1 ms of TensorFlow overhead per call, whatever the batch;
the same graph converted to a LiteRT flatbuffer runs a 28x28 digit in ~0.15 ms. The converted model
is used only after it gave the signature's outputs to within TOLERANCE on reference inputs;
otherwise the service keeps calling the signature. Set MODELARTS_MNIST_LITE=0 to turn it off.

This module holds what both ways of using it share: the interpreter pool, the reference inputs, the
cache folder and key. lite_engine.py serves a converted model in a process without TensorFlow;
build_lite_path below is the in-process way, for services that load TensorFlow anyway (eager TF 2
loader only; the v1 Session path, and TensorFlow 1.x, never take it).
"""
import fcntl
import functools
import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

TOLERANCE = 1e-5  # largest absolute difference allowed between the two paths' outputs
REFERENCE_BATCHES = (1, 7, 64)
SWITCH_ENV = "MODELARTS_MNIST_LITE"
CACHE_ENV = "MODELARTS_MNIST_CACHE"  # shared with the OBS mirror; converted models go in its lite/
FLOAT_TYPES = ("float16", "bfloat16", "float32", "float64")
KEY_FORMAT = b"modelarts-mnist lite 2\n"  # changes the key of every SavedModel when the cache layout changes


class LitePath:
    """Runs a converted signature on a pool of interpreters (one is not thread-safe; each call takes one).

    A pool rather than one per thread: the interpreter warmed up at load serves the first real
    request too, whichever thread answers it.
    """

    def __init__(self, flatbuffer: bytes, input_name: str, output_name: str):
        self.flatbuffer = flatbuffer
        self.input_name, self.output_name = input_name, output_name
        self._idle = []  # type: List[Runner]

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """{output: array} for {input: array}, like the signature (the output is a copy)."""
        try:
            runner = self._idle.pop()  # atomic under the GIL: no lock needed
        except IndexError:
            runner = Runner(new_interpreter(self.flatbuffer))
        try:
            return {self.output_name: runner.run(feeds[self.input_name])}
        finally:
            self._idle.append(runner)


class Runner:
    """One interpreter and the input shape it is allocated for."""

    def __init__(self, interpreter: Any):
        self.interpreter = interpreter
        self.entry = interpreter.get_input_details()[0]["index"]
        self.exit = interpreter.get_output_details()[0]["index"]
        self.shape = None  # type: Optional[Tuple[int, ...]]

    def run(self, array: np.ndarray) -> np.ndarray:
        """The output for one input array; reallocates only when the batch size changes."""
        if self.shape != array.shape:
            self.interpreter.resize_tensor_input(self.entry, array.shape, strict=True)
            self.interpreter.allocate_tensors()
            self.shape = array.shape
        self.interpreter.set_tensor(self.entry, array)
        self.interpreter.invoke()  # releases the GIL while it runs
        return self.interpreter.get_tensor(self.exit)


def new_interpreter(flatbuffer: bytes) -> Any:
    """A single-threaded interpreter (one per worker thread; workers share the cores).

    LiteRT's (ai_edge_litert, tf.lite's maintained successor) when installed, else tf.lite's.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        with warnings.catch_warnings():  # TF 2.21 announces the move to ai_edge_litert on every creation
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
    return Interpreter(model_content=flatbuffer, num_threads=1)


def build_lite_path(signature: Any, *, converter: Optional[Callable[[Any, Callable], bytes]] = None,
                    model_path: Optional[str] = None) -> Optional[LitePath]:
    """A checked LitePath for an EagerSignature, or None (then the signature itself is used)."""
    if os.environ.get(SWITCH_ENV, "1") == "0":
        return None
    reason = unsupported(signature.inputs, signature.outputs)
    if reason:
        logger.info("TFLite path not used: %s", reason)
        return None
    try:
        flatbuffer = cached_conversion(model_path, lambda: (converter or convert)(signature.model, signature.function))
        lite = LitePath(flatbuffer, next(iter(signature.inputs)), next(iter(signature.outputs)))
        difference = largest_difference(lite, signature)
    except Exception as exc:  # converter and interpreter raise many types; the signature still works
        logger.info("TFLite path not used: conversion failed: %s", exc)
        return None
    if not difference <= TOLERANCE:
        logger.warning("TFLite path not used: outputs differ from the signature by %.3g", difference)
        return None
    logger.info("TFLite path in use (largest difference from the signature %.3g)", difference)
    return lite


def unsupported(inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> str:
    """Why a signature (TensorInfo per input and output) cannot take the lite path ('' when it can)."""
    if len(inputs) != 1 or len(outputs) != 1:
        return "signature has several inputs or outputs"
    info = next(iter(inputs.values()))
    if info.dtype not in FLOAT_TYPES or info.shape is None or None in info.shape[1:]:
        return "input is not a float tensor of fixed shape after the batch axis"
    return ""


def convert(model: Any, predict_fn: Callable) -> bytes:
    """The signature as a TFLite flatbuffer (float32, builtin ops only)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([predict_fn], model)
    return converter.convert()


def cached_conversion(model_path: Optional[str], make: Callable[[], bytes]) -> bytes:
    """make() once per SavedModel content: later loads (and sibling workers, which wait) read the file.

    The cache only saves the ~1 s conversion; every load still checks the result against the signature.
    """
    key = saved_model_key(Path(model_path)) if model_path else None
    if key is None:
        return make()
    folder = cache_folder()
    target = folder / f"{key}.tflite"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # workers starting together: one converts, the others wait
        if target.is_file():
            return target.read_bytes()
        flatbuffer = make()
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(flatbuffer)
        partial.replace(target)  # never a half-written model under the final name
        return flatbuffer


def cache_folder() -> Path:
    """Where converted models are kept: $MODELARTS_MNIST_CACHE/lite, else ~/.cache/modelarts-mnist/lite."""
    folder = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "modelarts-mnist") / "lite"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def saved_model_key(model_path: Path) -> Optional[str]:
    """A digest of the SavedModel's content (saved_model.pb and variables/); None if it is not on disk.

    Read without TensorFlow, so a serving process can find its converted model without importing it.
    """
    graph = model_path / "saved_model.pb"
    if not graph.is_file():
        return None
    files = [graph] + sorted(p for p in (model_path / "variables").glob("*") if p.is_file())
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return content_digest(stats)


@functools.lru_cache(maxsize=16)
def content_digest(stats: Tuple[Tuple[str, int, int], ...]) -> str:
    """sha256 over the files' names and bytes (memoised on their sizes and times: workers ask often)."""
    digest = hashlib.sha256(KEY_FORMAT)
    for path, _, _ in stats:
        digest.update(os.path.basename(path).encode() + b"\0")
        with open(path, "rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def reference_inputs(info: Any) -> List[np.ndarray]:
    """The inputs both paths must agree on: batches of zeros, 0-1 and 0-255 uniform noise."""
    rng = np.random.RandomState(0)  # numpy 1.16 has no default_rng
    return [(rng.random_sample([batch] + list(info.shape[1:])) * scale).astype(info.numpy_dtype)
            for batch in REFERENCE_BATCHES for scale in (0.0, 1.0, 255.0)]


def difference(expected: np.ndarray, got: np.ndarray) -> float:
    """max |expected - got|, inf when either holds a NaN (max() would silently skip it) or shapes differ."""
    if np.shape(expected) != np.shape(got):
        return float("inf")
    value = float(np.max(np.abs(np.asarray(expected, np.float64) - got), initial=0.0))
    return float("inf") if np.isnan(value) else value


def largest_difference(lite: LitePath, signature: Any) -> float:
    """Max |lite - signature| over the reference inputs."""
    (name, info), = signature.inputs.items()
    worst = 0.0
    for feed in reference_inputs(info):
        expected = next(iter(signature({name: feed}).values()))
        got = next(iter(lite({name: feed}).values()))
        worst = max(worst, difference(expected, got))
    return worst
