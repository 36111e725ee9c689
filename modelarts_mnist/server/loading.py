"""The served model: loaded once (up front or in the background), warmed up, then handed to requests."""
from __future__ import annotations

import io
import logging
import os
import sys
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from ..errors import ModelNotReady

logger = logging.getLogger(__name__)

# Set only on the app's own warm-up requests (HTTP clients cannot set environ keys).
WARMUP_KEY = "modelarts_mnist.warmup"
WARMUP_ROUNDS = 3


class ModelSlot:
    """Holds the service; requests get it only once it is loaded and warmed up."""

    def __init__(self, service: Any = None):
        self.service = service
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self.fill_thread: threading.Thread | None = None
        if service is not None:
            self._ready.set()

    @property
    def ready(self) -> bool:
        """True once the service answers real requests."""
        return self._ready.is_set()

    def get(self, *, warming: bool = False) -> Any:
        """The service; ModelNotReady (503) while loading or after a failed load."""
        if self._ready.is_set() or (warming and self.service is not None):
            return self.service
        if self.error is not None:
            raise ModelNotReady(f"model failed to load: {self.error}")
        raise ModelNotReady("model is loading; retry when GET /health answers 200")

    def fill(self, load: Callable[[], Any], warm_up: Callable[[], None]) -> None:
        """Load and warm up the service; a failure is logged and kept in .error, not raised."""
        try:
            self.service = load()
            warm_up()
        except Exception as exc:  # any load failure must reach /health and the runner, not vanish
            self.error = exc
            logger.error("model failed to load: %s", exc, exc_info=exc)
            return
        self._ready.set()
        logger.info("model loaded and warmed up")

    def fill_in_background(self, load: Callable[[], Any], warm_up: Callable[[], None]) -> threading.Thread:
        """fill() in a daemon thread, so the server answers /health (503) meanwhile."""
        self.fill_thread = threading.Thread(target=self.fill, args=(load, warm_up), name="model-loader",
                                            daemon=True)
        self.fill_thread.start()
        return self.fill_thread


def warm_up(app: Any, auth_token: str | None = None, rounds: int = WARMUP_ROUNDS) -> None:
    """POST a generated digit through the whole app, so the first real request is already fast."""
    client = app.test_client()
    headers = {"X-Auth-Token": auth_token} if auth_token else {}
    for _ in range(rounds):
        response = client.post("/", data={"images": (io.BytesIO(digit_png()), "warmup.png")},
                               headers=headers, environ_overrides={WARMUP_KEY: True})
    if response.status_code != 200:
        # The package may expect other input; the service still starts, as ModelArts' would.
        logger.warning("warm-up request answered %d: %s", response.status_code,
                       response.headers.get("X-Error-Detail", response.get_data(as_text=True)))


@lru_cache(maxsize=1)
def digit_png() -> bytes:
    """A 28x28 PNG of a hand-drawn-looking 7, white on black like MNIST."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).line([(7, 7), (21, 7), (12, 22)], fill=255, width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def limit_tf_threads(threads: int) -> None:
    """Size TensorFlow's thread pools (via its environment variables, read when it starts).

    Variables already set by the user win. Without importing TensorFlow here, a package that
    does not use it starts fast.
    """
    for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(name, str(threads))
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialized in this process (tests): keep its pools
        logger.debug("TensorFlow already initialized; thread pools left as they are")


def import_tensorflow(model_dir: Any) -> None:
    """Import TensorFlow now if model_dir holds a SavedModel, skipping Keras' scikit-learn wrappers.

    Keras imports scikit-learn (~0.9 s) only for its optional sklearn wrappers, which a served
    model never uses; hiding it during the import lets Keras fall back to its stubs.
    """
    if "tensorflow" in sys.modules or not (Path(model_dir) / "saved_model.pb").is_file():
        return
    hide = "sklearn" not in sys.modules
    if hide:
        sys.modules["sklearn"] = None  # type: ignore[assignment]  # makes `import sklearn` raise ImportError
    try:
        import tensorflow  # noqa: F401
    finally:
        if hide:
            del sys.modules["sklearn"]


def needs_tensorflow(model_dir: Any) -> bool:
    """Whether the package's model runs on TensorFlow here (False: on LiteRT, converted and cached now).

    The rule and its reasons are the runtime's (model_service.lite_engine), which also logs them.
    """
    if not (Path(model_dir) / "saved_model.pb").is_file():
        return False  # no SavedModel: nothing for either engine to load
    from model_service.lite_engine import prepare_engine

    return bool(prepare_engine(str(model_dir)))


def prepare_engine(model_dir: Any, tf_threads: int | None = None) -> None:
    """Get the package's engine ready: convert its model for LiteRT once, or import TensorFlow.

    TensorFlow's pools are sized (via its environment) before it is imported.
    """
    if needs_tensorflow(model_dir):
        if tf_threads:
            limit_tf_threads(tf_threads)
        import_tensorflow(model_dir)


def preload_tensorflow(config: Any) -> None:
    """Get the engine ready once in the master, so forked workers skip the slow part.

    A model served on LiteRT is converted here (once per SavedModel content, cached) and nobody
    imports TensorFlow; otherwise TensorFlow is imported here, only the import: its runtime (thread
    pools, eager context) starts on first use, after the fork, in each worker.
    """
    if config.model_dir is not None:
        prepare_engine(config.model_dir, config.tf_threads or 1)
