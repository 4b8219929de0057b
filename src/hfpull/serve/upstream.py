"""The mirror's only way out: its upstream (origin, a mirror, or another hfpull serve).

Built from the same pieces as ``hfpull get``: one source, its retry policy, the redirect
follower that keeps the upstream token on the upstream's origin (never on its CDN)."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from hfpull.blobstore import BlobStore
from hfpull.engine.blob import FetchContext
from hfpull.engine.scheduler import Engine
from hfpull.errors import NetworkError
from hfpull.hub.client import HubClient
from hfpull.hub.http import (
    describe_transport_error,
    origin,
    request_following_redirects,
    thread_session,
)
from hfpull.hub.sources import RetryPolicy, SourcePool
from hfpull.models import FileStatus, RemoteFile, RepoRef, Snapshot
from hfpull.serve.upstream_meter import UpstreamMeter, metered_session
from hfpull.settings import Settings

FORM = "application/x-www-form-urlencoded"
KEPT_HEADERS = ("Content-Type", "Link", "X-Error-Code", "X-Error-Message", "X-Repo-Commit")


class Upstream:
    def __init__(self, settings: Settings, meter: UpstreamMeter | None = None) -> None:
        # The mirror fails fast and lets clients retry: a hanging mirror is worse.
        self.settings = replace(settings, mirrors=(), max_retries=min(settings.max_retries, 2))
        self.pool = SourcePool.from_settings(self.settings)
        self.policy = RetryPolicy.from_settings(self.settings)
        self.hub = HubClient(self.settings, self.pool, self.policy, metered_session)
        self.base = self.settings.endpoint.rstrip("/")
        self.meter = meter or UpstreamMeter()

    def resolve(self, repo: RepoRef, revision: str) -> Snapshot:
        with self.meter.api_call():
            return self.hub.resolve(repo, revision)

    def api(self, path_qs: str, form: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
        with self.meter.api_call():
            return self._api(path_qs, form)

    def _api(self, path_qs: str, form: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
        """One API GET (or a POST of ``form``, for paths-info), answered as upstream answered
        it, minus Xet fields. Redirects (renamed repos) are followed on upstream only."""
        try:
            response = request_following_redirects(
                metered_session(),
                "GET" if form is None else "POST",
                self.base + path_qs,
                token=self.settings.token,
                trusted_origin=origin(self.base),
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                headers=None if form is None else {"Content-Type": FORM},
                data=form,
                same_origin=True,
            )
            body = response.content
        except requests.RequestException as exc:
            raise NetworkError(f"upstream: {describe_transport_error(exc)}") from None
        headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
        if response.status_code == 200 and "json" in headers.get("Content-Type", ""):
            try:
                body = json.dumps(strip_xet(json.loads(body))).encode()
            except ValueError:
                pass
        return response.status_code, body, headers

    def fill(
        self,
        repo: RepoRef,
        commit: str,
        file: RemoteFile,
        store: BlobStore,
        on_claim: Any,
        cancel: threading.Event | None = None,
    ) -> None:
        """Fetch one blob into the store with the get engine: Range segments, partials,
        prefix hashing, verification. Raises what ``hfpull get`` would; ``cancel`` stops it
        (a fleet fill whose lease was lost)."""
        ctx = FetchContext(
            settings=self.settings,
            pool=self.pool,
            policy=self.policy,
            repo=repo,
            commit=commit,
            session=thread_session,
            cancel=cancel or threading.Event(),
            emit=self.meter.fill_events(file),
        )
        Engine(ctx, StoreLayout(store), on_claim=on_claim).download([[file]])


class StoreLayout:
    """The engine's Layout over a blob store: publish = put the verified blob."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    @property
    def partial_dir(self) -> Path:
        return self.store.partial_dir

    @property
    def disk_root(self) -> Path:
        return self.store.partial_dir

    def status(self, file: RemoteFile, commit: str) -> FileStatus:
        return FileStatus.PRESENT if self.store.size(file.etag) == file.size else FileStatus.FETCH

    def preflight(self, files: list[RemoteFile], commit: str) -> None:
        pass

    def publish(self, verified: Path, files: list[RemoteFile], commit: str) -> None:
        self.store.put(files[0].etag, verified)

    def place_existing(self, files: list[RemoteFile], commit: str) -> None:
        pass


def strip_xet(value: Any) -> Any:
    """Remove ``xetHash`` everywhere: a client that sees it talks to the CAS, not to us."""
    if isinstance(value, dict):
        return {k: strip_xet(v) for k, v in value.items() if k != "xetHash"}
    if isinstance(value, list):
        return [strip_xet(v) for v in value]
    return value
