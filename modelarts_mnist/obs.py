"""OBS connection settings, the boto3 client OBS needs, and clear errors for what goes wrong.

Settings come from flags or from the environment; every name below is read only by `from_env`:

    MODELARTS_OBS_ENDPOINT       e.g. https://obs.cn-north-1.myhuaweicloud.com  (or AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL)
    MODELARTS_OBS_REGION         e.g. cn-north-1  (or AWS_REGION, AWS_DEFAULT_REGION; else taken from the endpoint)
    MODELARTS_OBS_ACCESS_KEY     (or AWS_ACCESS_KEY_ID)
    MODELARTS_OBS_SECRET_KEY     (or AWS_SECRET_ACCESS_KEY)
    MODELARTS_OBS_ADDRESSING     virtual (default, as OBS documents) | path | auto
    MODELARTS_OBS_CONNECT_TIMEOUT, MODELARTS_OBS_READ_TIMEOUT  seconds (3, 4)
    MODELARTS_OBS_MAX_ATTEMPTS   total tries per request, first one included (3)

An endpoint that accepts connections and never answers therefore fails after at most
max_attempts x read_timeout plus retry jitter (under 1 + 2 s): 12-15 s with the defaults.
The read timeout bounds each wait for the next bytes, not a whole transfer, so large files are fine.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from .errors import StorageError
from .files import describe_os_error

ENV_PREFIX = "MODELARTS_OBS_"
# Our name first, then the standard AWS names, so existing S3 setups work unchanged.
ENV_NAMES = {
    "endpoint": ("MODELARTS_OBS_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "region": ("MODELARTS_OBS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key": ("MODELARTS_OBS_ACCESS_KEY", "AWS_ACCESS_KEY_ID"),
    "secret_key": ("MODELARTS_OBS_SECRET_KEY", "AWS_SECRET_ACCESS_KEY"),
    "addressing": ("MODELARTS_OBS_ADDRESSING",),
    "connect_timeout": ("MODELARTS_OBS_CONNECT_TIMEOUT",),
    "read_timeout": ("MODELARTS_OBS_READ_TIMEOUT",),
    "max_attempts": ("MODELARTS_OBS_MAX_ATTEMPTS",),
}
ADDRESSING_STYLES = ("virtual", "path", "auto")
_OBS_HOST = re.compile(r"obs\.([a-z0-9-]+)\.")
_ENDPOINT = re.compile(r"^https?://(\[[0-9a-f:.]+\]|[^\s/:?#\[\]]+)(:\d{1,5})?(/\S*)?$", re.IGNORECASE)
DENIED_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
                "RequestTimeTooSkewed", "Forbidden"}


@dataclass(frozen=True)
class ObsSettings:
    """Where OBS is and how to talk to it; the secret never shows in repr()."""

    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    addressing: str = "virtual"
    connect_timeout: float = 3.0
    read_timeout: float = 4.0
    max_attempts: int = 3  # also how often a download whose body stalls is restarted (see ObjectStore)

    def __post_init__(self) -> None:
        if self.addressing not in ADDRESSING_STYLES:
            raise StorageError(f"OBS addressing style {self.addressing!r} is not one of {', '.join(ADDRESSING_STYLES)}")
        if self.max_attempts < 1:
            raise StorageError(f"OBS max_attempts must be at least 1, got {self.max_attempts}")
        if self.endpoint is not None and not _ENDPOINT.match(self.endpoint):
            raise StorageError(f"OBS endpoint {self.endpoint!r} is not an http:// or https:// URL with a host "
                               "(e.g. https://obs.cn-north-1.myhuaweicloud.com)")
        if min(self.connect_timeout, self.read_timeout) <= 0:
            raise StorageError(f"OBS timeouts must be positive, got connect {self.connect_timeout}, "
                               f"read {self.read_timeout}")

    @property
    def resolved_region(self) -> str:
        """The signing region: given, else read from an obs.<region>. endpoint, else us-east-1."""
        if self.region:
            return self.region
        match = _OBS_HOST.search(self.endpoint or "")
        return match.group(1) if match else "us-east-1"

    def replace(self, **changes: Any) -> "ObsSettings":
        """A copy with the non-None `changes` applied (flags over environment)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def from_env(env: Mapping[str, str] | None = None, **overrides: Any) -> ObsSettings:
    """Settings from the environment (see the module docstring), with non-None overrides on top."""
    env = os.environ if env is None else env
    found: dict[str, Any] = {}
    for name, keys in ENV_NAMES.items():
        value = next((env[k] for k in keys if env.get(k)), None)
        if value is not None:
            found[name] = value
    for name, kind in (("connect_timeout", float), ("read_timeout", float), ("max_attempts", int)):
        if name in found:
            found[name] = _parse_number(found[name], kind, ENV_PREFIX + name.upper())
    return ObsSettings(**found).replace(**overrides)


def _parse_number(text: str, kind: type, variable: str) -> Any:
    """A number from an environment variable, or an error naming the variable."""
    try:
        return kind(text)
    except ValueError:
        raise StorageError(f"{variable}={text!r} is not a number") from None


def create_client(settings: ObsSettings) -> Any:
    """A boto3 S3 client set up the way OBS needs: SigV4, checksums only when required, bounded retries."""
    import boto3
    from botocore.config import Config

    if not (settings.access_key and settings.secret_key):
        # Without this, boto3 would search its own chain (files, instance metadata) and may hang.
        raise StorageError("no OBS credentials: set MODELARTS_OBS_ACCESS_KEY and MODELARTS_OBS_SECRET_KEY "
                           "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)", http_status=401)
    config = Config(
        signature_version="s3v4",
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": settings.addressing},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
        max_pool_connections=32,
    )
    session = boto3.session.Session()
    client = session.client("s3", endpoint_url=settings.endpoint, region_name=settings.resolved_region,
                            aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key,
                            config=config)
    client.meta.events.register("before-send.s3", _drop_expect_header)
    return client


def _drop_expect_header(request: Any, **_: Any) -> None:
    """Send bodies without waiting for '100 Continue'.

    Some S3 servers (SeaweedFS here) answer such uploads in a way botocore now and then misreads,
    and the request then stalls until the read timeout; the header is not signed, so dropping it is safe.
    """
    request.headers.pop("Expect", None)


@contextlib.contextmanager
def translated(bucket: str, key: str = "", action: str = "access") -> Iterator[None]:
    """The one place a client failure becomes ours: anything raised in the block ends as a named StorageError."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore, s3transfer and local file errors all get a name here
        raise translate_error(exc, bucket, key, action=action) from exc


def translate_error(exc: Exception, bucket: str, key: str = "", *, action: str = "access") -> StorageError:
    """A StorageError naming the bucket and key for a botocore failure (wrong keys, missing bucket/key, no endpoint)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore import exceptions as bx

    if isinstance(exc, S3UploadFailedError) and exc.__context__ is not None:  # s3transfer's wrapper: the cause
        exc = exc.__context__
    where = f"obs://{bucket}/{key}" if key else f"obs://{bucket}"
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                        bx.ConnectionClosedError)):
        return StorageError(f"cannot {action} {where}: OBS endpoint unreachable or not answering ({exc})",
                            http_status=504)
    if isinstance(exc, bx.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in DENIED_CODES or status == 403:
            return StorageError(f"cannot {action} {where}: access denied ({code or status}); check the access "
                                "key and secret key, and the bucket's permissions", http_status=403)
        if code == "NoSuchBucket":
            return StorageError(f"cannot {action} {where}: bucket {bucket!r} does not exist", http_status=404)
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return StorageError(f"cannot {action} {where}: no such object {key!r} in bucket {bucket!r}",
                                http_status=404)
        return StorageError(f"cannot {action} {where}: {code or status} {exc}")
    if isinstance(exc, OSError) and exc.errno is not None:  # the local side: a full disk, a read-only folder
        return StorageError(f"cannot {action} {where}: {describe_os_error(exc)}", http_status=507)
    return StorageError(f"cannot {action} {where}: {type(exc).__name__}: {exc}")
