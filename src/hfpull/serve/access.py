"""Who may use the mirror, and for what: pure policy (no I/O, no aiohttp).

- peers: ``--allow`` ranges on the client address, which is the socket peer, or, when the
  peer is a ``--trust-proxy``, taken from ``X-Forwarded-For`` right to left through trusted
  proxies only (a client can prepend anything to that header, never append);
- repos: ``--allow-repo`` / ``--deny-repo`` globs on ``org/name``, case-insensitive like the
  Hub's repo ids, deny first;
- the principal: what authentication proved about a request, for the other pieces to ask.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from hfpull.errors import UsageError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# request keys every piece may read: the Principal, and the client address as a string
PRINCIPAL_KEY = "hfpull_principal"
CLIENT_KEY = "hfpull_client"
ORIGIN_KEY = "hfpull_origin"  # scheme://host clients reach the mirror by (PeerPolicy)

_GLOB_RE = re.compile(r"[A-Za-z0-9._\-/*?\[\]!]{1,200}")


@dataclass(frozen=True)
class AccessConfig:
    """The access flags as given (parsed and checked when the app is built)."""

    allow: tuple[str, ...] = ()  # CIDRs; empty: every peer
    trust_proxy: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For is believed
    auth_tokens: Path | None = None  # the tokens file; None: no mirror tokens
    allow_repo: tuple[str, ...] = ()  # globs; empty: every repo
    deny_repo: tuple[str, ...] = ()


@dataclass(frozen=True)
class Principal:
    """What a request proved. ``request["hfpull_principal"]`` holds one on every request."""

    name: str | None = None  # the token's NAME in the tokens file; None: no mirror token
    admin: bool = False  # the token has the +admin scope (admin routes)
    grants: tuple[str, ...] = ()  # repo globs: gated/private repos this token may read
    # The client's own HF token (only without a tokens file), checked with upstream for
    # gated/private repos. Never logged: repr=False keeps it out of any formatted Principal.
    hf_token: str | None = field(default=None, repr=False)

    @property
    def presented_credentials(self) -> bool:
        """Whether the client sent a token (the Hub answers 403 then, 401 otherwise)."""
        return self.name is not None or self.hf_token is not None

    def granted(self, repo_id: str) -> bool:
        return any(repo_matches(repo_id, glob) for glob in self.grants)


ANONYMOUS = Principal()
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def repo_matches(repo_id: str, glob: str) -> bool:
    """fnmatch on ``org/name`` (``*`` crosses ``/``), case-insensitive as Hub ids are."""
    return fnmatchcase(repo_id.lower(), glob.lower())


def is_repo_glob(glob: str) -> bool:
    return _GLOB_RE.fullmatch(glob) is not None


def check_repo_glob(glob: str, what: str) -> str:
    if not is_repo_glob(glob):
        raise UsageError(f"{what}: not a repo glob (org/name with * ? [...])")
    return glob


@dataclass(frozen=True)
class RepoPolicy:
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str], deny: Iterable[str]) -> RepoPolicy:
        return cls(
            tuple(check_repo_glob(g, f"--allow-repo {g!r}") for g in allow),
            tuple(check_repo_glob(g, f"--deny-repo {g!r}") for g in deny),
        )

    def permits(self, repo_id: str) -> bool:
        if any(repo_matches(repo_id, glob) for glob in self.deny):
            return False
        return not self.allow or any(repo_matches(repo_id, glob) for glob in self.allow)


def parse_networks(values: Iterable[str], flag: str) -> tuple[Network, ...]:
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise UsageError(f"{flag} {value!r} is not an address range (CIDR)") from None
    return tuple(networks)


def parse_address(text: str | None) -> Address | None:
    """An IP address from a socket peer or an X-Forwarded-For hop (``[v6]:port`` and
    ``v4:port`` too); IPv4-mapped IPv6 (a dual-stack socket) becomes plain IPv4."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class PeerPolicy:
    allow: tuple[Network, ...] = ()
    trusted_proxies: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str], trust_proxy: Iterable[str]) -> PeerPolicy:
        return cls(parse_networks(allow, "--allow"), parse_networks(trust_proxy, "--trust-proxy"))

    def client(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> Address | None:
        """The client's address: the peer, unless the peer is a trusted proxy; then the
        rightmost X-Forwarded-For hop that is not itself a trusted proxy. None when a
        trusted proxy passed on something that is not an address."""
        address = parse_address(peer)
        if address is None or not self._trusted(address):
            return address
        hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None or not self._trusted(address):
                return address
        return address  # every hop is a trusted proxy: the farthest one is the client

    def public_origin(
        self, peer: str | None, scheme: str, host: str, forwarded: Mapping[str, str]
    ) -> str:
        """The origin clients reach the mirror by, for the links it hands out (tree
        pagination): the request's own, or X-Forwarded-Proto/-Host when a trusted proxy
        (say nginx terminating TLS) sent them. Anything that is not a plain scheme or host
        is ignored, so no header can inject text into a Link."""
        address = parse_address(peer)
        if address is not None and self._trusted(address):
            proto = forwarded.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            scheme = proto if proto in ("http", "https") else scheme
            front = forwarded.get("X-Forwarded-Host", "").split(",")[0].strip()
            host = front if _HOST.fullmatch(front) else host
        return f"{scheme}://{host}"

    def admits(self, client: Address | None) -> bool:
        if not self.allow:
            return True
        return client is not None and any(client in network for network in self.allow)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted_proxies)
