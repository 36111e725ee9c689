"""MD5 and S3-style ETags of local files, so a local file can be compared with a stored object."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

MIB = 1024 * 1024
_BLOCK = MIB
_PLAIN_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^([0-9a-f]{32})-(\d+)$")
# Part sizes common clients use; tried when an object's ETag says it was uploaded in parts.
COMMON_PART_SIZES = (5 * MIB, 8 * MIB, 15 * MIB, 16 * MIB, 32 * MIB, 64 * MIB, 100 * MIB, 128 * MIB)


def clean_etag(etag: str | None) -> str:
    """An ETag without quotes, lower case ('' for None)."""
    return (etag or "").strip().strip('"').lower()


def md5_of(path: Path) -> str:
    """Hex MD5 of a whole file, read in blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def multipart_etag_of(path: Path, part_size: int) -> str:
    """The ETag S3 gives a file uploaded in parts of `part_size`: md5 of the part MD5s, '-' part count."""
    parts = []
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(part_size), b""):
            parts.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


def expected_etag(path: Path, size: int, multipart_threshold: int, part_size: int) -> str:
    """The ETag our own upload of `path` produces (plain MD5 below the multipart threshold)."""
    if size < multipart_threshold:
        return md5_of(path)
    return multipart_etag_of(path, part_size)


def candidate_part_sizes(size: int, parts: int, preferred: int) -> list[int]:
    """Part sizes that split `size` bytes into exactly `parts` parts, most likely first."""
    derived = -(-size // parts)
    rounded = -(-derived // MIB) * MIB
    sizes = [preferred, rounded, derived, *COMMON_PART_SIZES]
    unique = list(dict.fromkeys(s for s in sizes if s > 0))
    return [s for s in unique if -(-size // s) == parts]


def matches_etag(path: Path, etag: str | None, *, part_size: int = 8 * MIB) -> bool | None:
    """Whether the file's content matches the ETag: True, False, or None when the ETag is not an MD5 kind."""
    etag = clean_etag(etag)
    if _PLAIN_ETAG.match(etag):
        return md5_of(path) == etag
    match = _MULTIPART_ETAG.match(etag)
    if not match:
        return None
    size = path.stat().st_size
    for candidate in candidate_part_sizes(size, int(match.group(2)), part_size):
        if multipart_etag_of(path, candidate) == etag:
            return True
    return False
