"""Single-object operations on OBS/S3 through an injected boto3 client, each verified and with clear errors."""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import checksum
from .errors import StorageError
from .files import partial_path
from .obs import ObsSettings, create_client, from_env, translated

log = logging.getLogger(__name__)

MULTIPART_THRESHOLD = 8 * checksum.MIB
PART_SIZE = 8 * checksum.MIB


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key, size in bytes and ETag (without quotes)."""

    key: str
    size: int
    etag: str


class ObjectStore:
    """OBS/S3 objects through one boto3 client; give `client` (tests, callers) or `settings` (else the env).

    Every client call runs inside `obs.translated`, the one place its failures become StorageErrors.
    """

    def __init__(self, client: Any = None, *, settings: ObsSettings | None = None,
                 multipart_threshold: int = MULTIPART_THRESHOLD, part_size: int = PART_SIZE):
        self._client = client
        self._settings = settings
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size

    def __repr__(self) -> str:
        endpoint = self._settings.endpoint if self._settings else None
        return f"ObjectStore(endpoint={endpoint!r})"

    @property
    def client(self) -> Any:
        """The boto3 client, created from the settings (or the environment) on first use."""
        if self._client is None:
            self._client = create_client(self._settings or from_env())
        return self._client

    def transfer_config(self) -> Any:
        """boto3's TransferConfig: multipart above the threshold, parts of part_size, bounded restarts."""
        from boto3.s3.transfer import TransferConfig

        # s3transfer restarts a download whose body stalls 5 times on its own; keep it to our attempts.
        attempts = (self._settings or ObsSettings()).max_attempts
        return TransferConfig(multipart_threshold=self.multipart_threshold, multipart_chunksize=self.part_size,
                              max_concurrency=4, use_threads=True, num_download_attempts=attempts)

    def require_bucket(self, bucket: str, key: str = "") -> None:
        """Raise a StorageError naming the bucket (and the key about to be used) unless the bucket is usable."""
        try:
            with translated(bucket, key):
                self.client.head_bucket(Bucket=bucket)
        except StorageError as error:
            if error.http_status != 404:
                raise
            where = f"obs://{bucket}/{key}" if key else f"obs://{bucket}"
            raise StorageError(f"cannot access {where}: bucket {bucket!r} does not exist", http_status=404) from error

    def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's info, or None when the bucket exists but the key does not."""
        try:
            with translated(bucket, key, "read"):
                head = self.client.head_object(Bucket=bucket, Key=key)
        except StorageError as error:
            if error.http_status != 404:
                raise
            self.require_bucket(bucket, key)  # a 404 on HEAD may also mean "no such bucket"
            return None
        return ObjectInfo(key, int(head["ContentLength"]), checksum.clean_etag(head.get("ETag")))

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix` (directory markers ending in '/' left out)."""
        with translated(bucket, prefix, "list"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    if not item["Key"].endswith("/"):
                        yield ObjectInfo(item["Key"], int(item["Size"]), checksum.clean_etag(item.get("ETag")))

    def list_level(self, bucket: str, prefix: str = "") -> tuple[list[str], list[ObjectInfo]]:
        """One folder level under `prefix`: (sub-prefixes, objects), like `ls`."""
        folders: list[str] = []
        objects: list[ObjectInfo] = []
        with translated(bucket, prefix, "list"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                folders += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
                objects += [ObjectInfo(i["Key"], int(i["Size"]), checksum.clean_etag(i.get("ETag")))
                            for i in page.get("Contents", []) if not i["Key"].endswith("/")]
        return folders, objects

    def list_buckets(self) -> list[str]:
        """Names of the buckets these credentials can see."""
        with translated("", action="list buckets"):
            return [b["Name"] for b in self.client.list_buckets().get("Buckets", [])]

    def expected_etag(self, path: Path) -> str:
        """The ETag our upload of `path` will get."""
        size = path.stat().st_size
        return checksum.expected_etag(path, size, self.multipart_threshold, self.part_size)

    def matches(self, path: Path, info: ObjectInfo | None) -> bool | None:
        """Whether local `path` has the object's content: True/False, None when the ETag cannot tell."""
        if info is None or not path.is_file() or path.stat().st_size != info.size:
            return False
        return checksum.matches_etag(path, info.etag, part_size=self.part_size)

    def upload(self, path: Path, bucket: str, key: str, callback: Callable[[int], None] | None = None) -> ObjectInfo:
        """Upload one file (multipart when large), then check size and ETag; nothing half-done is left."""
        try:
            with translated(bucket, key, "upload"):
                self.client.upload_file(str(path), bucket, key, Config=self.transfer_config(), Callback=callback)
        except BaseException:  # Ctrl-C and SIGTERM too: no paid-for parts are left behind
            self.abort_incomplete(bucket, key)
            raise
        return self.verify_upload(path, bucket, key)

    def verify_upload(self, path: Path, bucket: str, key: str) -> ObjectInfo:
        """Check the stored object against `path`; delete it and raise when it does not match."""
        info = self.stat(bucket, key)
        if info is None:
            raise StorageError(f"upload of {path} to obs://{bucket}/{key} finished but the object is missing")
        verdict = self.matches(path, info)
        if verdict is False:
            self.remove(bucket, [key])
            raise StorageError(f"upload of {path} to obs://{bucket}/{key} does not match after transfer "
                               f"(size {info.size}, ETag {info.etag}); the object was removed")
        if verdict is None:
            log.debug("obs://%s/%s: ETag %s is not an MD5, verified size only", bucket, key, info.etag)
        return info

    def download(self, bucket: str, key: str, path: Path, callback: Callable[[int], None] | None = None,
                 info: ObjectInfo | None = None) -> ObjectInfo:
        """Download one object beside `path`, check size and ETag, then rename into place."""
        info = info or self.stat(bucket, key)
        if info is None:
            raise StorageError(f"cannot read obs://{bucket}/{key}: no such object {key!r} in bucket {bucket!r}",
                               http_status=404)
        temp = partial_path(path)  # a killed run's partial is swept by the next (files.sweep_partials)
        try:
            with translated(bucket, key, "download"), _naming(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                self.client.download_file(bucket, key, str(temp), Config=self.transfer_config(), Callback=callback)
                if self.matches(temp, info) is False:
                    raise StorageError(f"download of obs://{bucket}/{key} to {path} does not match the object "
                                       f"(size {info.size}, ETag {info.etag})")
                os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        return info

    def copy_object(self, src: ObjectInfo, src_bucket: str, bucket: str, key: str) -> ObjectInfo:
        """Server-side copy of one object, then check its size."""
        try:
            with translated(bucket, key, "copy to"):
                self.client.copy({"Bucket": src_bucket, "Key": src.key}, bucket, key, Config=self.transfer_config())
        except BaseException:
            self.abort_incomplete(bucket, key)
            raise
        info = self.stat(bucket, key)
        if info is None or info.size != src.size:
            raise StorageError(f"copy of obs://{src_bucket}/{src.key} to obs://{bucket}/{key} does not match")
        return info

    def remove(self, bucket: str, keys: list[str]) -> int:
        """Delete `keys` (in batches of 1,000); returns how many were asked for."""
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start:start + 1000]]
            with translated(bucket, batch[0]["Key"], "delete"):
                answer = self.client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            if answer.get("Errors"):
                first = answer["Errors"][0]
                raise StorageError(f"cannot delete obs://{bucket}/{first['Key']}: {first.get('Code')} "
                                   f"{first.get('Message', '')}".strip())
        return len(keys)

    def abort_incomplete(self, bucket: str, key: str) -> int:
        """Abort multipart uploads left open for exactly `key`, so no partial parts linger; returns the count."""
        return self.abort_open_uploads(bucket, key, {key})

    def abort_open_uploads(self, bucket: str, prefix: str, keys: set[str]) -> int:
        """Abort the open multipart uploads under `prefix` whose key is one of `keys`; returns the count.

        Called before a copy writes `keys`, this cleans what a killed earlier run left open; an upload
        of the same key running at this moment in another process is aborted too (it fails and can
        be re-run), which is the price of not leaving paid-for parts behind for ever.
        """
        aborted = 0
        try:
            with translated(bucket, prefix, "abort open uploads under"):
                pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
                for upload in (u for page in pages for u in page.get("Uploads", []) if u["Key"] in keys):
                    self.client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                    aborted += 1
        except StorageError as exc:  # cleanup is best effort; the copy itself matters
            log.warning("%s", exc)
        if aborted:
            log.info("aborted %d multipart upload(s) left open under obs://%s/%s", aborted, bucket, prefix)
        return aborted



@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Local file errors name the file being written (`path`), not the hidden partial copy beside it."""
    try:
        yield
    except OSError as exc:
        elsewhere = exc.filename is not None and not str(exc.filename).startswith(str(path.parent))
        if exc.errno is None or elsewhere:  # a write error carries no file name: it is this file's
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
