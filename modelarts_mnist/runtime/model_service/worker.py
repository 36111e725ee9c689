"""The model side of a package, run in an engine's own interpreter (stdlib and numpy besides user code).

    python -m model_service.worker --model-dir D --model-name N --fd K [--loading-wait S] [--log-level INFO]

Loads D's service as ModelArts does, then answers framed requests (see wire.py) on the inherited
socket K until it closes. The first frame it writes is the load's answer. Requests and answers:

    {"op": "inference", "data": ...}   -> {"ok": JSON text of the answer}
    {"op": "preprocess", "data": ...}  -> {"ok": _preprocess's result, arrays tagged (see plain())}
    {"op": "describe"}                 -> {"ok": {"service", "signature", "versions"}}
    {"op": "ping"}                     -> {"ok": "pong"}
    any failure                        -> {"error": {"type", "builtin", "message", "step", "service",
                                                     "traceback", "location"}}

`data` is ModelArts' data shape with each uploaded file as bytes; the worker hands user code a
BytesIO for each. User code's print() goes to stderr, never into the frames.
"""
import argparse
import builtins
import io
import json
import logging
import os
import platform
import socket
import sys
import traceback
from typing import Any, Callable, Dict, List, Optional

from . import wire
from .discovery import LOADING_WAIT, load_service
from .errors import StepFailed
from .model_service import describe

logger = logging.getLogger(__name__)

ARRAY_TAG = "__ndarray__"


def main(argv: Optional[List[str]] = None) -> None:
    """Load the service, then answer requests until the host closes the socket."""
    args = parse_args(argv)
    route_stdout_to_stderr()
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, args.fd)  # 3.6 cannot detect the family
    try:
        service = load(sock, args.model_dir, args.model_name, args.loading_wait)
        if service is not None:
            serve(sock, service, args.model_dir)
    finally:
        sock.close()


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """The command line: the model folder, the service's name, the socket's descriptor."""
    parser = argparse.ArgumentParser(prog="python -m model_service.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", required=True, help="the model package folder")
    parser.add_argument("--model-name", default="mnist", help="the name the service is built with")
    parser.add_argument("--fd", type=int, required=True, help="file descriptor of the connected socket")
    parser.add_argument("--loading-wait", type=float, default=LOADING_WAIT,
                        help="seconds to wait for threads the service starts in __init__ (background loading)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="the worker's logging level (INFO shows each step's time)")
    return parser.parse_args(argv)


def route_stdout_to_stderr() -> None:
    """Send everything written to stdout (Python or C level) to stderr, the worker's log."""
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), 1)
    sys.stdout = sys.stderr


def load(sock: socket.socket, model_dir: str, model_name: str, loading_wait: float = LOADING_WAIT) -> Any:
    """The service, after telling the host it loaded (or None, after telling it why not).

    The host hears only once threads the constructor started have ended (at most loading_wait
    seconds), so a model loading in the background is ready for the first request.
    """
    try:
        service = load_service(model_dir, model_name, loading_wait)
    except Exception as exc:  # reported to the host, which decides what it means
        wire.send(sock, {"error": describe_error(exc, model_dir, "load")})
        return None
    wire.send(sock, {"ok": describe_service(service)})
    return service


def serve(sock: socket.socket, service: Any, model_dir: str) -> None:
    """Answer one request at a time until the host closes the connection."""
    while True:
        try:
            request = wire.receive(sock)
        except EOFError:
            return
        try:
            wire.send(sock, answer(service, request, model_dir))
        except OSError:  # the host went away mid-request: nobody is left to answer
            return


def answer(service: Any, request: Any, model_dir: str) -> Dict[str, Any]:
    """The frame answering one request."""
    op = request.get("op") if isinstance(request, dict) else None
    handler = HANDLERS.get(op)
    if handler is None:
        return {"error": describe_error(ValueError("unknown request {!r}".format(op)), model_dir, None)}
    return handler(service, request, model_dir)


def handle_inference(service: Any, request: Dict[str, Any], model_dir: str) -> Dict[str, Any]:
    """service.inference on the request's data; the answer as ModelArts sends it: JSON text."""
    try:
        result = service.inference(with_files(request.get("data")))
    except Exception as exc:  # user code: reported with its step, type and line
        return {"error": describe_error(exc, model_dir, "inference")}
    try:
        return {"ok": json.dumps(result, ensure_ascii=False)}
    except (TypeError, ValueError) as exc:  # e.g. a numpy int64 in the answer, as on ModelArts
        return {"error": describe_error(exc, model_dir, "answer")}


def handle_preprocess(service: Any, request: Dict[str, Any], model_dir: str) -> Dict[str, Any]:
    """Only _preprocess on the request's data (the prediction page's preview)."""
    try:
        return {"ok": plain(service._preprocess(with_files(request.get("data"))))}
    except Exception as exc:  # user code, or a result that cannot be sent
        return {"error": describe_error(exc, model_dir, "_preprocess")}


def handle_describe(service: Any, request: Dict[str, Any], model_dir: str) -> Dict[str, Any]:
    """The loaded service's class, signature and library versions."""
    return {"ok": describe_service(service)}


def handle_ping(service: Any, request: Dict[str, Any], model_dir: str) -> Dict[str, Any]:
    """Proof of life."""
    return {"ok": "pong"}


HANDLERS = {
    "inference": handle_inference,
    "preprocess": handle_preprocess,
    "describe": handle_describe,
    "ping": handle_ping,
}  # type: Dict[Any, Callable[[Any, Dict[str, Any], str], Dict[str, Any]]]


def with_files(data: Any) -> Any:
    """The request data as user code sees it: every bytes value (an uploaded file) as a BytesIO."""
    if isinstance(data, bytes):
        return io.BytesIO(data)
    if isinstance(data, dict):
        return {key: with_files(value) for key, value in data.items()}
    if isinstance(data, list):
        return [with_files(value) for value in data]
    return data


def plain(value: Any) -> Any:
    """value as plain data: numpy arrays as {ARRAY_TAG: {"dtype", "shape", "data": nested lists}}."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (str, bytes, bool, int, float)):
        return value
    if type(value).__module__ == "numpy":
        import numpy as np

        array = np.asarray(value)
        return {ARRAY_TAG: {"dtype": array.dtype.name, "shape": list(array.shape), "data": array.tolist()}}
    raise TypeError("{} cannot be sent back (only arrays, containers and scalars)".format(type(value).__name__))


def describe_service(service: Any) -> Dict[str, Any]:
    """What the host shows about the loaded service: its class, signature and library versions."""
    signature = getattr(service, "describe_signature", None)
    return {"service": type(service).__name__,
            "signature": signature() if callable(signature) else None,
            "versions": versions()}


def versions() -> Dict[str, Optional[str]]:
    """Python's version, and numpy's, Pillow's and TensorFlow's when the service imported them."""
    found = {"python": platform.python_version()}  # type: Dict[str, Optional[str]]
    for label, module in (("numpy", "numpy"), ("Pillow", "PIL"), ("tensorflow", "tensorflow")):
        found[label] = getattr(sys.modules.get(module), "__version__", None)
    return found


def describe_error(exc: BaseException, model_dir: str, step: Optional[str]) -> Dict[str, Any]:
    """An exception as plain data; a StepFailed is described by the user code's exception it wraps."""
    service = None
    if isinstance(exc, StepFailed) and exc.__cause__ is not None:
        step, service, exc = exc.step, exc.service, exc.__cause__
    return {"type": type(exc).__name__, "builtin": nearest_builtin(type(exc)), "message": describe(exc),
            "step": step, "service": service,
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            "location": user_location(exc, model_dir)}


def nearest_builtin(cls: type) -> str:
    """The first builtin class in cls's MRO (UnidentifiedImageError -> OSError)."""
    for base in cls.__mro__:
        if base.__module__ == "builtins" and getattr(builtins, base.__name__, None) is base:
            return base.__name__
    return "Exception"


def user_location(exc: BaseException, model_dir: str) -> Optional[str]:
    """'customize_service.py:LINE' of the deepest traceback frame in the model folder, if any.

    A load failure's own frames are the runtime's: its cause's frames are searched too.
    """
    folder = os.path.realpath(model_dir)
    frames = []
    for error in (exc, exc.__cause__):
        if error is not None:
            frames += [(frame.filename, frame.lineno) for frame in traceback.extract_tb(error.__traceback__)]
            if isinstance(error, SyntaxError) and error.filename:
                frames.append((error.filename, error.lineno))
    for filename, line in reversed(frames):
        path = os.path.realpath(filename)
        if path.startswith(folder + os.sep):
            return "{}:{}".format(os.path.relpath(path, folder), line)
    return None


if __name__ == "__main__":
    main()
