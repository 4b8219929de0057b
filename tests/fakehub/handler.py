"""HTTP/1.1 request handler shared by the hub and CDN listeners: faults, ranges, logging."""

from __future__ import annotations

import dataclasses
import gzip
import socket
import struct
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING

from .body import BodyPlan, Stopped, pause, read_span, send_body
from .faults import Fault
from .log import Exchange, RequestRecord
from .ranges import Span, select_span
from .replies import CAPTIVE_PORTAL_HTML, Reply, Request
from .store import Blob

if TYPE_CHECKING:
    from .server import Listener


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakehub/1.0"
    sys_version = ""
    # Headers and body are separate writes; with Nagle + delayed ACK that costs up to 40 ms.
    disable_nagle_algorithm = True
    server: Listener
    _responding = False  # headers started: too late to turn an internal error into a 500

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        """Silent: tests inspect `hub.requests` instead."""

    def do_GET(self) -> None:
        self._responding = False
        try:
            self._serve()
        except (OSError, Stopped):  # client went away, or the hub is stopping
            self.close_connection = True
        except Exception:  # a fakehub bug: keep the traceback, answer 500 if still possible
            self.close_connection = True
            self.server.report_error()
            if not self._responding:
                try:
                    self.send_error(500, "fakehub internal error (see hub.errors)")
                except OSError:
                    pass

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _serve(self) -> None:
        body = self._drain_request_body()
        hub = self.server.hub
        req = Request(
            server=self.server.role,
            method=self.command,
            raw_path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        applied: list[str] = []
        if hub.latency > 0:
            pause(hub.stopping, hub.latency)  # the WAN round trip (wan.py), before any fault
        delay = hub.fault_book.take(req, ("delay",))
        if delay is not None:
            applied.append("delay")
            pause(hub.stopping, delay.seconds)
        override = hub.fault_book.take(req, ("status", "html", "redirect"))
        if override is not None:
            applied.append(override.kind)
            self._send(req, _fault_reply(override), applied, faults=False)
        else:
            self._send(req, self.server.route(req, applied), applied, faults=True)

    def _send(self, req: Request, reply: Reply, applied: list[str], *, faults: bool) -> None:
        headers = dict(reply.headers)
        span = self._span(req, reply, applied, faults)
        if span.content_range:
            headers["Content-Range"] = span.content_range
        headers["Content-Length"] = str(span.length)
        plan, terminal, body = BodyPlan(span.start, span.length), None, reply.body
        if faults and req.method == "GET" and 200 <= span.status < 300:
            plan, terminal = self._body_plan(req, reply, span, applied)
            plan, body = self._encoding(req, body, plan, headers, applied)

        record = RequestRecord(
            server=req.server,
            method=req.method,
            path=req.raw_path,
            headers=req.headers,
            status=span.status,
            fault=",".join(applied) or None,
        )
        hub = self.server.hub
        ex = hub.log.open(record)
        self._responding = True
        try:
            self.send_response(span.status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if req.method == "HEAD" or span.status in (204, 304):
                return
            if plan.total:
                ex.idle()
            send_body(self.connection, body, plan, ex, hub.stopping)
            if terminal is not None:
                self._end_with(terminal, ex)
        finally:
            ex.close()

    def _span(self, req: Request, reply: Reply, applied: list[str], faults: bool) -> Span:
        """What part of the body to send: Range/If-Range handling for file content GETs."""
        if reply.etag is None or req.method != "GET" or reply.status != 200:
            return Span(reply.status, 0, reply.size)
        book = self.server.hub.fault_book
        range_header = req.headers.get("range")
        if range_header and faults and book.take(req, ("ignore_range",)):
            applied.append("ignore_range")
            range_header = None
        span = select_span(reply.size, range_header, req.headers.get("if-range"), reply.etag)
        if span.status == 206 and faults and book.take(req, ("wrong_content_range",)):
            applied.append("wrong_content_range")
            span = Span(206, 0, span.length, f"bytes 0-{span.length - 1}/{reply.size}")
        elif span.status == 206 and faults and book.take(req, ("wrong_total",)):
            applied.append("wrong_total")
            end = span.start + span.length - 1
            span = Span(206, span.start, span.length, f"bytes {span.start}-{end}/{reply.size + 1}")
        return span

    def _body_plan(
        self, req: Request, reply: Reply, span: Span, applied: list[str]
    ) -> tuple[BodyPlan, Fault | None]:
        """Body faults and throttling for a 2xx GET; returns the plan and any terminal fault."""
        hub = self.server.hub
        book, end = hub.fault_book, span.start + span.length
        flip = book.take(req, ("flip",), lambda f: span.start <= f.after_bytes < end)
        throttle = book.take(req, ("throttle",), lambda f: f.rate > 0)
        trickle = book.take(req, ("trickle",))
        terminal = book.take(req, ("reset", "short", "stall"))
        applied += [f.kind for f in (flip, throttle, trickle, terminal) if f is not None]
        rates = [throttle.rate if throttle else 0, hub.throttle_rate if reply.etag else 0]
        plan = BodyPlan(
            span.start,
            span.length,
            limit=terminal.after_bytes if terminal else None,
            flip_at=flip.after_bytes if flip else None,
            rate=min((r for r in rates if r > 0), default=0),
            trickle=trickle.seconds if trickle else None,
            link=hub.link.for_rate(hub.aggregate_rate),
        )
        return plan, terminal

    def _encoding(
        self,
        req: Request,
        body: bytes | Blob,
        plan: BodyPlan,
        headers: dict[str, str],
        applied: list[str],
    ) -> tuple[BodyPlan, bytes | Blob]:
        """gzip / chunked faults: change how the planned body goes on the wire."""
        book = self.server.hub.fault_book
        if book.take(req, ("gzip",)):
            applied.append("gzip")
            data = gzip.compress(read_span(body, plan.start, plan.length, plan.flip_at), mtime=0)
            body = data
            plan = dataclasses.replace(plan, start=0, length=len(data), flip_at=None)
            headers["Content-Encoding"] = "gzip"
            headers["Content-Length"] = str(len(data))
        if book.take(req, ("chunked",)):
            applied.append("chunked")
            plan = dataclasses.replace(plan, chunked=True)
            del headers["Content-Length"]
            headers["Transfer-Encoding"] = "chunked"
        return plan, body

    def _end_with(self, fault: Fault, ex: Exchange) -> None:
        self.close_connection = True
        if fault.kind == "stall":
            ex.close()
            pause(self.server.hub.stopping, fault.seconds)
        elif fault.kind == "reset":
            # SO_LINGER(on, 0) makes close() send RST instead of FIN. The rfile holds a
            # reference on the socket, so drop it first for the close to be real.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()

    def _drain_request_body(self) -> bytes:
        """Read the request body; keep its first MiB (a paths-info form), drop the rest."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return b""
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            self.close_connection = True
            return b""
        remaining, kept = int(length), bytearray()
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)
            if len(kept) < 1 << 20:
                kept += chunk
        return bytes(kept)


def _fault_reply(fault: Fault) -> Reply:
    if fault.kind == "html":
        return Reply(200, {"Content-Type": "text/html; charset=utf-8"}, CAPTIVE_PORTAL_HTML)
    if fault.kind == "redirect":
        return Reply(302, {"Location": fault.location, "Content-Type": "text/plain"}, b"Found")
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if fault.retry_after is not None:
        headers["Retry-After"] = fault.retry_after
    no_body = fault.status < 200 or fault.status in (204, 304)
    body = b"" if no_body else f"fakehub: injected status {fault.status}\n".encode()
    return Reply(fault.status, headers, body)
