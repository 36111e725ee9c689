"""Ask a model for digits: a package loaded in this process, or a running service over HTTP, one image at a time."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .errors import MnistSdkError

Ask = Callable[[Path], Any]


def in_process(model_dir: Path) -> Ask:
    """A function answering one image file with the package's service loaded here, errors as a service's."""
    from model_service.errors import StepFailed

    from .loader import inference_failed, load_service

    service = load_service(model_dir)

    def ask(path: Path) -> Any:
        try:
            with path.open("rb") as image:
                return service.inference({"images": {path.name: image}})
        except (MnistSdkError, StepFailed) as exc:  # StepFailed: user code raised; answered as a service would
            failure = exc if isinstance(exc, MnistSdkError) else inference_failed(exc)
            raise MnistSdkError(f"{failure.message} (HTTP {failure.http_status} on a service)",
                                http_status=failure.http_status) from exc
    return ask


def over_http(url: str, token: str | None = None) -> Ask:
    """A function answering one image file by POSTing it to the service at `url`."""
    from .client import post_image

    return lambda path: post_image(url, path, token)


def describe(answer: Any) -> str:
    """'7 (0.982)' for a ModelArts MNIST answer; the JSON itself for anything else."""
    if isinstance(answer, dict) and "predicted_label" in answer:
        scores = answer.get("scores") or [[answer["predicted_label"], "?"]]
        return f"{answer['predicted_label']} ({scores[0][1]})"
    return json.dumps(answer, ensure_ascii=False)
