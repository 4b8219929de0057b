"""The aiohttp application: Hub API answers from the metadata cache, files from the store.

Hits go out with sendfile in slices (conditions and ranges judged here, against the content
hash as ETag); misses stream from the growing partial of one single-flight fill.
Blocking work (upstream requests, the engine, metadata files) runs in threads; the event
loop only moves bytes, so a slow client never holds anything up.

On an object store (``Mirror.objects``), every store question is a network call, so the hit
path asks it through a thread, and a hit with no local copy is streamed from 1 MiB ranged
reads. A mirror on local disk keeps its hit path as it was: no thread hop.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial as bind
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from hfpull.blobstore import BlobStore
from hfpull.blobstore.local import LocalBlobStore
from hfpull.blobstore.objects import ObjectStore, StoreUnavailable
from hfpull.errors import HfpullError, NetworkError, NotFoundError
from hfpull.models import RemoteFile, RepoRef, Snapshot
from hfpull.names import COMMIT_RE, check_repo_path
from hfpull.serve import admin
from hfpull.serve.access import ORIGIN_KEY, AccessConfig
from hfpull.serve.answers import error_answer, failure_answer
from hfpull.serve.eviction import Evictor
from hfpull.serve.fill import Fill, Fills
from hfpull.serve.fleet import Fleet
from hfpull.serve.guard import install_access
from hfpull.serve.lease import DEFAULT_TTL, Leases
from hfpull.serve.metadata import (
    Answer,
    MetadataCache,
    paths_info_answer,
    revision_answer,
    tree_answer,
)
from hfpull.serve.metrics import Metrics, body_sent, metrics_answer
from hfpull.serve.prewarm_jobs import PrewarmJobs
from hfpull.serve.records import ObjectRecords
from hfpull.serve.routes import Api, BadRequest, Resolve, parse
from hfpull.serve.seed import seed
from hfpull.serve.status import status_answer
from hfpull.serve.store_state import StoreState
from hfpull.serve.upstream import Upstream
from hfpull.settings import Settings

CHUNK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class ServeConfig:
    settings: Settings  # endpoint = upstream, token = upstream token, cache_dir = the store
    metadata_ttl: float = 600.0
    offline: bool = False
    max_cache_size: int | None = None  # bytes; None: no cap, nothing is evicted
    access: AccessConfig = field(default_factory=AccessConfig)  # --allow, tokens, repo rules
    metrics: bool = True  # /metrics and the status page's traffic figures
    local_cache_size: int | None = None  # on an object store: bytes of local copies; None: none
    store_label: str | None = None  # what the start-up line names as the store (s3://…)
    lease_ttl: float = DEFAULT_TTL  # fleet fills: a dead holder's lease is taken over after it


class Mirror:
    def __init__(
        self,
        config: ServeConfig,
        store: BlobStore | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        root = config.settings.cache_dir
        self.config = config
        self.objects = objects  # the shared object store (None: local disk only)
        if store is None:
            store = LocalBlobStore(root) if objects is None else remote_store(config, objects)
        # Local disk answers size/local_path in microseconds: the hit path asks on the loop.
        self.local = isinstance(store, LocalBlobStore)
        self.evictor = Evictor(store, config.max_cache_size)
        self.store: BlobStore = self.evictor.store
        self.metrics = Metrics(config.metrics)
        self.upstream = Upstream(config.settings, self.metrics.upstream_meter())
        records = root / "meta" if objects is None else ObjectRecords(objects, "meta/")
        self.metadata = MetadataCache(
            records, config.metadata_ttl, config.offline,
            self.upstream.resolve, self.upstream.api,
        )  # fmt: skip
        self.store_state = StoreState(objects)
        leases = None if objects is None else Leases(objects, config.lease_ttl)
        fleet = None if leases is None else Fleet(leases.objects, self.store, leases)
        self.fills = Fills(self._run_fill, fleet)
        self.executor = ThreadPoolExecutor(64, thread_name_prefix="hfpull-serve")
        # blob -> (repo, commit) a fill fetches it through (any one that lists it will do)
        self.fill_origin: dict[str, tuple[RepoRef, str]] = {}
        self.prewarm_jobs = PrewarmJobs(self)
        self.metrics.watch(self.store, self.fills, lambda: self.store_state.ok)

    def _run_fill(
        self,
        file: RemoteFile,
        on_claim: Callable[..., None],
        store: BlobStore | None = None,  # a fleet holder's: publishing composes from chunks
        cancel: threading.Event | None = None,
    ) -> None:
        repo, commit = self.fill_origin[file.etag]
        with self.evictor.filling(file):
            self.upstream.fill(repo, commit, file, store or self.store, on_claim, cancel)

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, bind(fn, *args))


def remote_store(config: ServeConfig, objects: ObjectStore) -> BlobStore:
    """Blobs on the object store, behind a local disk cache if it has a size."""
    from hfpull.blobstore.cached import CachedBlobStore
    from hfpull.blobstore.remote import ObjectBlobStore

    root = config.settings.cache_dir
    remote = ObjectBlobStore(objects, root / "partials")  # fills stay on local disk
    if not config.local_cache_size:
        return remote
    return CachedBlobStore(remote, LocalBlobStore(root), config.local_cache_size)


MIRROR = web.AppKey("mirror", Mirror)


def create_app(
    config: ServeConfig, store: BlobStore | None = None, objects: ObjectStore | None = None
) -> web.Application:
    app = web.Application()
    app[MIRROR] = Mirror(config, store, objects)
    if config.metrics:
        app.middlewares.append(app[MIRROR].metrics.middleware())
    install_access(app, config.access, app[MIRROR])
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_cleanup.append(_shutdown)
    return app


async def _shutdown(app: web.Application) -> None:
    app[MIRROR].executor.shutdown(wait=False, cancel_futures=True)


async def handle(request: web.Request) -> web.StreamResponse:
    mirror = request.app[MIRROR]
    raw_path = request.raw_path.split("?", 1)[0]
    if raw_path == "/healthz":
        fills = {"fills": mirror.fills.started, "filling": mirror.fills.active}
        if mirror.objects is None:
            return web.json_response({"ok": True, **fills})
        up = await mirror.store_state.up(mirror.blocking)
        return web.json_response({"ok": up, "store": "up" if up else "down", **fills})
    if admin.is_admin_path(raw_path):  # prewarm, refresh: serve/admin.py
        try:
            return await admin.handle(request, mirror)
        except HfpullError as exc:
            return failure_answer(exc)
    if raw_path == "/metrics":
        await mirror.store_state.up(mirror.blocking)
        return await metrics_answer(request, mirror.metrics, mirror.blocking)
    if raw_path == "/":
        return await status_answer(request, mirror)
    try:
        target = parse(raw_path)
    except BadRequest as exc:
        return error_answer(400, "BadRequest", str(exc))
    if target is None:
        return error_answer(404, "EntryNotFound", "no such route on this mirror")
    request["hfpull_target"] = {
        "repo": target.repo.repo_id,
        "revision": target.revision,
        "path": target.path if isinstance(target, Resolve) else target.rest or None,
    }
    allowed = ("POST",) if isinstance(target, Api) and target.rest == "paths-info" else ()
    if request.method not in ("GET", "HEAD", *allowed):
        return error_answer(405, "MethodNotAllowed", f"{request.method} is not served")
    revalidate = "no-cache" in request.headers.get("Cache-Control", "")
    try:
        if isinstance(target, Api) and target.rest == "paths-info":
            return await _paths_info(request, mirror, target, revalidate)
        if isinstance(target, Api):
            return await _api(request, mirror, target, revalidate)
        return await _resolve(request, mirror, target, revalidate)
    except HfpullError as exc:
        if isinstance(exc, StoreUnavailable):
            mirror.store_state.failed()
        return failure_answer(exc)


async def _api(request: web.Request, mirror: Mirror, target: Api, revalidate: bool) -> web.Response:
    try:
        answer = await mirror.blocking(
            mirror.metadata.api, request.raw_path, target.revision, revalidate
        )
    except NetworkError:
        tree = target.rest == "tree" or target.rest.startswith("tree/")
        if target.rest not in ("", "revision") and not tree:
            raise
        # Upstream unreachable (or --offline) and this exact answer never cached: a seeded,
        # prewarmed or earlier-resolved snapshot still answers the revision and tree APIs.
        snapshot, _ = await mirror.blocking(
            mirror.metadata.snapshot, target.repo, target.revision or "main", False
        )
        body = (
            tree_answer(snapshot, target.rest[5:], request.query_string)
            if tree
            else revision_answer(snapshot)
        )
        answer = Answer(200, body, {"Content-Type": "application/json"}, "STALE")
    if answer.cache == "MISS" and answer.status == 200 and target.rest in ("", "revision"):
        commit = _commit_of(answer.body)
        if commit is not None:
            await mirror.blocking(
                mirror.metadata.remember_commit, target.repo, target.revision or "main", commit
            )
    headers = dict(answer.headers)
    if "Link" in headers:  # pagination must come back to the mirror, not go to upstream
        ours = request.get(ORIGIN_KEY) or f"{request.scheme}://{request.host}"
        headers["Link"] = headers["Link"].replace(mirror.upstream.base, ours)
    headers["X-Cache"] = answer.cache
    headers["Cache-Control"] = _cache_control(target.revision, mirror)
    content_type = headers.pop("Content-Type", "application/json").split(";")[0]
    return web.Response(
        status=answer.status, body=answer.body, headers=headers, content_type=content_type
    )


def _commit_of(body: bytes) -> str | None:
    try:
        sha = json.loads(body).get("sha")
    except (ValueError, AttributeError):
        return None
    return sha if isinstance(sha, str) and COMMIT_RE.fullmatch(sha) else None


async def _paths_info(
    request: web.Request, mirror: Mirror, target: Api, revalidate: bool
) -> web.Response:
    """POST paths-info: asked upstream (and cached by its exact question); answered from the
    snapshot when upstream cannot be asked."""
    assert target.revision is not None
    if request.method != "POST":
        return error_answer(405, "MethodNotAllowed", "paths-info takes a POST")
    body = await request.read()  # client_max_size bounds it
    fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    paths = [check_repo_path(v) for k, v in fields if k == "paths"]
    expand = any(k == "expand" and v.lower() in ("1", "true") for k, v in fields)
    form = urlencode([("paths", p) for p in paths] + ([("expand", "True")] if expand else []))
    try:
        answer = await mirror.blocking(
            mirror.metadata.api, request.raw_path, target.revision, revalidate, form.encode()
        )
    except NetworkError:
        snapshot, _ = await mirror.blocking(
            mirror.metadata.snapshot, target.repo, target.revision, False
        )
        info = paths_info_answer(snapshot, paths)
        answer = Answer(200, info, {"Content-Type": "application/json"}, "STALE")
    headers = {k: v for k, v in answer.headers.items() if k != "Content-Type"}
    headers["X-Cache"] = answer.cache
    headers["Cache-Control"] = _cache_control(target.revision, mirror)
    return web.Response(
        status=answer.status, body=answer.body, headers=headers, content_type="application/json"
    )


async def _resolve(
    request: web.Request, mirror: Mirror, target: Resolve, revalidate: bool
) -> web.StreamResponse:
    known = (
        None
        if revalidate
        else mirror.metadata.fresh_file(target.repo, target.revision, target.path)
    )
    if known is not None:  # a hit's metadata from memory: no thread hop, no disk
        snapshot, file = known
    else:
        snapshot, _ = await mirror.blocking(
            mirror.metadata.snapshot, target.repo, target.revision, revalidate
        )
        file = next((f for f in snapshot.files if f.path == target.path), None)
    if file is None:
        response = error_answer(
            404, "EntryNotFound", f"{target.path} is not in {target.repo.repo_id}"
        )
        response.headers["X-Repo-Commit"] = snapshot.commit
        return response
    with mirror.evictor.serving(file.etag):  # before the store is asked: no eviction between
        return await _answer_file(request, mirror, target, snapshot, file)


async def _answer_file(
    request: web.Request, mirror: Mirror, target: Resolve, snapshot: Snapshot, file: RemoteFile
) -> web.StreamResponse:
    if mirror.local:
        stored = mirror.store.size(file.etag) == file.size
    else:  # a network call (or a cached answer): never on the loop
        stored = await mirror.blocking(mirror.store.size, file.etag) == file.size
    headers = {
        "X-Repo-Commit": snapshot.commit,
        "ETag": f'"{file.etag}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": _cache_control(target.revision, mirror, immutable=True),
        "X-Cache": "HIT" if stored else "MISS",
        "Content-Type": "application/octet-stream",
    }
    if _matches(request.headers.get("If-None-Match"), file.etag):
        return web.Response(status=304, headers=headers)
    # If-Range names our ETag or the range is not applied (a date cannot be checked: our
    # answers have no meaningful Last-Modified), so a stale range is never stitched on.
    span = _requested_span(request, file.size, f'"{file.etag}"')
    if isinstance(span, str):  # "unsatisfiable"
        response = error_answer(416, "RangeNotSatisfiable", f"{file.path} has {file.size} bytes")
        response.headers["Content-Range"] = f"bytes */{file.size}"
        return response
    if request.method == "HEAD":
        head = web.StreamResponse(status=200, headers=headers)
        head.content_length = file.size
        await head.prepare(request)
        return head
    if not stored:
        if mirror.config.offline:
            return error_answer(504, "Offline", f"{file.path} is not in the store (--offline)")
        mirror.fill_origin[file.etag] = (target.repo, snapshot.commit)
        fill, _ = mirror.fills.join(file)
        # A range streams as its bytes land, but its last byte waits for the whole blob to
        # verify: a client can never stitch unverified bytes into a complete-looking file.
        return await _stream(request, mirror, fill, headers, span)
    if mirror.local:
        path = mirror.store.local_path(file.etag)
    else:
        path = await mirror.blocking(mirror.store.local_path, file.etag)
    try:  # on the loop: opening a local file takes microseconds
        handle = path.open("rb") if path is not None else None
    except FileNotFoundError:
        handle = None
    mirror.store.touch(file.etag)  # a use, for LRU eviction (never blocks: see BlobStore)
    if handle is None:
        if mirror.local:
            return error_answer(502, "StoreError", "the blob vanished from the store")
        return await _send_remote(request, mirror, file, headers, span)
    with handle:
        return await _send_stored(request, handle, headers, span, file.size)


async def _send_remote(
    request: web.Request,
    mirror: Mirror,
    file: RemoteFile,
    headers: dict[str, str],
    span: tuple[int, int] | None,
) -> web.StreamResponse:
    """Send a stored blob that has no local copy by ranged reads of CHUNK bytes, reading the
    next chunk while the last one is written. A store failure before the first byte is an
    HTTP error (503); after it, the connection is cut (no clean end to a short body)."""
    start, stop = span or (0, file.size)

    def chunk_at(pos: int) -> asyncio.Future[bytes]:
        end = min(stop, pos + CHUNK)
        return asyncio.ensure_future(mirror.blocking(mirror.store.read, file.etag, pos, end))

    ahead = chunk_at(start) if start < stop else None
    try:
        first = b"" if ahead is None else await ahead  # StoreUnavailable: a 503
    except NotFoundError:  # deleted from the shared store since it was asked
        return error_answer(502, "StoreError", "the blob vanished from the store")
    response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
    if span is not None:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{file.size}"
    response.content_length = stop - start
    await response.prepare(request)
    pos, chunk = start, first
    try:
        while pos < stop:
            if not chunk:
                _abort(request)
                return response
            pos += len(chunk)
            ahead = chunk_at(pos) if pos < stop else None
            await response.write(chunk)
            body_sent(request, response, pos - start)
            chunk = b"" if ahead is None else await ahead
            ahead = None
    except HfpullError:
        _abort(request)
        return response
    finally:
        if ahead is not None:
            ahead.cancel()
    await response.write_eof()
    return response


SENDFILE_SLICE = 1 << 20


async def _send_stored(
    request: web.Request,
    handle: BinaryIO,
    headers: dict[str, str],
    span: tuple[int, int] | None,
    size: int,
) -> web.StreamResponse:
    """Send a stored blob with sendfile, at most SENDFILE_SLICE bytes per call.

    One unbounded sendfile can copy a whole socket buffer (4 MiB on Linux loopback) while
    the loop waits; with 50 clients starting at once, the last one's headers waited behind
    200 MiB of copies (TTFB p50 39 ms). Slices of 1 MiB bring it to 16 ms, near the 8 ms
    an answer with no file takes here, and raise aggregate throughput too.
    """
    start, stop = span or (0, size)
    response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
    if span is not None:
        response.headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response.content_length = stop - start
    writer = await response.prepare(request)
    assert writer is not None
    writer.send_headers()
    transport = request.transport
    if transport is None:
        return response
    loop = asyncio.get_running_loop()
    pos = start
    while pos < stop:  # asyncio falls back to read-and-write where sendfile cannot work
        count = min(SENDFILE_SLICE, stop - pos)
        await loop.sendfile(transport, handle, pos, count)
        writer.output_size += count  # bytes the writer never saw: the access log counts them
        pos += count
        body_sent(request, response, pos - start)
    await response.write_eof()
    return response


def _matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or f'"{etag}"' in tags


def _requested_span(request: web.BaseRequest, size: int, etag: str) -> tuple[int, int] | str | None:
    """The single Range asked for as [start, stop), None for the whole file (no Range, an
    If-Range that is not our ETag, or a Range we cannot parse: RFC 9110 says ignore it),
    or "unsatisfiable"."""
    if "Range" not in request.headers:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None
    try:
        asked = request.http_range
    except ValueError:
        return None
    start, stop = asked.start, asked.stop
    if start is None and stop is None:
        return None
    if start is not None and start < 0:  # bytes=-N: the last N bytes
        start = max(0, size + start)
    start = start or 0
    stop = size if stop is None else min(stop, size)
    return (start, stop) if start < stop else "unsatisfiable"


async def _stream(
    request: web.Request,
    mirror: Mirror,
    fill: Fill,
    headers: dict[str, str],
    span: tuple[int, int] | None,
) -> web.StreamResponse:
    """Send a filling blob (or a range of it) as it lands; cut the connection if it fails."""
    size = fill.file.size
    first, stop = span or (0, size)
    while fill.readable(first) <= first and not fill.done.is_set():  # an error can still
        await asyncio.sleep(0.005)  # be an HTTP error
    if fill.error is not None:
        return failure_answer(fill.error)
    response = web.StreamResponse(status=200 if span is None else 206, headers=headers)
    if span is not None:
        response.headers["Content-Range"] = f"bytes {first}-{stop - 1}/{size}"
    response.content_length = stop - first
    await response.prepare(request)
    pos, reader = first, fill.reader()
    try:
        while pos < stop:
            readable = fill.readable(first)
            if (fill.done.is_set() and fill.error is not None) or readable < pos:
                _abort(request)  # failed or reset: no clean end for bytes that did not verify
                return response
            limit = min(readable, stop if fill.done.is_set() else stop - 1)
            if limit > pos:
                end = min(limit, pos + CHUNK)
                chunk = await mirror.blocking(reader.read, pos, end)
                if chunk is None:  # the fill ended before this client read from it
                    chunk = await mirror.blocking(mirror.store.read, fill.file.etag, pos, end)
                if not chunk:
                    _abort(request)
                    return response
                await response.write(chunk)
                pos += len(chunk)
                body_sent(request, response, pos - first)
            else:
                await asyncio.sleep(0.005)
    finally:
        reader.close()
    await response.write_eof()
    return response


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def _cache_control(revision: str | None, mirror: Mirror, immutable: bool = False) -> str:
    if revision is not None and COMMIT_RE.fullmatch(revision):
        return "public, max-age=31536000" + (", immutable" if immutable else "")
    return f"public, max-age={int(min(mirror.config.metadata_ttl, 60))}"


def run(
    config: ServeConfig,
    host: str,
    port: int,
    access_log: Path | None = None,
    seeds: tuple[Path, ...] = (),
    objects: ObjectStore | None = None,
) -> None:
    import sys

    from hfpull.serve.access_log import JsonAccessLogger, file_logger

    app = create_app(config, objects=objects)
    for cache_dir in seeds:
        mirror = app[MIRROR]
        report = seed(mirror.store, mirror.metadata, cache_dir)
        refused = f"; refused {report.refused} damaged blobs" if report.refused else ""
        print(
            f"hfpull serve: seeded {report.blobs} blobs and {report.revisions} revisions "
            f"from {cache_dir}{refused}",
            file=sys.stderr, flush=True,
        )  # fmt: skip
    print(
        f"hfpull serve: http://{host}:{port} (upstream {config.settings.endpoint}, "
        f"store {config.store_label or config.settings.cache_dir})",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    web.run_app(
        app, host=host, port=port, print=None,
        access_log=file_logger(access_log) if access_log is not None else None,
        access_log_class=JsonAccessLogger,
        handle_signals=True, shutdown_timeout=30.0,
    )  # fmt: skip
