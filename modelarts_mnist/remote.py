"""A model service whose model side runs in another interpreter: an engine's environment.

`RemoteService` starts `python -m model_service.worker` with that interpreter (its own TensorFlow,
numpy and Pillow, with model_service installed), hands it one end of a socket pair, and talks to it
in frames (model_service.wire). To the server it looks like a local service: inference(data),
_preprocess(data) and describe_signature(). Failures come back as the runtime's own exceptions,
with the user code's file and line, so the server edge maps them exactly as for a local service.
"""
from __future__ import annotations

import builtins
import collections
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from typing import Any

from model_service import wire
from model_service.errors import ServiceLoadError, StepFailed
from model_service.saved_model import LOADER_ENV
from model_service.worker import ARRAY_TAG

from .errors import EngineError, InferenceFailed
from .loader import package_error

logger = logging.getLogger(__name__)

LOAD_TIMEOUT = 300.0  # seconds: TensorFlow's import alone takes ~5 s on an idle core
EXIT_TIMEOUT = 5.0
TAIL_LINES = 20
LOAD_ERRORS = ("ServiceLoadError", "SignatureError")  # the package's fault, not the engine's
# The engine's environment is a Python of its own: this interpreter's module search settings would break it.
NOT_INHERITED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH", "VIRTUAL_ENV")


class RemoteTraceback(Exception):
    """The worker's formatted traceback, chained under a rebuilt exception so logs show it."""

    def __str__(self) -> str:
        return "\n" + self.args[0].rstrip()


class RemoteService:
    """The package in model_dir, loaded and run by `python` (one worker process, one request at a time)."""

    def __init__(self, python: str | os.PathLike, model_dir: str | os.PathLike, model_name: str = "mnist",
                 env: dict[str, str] | None = None, load_timeout: float = LOAD_TIMEOUT):
        """Start the worker and wait until it loaded the service.

        Args:
            env: variables added to the worker's environment (this process's, minus its Python path
                settings). The SavedModel loader defaults to v1, the TF Serving path.

        Raises:
            PackageError: the package gives no service there (its file, class or constructor).
            EngineError: the worker could not start, died, or did not answer within load_timeout.
        """
        self.python, self.model_path, self.model_name = str(python), str(model_dir), model_name
        self._lock = threading.Lock()
        self._dead: str | None = None
        self._home = container_home(self.model_path)
        try:
            self._sock, self._process, self._stderr = start_worker(self.python, self.model_path, model_name, env,
                                                                   cwd=self._home)
        except BaseException:
            shutil.rmtree(self._home, ignore_errors=True)
            raise
        try:
            description = self._first_answer(load_timeout)
        except BaseException:
            self.close()
            raise
        self.service_class: str = description["service"]
        self.signature: dict[str, Any] | None = description["signature"]
        self.versions: dict[str, str | None] = description["versions"]

    def inference(self, data: Any) -> Any:
        """The service's answer to one request (ModelArts' data shape; files as file objects or bytes).

        Raises:
            StepFailed: user code raised; __cause__ is a builtin exception of the same kind.
            InferenceFailed: the answer is not JSON-encodable, or the worker is gone (500).
        """
        reply = self._call({"op": "inference", "data": to_wire(data)})
        if "ok" in reply:
            return json.loads(reply["ok"])
        error = reply["error"]
        if error["step"] == "answer":
            raise InferenceFailed(f"{self.service_class}: the answer is not JSON-encodable "
                                  f"({error['type']}: {error['message']})")
        cause = rebuild_cause(error)
        raise StepFailed(step_message(error, self.service_class), error["step"], self.service_class) from cause

    def _preprocess(self, data: Any) -> Any:
        """Only the service's _preprocess (for the page's preview); raises what user code raised."""
        reply = self._call({"op": "preprocess", "data": to_wire(data)})
        if "ok" in reply:
            return from_wire(reply["ok"])
        raise rebuild_cause(reply["error"], with_location=True)

    def describe_signature(self) -> dict[str, Any] | None:
        """The served signature as the worker describes it (None for a service without one)."""
        return self.signature

    def describe(self) -> dict[str, Any]:
        """Ask the worker now: {"service", "signature", "versions"} (versions of what it has imported)."""
        return self._call({"op": "describe"})["ok"]

    def ping(self) -> bool:
        """True when the worker answers."""
        return self._call({"op": "ping"}).get("ok") == "pong"

    def close(self) -> None:
        """Stop the worker (it exits when its socket closes) and wait for it; idempotent."""
        self._dead = self._dead or "the service was closed"
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes a request blocked in another thread
        except OSError:
            pass
        self._sock.close()
        stop_process(self._process)
        self._stderr.join()
        shutil.rmtree(self._home, ignore_errors=True)  # removes the link, never the package it points to

    def __enter__(self) -> RemoteService:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _first_answer(self, timeout: float) -> dict[str, Any]:
        """The worker's load answer: the service's description, or the reason it did not load."""
        self._sock.settimeout(timeout)
        try:
            reply = wire.receive(self._sock)
        except socket.timeout as exc:
            self._process.kill()  # stuck in the user's import or constructor: waiting longer helps nobody
            raise EngineError(f"{self.python}: the model worker did not load {self.model_path} "
                              f"within {timeout:.0f} s") from exc
        except (OSError, EOFError) as exc:
            raise EngineError(f"{self.python}: the model worker stopped before loading the model: "
                              f"{self._exit_reason()}") from exc
        self._sock.settimeout(None)
        if "ok" in reply:
            logger.info("model worker %d (%s) serves %s", self._process.pid, self.python, self.model_path)
            return reply["ok"]
        error = reply["error"]
        if error["type"] in LOAD_ERRORS:
            raise package_error(ServiceLoadError(error["message"])) from RemoteTraceback(error["traceback"])
        raise EngineError(f"{self.python}: the model worker could not load the service: "
                          f"{error['type']}: {error['message']}") from RemoteTraceback(error["traceback"])

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and read its answer (one at a time per worker)."""
        with self._lock:
            if self._dead:
                raise InferenceFailed(f"model worker unavailable: {self._dead}")
            try:
                wire.send(self._sock, request)
                return wire.receive(self._sock)
            except (OSError, EOFError) as exc:
                self._dead = f"it stopped while answering: {self._exit_reason()}"
                raise InferenceFailed(f"model worker ({self.python}) {self._dead}") from exc

    def _exit_reason(self) -> str:
        """How the worker ended, with the end of what it wrote to stderr."""
        try:
            code = self._process.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            return "it no longer answers (still running)"
        self._stderr.join()
        tail = " | ".join(line for line in self._stderr.lines if line.strip())
        return f"exit code {code}" + (f"; its last output: {tail}" if tail else "")


class StderrTail:
    """Forwards the worker's stderr (its log and user prints) to our log, keeping the last lines."""

    def __init__(self, stream: Any, pid: int):
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.pid = pid
        self.thread = threading.Thread(target=self._pump, args=(stream,), name=f"worker-{pid}-stderr", daemon=True)
        self.thread.start()

    def _pump(self, stream: Any) -> None:
        with stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                self.lines.append(line)
                logger.info("[worker %d] %s", self.pid, line)

    def join(self, timeout: float = EXIT_TIMEOUT) -> None:
        """Wait until the worker's stderr is drained (it closes when the worker exits)."""
        self.thread.join(timeout)


def container_home(model_dir: str) -> str:
    """A working directory laid out as the serving container's /home/mind: model/1 is the package.

    Some real packages open `model/1/...` relative to the working directory.
    """
    home = tempfile.mkdtemp(prefix="modelarts-home-")
    os.mkdir(os.path.join(home, "model"))
    os.symlink(os.path.abspath(model_dir), os.path.join(home, "model", "1"))
    return home


def start_worker(python: str, model_dir: str, model_name: str, env: dict[str, str] | None,
                 cwd: str | None = None) -> tuple[socket.socket, subprocess.Popen, StderrTail]:
    """Start `python -m model_service.worker` on one end of a fresh socket pair; ours is returned."""
    ours, theirs = socket.socketpair()
    command = [python, "-u", "-m", "model_service.worker", "--model-dir", model_dir, "--model-name", model_name,
               "--fd", str(theirs.fileno()), "--log-level", worker_log_level()]
    try:
        process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), env=worker_env(env), cwd=cwd,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except OSError as exc:
        ours.close()
        raise EngineError(f"cannot start the model worker with {python}: {exc}") from exc
    finally:
        theirs.close()  # the worker holds it now; ours must see EOF when the worker exits
    return ours, process, StderrTail(process.stderr, process.pid)


def worker_env(extra: dict[str, str] | None) -> dict[str, str]:
    """The worker's environment: ours without Python path settings, plus extra; the v1 loader by default."""
    env = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
    env.update(extra or {})
    env.setdefault(LOADER_ENV, "v1")  # the path TF Serving takes, on every TensorFlow
    return env


def worker_log_level() -> str:
    """The level our model_service loggers have: the worker logs what a local service would show here."""
    level = logging.getLogger("model_service").getEffectiveLevel()
    return next((name for name in ("DEBUG", "INFO", "WARNING") if level <= getattr(logging, name)), "ERROR")


def stop_process(process: subprocess.Popen) -> None:
    """Wait for the process to exit on its own, then kill it."""
    try:
        process.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        logger.warning("model worker %d did not exit; killing it", process.pid)
        process.kill()
        process.wait()


def to_wire(data: Any) -> Any:
    """Request data as plain values: file objects (BytesIO, werkzeug FileStorage) read to bytes."""
    if isinstance(data, dict):
        return {key: to_wire(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [to_wire(value) for value in data]
    if data is None or isinstance(data, (str, bytes, bool, int, float)):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "read"):
        return read_file(data)
    raise TypeError(f"cannot send a {type(data).__name__} to the model worker (files, text and JSON only)")


def read_file(file: Any) -> bytes:
    """The whole content of a file object, from its start."""
    getvalue = getattr(file, "getvalue", None)
    if callable(getvalue):
        return bytes(getvalue())
    if hasattr(file, "seek"):
        file.seek(0)
    return bytes(file.read())


def from_wire(value: Any) -> Any:
    """Plain data from the worker with its tagged arrays as numpy arrays again."""
    if isinstance(value, dict):
        if set(value) == {ARRAY_TAG}:
            import numpy as np

            array = value[ARRAY_TAG]
            return np.array(array["data"], dtype=array["dtype"]).reshape(array["shape"])
        return {key: from_wire(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_wire(item) for item in value]
    return value


def rebuild_cause(error: dict[str, Any], *, with_location: bool = False) -> BaseException:
    """A builtin exception standing for the one user code raised, the worker's traceback chained under it."""
    message = error["message"]
    if with_location and error.get("location"):
        message = f"{message} (at {error['location']})"
    cause = new_builtin(error.get("builtin") or "Exception", message)
    cause.__cause__ = RemoteTraceback(error["traceback"])
    return cause


def new_builtin(name: str, message: str) -> BaseException:
    """builtins.<name>(message), or the nearest base class that takes a single message."""
    cls = getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = Exception
    for base in cls.__mro__:
        try:
            return base(message)
        except TypeError:  # e.g. UnicodeDecodeError needs five arguments
            continue
    return Exception(message)


def step_message(error: dict[str, Any], service: str) -> str:
    """'Service._preprocess raised KeyError: ... (at customize_service.py:62)', as a local StepFailed says."""
    owner = error.get("service") or service
    text = f"{owner}.{error['step']} raised {error['type']}: {error['message']}"
    return f"{text} (at {error['location']})" if error.get("location") else text

