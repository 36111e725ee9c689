"""The config.json rules of ModelArts' model-package specification, as Problems with JSON paths."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

FORBIDDEN_CHARS = set("&!'\"<>=")
MODEL_TYPES = {"TensorFlow", "MXNet", "Spark_MLlib", "Caffe", "Scikit_Learn", "XGBoost", "PyTorch",
               "MindSpore", "Image"}
# The docs' own examples misspell `applicaton/json`; ModelArts evidently accepts it.
CONTENT_TYPES = {"application/json", "applicaton/json", "multipart/form-data"}
RESTRAINT_OPERATORS = {"EXACT": "==", "ATLEAST": ">=", "ATMOST": "<="}  # config.json restraint -> pip operator
RESTRAINTS = set(RESTRAINT_OPERATORS)
# "list" appears in deployed configs' response schemas; ModelArts' import accepts it as an array.
SCHEMA_TYPES = {"object", "array", "list", "string", "number", "integer", "boolean", "null", "file"}
METRICS = ("f1", "recall", "precision", "accuracy")


@dataclass(frozen=True)
class Problem:
    """One reason ModelArts would refuse (or misserve) the package, and where it is."""

    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


def problem(path: str, message: str) -> Problem:
    """A Problem located in config.json at a JSON path."""
    return Problem(f"config.json {path}", message)


def check_config(config: Any) -> list[Problem]:
    """Every rule of spec section 2 that config.json breaks."""
    if not isinstance(config, dict):
        return [problem("$", "must be a JSON object")]
    image = config.get("model_type") == "Image"
    checks = [check_algorithm(config), check_model_type(config), check_optional_string(config, "runtime"),
              check_metrics(config.get("metrics")), check_apis(config.get("apis"), image),
              check_dependencies(config.get("dependencies"), image), check_health(config, image)]
    return [p for check in checks for p in check]


def check_algorithm(config: dict) -> Iterator:
    value = config.get("model_algorithm")
    if value is None:
        yield problem("$.model_algorithm", "required field missing")
    elif not isinstance(value, str) or not value:
        yield problem("$.model_algorithm", "must be a non-empty string")
    elif not (value[0].isascii() and value[0].isalpha()):
        yield problem("$.model_algorithm", f"{value!r} must start with a letter")
    elif len(value) > 36 or FORBIDDEN_CHARS & set(value) or not value.isascii():
        yield problem("$.model_algorithm", f"{value!r}: at most 36 ASCII characters, none of & ! ' \" < > =")


def check_model_type(config: dict) -> Iterator:
    value = config.get("model_type")
    if value is None:
        yield problem("$.model_type", "required field missing")
    elif value not in MODEL_TYPES:
        yield problem("$.model_type", f"{value!r} is not one of {', '.join(sorted(MODEL_TYPES))}")
    elif value == "Image" and not isinstance(config.get("swr_location"), str):
        yield problem("$.swr_location", "required (a string) when model_type is Image")


def check_optional_string(config: dict, key: str) -> Iterator:
    if key in config and (not isinstance(config[key], str) or not config[key]):
        yield problem(f"$.{key}", "must be a non-empty string")


def check_metrics(metrics: Any) -> Iterator:
    if metrics is None:
        return
    if not isinstance(metrics, dict):
        yield problem("$.metrics", "must be an object")
        return
    for name in METRICS:
        value = metrics.get(name)
        if name in metrics and (isinstance(value, bool) or not isinstance(value, (int, float))):
            yield problem(f"$.metrics.{name}", f"must be a number, not {value!r}")


def check_apis(apis: Any, image: bool) -> Iterator:
    if apis is None:
        return
    if not isinstance(apis, list):
        yield problem("$.apis", "must be an array")
        return
    if not image and len(apis) > 1:
        yield problem("$.apis", f"{len(apis)} APIs declared; a non-Image model may declare only one")
    for index, api in enumerate(apis):
        yield from check_api(api, f"$.apis[{index}]", image)


def check_api(api: Any, path: str, image: bool) -> Iterator:
    if not isinstance(api, dict):
        yield problem(path, "must be an object")
        return
    protocol = api.get("protocol", api.get("procotol", "http"))  # the docs' examples say `procotol`
    if protocol not in ("http", "https"):
        yield problem(f"{path}.protocol", f"{protocol!r} must be http or https")
    if not image and api.get("url", "/") != "/":
        yield problem(f"{path}.url", f"{api.get('url')!r}: a non-Image model's API url must be \"/\"")
    method = api.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        yield problem(f"{path}.method", f"{method!r}: the online service answers POST only")
    for part in ("request", "response"):
        if part in api:
            yield from check_body(api[part], f"{path}.{part}")


def check_body(body: Any, path: str) -> Iterator:
    if not isinstance(body, dict):
        yield problem(path, "must be an object with Content-type and data")
        return
    content_type = body.get("Content-type", body.get("Content-Type", "application/json"))
    if content_type not in CONTENT_TYPES:
        yield problem(f"{path}.Content-type", f"{content_type!r} is not one of {', '.join(sorted(CONTENT_TYPES))}")
    if "data" in body:
        yield from check_schema(body["data"], f"{path}.data")


def check_schema(schema: Any, path: str) -> Iterator:
    """A JSON-Schema-like description: known types; properties, items (or `item`) recursively."""
    if not isinstance(schema, dict):
        yield problem(path, "must be a schema object")
        return
    kinds = schema.get("type", "object")
    for kind in kinds if isinstance(kinds, list) else [kinds]:
        if kind not in SCHEMA_TYPES:
            yield problem(f"{path}.type", f"{kind!r} is not one of {', '.join(sorted(SCHEMA_TYPES))}")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        yield problem(f"{path}.properties", "must be an object")
    else:
        for name, child in properties.items():
            yield from check_schema(child, f"{path}.properties.{name}")
    key = "items" if "items" in schema else "item"  # the docs' examples say `item`
    children = schema.get(key, [])
    for index, child in enumerate(children if isinstance(children, list) else [children]):
        yield from check_schema(child, f"{path}.{key}" + (f"[{index}]" if isinstance(children, list) else ""))
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        yield problem(f"{path}.required", "must be an array of field names")


def check_dependencies(dependencies: Any, image: bool) -> Iterator:
    if dependencies is None:
        return
    if image:
        yield problem("$.dependencies", "not allowed for custom-image (Image) models")
    if not isinstance(dependencies, list):
        yield problem("$.dependencies", "must be an array")
        return
    for index, dependency in enumerate(dependencies):
        yield from check_dependency(dependency, f"$.dependencies[{index}]")


def check_dependency(dependency: Any, path: str) -> Iterator:
    if not isinstance(dependency, dict):
        yield problem(path, "must be an object")
        return
    if dependency.get("installer") != "pip":
        yield problem(f"{path}.installer", f"{dependency.get('installer')!r}: only \"pip\" is supported")
    packages = dependency.get("packages")
    if not isinstance(packages, list):
        yield problem(f"{path}.packages", "required array of packages missing")
        return
    for index, package in enumerate(packages):
        yield from check_pip_package(package, f"{path}.packages[{index}]")


def check_pip_package(package: Any, path: str) -> Iterator:
    if not isinstance(package, dict):
        yield problem(path, "must be an object")
        return
    name = package.get("package_name")
    if not isinstance(name, str) or not name or FORBIDDEN_CHARS & set(name):
        yield problem(f"{path}.package_name", f"{name!r}: required, none of & ! ' \" < > =")
    version = package.get("package_version", "")
    if not isinstance(version, str):
        yield problem(f"{path}.package_version", f"{version!r} must be a string")
    elif version and package.get("restraint") not in RESTRAINTS:
        yield problem(f"{path}.restraint",
                      f"{package.get('restraint')!r}: with a version, must be EXACT, ATLEAST or ATMOST")


def check_health(config: dict, image: bool) -> Iterator:
    health = config.get("health")
    if health is None:
        if image:
            yield problem("$.health", "required when model_type is Image")
        return
    if not isinstance(health, dict) or not isinstance(health.get("url"), str):
        yield problem("$.health.url", "required string missing")
    elif health.get("protocol", "http") != "http":
        yield problem("$.health.protocol", "must be http")


def declared_requirements(config: Any) -> Iterator[tuple[str, str]]:
    """(JSON path, pip requirement) of each well-formed pip package config.json declares (check_config reports the rest)."""
    dependencies = config.get("dependencies") if isinstance(config, dict) else None
    for i, dependency in enumerate(dependencies if isinstance(dependencies, list) else []):
        if not isinstance(dependency, dict) or dependency.get("installer", "pip") != "pip":
            continue
        packages = dependency.get("packages")
        for j, package in enumerate(packages if isinstance(packages, list) else []):
            name = package.get("package_name") if isinstance(package, dict) else None
            if not isinstance(name, str) or not name:
                continue
            version = package.get("package_version") or ""
            operator = RESTRAINT_OPERATORS.get(package.get("restraint"), "==") if version else ""
            yield f"$.dependencies[{i}].packages[{j}]", f"{name}{operator}{version}"
