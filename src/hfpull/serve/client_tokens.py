"""Does a client's own HF token see a gated or private repo? Upstream says; kept briefly.

Asked on upstream's origin only, with the client's token: a HEAD of the very file asked
for (a gated repo's files need access; its info is public), or the repo info for other
routes of a private repo. A same-origin redirect (a renamed repo) is followed; a redirect
to another host is upstream handing out the file (its CDN), which is a yes, and is never
followed, so the token never leaves upstream's origin. Answers are kept for ``ttl``
seconds, keyed by a SHA-256 of the token (the token itself is never kept as a key).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urljoin

import requests

from hfpull.errors import NetworkError
from hfpull.hub.http import describe_transport_error, origin
from hfpull.models import RepoRef

TTL = 60.0
MAX_ANSWERS = 4096
MAX_HOPS = 5
REDIRECTS = (301, 302, 303, 307, 308)


class ClientTokenCheck:
    def __init__(
        self,
        base: str,
        session: Callable[[], requests.Session],
        timeout: tuple[float, float],
        ttl: float = TTL,
    ) -> None:
        self.base = base.rstrip("/")
        self._origin = origin(self.base)
        self._session = session
        self._timeout = timeout
        self.ttl = ttl
        self._answers: OrderedDict[tuple[str, ...], tuple[float, bool]] = OrderedDict()
        self._guard = threading.Lock()

    def cached(self, token: str, repo: RepoRef, files: bool) -> bool | None:
        """The kept answer, if still fresh (never blocks)."""
        key = _key(token, repo, files)
        with self._guard:
            hit = self._answers.get(key)
        if hit is None or time.monotonic() >= hit[0]:
            return None
        return hit[1]

    def check(self, token: str, repo: RepoRef, files: bool, path: str) -> bool:
        """Ask upstream (blocking). ``path`` is the resolve path for ``files``; the repo
        info is asked otherwise. NetworkError when upstream gives no clear answer."""
        url = self.base + (path if files else f"/api/{repo.api_plural}/{repo.repo_id}")
        allowed = self._ask(files, url, token)
        key = _key(token, repo, files)
        with self._guard:
            self._answers[key] = (time.monotonic() + self.ttl, allowed)
            self._answers.move_to_end(key)
            while len(self._answers) > MAX_ANSWERS:
                self._answers.popitem(last=False)
        return allowed

    def _ask(self, files: bool, url: str, token: str) -> bool:
        for _hop in range(MAX_HOPS):
            if origin(url) != self._origin:
                if files:
                    return True  # upstream sent the file to its CDN: it granted access
                raise NetworkError("upstream redirected an access check to another host")
            try:
                response = self._session().request(
                    "HEAD" if files else "GET", url, headers={"Authorization": f"Bearer {token}"},
                    allow_redirects=False, timeout=self._timeout, stream=True,
                )  # fmt: skip
            except requests.RequestException as exc:
                raise NetworkError(f"upstream: {describe_transport_error(exc)}") from None
            response.close()
            status = response.status_code
            if status in REDIRECTS and response.headers.get("Location"):
                url = urljoin(url, response.headers["Location"])
                continue
            if 200 <= status < 300:
                return True
            if status in (401, 403, 404):
                return False
            raise NetworkError(f"upstream answered HTTP {status} to an access check")
        raise NetworkError("upstream redirected an access check too often")


def _key(token: str, repo: RepoRef, files: bool) -> tuple[str, ...]:
    digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
    return (digest, repo.repo_type, repo.repo_id, "files" if files else "info")
