"""FakeHub: the public object tying the store, both listeners, faults and the request log."""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
import traceback
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from .cdn import CdnApi, Signer
from .faults import Fault, FaultBook
from .handler import Handler
from .hub_api import HubApi
from .log import RequestLog, RequestRecord
from .replies import Reply, Request
from .store import Store
from .wan import LinkBucket

STOP_TIMEOUT = 5.0


class Listener(ThreadingHTTPServer):
    """One HTTP listener on 127.0.0.1 that tracks its connections so stop() can cut them."""

    daemon_threads = True
    block_on_close = False  # we join handler threads ourselves, with a deadline
    request_queue_size = 256

    def __init__(self, hub: FakeHub, role: str, route: Callable[[Request, list[str]], Reply]):
        self.hub = hub
        self.role = role
        self.route = route
        self._open_conns: set[socket.socket] = set()
        self._handler_threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.opened = 0  # connections accepted since start
        self.peak = 0  # most connections open at once since start or reset_peak()
        super().__init__(("127.0.0.1", 0), Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            self._open_conns.add(request)
            self.opened += 1
            self.peak = max(self.peak, len(self._open_conns))
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        thread = threading.current_thread()
        with self._lock:
            self._handler_threads.add(thread)
        try:
            if self.hub.connect_latency > 0 and self.hub.stopping.wait(self.hub.connect_latency):
                self.shutdown_request(request)  # stopping: close it unanswered
                return
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._handler_threads.discard(thread)

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._open_conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.report_error()

    def report_error(self) -> None:
        """Unexpected exceptions go to hub.errors, never to stderr. Disconnects are expected."""
        if not isinstance(sys.exc_info()[1], (OSError, EOFError)):
            self.hub.errors.append(traceback.format_exc())

    def connections(self, reset_peak: bool = False) -> dict[str, int]:
        """``open`` now, ``opened`` in all, ``peak`` at once (then reset to ``open``)."""
        with self._lock:
            counts = {"open": len(self._open_conns), "opened": self.opened, "peak": self.peak}
            if reset_peak:
                self.peak = len(self._open_conns)
            return counts

    def cut_connections(self) -> list[threading.Thread]:
        with self._lock:
            conns, threads = list(self._open_conns), list(self._handler_threads)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return threads


class FakeHub:
    """A fake Hugging Face Hub (plus a separate-origin CDN) on 127.0.0.1 ephemeral ports.

    Knobs (plain attributes, change them any time): ``tokens`` (token -> gated/private repo ids
    it may access), ``page_size`` (tree pagination), ``siblings_limit``, ``cdn_url_ttl``,
    ``xet`` (advertise Xet storage for LFS files, as the real Hub does: ``xetHash`` fields,
    ``X-Xet-Hash`` and a ``Link rel="xet-auth"`` on resolve; the Xet routes themselves 404)
    (seconds), ``throttle_rate`` (bytes/s per response for file content, 0 = off),
    ``aggregate_rate`` (bytes/s for all bodies together, 0 = off), ``latency`` (seconds before
    each answer), ``connect_latency`` (seconds before a new connection's first request; the
    WAN model: see wan.py) and ``faults`` (see faults.py for which requests consume which kind).

    Protocol choices worth knowing:
    - A recursive tree listing includes ``directory`` entries too, like the real Hub.
    - For LFS files ``oid``/``blobId``/ETag are the git sha1 of the LFS *pointer* file (as on
      the real Hub); ``pointerSize`` is that pointer's real length (134 for 9-digit sizes).
    - An unknown token answers 401 without an X-Error-Code.
    - CDN URLs also carry ``response-content-disposition`` naming the file, so a fault or
      ``bytes_sent`` filter on "model.safetensors" also sees the CDN request.
    - ``bytes_sent`` counts 2xx bodies only; ``RequestRecord.body_bytes`` counts every body.
    - Unexpected server-side exceptions answer 500 (if still possible) and land in ``errors``.
    """

    def __init__(self) -> None:
        self.tokens: dict[str, set[str]] = {}
        self.page_size = 1000
        self.siblings_limit: int | None = None
        self.xet = False
        self.cdn_url_ttl: float = 3600
        self.throttle_rate = 0
        self.aggregate_rate = 0
        self.latency = 0.0
        self.connect_latency = 0.0
        self.link = LinkBucket()
        self.faults: list[Fault] = []
        self.errors: list[str] = []  # tracebacks of unexpected server-side exceptions
        self.store = Store()
        self.log = RequestLog()
        self.signer = Signer()
        self.fault_book = FaultBook(lambda: self.faults)
        self.stopping = threading.Event()
        self._hub: Listener | None = None
        self._cdn: Listener | None = None
        self._serve_threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FakeHub:
        if self._hub is not None:
            raise RuntimeError("FakeHub already started")
        self._hub = Listener(self, "hub", HubApi(self).route)
        self._cdn = Listener(self, "cdn", CdnApi(self).route)
        for listener in (self._hub, self._cdn):
            thread = threading.Thread(
                target=listener.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fakehub-{listener.role}",
                daemon=True,
            )
            thread.start()
            self._serve_threads.append(thread)
        return self

    def stop(self) -> None:
        if self._hub is None or self.stopping.is_set():
            return
        self.stopping.set()
        listeners = [x for x in (self._hub, self._cdn) if x is not None]
        for listener in listeners:
            listener.shutdown()
            listener.server_close()
        threads = [t for listener in listeners for t in listener.cut_connections()]
        for thread in [*threads, *self._serve_threads]:
            thread.join(STOP_TIMEOUT)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._hub is None:
            raise RuntimeError("FakeHub not started")
        return self._hub.url

    @property
    def cdn_url(self) -> str:
        if self._cdn is None:
            raise RuntimeError("FakeHub not started")
        return self._cdn.url

    # -- content ----------------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes | Path],
        *,
        repo_type: str = "model",
        branch: str = "main",
        lfs_threshold: int = 1024,
        gated: bool = False,
        private: bool = False,
    ) -> str:
        """Commit `files` as the new head of `branch` (creating the repo); returns the sha.

        `files` is the whole tree of the new commit. Path values are hashed now and served
        from disk later. Re-adding an existing repo also updates its gated/private flags.
        """
        return self.store.add_repo(
            repo_id,
            files,
            repo_type=repo_type,
            branch=branch,
            lfs_threshold=lfs_threshold,
            gated=gated,
            private=private,
        )

    def add_branch(
        self, repo_id: str, name: str, revision: str, *, repo_type: str = "model"
    ) -> None:
        """Point branch/tag `name` (may contain '/') at `revision` (a sha or existing ref)."""
        self.store.add_branch(repo_id, name, revision, repo_type)

    def rename_repo(self, old_id: str, new_id: str, *, repo_type: str = "model") -> None:
        """Move a repo; requests naming the old id get a 307 with a relative Location."""
        self.store.rename_repo(old_id, new_id, repo_type)

    # -- observation ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request to either listener, in arrival order of their responses."""
        self.log.settle()
        return self.log.records

    def bytes_sent(self, path_contains: str | None = None) -> int:
        """Body bytes written (both listeners) for requests whose raw path contains the text."""
        return self.log.bytes_sent(path_contains)

    def reset_log(self) -> None:
        self.log.reset()

    def connections(self, reset_peak: bool = False) -> dict[str, dict[str, int]]:
        """Per listener ("hub", "cdn"): connections ``open``, ``opened`` and ``peak`` at once.

        ``reset_peak`` starts a new peak from the connections open now (e.g. per benchmark run).
        """
        listeners = [x for x in (self._hub, self._cdn) if x is not None]
        return {x.role: x.connections(reset_peak) for x in listeners}
