"""Who owns a partial download, and whether that owner can still be running.

An owner is named by the kernel's view of it, never by hostname + pid alone (containers share
hostnames, pids are reused after a reboot or in another pid namespace):

- ``boot``: ``/proc/sys/kernel/random/boot_id``, a fresh random id each boot of a kernel;
- ``pidns``: the pid namespace (``/proc/self/ns/pid``); a pid means something only inside it;
- ``pid`` and ``start``: the process and its start time in clock ticks since boot (field 22
  of ``/proc/<pid>/stat``), so a reused pid is a different owner.

Only when boot *and* pid namespace match ours can the answer be certain: the process is gone,
a zombie, or has another start time (DEAD), or it is the same process (ALIVE). Everything
else (another host, another container, a rebooted machine, no ``/proc``) is UNKNOWN, and the
caller falls back to watching the owner's heartbeat on its own clock (see ``LeaseWatch``).
"""

from __future__ import annotations

import enum
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any


class Verdict(enum.Enum):
    ALIVE = "alive"
    DEAD = "dead"  # certain: it can never write again
    UNKNOWN = "unknown"  # cannot be checked from here: judge by its heartbeat


@dataclass(frozen=True)
class Owner:
    token: str
    host: str
    boot: str | None
    pidns: str | None
    pid: int
    start: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: object) -> Owner | None:
        if not isinstance(value, dict):
            return None
        try:
            owner = cls(
                token=value["token"],
                host=value["host"],
                boot=value["boot"],
                pidns=value["pidns"],
                pid=value["pid"],
                start=value["start"],
            )
        except (KeyError, TypeError):
            return None
        typed = (
            isinstance(owner.token, str)
            and isinstance(owner.host, str)
            and isinstance(owner.boot, str | None)
            and isinstance(owner.pidns, str | None)
            and isinstance(owner.pid, int)
            and isinstance(owner.start, int | None)
        )
        return owner if typed else None


def this_process(token: str) -> Owner:
    boot, pidns = kernel_view()
    pid = os.getpid()
    return Owner(token, socket.gethostname(), boot, pidns, pid, _start_ticks(pid))


def judge(owner: Owner, owned_here: Callable[[str], bool]) -> Verdict:
    """Is ``owner`` still running? ``owned_here(token)`` answers for this very process."""
    boot, pidns = kernel_view()
    if boot is None or pidns is None or owner.boot != boot or owner.pidns != pidns:
        return Verdict.UNKNOWN
    if owner.pid == os.getpid() and owner.start == _start_ticks(os.getpid()):
        return Verdict.ALIVE if owned_here(owner.token) else Verdict.DEAD
    if owner.start is None:
        return Verdict.UNKNOWN
    try:
        state, start = _stat(owner.pid)
    except FileNotFoundError:
        return Verdict.DEAD
    except (OSError, ValueError, IndexError):
        return Verdict.UNKNOWN
    if start != owner.start or state in ("Z", "X"):
        return Verdict.DEAD  # the pid was reused, or the owner was killed and not yet reaped
    return Verdict.ALIVE


@cache
def kernel_view() -> tuple[str | None, str | None]:
    """(boot id, pid namespace) of this process, or Nones where they cannot be trusted.

    The pid namespace counts only if the ``/proc`` we see is our own namespace's (a
    container may mount another one): ``/proc/self`` must then name our own pid."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            boot = handle.read().strip()
        pidns = os.readlink("/proc/self/ns/pid")
        if int(os.readlink("/proc/self")) != os.getpid():
            return boot, None
    except (OSError, ValueError):
        return None, None
    return boot or None, pidns or None


def _stat(pid: int) -> tuple[str, int]:
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])  # state (field 3), starttime (field 22)


def _start_ticks(pid: int) -> int | None:
    try:
        return _stat(pid)[1]
    except (OSError, ValueError, IndexError):
        return None


class LeaseWatch:
    """Decides that an owner we cannot check is gone: its heartbeat has not changed for
    ``lease`` seconds *of our own monotonic clock*. Nothing here compares another machine's
    timestamps (file mtimes, journal times) with ours, so clock skew cannot misjudge a live
    owner. A claimant keeps one watch while it waits, and calls ``expired`` on every poll.
    """

    def __init__(self, lease: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease = lease
        self.clock = clock
        self._seen: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def expired(self, key: str, fingerprint: bytes) -> bool:
        now = self.clock()
        with self._lock:
            previous = self._seen.get(key)
            if previous is None or previous[0] != fingerprint:
                self._seen[key] = (fingerprint, now)
                return False
            return now - previous[1] >= self.lease
