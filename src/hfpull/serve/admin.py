"""The mirror's own routes, under a prefix no Hub URL uses (``/-/hfpull/``).

- ``POST /-/hfpull/prewarm``: fill the store with a repo (JSON: ``prewarm.PrewarmRequest``);
  202 with the job and the files it will fill.
- ``GET /-/hfpull/prewarm/{job}``: the job's progress (per file: state, bytes, error).
- ``POST /-/hfpull/refresh``: revalidate a revision's metadata now; the commit before/after.

Who may call them: ``prewarm_allowed`` and ``admin_allowed`` below. Errors carry
``X-Error-Code`` like every other answer of the mirror; HfpullErrors raised while resolving
(repo not found, upstream down) are answered by the app's own mapping.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hfpull.errors import NetworkError, UsageError
from hfpull.models import RepoRef
from hfpull.prewarm import ADMIN_PREFIX, PrewarmRequest
from hfpull.serve.access import CLIENT_KEY, PRINCIPAL_KEY, Principal
from hfpull.serve.answers import error_answer
from hfpull.serve.guard import ACCESS
from hfpull.serve.prewarm_jobs import LockMismatch, NoMatch

if TYPE_CHECKING:
    from hfpull.serve.app import Mirror

MAX_BODY = 16 << 20  # a lock of a repo with 100k files fits
PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def is_admin_path(raw_path: str) -> bool:
    return raw_path.startswith(ADMIN_PREFIX)


async def handle(request: web.Request, mirror: Mirror) -> web.StreamResponse:
    route = request.raw_path.split("?", 1)[0][len(ADMIN_PREFIX) :]
    methods = {"prewarm": ("POST",), "refresh": ("POST",)}.get(route, ("GET", "HEAD"))
    if request.method not in methods:
        return error_answer(405, "MethodNotAllowed", f"{request.method} is not served here")
    if route == "prewarm":
        return await _prewarm(request, mirror)
    if route.startswith("prewarm/"):
        return _job(request, mirror, route.removeprefix("prewarm/"))
    if route == "refresh":
        return await _refresh(request, mirror)
    return error_answer(404, "EntryNotFound", "no such admin route")


# -- who may call ----------------------------------------------------------------------------


def admin_allowed(request: web.BaseRequest) -> bool:
    """Refresh (and any route that changes what the mirror answers).

    With a tokens file (``--auth-tokens``), the mirror token decides: its ``+admin`` scope.
    Without one, only a caller on the mirror's own host: the client address after the
    proxies ``--trust-proxy`` names, and never a request that carries forwarding headers
    from a proxy it does not name (nginx on the same box connects from 127.0.0.1 for every
    client).
    """
    principal = request.get(PRINCIPAL_KEY)
    if isinstance(principal, Principal) and principal.name is not None:
        return principal.admin
    peer = _peer(request)
    client = request.get(CLIENT_KEY) or peer
    if client == peer and any(h in request.headers for h in PROXY_HEADERS):
        return False
    return _loopback(client)


def prewarm_allowed(request: web.BaseRequest) -> bool:
    """Prewarm: with a tokens file, any authenticated caller (it costs upstream what their
    own download of the same files would, and no bytes reach them); without one nothing
    tells one LAN client from another, so prewarm is kept to the mirror's own host, like the
    admin routes. Which repos a caller may prewarm: ``repo_refusal``."""
    principal = request.get(PRINCIPAL_KEY)
    if isinstance(principal, Principal) and principal.name is not None:
        return True
    return admin_allowed(request)


async def repo_refusal(request: web.Request, repo: RepoRef) -> web.StreamResponse | None:
    """The access rules for a repo named in a body, where the access middleware (which
    judges request paths) cannot see it: ``--allow-repo``/``--deny-repo`` for everyone;
    a private repo (whose file list the job would show) needs read access unless the caller
    is an admin. Gated repos may be prewarmed: their file lists are public and prewarm sends
    no file bytes to the caller."""
    control = request.app.get(ACCESS)
    principal = request.get(PRINCIPAL_KEY)
    if control is None or not isinstance(principal, Principal):
        return None  # no access control installed (an embedded app in a unit test)
    if admin_allowed(request):
        principal = Principal(name=principal.name, admin=True, grants=("*",))
    return await control.repo_refusal(principal, repo, files=False)


def _peer(request: web.BaseRequest) -> str | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a Unix socket or something odd: not a loopback IP


# -- routes ----------------------------------------------------------------------------------


async def _prewarm(request: web.Request, mirror: Mirror) -> web.StreamResponse:
    if not prewarm_allowed(request):
        return forbidden("prewarm")
    try:
        body = PrewarmRequest.from_json(await _json_body(request))
        refused = await repo_refusal(request, body.repo)
        if refused is not None:
            return refused
        job = await mirror.prewarm_jobs.start(body)
    except NoMatch as exc:
        return error_answer(400, "NoMatch", exc.message)
    except UsageError as exc:
        return error_answer(400, "BadRequest", exc.message)
    except LockMismatch as exc:
        return error_answer(409, "LockMismatch", exc.message)
    return web.json_response(job.to_json(), status=202)


def _job(request: web.Request, mirror: Mirror, job_id: str) -> web.StreamResponse:
    if not prewarm_allowed(request):
        return forbidden("prewarm")
    job = mirror.prewarm_jobs.get(job_id) if re.fullmatch(r"[0-9a-f]{16}", job_id) else None
    if job is None:
        return error_answer(
            404, "UnknownJob", "no such prewarm job (finished long ago, or restarted)"
        )
    return web.json_response(job.to_json())


async def _refresh(request: web.Request, mirror: Mirror) -> web.StreamResponse:
    if not admin_allowed(request):
        return forbidden("refresh")
    if mirror.config.offline:
        return error_answer(409, "Offline", "the mirror is --offline: there is nothing to ask")
    try:
        target = PrewarmRequest.from_json(await _json_body(request))
    except UsageError as exc:
        return error_answer(400, "BadRequest", exc.message)
    before, snapshot, cache = await mirror.blocking(
        mirror.metadata.refresh, target.repo, target.revision
    )
    if cache == "STALE":
        raise NetworkError(f"upstream could not be asked about {target.repo.repo_id}")
    doc = {"repo": target.repo.repo_id, "repo_type": target.repo.repo_type,
           "revision": target.revision, "before": before, "after": snapshot.commit}  # fmt: skip
    return web.json_response(doc)


# -- plumbing --------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise UsageError("the request body is too large")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise UsageError("the request body is too large")
    try:
        return json.loads(raw)
    except ValueError:
        raise UsageError("the request body is not JSON") from None


def forbidden(what: str) -> web.Response:
    return error_answer(403, "Forbidden", f"{what} is not allowed for this caller")
