"""HTTP plumbing: sessions, header parsing, redirects that never leak the token, error mapping.

Redirects are followed by hand so that (1) the Authorization header goes only to the origin
the user chose, never to another host, and (2) the final (CDN) URL can be reused for the
other Range segments of the same file.
"""

from __future__ import annotations

import email.utils
import http.client
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters
import urllib3.exceptions

from hfpull.errors import (
    AuthError,
    EntryNotFoundError,
    GatedRepoError,
    HfpullError,
    InvalidTokenError,
    NetworkError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from hfpull.version import __version__

USER_AGENT = f"hfpull/{__version__}"
MAX_REDIRECTS = 10
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})

_thread_local = threading.local()


def new_session(pool_size: int = 16) -> requests.Session:
    session = requests.Session()
    session.trust_env = True  # HTTP(S)_PROXY / NO_PROXY, like every HF client
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    return session


def thread_session() -> requests.Session:
    """One keep-alive session per thread: requests.Session is not thread-safe."""
    session: requests.Session | None = getattr(_thread_local, "session", None)
    if session is None:
        session = _thread_local.session = new_session(pool_size=4)
    return session


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port)


def host_of(url: str) -> str:
    """``host[:port]`` for messages: never the path or query (signed URLs carry secrets)."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1]


@dataclass(frozen=True)
class ContentRange:
    start: int
    end: int  # inclusive
    total: int | None  # None for '*'


_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse ``bytes a-b/total``; None when missing or malformed (the response is then refused)."""
    if not value:
        return None
    match = _CONTENT_RANGE_RE.match(value.strip())
    if not match:
        return None
    start, end = int(match[1]), int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if end < start or (total is not None and end >= total):
        return None
    return ContentRange(start, end, total)


def parse_retry_after(response: requests.Response, now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP-date) or ``RateLimit: ...;t=N``.

    An HTTP-date is measured against the response's own ``Date`` header when present, so a
    skewed local clock does not matter.
    """
    value = response.headers.get("Retry-After")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        when = _parse_http_date(value)
        if when is not None:
            reference = _parse_http_date(response.headers.get("Date", "")) or (now or time.time())
            return max(0.0, when - reference)
    ratelimit = response.headers.get("RateLimit", "")
    match = re.search(r";\s*t=(\d+)", ratelimit)
    return float(match[1]) if match else None


def _parse_http_date(value: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed.timestamp() if parsed else None


def request_following_redirects(
    session: requests.Session,
    method: str,
    url: str,
    *,
    token: str | None,
    trusted_origin: tuple[str, str, int],
    headers: dict[str, str] | None = None,
    stream: bool = False,
    timeout: tuple[float, float] = (10.0, 30.0),
    data: bytes | None = None,
    same_origin: bool = False,
) -> requests.Response:
    """Send a request and follow redirects by hand.

    The token is attached only while the URL is on ``trusted_origin`` (the source the user
    named). Redirects from https to http are refused. The returned response's ``url`` is the
    final URL, which callers may reuse for further Range requests. With ``same_origin``, a
    redirect off ``trusted_origin`` is refused (API answers never move hosts; only file
    downloads go to a CDN).
    """
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        send_headers = dict(headers or {})
        if token and origin(current) == trusted_origin:
            send_headers["Authorization"] = f"Bearer {token}"
        response = session.request(
            method,
            current,
            headers=send_headers,
            stream=stream,
            allow_redirects=False,
            timeout=timeout,
            data=data,
        )
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        location = response.headers.get("Location")
        response.close()
        if not location:
            raise NetworkError(f"{host_of(current)} sent a redirect without a Location")
        target = urljoin(current, location)
        if urlsplit(current).scheme == "https" and urlsplit(target).scheme != "https":
            raise NetworkError(
                f"{host_of(current)} redirected from https to plain http; refused",
                hint="check the endpoint or mirror URL",
            )
        if same_origin and origin(target) != trusted_origin:
            raise NetworkError(f"{host_of(current)} redirected to another host; refused")
        current = target
    raise NetworkError(f"too many redirects starting at {host_of(url)}")


class BodyReader:
    """A streamed response's body, read straight into the caller's buffer.

    urllib3's ``read1`` returns a new ``bytes`` per call, copied out of http.client's: at
    1 MiB a chunk that is an allocation (often a fresh mmap, 256 page faults) and one more
    copy of every byte. Here one socket read lands in the caller's buffer, with the same
    semantics (whatever has arrived, at most the buffer; 0 at the end of the body), so a
    trickling server is still noticed at every read. Only for bodies that need no decoding
    (the engine refuses any Content-Encoding first); errors come out as urllib3's own.
    """

    def __init__(self, response: requests.Response) -> None:
        self._raw = response.raw
        fp = getattr(self._raw, "_fp", None)
        direct = isinstance(fp, http.client.HTTPResponse) and not fp.chunked
        self._http: http.client.HTTPResponse | None = fp if direct else None

    def readinto(self, buffer: memoryview) -> int:
        body = self._http
        if body is None:  # another transport, or a chunked body: urllib3's path, one copy more
            data = self._raw.read1(len(buffer))
            buffer[: len(data)] = data
            return len(data)
        if body.fp is None:  # http.client closed it: the body has ended
            return 0
        view = buffer if body.length is None else buffer[: body.length]
        try:
            count = body.fp.readinto1(view)
        except TimeoutError as exc:
            raise urllib3.exceptions.ReadTimeoutError(None, None, "Read timed out.") from exc  # type: ignore[arg-type]
        except (http.client.HTTPException, OSError) as exc:
            raise urllib3.exceptions.ProtocolError(f"Connection broken: {exc!r}", exc) from exc
        if body.length is not None:
            body.length -= count
            if body.length == 0:
                body.close()  # as http.client does at the end of a body it reads itself
        return count

    def finish(self) -> None:
        """After the whole body was read: the connection goes back to the pool for the next
        request (urllib3 does that only when its own read sees the end)."""
        if self._http is not None and self._http.isclosed():
            self._raw.release_conn()


def describe_transport_error(exc: BaseException) -> str:
    """One line about a transport failure, without URLs (signed URLs carry secrets)."""
    text = str(exc).lower()
    if isinstance(exc, requests.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "no data (read timeout)"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS certificate error"
    if isinstance(exc, requests.ConnectionError):
        if "refused" in text:
            return "connection refused"
        if any(m in text for m in ("name or service", "nodename", "failed to resolve")):
            return "host name could not be resolved"
        return "connection failed"
    if isinstance(exc, (urllib3.exceptions.ProtocolError, ConnectionError)):
        return "connection lost"
    return type(exc).__name__


def tls_error(exc: BaseException, host: str) -> NetworkError | None:
    """A certificate failure is not transient: retrying cannot fix it, so it ends the attempt
    on that source at once. hfpull never turns verification off."""
    if not isinstance(exc, requests.exceptions.SSLError):
        return None
    return NetworkError(
        f"TLS certificate error with {host}",
        hint="check the system clock and the CA certificates (REQUESTS_CA_BUNDLE or "
        "SSL_CERT_FILE for a private CA)",
    )


def is_unreachable(exc: BaseException) -> bool:
    """A failure to connect at all (refused, unknown host), as opposed to a dropped transfer."""
    if not isinstance(exc, requests.ConnectionError) or isinstance(exc, requests.Timeout):
        return False
    text = str(exc).lower()
    return any(
        marker in text
        for marker in ("refused", "name or service", "nodename", "failed to resolve", "no route")
    )


def error_from_response(response: requests.Response, what: str) -> HfpullError | None:
    """Map a Hub error response (X-Error-Code first, then status) to an hfpull error.

    Returns None for statuses the caller should treat as transient (5xx, 429, 408).
    """
    status = response.status_code
    code = response.headers.get("X-Error-Code", "")
    message = response.headers.get("X-Error-Message", "")
    host = host_of(response.url)
    if code == "RevisionNotFound":
        return RevisionNotFoundError(f"revision not found: {what} ({host})")
    if code == "EntryNotFound":
        return EntryNotFoundError(f"file not found: {what} ({host})")
    if code == "GatedRepo":
        return GatedRepoError(
            f"{what} is gated and this token has no access ({host})"
            if status == 403
            else f"{what} is gated: you need to log in and accept its terms ({host})",
        )
    if status == 401 and "invalid credentials" in message.lower():
        return InvalidTokenError(
            f"the token was refused by {host}",
            hint="check --token / HF_TOKEN; create one at https://huggingface.co/settings/tokens",
        )
    if code == "RepoNotFound" or (status == 404 and not code and "/api/" in response.url):
        return RepoNotFoundError(f"repository not found: {what} ({host})")
    if status in (401, 403):
        return AuthError(f"access denied to {what} by {host} (HTTP {status})")
    if status in RETRYABLE_STATUS or status >= 500:
        return None
    if status == 404:
        return EntryNotFoundError(f"not found: {what} ({host})")
    return NetworkError(f"unexpected HTTP {status} from {host} for {what}")
