"""A lease per blob on the shared object store: which replica fetches a cold blob upstream.

The lease is the object ``leases/<key>``, a small JSON body (holder id, generation, ttl,
expiry). Every change is a conditional write, so the store decides every race:

- acquire: ``put(if_none_match=True)``: exactly one of any number of contenders creates it;
- renew: ``put(if_match=<our etag>)`` every ttl/3; losing it (PreconditionFailed) means another
  replica took the lease over, and the holder must stop its fill at once;
- take over: a lease judged expired is overwritten with ``put(if_match=<its etag>)``: of the
  contenders that saw the same dead lease, exactly one wins;
- release: delete.

Expiry is judged without trusting clocks across replicas: a lease is expired once its ETag has
stayed the same for its ttl on *our* monotonic clock since we first saw that ETag, or once the
store's ``modified`` time is older than ttl + MAX_SKEW by our wall clock (so a lease left by a
replica that died long ago is taken at once, not after a ttl of watching). A holder that
cannot renew because the store is unavailable keeps trying until its own expiry, then stops.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hfpull.blobstore.objects import ObjectStore, PreconditionFailed, StoreUnavailable

DEFAULT_TTL = 15.0  # seconds; --lease-ttl, HFPULL_SERVE_LEASE_TTL
MAX_SKEW = 60.0  # seconds two replicas' wall clocks may disagree (the store's with ours too)
LEASES = "leases/"


def lease_name(key: str) -> str:
    return f"{LEASES}{key}"


def new_holder_id() -> str:
    """host:pid:random: unique per process, and readable by an operator."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass(frozen=True)
class LeaseState:
    """A lease as read from the store."""

    key: str
    holder: str
    gen: str  # the fill generation it names (chunk objects live under fills/<key>/<gen>/)
    ttl: float
    etag: str
    modified: float  # the store's clock


class LeaseLost(Exception):
    """Another replica holds the lease now (or ours expired): stop, publish nothing."""


class Lease:
    """A lease this process holds; renewed in a thread once ``start`` is called."""

    def __init__(
        self, objects: ObjectStore, key: str, holder: str, gen: str, ttl: float, etag: str
    ) -> None:
        self.objects = objects
        self.key = key
        self.holder = holder
        self.gen = gen
        self.ttl = ttl
        self.etag = etag
        self.lost = threading.Event()  # set when a renewal lost, or expiry passed unrenewed
        self._renewed = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def body(self) -> bytes:
        return _body(self.holder, self.gen, self.ttl)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="hfpull-lease", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise LeaseLost if the lease is no longer ours."""
        if self.lost.is_set() or time.monotonic() - self._renewed >= self.ttl:
            self.lost.set()
            raise LeaseLost(f"lease on {self.key} lost")

    def renew(self) -> bool:
        """One renewal; False once the lease is lost. StoreUnavailable is retried by the
        loop until our own expiry."""
        with self._lock:
            if self.lost.is_set():
                return False
            try:
                self.etag = self.objects.put(lease_name(self.key), self.body(), if_match=self.etag)
            except PreconditionFailed:
                self.lost.set()
                return False
            self._renewed = time.monotonic()
            return True

    def _renew_loop(self) -> None:
        interval = self.ttl / 3
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except StoreUnavailable:
                if time.monotonic() - self._renewed >= self.ttl:
                    self.lost.set()
                    return
                interval = min(self.ttl / 3, 0.5)  # retry soon: the store may be back
                continue
            interval = self.ttl / 3

    def stop(self) -> None:
        """Stop renewing (keep the object: a killed holder leaves it behind like this)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def release(self) -> None:
        """Stop renewing and delete the lease, unless it was lost (then it is another's)."""
        self.stop()
        with self._lock:
            if self.lost.is_set():
                return
            self.lost.set()  # no renewal after this
            current = self.objects.head(lease_name(self.key))
            if current is not None and current.etag == self.etag:
                self.objects.delete(lease_name(self.key))


class Leases:
    """Acquire, read and take over leases for one replica (one holder id)."""

    def __init__(
        self,
        objects: ObjectStore,
        ttl: float = DEFAULT_TTL,
        holder: str | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.objects = objects
        self.ttl = ttl
        self.holder = holder or new_holder_id()
        self._monotonic = monotonic
        self._wall = wall
        self._first_seen: dict[tuple[str, str], float] = {}  # (key, etag) -> when we saw it
        self._lock = threading.Lock()

    def acquire(self, key: str) -> Lease | None:
        """The lease if nobody holds it, else None."""
        gen = secrets.token_hex(4)
        try:
            etag = self.objects.put(
                lease_name(key), _body(self.holder, gen, self.ttl), if_none_match=True
            )
        except PreconditionFailed:
            return None
        return Lease(self.objects, key, self.holder, gen, self.ttl, etag)

    def read(self, key: str) -> LeaseState | None:
        """The lease as the store has it now, or None if nobody holds it."""
        for _ in range(3):  # body and modified time come from two calls: retry a change between
            got = self.objects.get(lease_name(key))
            if got is None:
                return None
            info = self.objects.head(lease_name(key))
            if info is None:
                return None
            body, etag = got
            if info.etag != etag:
                continue
            fields = _parse(body)
            self._seen(key, etag)
            return LeaseState(
                key,
                str(fields.get("holder", "?")),
                str(fields.get("gen", "")),
                _number(fields.get("ttl"), self.ttl),
                etag,
                info.modified,
            )
        return None

    def _seen(self, key: str, etag: str) -> None:
        now = self._monotonic()
        with self._lock:
            self._first_seen.setdefault((key, etag), now)
            if len(self._first_seen) > 10_000:  # old sightings go
                horizon = now - 10 * self.ttl - MAX_SKEW
                self._first_seen = {k: t for k, t in self._first_seen.items() if t > horizon}

    def expired(self, state: LeaseState) -> bool:
        """Unchanged for its ttl since we first saw it, or older than ttl + MAX_SKEW by the
        store's modified time: either way its holder stopped renewing."""
        with self._lock:
            seen = self._first_seen.get((state.key, state.etag), self._monotonic())
        if self._monotonic() - seen >= state.ttl:
            return True
        return self._wall() - state.modified >= state.ttl + MAX_SKEW

    def take_over(self, state: LeaseState) -> Lease | None:
        """Replace an expired lease with ours; None if another contender (or a renewal of
        the old holder) got there first."""
        gen = secrets.token_hex(4)
        try:
            etag = self.objects.put(
                lease_name(state.key), _body(self.holder, gen, self.ttl), if_match=state.etag
            )
        except PreconditionFailed:
            return None
        return Lease(self.objects, state.key, self.holder, gen, self.ttl, etag)


def _body(holder: str, gen: str, ttl: float) -> bytes:
    record = {"holder": holder, "gen": gen, "ttl": ttl, "expires": time.time() + ttl}
    return json.dumps(record, sort_keys=True).encode()


def _number(value: object, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and value > 0 else default


def _parse(body: bytes) -> dict[str, object]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
