"""Reading a stream's manifests, with the ones this process has read before taken from memory.

Every listing of a stream's manifests needs each manifest's content, one request per manifest on an
object store, and a partitioned stream has one manifest per partition: a drop sensor that lists them at
every tick would read the stream's whole history each time (1,781 manifests: 7.0 s on moto, more against
a cloud store). A manifest is read again only when the listing shows a version not read before
(:meth:`~integration_platform.core.lake.LakeStore.list_versions`: the object store's ETag), so a long-
lived process (the code server evaluating the sensor) reads only what changed. A key listed without a
version (a local lake, where a read costs less than a request) is read every time. Why our own code: the
versions come from the listing the caller makes anyway; a caching filesystem (fsspec's) would either ask
the store per object or trust a listing it cached.

What is kept is each manifest's bytes (decoded again at every read, so no caller shares a mutable
object), keyed by its full URI and version, at most :data:`MAX_CACHED_BYTES` in all, the least recently
used dropped first. A read is kept under the listing's version only when it is that version: an ETag
that is a content hash (an MD5 as S3 gives for a single-part upload and fake-gcs-server for any, hex or
base64) must be the MD5 of the bytes read, else the object was written again between the listing and
the read, and the bytes are used but not kept (the next listing reads them again). Any other ETag
(Azure's, GCS's, S3's for encrypted objects) is new with every write, so it can never name other bytes.
"""

import base64
import binascii
import hashlib
import json
import re
import threading
from collections import OrderedDict
from typing import Any

from integration_platform.core.lake import LakeStore

#: Bytes of manifests kept per process (a manifest is 1-40 KB, growing with its stream's columns).
MAX_CACHED_BYTES = 64 << 20

_BODIES: "OrderedDict[tuple[str, str], bytes]" = OrderedDict()
_HELD = [0]  # bytes in _BODIES
_LOCK = threading.Lock()
_HEX_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")


def is_version_of(body: bytes, version: str) -> bool:
    """Whether ``body`` can be the object the ETag ``version`` names: for a content-hash ETag (an MD5, 32
    hex digits or 24 base64 characters, quoted or not), whether it is the MD5 of ``body``; any other ETag
    names one write only, whatever was read under it."""
    tag = version.strip('"')
    digest = hashlib.md5(body, usedforsecurity=False)
    if _HEX_MD5.match(tag):
        return tag.lower() == digest.hexdigest()
    if len(tag) == 24:
        try:
            raw = base64.b64decode(tag, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == 16:
            return raw == digest.digest()
    return True


def read_listed(store: LakeStore, prefix: str, suffix: str = ".json") -> list[Any]:
    """The JSON objects under ``prefix`` whose keys end in ``suffix``, in key order: those whose
    listed version this process read before from memory, the others read from ``store`` (several at
    once, :meth:`~integration_platform.core.lake.LakeStore.get_bytes_many`). Raises what the store's
    listing and reads raise, and ``json.JSONDecodeError`` for an object that is not JSON."""
    versions = {k: v for k, v in store.list_versions(prefix).items() if k.endswith(suffix)}
    keys = sorted(versions)
    slots = {key: (store.uri(key), version) for key, version in versions.items() if version is not None}
    bodies: dict[str, bytes] = {}
    with _LOCK:
        for key, slot in slots.items():
            if slot in _BODIES:
                _BODIES.move_to_end(slot)
                bodies[key] = _BODIES[slot]
    missing = [key for key in keys if key not in bodies]
    read = store.get_bytes_many(missing)
    with _LOCK:
        for key, body in zip(missing, read, strict=True):
            bodies[key] = body
            listed = slots.get(key)
            if listed is not None and listed not in _BODIES and is_version_of(body, listed[1]):
                _BODIES[listed] = body
                _HELD[0] += len(body)
        while _HELD[0] > MAX_CACHED_BYTES and _BODIES:
            _HELD[0] -= len(_BODIES.popitem(last=False)[1])
    return [json.loads(bodies[key]) for key in keys]


def forget_read() -> None:
    """Drop every manifest this process keeps (tests; a process that must read everything again)."""
    with _LOCK:
        _BODIES.clear()
        _HELD[0] = 0
