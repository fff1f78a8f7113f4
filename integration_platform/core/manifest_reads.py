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

What is kept is each manifest's JSON text (decoded again at every read, so no caller shares a mutable
object), keyed by its full URI and version, at most :data:`MAX_CACHED` of them, the least recently used
dropped first. A text is kept under the version the listing gave before the read: a manifest written
again in between is kept under the old version, which no later write of that key gives again (each
manifest holds a new landing id and time, and an ETag is a hash of the content or new with every
write), and is read again at the next listing, which shows the new version.
"""

import json
import threading
from collections import OrderedDict
from typing import Any

from integration_platform.core.lake import LakeStore

#: Manifest texts kept per process (a few KB each: about 40 MB when full).
MAX_CACHED = 10_000

_TEXTS: "OrderedDict[tuple[str, str | None], str]" = OrderedDict()
_LOCK = threading.Lock()


def read_listed(store: LakeStore, prefix: str, suffix: str = ".json") -> list[Any]:
    """The JSON objects under ``prefix`` whose keys end in ``suffix``, in key order: those whose
    listed version this process read before from memory, the others read from ``store`` (several at
    once, :meth:`~integration_platform.core.lake.LakeStore.get_json_many`). Raises what the store's
    listing and reads raise."""
    versions = {k: v for k, v in store.list_versions(prefix).items() if k.endswith(suffix)}
    keys = sorted(versions)
    texts: dict[str, str] = {}
    with _LOCK:
        for key in keys:
            slot = (store.uri(key), versions[key])
            if slot[1] is not None and slot in _TEXTS:
                _TEXTS.move_to_end(slot)
                texts[key] = _TEXTS[slot]
    missing = [key for key in keys if key not in texts]
    read = store.get_json_many(missing)
    with _LOCK:
        for key, data in zip(missing, read, strict=True):
            version = versions[key]
            if version is not None:
                _TEXTS[(store.uri(key), version)] = json.dumps(data)
        while len(_TEXTS) > MAX_CACHED:
            _TEXTS.popitem(last=False)
    fresh = dict(zip(missing, read, strict=True))
    return [fresh[key] if key in fresh else json.loads(texts[key]) for key in keys]


def forget_read() -> None:
    """Drop every manifest text this process keeps (tests; a process that must read everything again)."""
    with _LOCK:
        _TEXTS.clear()
