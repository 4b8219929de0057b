"""The access middleware: peers, mirror tokens, repo rules and gated/private repos are
checked before any route runs, so a refused request never reaches upstream or the store.

Order: ``/healthz`` (open to any peer: load balancers probe it; it says nothing about
repos) -> ``--allow`` on the client address (403 Forbidden) -> the mirror token when a
tokens file is set (401) -> ``--allow-repo``/``--deny-repo`` (404 RepoNotFound, as for a
repo that does not exist) -> gated and private repos (the Hub's own answers).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from hfpull.errors import NetworkError
from hfpull.hub.http import thread_session
from hfpull.models import RepoRef
from hfpull.serve.access import (
    ANONYMOUS,
    CLIENT_KEY,
    ORIGIN_KEY,
    PRINCIPAL_KEY,
    AccessConfig,
    PeerPolicy,
    Principal,
    RepoPolicy,
)
from hfpull.serve.answers import error_answer
from hfpull.serve.client_tokens import ClientTokenCheck
from hfpull.serve.records import ObjectRecords
from hfpull.serve.routes import Api, BadRequest, Resolve, parse
from hfpull.serve.tokens import TokensFile, bearer_token
from hfpull.serve.visibility import Visibility, VisibilityCache

if TYPE_CHECKING:
    from hfpull.serve.app import Mirror

OPEN_PATHS = ("/healthz",)
CHALLENGE = 'Bearer realm="hfpull", Basic realm="hfpull"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AccessControl:
    def __init__(self, config: AccessConfig, mirror: Mirror) -> None:
        self.peers = PeerPolicy.parse(config.allow, config.trust_proxy)
        self.repos = RepoPolicy.parse(config.allow_repo, config.deny_repo)
        self.tokens = TokensFile(config.auth_tokens) if config.auth_tokens is not None else None
        settings = mirror.config.settings
        self.offline = mirror.config.offline
        records: Path | ObjectRecords = settings.cache_dir / "meta" / "visibility"
        if mirror.objects is not None:  # shared by the replicas on the store
            records = ObjectRecords(mirror.objects, "meta/")
        self.visibility = VisibilityCache(
            records, mirror.config.metadata_ttl,
            self.offline, mirror.upstream.api,
        )  # fmt: skip
        self.client_tokens = ClientTokenCheck(
            mirror.upstream.base, thread_session, (settings.connect_timeout, settings.read_timeout)
        )
        self.blocking = mirror.blocking

    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        client = self.peers.client(request.remote, request.headers.getall("X-Forwarded-For", []))
        request[CLIENT_KEY] = str(client) if client is not None else request.remote
        request[ORIGIN_KEY] = self.peers.public_origin(
            request.remote, request.scheme, request.host, request.headers
        )
        request[PRINCIPAL_KEY] = ANONYMOUS
        raw_path = request.raw_path.split("?", 1)[0]
        if raw_path in OPEN_PATHS:
            return await handler(request)
        if not self.peers.admits(client):
            return refusal(403, "Forbidden", "this address may not use the mirror")
        authorization = request.headers.get("Authorization")
        if self.tokens is not None:
            principal = self.tokens.current().authenticate(authorization)
            if principal is None:
                message = "invalid credentials" if authorization else "a mirror token is needed"
                return refusal(401, "Unauthorized", message, challenge=True)
        else:  # a bearer token is the client's own HF token, for gated/private repos
            principal = Principal(hf_token=bearer_token(authorization))
        request[PRINCIPAL_KEY] = principal
        refused = await self._repo_refusal(request, raw_path, principal)
        return refused if refused is not None else await handler(request)

    async def _repo_refusal(
        self, request: web.Request, raw_path: str, principal: Principal
    ) -> web.Response | None:
        try:
            target = parse(raw_path)
        except BadRequest:
            return None  # the route answers 400
        if target is None:
            return None
        files = isinstance(target, Resolve)
        refused = await self.repo_refusal(principal, target.repo, files, raw_path)
        return None if refused is None else _refused(request, target, refused)

    async def repo_refusal(
        self, principal: Principal, repo: RepoRef, files: bool, raw_path: str = ""
    ) -> web.Response | None:
        """The refusal for this principal and repo (None: allowed): the repo rules, then
        private repos (everything) and gated ones (``files``: their bytes)."""
        if not self.repos.permits(repo.repo_id):
            return _not_found(repo)
        record = self.visibility.fresh(repo) or await self.blocking(self.visibility.lookup, repo)
        if record is None:
            return None  # never known and upstream cannot say: treated as public
        if not self.repos.permits(record.repo_id):  # a renamed repo's new id is denied
            return _not_found(repo)
        if not (record.restricted or (record.gated and files)):
            return None
        try:
            if await self._may_read(principal, repo, record, files, raw_path):
                return None
        except NetworkError:
            message = "upstream could not confirm this token's access now; try again"
            return refusal(502, "UpstreamUnavailable", message)
        if record.restricted:
            return _not_found(repo)
        status = 403 if principal.presented_credentials else 401
        message = (
            f"Access to {repo.repo_type} {repo.repo_id} is restricted. You must have access to "
            "it and be authenticated to access it."
        )
        return refusal(status, "GatedRepo", message, status == 401)

    async def _may_read(
        self, principal: Principal, repo: RepoRef, record: Visibility, files: bool, path: str
    ) -> bool:
        if principal.granted(repo.repo_id) or principal.granted(record.repo_id):
            return True
        token = principal.hf_token
        if token is None or self.offline:
            return False
        known = self.client_tokens.cached(token, repo, files)
        if known is not None:
            return known
        return await self.blocking(self.client_tokens.check, token, repo, files, path)

    async def listen_for_sighup(self, app: web.Application) -> None:
        tokens = self.tokens
        if tokens is None:
            return
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, tokens.reload)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (an embedded app): the on-change check still works


ACCESS = web.AppKey("access", AccessControl)


def install_access(app: web.Application, config: AccessConfig, mirror: Mirror) -> None:
    control = app[ACCESS] = AccessControl(config, mirror)

    @web.middleware
    async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await control.middleware(request, handler)

    app.middlewares.append(access_middleware)
    app.on_startup.append(control.listen_for_sighup)


def refusal(status: int, code: str, message: str, challenge: bool = False) -> web.Response:
    return error_answer(
        status, code, message, {"WWW-Authenticate": CHALLENGE} if challenge else None
    )


def _not_found(repo: RepoRef) -> web.Response:
    return refusal(404, "RepoNotFound", f"repository not found: {repo.repo_id}")


def _refused(request: web.Request, target: Api | Resolve, response: web.Response) -> web.Response:
    """Name the repo in the access log of a refused request, as routes do for answered ones."""
    request["hfpull_target"] = {
        "repo": target.repo.repo_id,
        "revision": target.revision,
        "path": target.path if isinstance(target, Resolve) else target.rest or None,
    }
    return response
