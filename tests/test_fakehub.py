"""The fake Hub itself: every endpoint and fault kind over real loopback HTTP."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.fakehub import FakeHub, Fault

ROOT = Path(__file__).resolve().parent.parent
CONFIG = b'{"model_type": "fake"}'
NOTE = b"hello from a nested file\n"
WEIGHTS = random.Random(0).randbytes(300_000)
NOTE_PATH = "sub/dir/a b#c.txt"
NOTE_URL_PATH = "sub/dir/a%20b%23c.txt"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hub(fake_hub: FakeHub) -> Iterator[FakeHub]:
    """The shared fixture plus a standard repo; fails the test on server-side exceptions."""
    fake_hub.add_repo(
        "org/model",
        {"config.json": CONFIG, NOTE_PATH: NOTE, "model.safetensors": WEIGHTS},
    )
    yield fake_hub
    assert fake_hub.errors == []


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # loopback only: never go through a proxy
        yield session


def resolve(hub: FakeHub, filename: str, rev: str = "main", prefix: str = "org/model") -> str:
    return f"{hub.url}/{prefix}/resolve/{rev}/{filename}"


def cdn_location(
    hub: FakeHub,
    http: requests.Session,
    filename: str = "model.safetensors",
    prefix: str = "org/model",
) -> str:
    r = http.head(resolve(hub, filename, prefix=prefix), allow_redirects=False)
    assert r.status_code == 302
    return r.headers["Location"]


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes
    ending: str  # "eof" (FIN), "reset" (RST) or "timeout"
    elapsed: float


def raw_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> Raw:
    """One GET over a bare socket, reporting exactly how the server ended the connection."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    started = time.monotonic()
    buf, ending = b"", "eof"
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            while chunk := sock.recv(65536):
                buf += chunk
        except ConnectionResetError:
            ending = "reset"
        except TimeoutError:
            ending = "timeout"
    head, _, body = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = dict(line.split(": ", 1) for line in header_lines if ": " in line)
    status = int(status_line.split()[1]) if status_line else 0
    return Raw(
        status, {k.lower(): v for k, v in parsed.items()}, body, ending, time.monotonic() - started
    )


# -- lifecycle ------------------------------------------------------------------------------


def test_fixture_gives_two_loopback_origins(hub: FakeHub) -> None:
    hub_url, cdn_url = urlsplit(hub.url), urlsplit(hub.cdn_url)
    assert hub_url.hostname == cdn_url.hostname == "127.0.0.1"
    assert hub_url.port != cdn_url.port
    assert not hub.url.endswith("/")


def test_keep_alive_serves_several_requests_on_one_connection(hub: FakeHub) -> None:
    conn = HTTPConnection("127.0.0.1", urlsplit(hub.url).port, timeout=5)
    try:
        for _ in range(3):
            conn.request("GET", "/org/model/resolve/main/config.json")
            response = conn.getresponse()
            assert response.status == 200 and response.read() == CONFIG
        conn.request("HEAD", "/org/model/resolve/main/config.json")
        response = conn.getresponse()
        assert response.getheader("Content-Length") == str(len(CONFIG))
        assert response.read() == b""
        assert conn.sock is not None  # still the same, open connection
    finally:
        conn.close()


def test_stop_cuts_idle_and_stalled_connections() -> None:
    hub = FakeHub().start()
    hub.add_repo("org/m", {"a.txt": b"x" * 100})
    hub.faults.append(Fault("stall", match="a.txt", after_bytes=10, seconds=30))
    idle = socket.create_connection(("127.0.0.1", urlsplit(hub.url).port))
    stalled = socket.create_connection(("127.0.0.1", urlsplit(hub.url).port))
    stalled.sendall(b"GET /org/m/resolve/main/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    received = b""
    while not received.endswith(b"x" * 10):  # headers and the 10 bytes before the stall
        received += stalled.recv(1000)
    assert hub._hub is not None
    listener = hub._hub
    hub.stop()
    # stop() returned with every handler thread finished: the stalled one was cut, not
    # waited for (it would still be inside its 30 s pause), and both clients see the end.
    assert listener._handler_threads == set()
    for sock in (idle, stalled):
        sock.settimeout(10)  # only reached if the connection was left open
        try:
            assert sock.recv(1000) == b""
        except ConnectionResetError:
            pass
        sock.close()
    assert hub.errors == []


# -- repo info, tree, search ----------------------------------------------------------------


def test_repo_info_default_branch_and_explicit_revision(
    hub: FakeHub, http: requests.Session
) -> None:
    sha = http.get(f"{hub.url}/api/models/org/model").json()["sha"]
    info = http.get(f"{hub.url}/api/models/org/model/revision/main").json()
    assert info["id"] == "org/model" and info["sha"] == sha and len(sha) == 40
    assert info["private"] is False and info["gated"] is False and info["lastModified"]
    assert info["siblings"] == [
        {"rfilename": "config.json"},
        {"rfilename": "model.safetensors"},
        {"rfilename": NOTE_PATH},
    ]
    by_sha = http.get(f"{hub.url}/api/models/org/model/revision/{sha}").json()
    assert by_sha["sha"] == sha


def test_repo_info_with_blobs(hub: FakeHub, http: requests.Session) -> None:
    info = http.get(f"{hub.url}/api/models/org/model/revision/main?blobs=true").json()
    siblings = {s["rfilename"]: s for s in info["siblings"]}
    assert siblings["config.json"] == {
        "rfilename": "config.json",
        "size": len(CONFIG),
        "blobId": git_sha1(CONFIG),
    }
    weights = siblings["model.safetensors"]
    assert weights["size"] == len(WEIGHTS)
    assert weights["lfs"]["sha256"] == sha256(WEIGHTS)
    assert weights["lfs"]["size"] == len(WEIGHTS) and weights["lfs"]["pointerSize"] > 100


def test_siblings_limit_truncates_the_list(hub: FakeHub, http: requests.Session) -> None:
    hub.siblings_limit = 1
    info = http.get(f"{hub.url}/api/models/org/model").json()
    assert info["siblings"] == [{"rfilename": "config.json"}]


def test_new_commit_moves_branch_and_keeps_old_commit(hub: FakeHub, http: requests.Session) -> None:
    old = http.get(f"{hub.url}/api/models/org/model").json()["sha"]
    new = hub.add_repo("org/model", {"config.json": b"{}"})
    assert new != old and len(new) == 40 and new == new.lower()
    assert http.get(f"{hub.url}/api/models/org/model").json()["sha"] == new
    assert http.get(resolve(hub, "config.json")).content == b"{}"
    assert http.get(resolve(hub, "config.json", rev=old)).content == CONFIG
    assert http.get(resolve(hub, "model.safetensors", rev=new)).status_code == 404


def test_branch_names_with_slashes_are_percent_encoded(
    hub: FakeHub, http: requests.Session
) -> None:
    sha = hub.add_repo("org/model", {"config.json": b"pr"}, branch="refs/pr/1")
    hub.add_branch("org/model", "v1.0", sha)
    rev = "refs%2Fpr%2F1"
    assert http.get(f"{hub.url}/api/models/org/model/revision/{rev}").json()["sha"] == sha
    tree = http.get(f"{hub.url}/api/models/org/model/tree/{rev}").json()
    assert [e["path"] for e in tree] == ["config.json"]
    r = http.get(resolve(hub, "config.json", rev=rev))
    assert r.content == b"pr" and r.headers["X-Repo-Commit"] == sha
    assert http.get(resolve(hub, "config.json", rev="v1.0")).content == b"pr"
    assert http.get(resolve(hub, "config.json")).content == CONFIG  # main untouched


def test_tree_recursive_lists_files_and_folders(hub: FakeHub, http: requests.Session) -> None:
    r = http.get(f"{hub.url}/api/models/org/model/tree/main?recursive=true&expand=false")
    entries = r.json()
    assert [e["path"] for e in entries] == sorted(e["path"] for e in entries)
    files = {e["path"]: e for e in entries if e["type"] == "file"}
    folders = [e["path"] for e in entries if e["type"] == "directory"]
    assert set(files) == {"config.json", "model.safetensors", NOTE_PATH}
    assert folders == ["sub", "sub/dir"]
    assert files["config.json"] == {
        "type": "file",
        "oid": git_sha1(CONFIG),
        "size": len(CONFIG),
        "path": "config.json",
    }
    lfs = files["model.safetensors"]
    assert lfs["size"] == len(WEIGHTS) and lfs["lfs"]["oid"] == sha256(WEIGHTS)
    assert lfs["lfs"]["size"] == len(WEIGHTS) and len(lfs["oid"]) == 40


def test_tree_non_recursive_and_subfolder(hub: FakeHub, http: requests.Session) -> None:
    top = http.get(f"{hub.url}/api/models/org/model/tree/main").json()
    assert [(e["type"], e["path"]) for e in top] == [
        ("file", "config.json"),
        ("file", "model.safetensors"),
        ("directory", "sub"),
    ]
    assert len(top[2]["oid"]) == 40
    sub = http.get(f"{hub.url}/api/models/org/model/tree/main/sub?recursive=false").json()
    assert [(e["type"], e["path"]) for e in sub] == [("directory", "sub/dir")]
    deep = http.get(f"{hub.url}/api/models/org/model/tree/main/sub/dir").json()
    assert [e["path"] for e in deep] == [NOTE_PATH]
    missing = http.get(f"{hub.url}/api/models/org/model/tree/main/nope")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"


def test_tree_pagination_uses_absolute_link_header(hub: FakeHub, http: requests.Session) -> None:
    hub.add_repo("org/many", {f"f{i:02d}.txt": str(i).encode() for i in range(7)})
    hub.page_size = 3
    url = f"{hub.url}/api/models/org/many/tree/main?recursive=true&expand=false"
    paths: list[str] = []
    pages = 0
    while url:
        r = http.get(url)
        assert r.status_code == 200 and len(r.json()) <= 3
        paths += [e["path"] for e in r.json()]
        pages += 1
        url = r.links.get("next", {}).get("url", "")
        if url:
            assert url.startswith(f"{hub.url}/api/models/org/many/tree/main?")
            assert "recursive=true" in url and "cursor=" in url
            assert r.headers["Link"].endswith('; rel="next"')
    assert pages == 3 and paths == [f"f{i:02d}.txt" for i in range(7)]


def test_search_api(hub: FakeHub, http: requests.Session) -> None:
    hub.add_repo("other/Model-Two", {"a": b"a"})
    hub.add_repo("org/data", {"a": b"a"}, repo_type="dataset")
    hub.add_repo("org/secret-model", {"a": b"a"}, private=True)
    found = http.get(f"{hub.url}/api/models", params={"search": "MODEL"}).json()
    assert [m["id"] for m in found] == ["org/model", "other/Model-Two"]
    limited = http.get(f"{hub.url}/api/models", params={"search": "model", "limit": "1"}).json()
    assert len(limited) == 1
    datasets = http.get(f"{hub.url}/api/datasets", params={"search": "data"}).json()
    assert [d["id"] for d in datasets] == ["org/data"]
    assert http.get(f"{hub.url}/api/spaces", params={"search": "x"}).json() == []


def test_dataset_and_space_prefixes(hub: FakeHub, http: requests.Session) -> None:
    hub.add_repo("org/ds", {"data/train.csv": b"a,b\n"}, repo_type="dataset")
    hub.add_repo("org/app", {"app.py": b"print()"}, repo_type="space")
    assert http.get(f"{hub.url}/api/datasets/org/ds").json()["id"] == "org/ds"
    assert http.get(f"{hub.url}/datasets/org/ds/resolve/main/data/train.csv").content == b"a,b\n"
    assert http.get(f"{hub.url}/spaces/org/app/resolve/main/app.py").content == b"print()"
    assert http.get(f"{hub.url}/api/models/org/ds").status_code == 401  # wrong type: unknown
    assert http.get(f"{hub.url}/org/ds/resolve/main/data/train.csv").status_code == 401


def test_probe_and_unrouted_paths_are_404(hub: FakeHub, http: requests.Session) -> None:
    assert http.get(f"{hub.url}/api/agent-harnesses").status_code == 404
    assert http.get(f"{hub.url}/nothing/here").status_code == 404
    assert http.get(f"{hub.url}/api/whatever").status_code == 404
    assert http.post(f"{hub.url}/api/models/org/model", data=b"x").status_code == 404


def test_renamed_repo_answers_307_relative(hub: FakeHub, http: requests.Session) -> None:
    hub.rename_repo("org/model", "org/renamed")
    r = http.get(resolve(hub, "config.json"), allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"] == "/org/renamed/resolve/main/config.json"
    assert http.get(resolve(hub, "config.json")).content == CONFIG
    r = http.get(f"{hub.url}/api/models/org/model/revision/main?blobs=true", allow_redirects=False)
    assert r.headers["Location"] == "/api/models/org/renamed/revision/main?blobs=true"


# -- resolve & CDN --------------------------------------------------------------------------


def test_resolve_small_file(hub: FakeHub, http: requests.Session) -> None:
    sha = http.get(f"{hub.url}/api/models/org/model").json()["sha"]
    head = http.head(resolve(hub, "config.json"))
    assert head.status_code == 200
    assert head.headers["X-Repo-Commit"] == sha
    assert head.headers["ETag"] == f'"{git_sha1(CONFIG)}"'
    assert head.headers["Content-Length"] == str(len(CONFIG))
    assert head.headers["Accept-Ranges"] == "bytes"
    assert head.headers["Content-Type"] == "application/octet-stream"
    get = http.get(resolve(hub, "config.json"))
    assert get.content == CONFIG and get.headers["ETag"] == head.headers["ETag"]


def test_resolve_nested_name_with_space_and_hash(hub: FakeHub, http: requests.Session) -> None:
    assert http.get(resolve(hub, NOTE_URL_PATH)).content == NOTE


def test_lfs_file_redirects_to_signed_cdn_url(hub: FakeHub, http: requests.Session) -> None:
    sha = http.get(f"{hub.url}/api/models/org/model").json()["sha"]
    for method in ("HEAD", "GET"):
        r = http.request(method, resolve(hub, "model.safetensors"), allow_redirects=False)
        assert r.status_code == 302
        location = r.headers["Location"]
        assert location.startswith(f"{hub.cdn_url}/cdn/{sha256(WEIGHTS)}?expires=")
        assert "&sig=" in location
        assert r.headers["X-Repo-Commit"] == sha
        assert r.headers["X-Linked-Etag"] == f'"{sha256(WEIGHTS)}"'
        assert r.headers["X-Linked-Size"] == str(len(WEIGHTS))
        assert r.headers["ETag"] not in (r.headers["X-Linked-Etag"], "")
        if method == "GET":
            assert int(r.headers["Content-Length"]) == len(r.content) > 0
    hub.tokens = {"hf_good": set()}
    full = http.get(resolve(hub, "model.safetensors"), headers={"Authorization": "Bearer hf_good"})
    assert full.content == WEIGHTS and full.url.startswith(hub.cdn_url)
    cdn = [rec for rec in hub.requests if rec.server == "cdn"]
    assert cdn and all("authorization" not in rec.headers for rec in cdn)
    assert cdn[-1].status == 200 and cdn[-1].body_bytes == len(WEIGHTS)


def test_cdn_rejects_bad_signature_and_expired_urls(hub: FakeHub, http: requests.Session) -> None:
    location = cdn_location(hub, http)
    assert http.head(location).headers["Content-Length"] == str(len(WEIGHTS))
    tampered = location.replace("sig=", "sig=0")
    assert http.get(tampered).status_code == 403
    hub.cdn_url_ttl = -1
    expired = http.get(cdn_location(hub, http))
    assert expired.status_code == 403 and b"Request has expired" in expired.content
    assert http.get(f"{hub.cdn_url}/cdn/{'0' * 64}").status_code == 403  # unsigned


def test_missing_file_is_entry_not_found(hub: FakeHub, http: requests.Session) -> None:
    sha = http.get(f"{hub.url}/api/models/org/model").json()["sha"]
    for method in ("HEAD", "GET"):
        r = http.request(method, resolve(hub, "nope.txt"))
        assert r.status_code == 404
        assert r.headers["X-Error-Code"] == "EntryNotFound"
        assert r.headers["X-Error-Message"]
        assert r.headers["X-Repo-Commit"] == sha
    assert "error" in http.get(resolve(hub, "nope.txt")).json()


def test_unknown_revision(hub: FakeHub, http: requests.Session) -> None:
    for url in (
        f"{hub.url}/api/models/org/model/revision/nope",
        f"{hub.url}/api/models/org/model/tree/nope",
        resolve(hub, "config.json", rev="nope"),
        resolve(hub, "config.json", rev="0" * 40),
    ):
        r = http.get(url)
        assert (r.status_code, r.headers["X-Error-Code"]) == (404, "RevisionNotFound"), url


def test_unknown_repo_is_401_without_auth_and_404_with(
    hub: FakeHub, http: requests.Session
) -> None:
    hub.tokens = {"hf_good": set()}
    for url in (f"{hub.url}/api/models/org/nope", resolve(hub, "x", prefix="org/nope")):
        anonymous = http.get(url)
        assert anonymous.status_code == 401
        assert anonymous.headers["X-Error-Code"] == "RepoNotFound"
        assert anonymous.json()["error"] == anonymous.headers["X-Error-Message"]
        authed = http.get(url, headers={"Authorization": "Bearer hf_good"})
        assert (authed.status_code, authed.headers["X-Error-Code"]) == (404, "RepoNotFound")


def test_gated_repo(hub: FakeHub, http: requests.Session) -> None:
    hub.add_repo("org/gated-model", {"config.json": CONFIG}, gated=True)
    hub.tokens = {"hf_good": {"org/gated-model"}, "hf_other": set()}
    info_url = f"{hub.url}/api/models/org/gated-model/revision/main"
    # As on the real Hub: info and file list are public, the files need access.
    for url in (info_url, f"{hub.url}/api/models/org/gated-model/tree/main"):
        assert http.get(url).status_code == 200
    url = resolve(hub, "config.json", prefix="org/gated-model")
    r = http.get(url)
    assert (r.status_code, r.headers["X-Error-Code"]) == (401, "GatedRepo")
    r = http.get(url, headers={"Authorization": "Bearer hf_other"})
    assert (r.status_code, r.headers["X-Error-Code"]) == (403, "GatedRepo")
    assert http.get(url, headers={"Authorization": "Bearer hf_good"}).status_code == 200
    assert http.get(info_url).json()["gated"] == "auto"


def test_private_repo_looks_missing(hub: FakeHub, http: requests.Session) -> None:
    hub.add_repo("org/private", {"config.json": CONFIG}, private=True)
    hub.tokens = {"hf_good": {"org/private"}, "hf_other": set()}
    url = resolve(hub, "config.json", prefix="org/private")
    assert (http.get(url).status_code, http.get(url).headers["X-Error-Code"]) == (
        401,
        "RepoNotFound",
    )
    other = http.get(url, headers={"Authorization": "Bearer hf_other"})
    assert (other.status_code, other.headers["X-Error-Code"]) == (404, "RepoNotFound")
    good = http.get(url, headers={"Authorization": "Bearer hf_good"})
    assert good.content == CONFIG
    info = http.get(
        f"{hub.url}/api/models/org/private", headers={"Authorization": "Bearer hf_good"}
    ).json()
    assert info["private"] is True
    assert [m["id"] for m in http.get(f"{hub.url}/api/models?search=private").json()] == []


def test_invalid_token_is_401(hub: FakeHub, http: requests.Session) -> None:
    r = http.get(resolve(hub, "config.json"), headers={"Authorization": "Bearer hf_bad"})
    assert r.status_code == 401
    assert r.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
    assert "X-Error-Code" not in r.headers


# -- ranges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=1000-", 1000, len(WEIGHTS) - 1),
        ("bytes=-500", len(WEIGHTS) - 500, len(WEIGHTS) - 1),
        ("bytes=299990-999999999", 299990, len(WEIGHTS) - 1),
    ],
)
def test_cdn_ranges(
    hub: FakeHub, http: requests.Session, header: str, start: int, end: int
) -> None:
    r = http.get(cdn_location(hub, http), headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(WEIGHTS)}"
    assert r.headers["Content-Length"] == str(end - start + 1)
    assert r.content == WEIGHTS[start : end + 1]


def test_hub_range_and_unsatisfiable_range(hub: FakeHub, http: requests.Session) -> None:
    r = http.get(resolve(hub, "config.json"), headers={"Range": "bytes=2-5"})
    assert (r.status_code, r.content) == (206, CONFIG[2:6])
    for url, size in (
        (resolve(hub, "config.json"), len(CONFIG)),
        (cdn_location(hub, http), len(WEIGHTS)),
    ):
        r = http.get(url, headers={"Range": f"bytes={size}-"})
        assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{size}"
    multi = http.get(resolve(hub, "config.json"), headers={"Range": "bytes=0-1,4-5"})
    assert (multi.status_code, multi.content) == (200, CONFIG)


def test_if_range(hub: FakeHub, http: requests.Session) -> None:
    location = cdn_location(hub, http)
    etag = http.head(location).headers["ETag"]
    match = http.get(location, headers={"Range": "bytes=10-19", "If-Range": etag})
    assert (match.status_code, match.content) == (206, WEIGHTS[10:20])
    stale = http.get(location, headers={"Range": "bytes=10-19", "If-Range": '"stale"'})
    assert (stale.status_code, stale.content) == (200, WEIGHTS)


def test_file_backed_blob_served_from_disk(
    fake_hub: FakeHub, http: requests.Session, tmp_path: Path
) -> None:
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 17)
    (tmp_path / "w.bin").write_bytes(data)
    (tmp_path / "small.txt").write_bytes(b"small")
    fake_hub.add_repo(
        "org/disk", {"w.bin": tmp_path / "w.bin", "small.txt": tmp_path / "small.txt"}
    )
    r = http.get(resolve(fake_hub, "w.bin", prefix="org/disk"))
    assert r.content == data
    assert http.get(resolve(fake_hub, "small.txt", prefix="org/disk")).content == b"small"
    part = http.get(r.url, headers={"Range": "bytes=1048570-2097160"})
    assert part.content == data[1048570:2097161]
    fake_hub.faults.append(Fault("flip", match="/cdn/", after_bytes=2_000_000))
    flipped = http.get(r.url).content
    assert [i for i in range(len(data)) if flipped[i] != data[i]] == [2_000_000]
    assert fake_hub.errors == []


# -- faults ---------------------------------------------------------------------------------


def test_fault_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("explode")


def test_status_fault_with_retry_after(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("status", match="/api/", status=429, retry_after="1", times=1))
    first = http.get(f"{hub.url}/api/models/org/model")
    assert first.status_code == 429 and first.headers["Retry-After"] == "1"
    assert "X-Error-Code" not in first.headers and first.content
    assert http.get(f"{hub.url}/api/models/org/model").status_code == 200
    assert [r.fault for r in hub.requests] == ["status", None]
    assert hub.faults[0].times == 0


def test_fault_filters_on_server_and_method(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("status", server="cdn", status=500))
    hub.faults.append(Fault("status", match="config.json", method="HEAD", status=502))
    assert http.head(resolve(hub, "config.json")).status_code == 502
    assert http.get(resolve(hub, "config.json")).status_code == 200
    assert http.head(resolve(hub, "model.safetensors"), allow_redirects=False).status_code == 302
    assert http.get(resolve(hub, "model.safetensors")).status_code == 500


def test_reset_fault_sends_rst_after_some_bytes(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("reset", match="/cdn/", after_bytes=1000, times=1))
    location = cdn_location(hub, http)
    raw = raw_get(location)
    assert raw.status == 200 and raw.headers["content-length"] == str(len(WEIGHTS))
    assert raw.ending == "reset" and len(raw.body) <= 1000
    record = hub.requests[-1]
    assert (record.fault, record.body_bytes) == ("reset", 1000)
    assert raw_get(location).body == WEIGHTS  # times=1: next request is clean


def test_reset_fault_surfaces_in_requests(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("reset", match="model.safetensors", after_bytes=50_000))
    with pytest.raises(requests.exceptions.RequestException):
        _ = http.get(resolve(hub, "model.safetensors")).content
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert cdn[-1].fault == "reset" and cdn[-1].body_bytes == 50_000
    # The 302 on the hub is not a body response: it never consumes a body fault.
    assert all(r.fault is None for r in hub.requests if r.server == "hub")


def test_short_fault_closes_cleanly_early(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("short", match="config.json", method="GET", after_bytes=5))
    raw = raw_get(resolve(hub, "config.json"))
    assert raw.ending == "eof" and raw.headers["content-length"] == str(len(CONFIG))
    assert raw.body == CONFIG[:5]


def test_flip_fault_flips_one_bit_only_when_in_range(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("flip", match="/cdn/", after_bytes=1234, times=1))
    location = cdn_location(hub, http)
    before = http.get(location, headers={"Range": "bytes=2000-2999"})
    assert before.content == WEIGHTS[2000:3000] and hub.faults[0].times == 1  # not consumed
    flipped = http.get(location, headers={"Range": "bytes=1000-1999"}).content
    assert flipped != WEIGHTS[1000:2000]
    assert flipped[234] == WEIGHTS[1234] ^ 1
    assert flipped[:234] + flipped[235:] == WEIGHTS[1000:1234] + WEIGHTS[1235:2000]
    assert http.get(location).content == WEIGHTS


def test_ignore_range_fault(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("ignore_range", times=1))
    location = cdn_location(hub, http)
    assert http.get(location).status_code == 200  # no Range header: fault not consumed
    r = http.get(location, headers={"Range": "bytes=100-"})
    assert r.status_code == 200 and r.content == WEIGHTS and "Content-Range" not in r.headers
    assert http.get(location, headers={"Range": "bytes=100-"}).status_code == 206


def test_wrong_content_range_fault(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("wrong_content_range", match="/cdn/"))
    r = http.get(cdn_location(hub, http), headers={"Range": "bytes=1000-1099"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 0-99/{len(WEIGHTS)}"
    assert r.content == WEIGHTS[:100]


def test_wrong_total_fault(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("wrong_total", match="/cdn/", times=1))
    location = cdn_location(hub, http)
    assert http.get(location).status_code == 200  # no 206: not consumed
    r = http.get(location, headers={"Range": "bytes=1000-1099"})
    assert r.status_code == 206 and r.content == WEIGHTS[1000:1100]
    assert r.headers["Content-Range"] == f"bytes 1000-1099/{len(WEIGHTS) + 1}"
    assert hub.requests[-1].fault == "wrong_total"
    clean = http.get(location, headers={"Range": "bytes=1000-1099"})
    assert clean.headers["Content-Range"] == f"bytes 1000-1099/{len(WEIGHTS)}"


def dechunk(raw: bytes) -> tuple[bytes, bool]:
    """Decode a chunked body by hand; also say whether it ended with the last (0) chunk."""
    out, rest = b"", raw
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return out, True
        out, rest = out + rest[:size], rest[size:]
        if not rest:
            break
        assert rest.startswith(b"\r\n")
        rest = rest[2:]
    return out, False


def test_gzip_fault_compresses_the_range_served(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("gzip", match="/cdn/", times=1))
    location = cdn_location(hub, http)
    raw = raw_get(location, {"Range": "bytes=1000-1999"})
    assert raw.status == 206 and raw.headers["content-encoding"] == "gzip"
    assert raw.headers["content-range"] == f"bytes 1000-1999/{len(WEIGHTS)}"
    assert raw.headers["content-length"] == str(len(raw.body)) != "1000"
    assert gzip.decompress(raw.body) == WEIGHTS[1000:2000]
    assert (hub.requests[-1].fault, hub.requests[-1].body_bytes) == ("gzip", len(raw.body))
    clean = raw_get(location, {"Range": "bytes=1000-1999"})
    assert "content-encoding" not in clean.headers and clean.body == WEIGHTS[1000:2000]
    hub.faults.append(Fault("gzip", match="config.json"))  # what a real client decodes
    r = http.get(resolve(hub, "config.json"))
    assert r.headers["Content-Encoding"] == "gzip" and r.content == CONFIG


def test_chunked_fault_sends_no_content_length(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("chunked", match="/cdn/"))
    location = cdn_location(hub, http)
    raw = raw_get(location)
    assert raw.status == 200 and raw.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in raw.headers
    assert dechunk(raw.body) == (WEIGHTS, True)
    assert (hub.requests[-1].fault, hub.requests[-1].body_bytes) == ("chunked", len(WEIGHTS))
    ranged = http.get(location, headers={"Range": "bytes=10-19"})  # keep-alive, decoded
    assert ranged.status_code == 206 and ranged.content == WEIGHTS[10:20]
    assert "Content-Length" not in ranged.headers
    hub.faults.insert(0, Fault("short", match="/cdn/", after_bytes=1000, times=1))
    cut = raw_get(location)
    assert cut.ending == "eof" and dechunk(cut.body) == (WEIGHTS[:1000], False)
    hub.faults.append(Fault("gzip", match="/cdn/", times=1))  # both: no length, compressed
    both = raw_get(location)
    assert both.headers["content-encoding"] == "gzip" and "content-length" not in both.headers
    body, ended = dechunk(both.body)
    assert ended and gzip.decompress(body) == WEIGHTS


def test_stall_fault_goes_silent_then_closes(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("stall", match="/cdn/", after_bytes=100, seconds=0.5))
    location = cdn_location(hub, http)
    with pytest.raises(requests.exceptions.RequestException):  # read timeout (or cut off)
        _ = http.get(location, timeout=(2, 0.2)).content
    raw = raw_get(location)
    assert raw.ending == "eof" and raw.body == WEIGHTS[:100]
    assert raw.elapsed >= 0.45  # it went silent; the clean end is checked above, not timed
    assert [(r.fault, r.body_bytes) for r in hub.requests if r.server == "cdn"][-1] == (
        "stall",
        100,
    )


def test_trickle_fault(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("trickle", match="/org/", seconds=0.1))
    hub.add_repo("org/tiny", {"t.txt": b"12345"})
    started = time.monotonic()
    r = http.get(resolve(hub, "t.txt", prefix="org/tiny"))
    elapsed = time.monotonic() - started
    assert r.content == b"12345" and elapsed >= 0.38  # 4 pauses of 0.1 s between 5 bytes
    assert (hub.requests[-1].fault, hub.requests[-1].body_bytes) == ("trickle", 5)


def test_delay_fault(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("delay", match="/api/", seconds=0.3, times=1))
    started = time.monotonic()
    assert http.get(f"{hub.url}/api/models/org/model").status_code == 200
    assert time.monotonic() - started >= 0.3
    assert http.get(f"{hub.url}/api/models/org/model").status_code == 200
    assert [r.fault for r in hub.requests] == ["delay", None]  # times=1: used up
    assert hub.faults[0].times == 0


def test_throttle_fault_caps_the_rate(fake_hub: FakeHub, http: requests.Session) -> None:
    data = os.urandom(5_000_000)
    fake_hub.add_repo("org/big", {"w.bin": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=10_000_000))
    location = cdn_location(fake_hub, http, "w.bin", prefix="org/big")
    started = time.monotonic()
    got = b"".join(http.get(location, stream=True).iter_content(65536))
    elapsed = time.monotonic() - started
    assert got == data
    # Paced against its start, the last 64 KiB step cannot go out before ~0.49 s; no upper
    # bound (a loaded machine is only ever slower).
    assert elapsed >= 0.5 * 0.95, elapsed
    cdn = [(r.fault, r.body_bytes) for r in fake_hub.requests if r.server == "cdn"]
    assert cdn == [("throttle", len(data))]
    assert fake_hub.errors == []


def test_global_throttle_rate_caps_content_bodies(hub: FakeHub, http: requests.Session) -> None:
    hub.throttle_rate = 1_000_000
    started = time.monotonic()
    assert http.get(resolve(hub, "model.safetensors")).content == WEIGHTS
    assert time.monotonic() - started >= 0.28  # 300 kB at 1 MB/s
    assert (hub.requests[-1].fault, hub.requests[-1].body_bytes) == (None, len(WEIGHTS))


def test_expire_fault_makes_the_cdn_url_expire(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("expire", match="model.safetensors", seconds=0, times=1))
    hub.faults.append(Fault("expire", match="model.safetensors", seconds=0.3, times=1))
    http.head(resolve(hub, "config.json"))  # no redirect issued: does not consume
    expired = cdn_location(hub, http)
    r = http.get(expired, headers={"Range": "bytes=0-9"})
    assert r.status_code == 403 and b"Request has expired" in r.content
    short_lived = cdn_location(hub, http)
    assert http.get(short_lived, headers={"Range": "bytes=0-9"}).status_code == 206
    time.sleep(0.35)
    assert http.get(short_lived, headers={"Range": "bytes=10-19"}).status_code == 403
    assert http.get(cdn_location(hub, http)).content == WEIGHTS  # re-resolving fixes it
    assert [r.fault for r in hub.requests if r.server == "hub" and r.status == 302][:2] == [
        "expire",
        "expire",
    ]


def test_html_fault_is_a_captive_portal(hub: FakeHub, http: requests.Session) -> None:
    hub.faults.append(Fault("html", match="config.json"))
    r = http.get(resolve(hub, "config.json"))
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert b"<html>" in r.content and "X-Repo-Commit" not in r.headers


def test_server_bug_answers_500_and_is_kept(
    fake_hub: FakeHub, http: requests.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakehub import hub_api

    def boom(*args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(hub_api.HubApi, "_search", boom)
    assert http.get(f"{fake_hub.url}/api/models").status_code == 500
    assert len(fake_hub.errors) == 1 and "RuntimeError: boom" in fake_hub.errors[0]


# -- accounting -----------------------------------------------------------------------------


def test_bytes_sent_and_request_log(hub: FakeHub, http: requests.Session) -> None:
    hub.tokens = {"hf_good": set()}
    http.get(resolve(hub, "config.json"), headers={"Authorization": "Bearer hf_good"})
    location = cdn_location(hub, http)
    http.get(location, headers={"Range": "bytes=100-199"})
    hub.faults.append(Fault("short", match="/cdn/", after_bytes=777, times=1))
    raw_get(location)
    assert hub.bytes_sent("config.json") == len(CONFIG)
    assert hub.bytes_sent("/cdn/") == 100 + 777
    assert hub.bytes_sent() == len(CONFIG) + 100 + 777  # HEAD sends no body
    # Redirect and error bodies are written (body_bytes) but not counted by bytes_sent.
    hub.faults.append(Fault("status", match="/cdn/", times=1))
    assert http.get(resolve(hub, "model.safetensors")).status_code == 503
    assert hub.requests[-2].status == 302 and hub.requests[-2].body_bytes > 0
    assert hub.requests[-1].status == 503 and hub.requests[-1].body_bytes > 0
    assert hub.bytes_sent("model.safetensors") == 100 + 777  # CDN URLs carry the file name
    first = hub.requests[0]
    assert (first.server, first.method, first.status) == ("hub", "GET", 200)
    assert first.path == "/org/model/resolve/main/config.json"
    assert first.headers["authorization"] == "Bearer hf_good"
    assert [r.status for r in hub.requests] == [200, 302, 206, 200, 302, 503]
    hub.reset_log()
    assert hub.requests == [] and hub.bytes_sent() == 0
    http.get(resolve(hub, NOTE_URL_PATH))
    assert hub.requests[0].path.endswith(NOTE_URL_PATH) and hub.bytes_sent() == len(NOTE)


# -- standalone process & real client interop -----------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()
    }
    env.update(NO_PROXY="127.0.0.1", PYTHONPATH=str(ROOT), **extra)
    return env


def test_main_serves_until_sigterm(tmp_path: Path, http: requests.Session) -> None:
    (tmp_path / "w.bin").write_bytes(WEIGHTS)
    port_file = tmp_path / "url"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "tests.fakehub", "--repo", "org/bench"),
            *("--file", f"model.safetensors={tmp_path / 'w.bin'}", "--port-file", str(port_file)),
        ],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and port_file.read_text().strip() == url
        assert http.get(f"{url}/org/bench/resolve/main/model.safetensors").content == WEIGHTS
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_real_huggingface_hub_snapshot_download(hub: FakeHub, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from huggingface_hub import snapshot_download\n"
        "print(snapshot_download('org/model'))\n"
    )
    env = clean_env(
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    snapshot = Path(proc.stdout.strip().splitlines()[-1])
    assert (snapshot / "config.json").read_bytes() == CONFIG
    assert (snapshot / NOTE_PATH).read_bytes() == NOTE
    assert (snapshot / "model.safetensors").read_bytes() == WEIGHTS
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert len(cdn) == 1 and cdn[0].status == 200 and "authorization" not in cdn[0].headers
