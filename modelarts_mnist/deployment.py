"""A package checked against the ModelArts engine it will be deployed on: static checks, then a live run there."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from .errors import EngineError
from .package_rules import Problem
from .runtimes import Environment, Runtime, find_runtime, install, installed, requirements_of, with_dependencies
from .smoke import difference, json_problem, smoke_requests

logger = logging.getLogger(__name__)


def engine_for(config: dict[str, Any], name: str | None) -> Runtime | None:
    """The runtime named on the command line, else the one config.json declares (None if it is not in the table)."""
    if name:
        return find_runtime(name)
    declared = config.get("runtime")
    if not isinstance(declared, str):
        return None
    try:
        return find_runtime(declared)
    except EngineError:
        logger.warning("config.json runtime %r is not reproduced here; engine checks skipped", declared)
        return None


def check_on_engine(model_dir: Path, config: dict[str, Any], runtime: Runtime, *, live: bool | None = None,
                    local_answers: dict[str, Any] | None = None,
                    echo: Callable[[str], None] | None = None) -> list[Problem]:
    """Static checks for `runtime`; then, when its environment is installed (or live=True), a live run there."""
    from .engine_checks import check_dependencies_installable, check_python_syntax, check_saved_model_ops

    problems = [*check_saved_model_ops(model_dir, runtime.tensorflow), *check_python_syntax(model_dir, runtime.python),
                *check_dependencies_installable(config, runtime.python)]
    environment = installed(runtime)
    if live is None:
        live = environment is not None
    if not live:
        return problems
    if problems:
        return problems + [Problem(runtime.name, "live check not run: fix the problems above first")]
    environment = install(runtime, echo=echo)  # builds it, or keeps its model_service copy current
    return problems + check_live(model_dir, config, environment, local_answers or {})


def check_live(model_dir: Path, config: dict[str, Any], environment: Environment,
               local_answers: dict[str, Any]) -> list[Problem]:
    """Load the package inside the engine's environment (dependencies added), send the smoke requests, compare."""
    from .remote import RemoteService

    name = environment.runtime.name
    try:
        layered = with_dependencies(environment, requirements_of(config))
    except EngineError as exc:
        return [Problem("config.json $.dependencies", exc.message)]
    try:
        remote = RemoteService(layered.python, model_dir)
    except Exception as exc:  # any load failure in the engine is the finding itself
        return [Problem(name, f"the package does not load there: {exc}")]
    problems = []
    with remote:
        for request in smoke_requests(config):
            try:
                answer = remote.inference(request.make())
            except Exception as exc:  # the user code's error, with its file and line
                problems.append(Problem(name, f"{request.name}: {exc}"))
                continue
            reason = json_problem(answer) or compare(local_answers.get(request.name), answer)
            if reason:
                problems.append(Problem(name, f"{request.name}: {reason}"))
    return problems


def compare(local: Any, remote: Any) -> str:
    """Why the engine's answer differs from the local twin's ('' when the local one is unknown or equal)."""
    if local is None:
        return ""
    found = difference(local, remote)
    return f"answers differ from the local run: {found}" if found else ""
