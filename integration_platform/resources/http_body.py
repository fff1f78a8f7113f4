"""Reading a response body within bounds: at most so many bytes (decoded) and so many seconds in all.

requests has no bound on a body's size or on an attempt's whole time (its read timeout bounds the gap
between two reads), so every client of a remote HTTP server here reads with ``stream=True`` and then
:func:`read_body`: the REST and HTML sources' :class:`~integration_platform.resources.http_client.RestClient`,
the OAuth2 token requests (:class:`~integration_platform.resources.http_credentials.TokenSession`) and the
Airflow resource; the REST client and the Airflow resource also read each redirect's body so
(:func:`bound_redirect_bodies`). HTTP push (httpx) bounds its own. ``request_timeout`` counts from the
first byte of the body: the status line and headers are bounded by the read timeout per read.
"""

import time
from typing import Any

import requests
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError


class BodyTooLarge(Exception):
    """A response body passed ``max_body_bytes`` (decoded)."""


class AttemptTooLong(requests.Timeout):
    """One attempt passed ``request_timeout`` while its body was read (a transient failure: retried)."""


def read_body(response: requests.Response, limit: int, deadline: float) -> None:
    """Read the body of ``response`` (opened with ``stream=True``) into it, as requests does without
    ``stream``, content decoded; the connection goes back to the pool.

    Written here because requests has no bound on a body's size or on an attempt's whole time: its read
    timeout bounds the gap between two reads, and ``iter_content`` waits for a whole chunk. urllib3's
    ``read1`` returns what has arrived (up to 64 KiB), so the deadline is checked as bytes come. Raises
    :class:`BodyTooLarge` past ``limit`` bytes (decoded: a 0.3 MB gzip body inflated to 300 MB) and
    :class:`AttemptTooLong` (a ``requests.Timeout``) past ``deadline`` (``time.monotonic()`` seconds);
    urllib3's errors as requests' ``iter_content`` raises them (transient: retried). The response is
    closed on any error."""
    chunks, size = [], 0
    try:
        while chunk := response.raw.read1(64 << 10, decode_content=True):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"the response body passed max_body_bytes ({limit:,} bytes, decoded)")
            if time.monotonic() > deadline:
                raise AttemptTooLong("the attempt passed request_timeout while its body was read")
            chunks.append(chunk)
    except ProtocolError as exc:
        response.close()
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except DecodeError as exc:
        response.close()
        raise requests.exceptions.ContentDecodingError(exc) from None
    except (ReadTimeoutError, SSLError) as exc:
        response.close()
        raise requests.exceptions.ConnectionError(exc) from None
    except BaseException:
        response.close()
        raise
    response._content = b"".join(chunks)  # what requests keeps when it reads the body itself


def bound_redirect_bodies(session: requests.Session, limit: int, seconds: float) -> None:
    """Have ``session`` read the body of each redirect it follows with :func:`read_body` (``limit`` bytes,
    ``seconds`` from its first byte): requests reads a 3xx body itself, to its end, before it follows the
    redirect (``Session.resolve_redirects``), so a redirect with an endless body filled memory (3.9 GB in
    8 s) however the final answer was bounded. Raises from the request what :func:`read_body` raises."""

    def read_redirect(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        if response.is_redirect and response._content is False:  # not read yet (stream=True)
            read_body(response, limit, time.monotonic() + seconds)
        return response

    session.hooks["response"].append(read_redirect)
