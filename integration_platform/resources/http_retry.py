"""The platform's one HTTP retry policy, as urllib3's ``Retry``: REST extraction (requests) and
HTTP push (httpx) both ask it whether to try again and how long to wait."""

import math

from urllib3.exceptions import InvalidHeader
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

#: Statuses retried: 429 Too Many Requests and the 5xx a retry may cure (RFC 9110 section 15).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def retry_policy(
    max_retries: int,
    backoff_factor: float,
    backoff_max: float,
    backoff_jitter: float,
    allowed_methods: frozenset[str] | None = Retry.DEFAULT_ALLOWED_METHODS,
    retry_after_max: int = Retry.DEFAULT_RETRY_AFTER_MAX,
) -> Retry:
    """The platform's HTTP retry policy as a urllib3 ``Retry``: ``max_retries`` retries after the
    first attempt on :data:`RETRY_STATUSES` and connection/read errors, exponential backoff
    (seconds: ``backoff_factor`` doubling, capped at ``backoff_max``, plus up to ``backoff_jitter``)
    and ``Retry-After`` honoured, up to ``retry_after_max`` seconds (a longer one is waited that long:
    urllib3 caps it; REST and HTTP push pass :func:`retry_after_cap` and fail on a longer one).
    ``allowed_methods``: the methods retried (``None``: every one, for requests made idempotent by a
    key). The caller's loop asks it whether and how long to wait."""
    return Retry(
        total=max_retries,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=allowed_methods,
        backoff_factor=backoff_factor,
        backoff_max=backoff_max,
        backoff_jitter=backoff_jitter,
        respect_retry_after_header=True,
        retry_after_max=retry_after_max,
        raise_on_status=False,
    )


def retry_after_cap(max_retry_after: float) -> int:
    """``retry_after_max`` for a caller that fails on a ``Retry-After`` longer than ``max_retry_after``
    seconds: one second more, so urllib3's cap (6 hours by default) never turns a longer one into a wait
    it accepts (a ``max_retry_after`` of a day waited 6 hours, again each retry, for a server asking two
    days). Urllib3's default for an infinite ``max_retry_after``."""
    return math.floor(max_retry_after) + 1 if math.isfinite(max_retry_after) else Retry.DEFAULT_RETRY_AFTER_MAX


def retry_after_refusal(wait: float | None, asked: str, max_retry_after: float) -> str | None:
    """Why a ``Retry-After`` is not waited, ``"Retry-After '172800' exceeds max_retry_after (86400s)"``,
    when ``wait`` (seconds, from :func:`retry_after` under :func:`retry_after_cap`) is longer than
    ``max_retry_after``; ``None`` when it is waited or absent. ``asked``: the header as sent (the cap made
    ``wait`` ``max_retry_after`` + 1), masked and cut by the caller."""
    if wait is None or wait <= max_retry_after:
        return None
    return f"Retry-After {asked!r} exceeds max_retry_after ({max_retry_after:g}s)"


def retry_after(retry: Retry, response: BaseHTTPResponse) -> float | None:
    """Seconds ``response``'s ``Retry-After`` asks to wait, or ``None`` when it has none, or one that is
    neither whole seconds nor an HTTP date (``1.5``, ``-1``, ``soon``; RFC 9110 section 10.2.3): that one
    counts as absent, and the caller waits the backoff (urllib3 raised a bare ``InvalidHeader``). So does
    a date Python cannot hold (year 10000 on) and a number of more than 4300 digits: urllib3 raised a bare
    ``ValueError``/``OverflowError`` there, which failed the whole run naming neither request nor header."""
    try:
        return retry.get_retry_after(response)
    except (InvalidHeader, ValueError, OverflowError):
        return None
