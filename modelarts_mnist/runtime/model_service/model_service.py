"""ModelArts' service base classes: the _preprocess -> _inference -> _postprocess template."""
import logging
import time
from typing import Any

from .errors import StepFailed

logger = logging.getLogger(__name__)

STEPS = ("_preprocess", "_inference", "_postprocess")


class BaseService:
    """A model service built once as cls(model_name, model_path) by the runtime."""

    def __init__(self, model_name: str, model_path: str):
        self.model_name = model_name
        self.model_path = model_path

    def inference(self, data: Any) -> Any:
        """Answer one request; subclasses define how."""
        raise NotImplementedError

    def ping(self) -> None:
        """Kept for compatibility with the platform runtime, which does nothing here."""

    def signature(self) -> None:
        """Kept for compatibility with the platform runtime, which does nothing here."""


class SingleNodeService(BaseService):
    """Runs _preprocess, _inference and _postprocess in turn, logging each step's time."""

    def inference(self, data: Any) -> Any:
        """Run the three hooks on one request's data and return the answer.

        Raises:
            StepFailed: a hook raised; the hook's exception is its __cause__.
        """
        for step in STEPS:
            data = self._run_step(step, data)
        return data

    def _run_step(self, step: str, data: Any) -> Any:
        start = time.perf_counter()
        try:
            result = getattr(self, step)(data)
        except StepFailed:
            raise  # a nested service already said which step failed
        except Exception as exc:
            name = type(self).__name__
            message = "{}.{} raised {}: {}".format(name, step, type(exc).__name__, describe(exc))
            raise StepFailed(message, step, name) from exc
        logger.info("%s time: %.3f ms", step.lstrip("_"), (time.perf_counter() - start) * 1e3)
        return result

    def _preprocess(self, data: Any) -> Any:
        return data

    def _inference(self, data: Any) -> Any:
        return data

    def _postprocess(self, data: Any) -> Any:
        return data


def describe(exc: BaseException) -> str:
    """The exception's message on one line (KeyError's str() adds quotes; drop them)."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
