"""Names from outside (remote file names, partition keys, window names) checked before they become
part of a lake key or a remote path.

A name that reaches the lake becomes one folder or file name under its stream's folder. One that
holds a ``/`` (or a ``\\``, or is ``.`` / ``..``) would address another folder: a hostile FTP
listing of ``../../other_source/x`` as a per-file partition once made landing's garbage collection
delete another source's files. Every such name goes through :func:`check_segment` first.
"""

import re
from urllib.parse import quote

#: What an environment variable's name may look like (POSIX portable names): every ``*_env`` field.
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

#: Bytes a name from outside (a remote file name, a partition key) may take: file systems cap a name
#: at 255 bytes, and a window name puts ``partition=`` before it and ``.json`` / ``.parquet`` after.
MAX_SEGMENT_BYTES = 200
#: Bytes any one segment of a lake key may take (file systems' NAME_MAX).
MAX_KEY_SEGMENT_BYTES = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnsafeNameError(ValueError):
    """A name from outside would not stay one path segment; the message names what, where and why."""


#: A column name that comes from outside (a CSV header, an HTML table's header cells): printable, no
#: markup, 1 to 255 characters. Anything else would become a warehouse column for good.
_PLAUSIBLE_COLUMN = re.compile(r"[^\x00-\x1f<>]{1,255}")


def implausible_column_names(names: list[str]) -> list[str]:
    """The names among ``names`` that are no column names (empty, over 255 characters, control
    characters, ``<`` or ``>``: an error page's markup read as a header), in order."""
    return [name for name in names if not _PLAUSIBLE_COLUMN.fullmatch(name)]


def refuse_misread(name: str, unsafe: tuple[str, ...], what: str, why: str) -> str:
    """Return ``name`` unless it holds one of ``unsafe`` (substrings a store's client reads as something
    else, such as adlfs's ``?versionid=``); then raise :class:`UnsafeNameError` naming ``what`` and ``why``."""
    for part in unsafe:
        if part in name:
            raise UnsafeNameError(f"{what}: {name!r} holds {part!r}, which {why}: refused")
    return name


def check_segment(name: str, what: str, max_bytes: int = MAX_SEGMENT_BYTES) -> str:
    """Return ``name`` when it is one plain path segment, else raise :class:`UnsafeNameError`.

    Plain: not empty, not ``.`` or ``..``, no ``/`` or ``\\``, no control character (NUL, newline,
    ...), at most ``max_bytes`` bytes of UTF-8 (:data:`MAX_SEGMENT_BYTES` for a name from outside).
    ``what`` says where the name came from
    (``"file name listed by sftp://host:22/drops"``, ``"window of lake stream src/orders"``) and is
    quoted in the error.
    """
    if name in ("", ".", ".."):
        problem = "is empty" if not name else f"is {name!r}"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator"
    elif _CONTROL.search(name):
        problem = "holds a control character"
    elif len(name.encode("utf-8", "surrogatepass")) > max_bytes:
        problem = f"is longer than {max_bytes} bytes"
    else:
        return name
    raise UnsafeNameError(
        f"refusing the {what} {name!r}: it {problem}, and a name must be one plain path segment "
        "(no '/', '\\', control characters, '.' or '..') so it cannot address anything outside its own folder"
    )


def url_segment(value: str, what: str) -> str:
    """``value`` percent-encoded as one URL path segment (RFC 3986): ``/``, ``?``, ``#`` and the rest are
    encoded. ``.`` and ``..`` raise :class:`UnsafeNameError` naming ``what``: HTTP clients remove dot
    segments (RFC 3986 section 5.2.4; requests even decodes ``%2E`` first), so ``/users/../roles``
    would become ``/roles``, with the credentials meant for the first."""
    if value in (".", ".."):
        raise UnsafeNameError(
            f"refusing the {what} {value!r}: as a URL path segment it would be removed as a dot segment"
        )
    return quote(value, safe="")
