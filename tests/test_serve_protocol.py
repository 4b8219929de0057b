"""hfpull serve speaks the Hub protocol the clients rely on: real clients, curl, raw HTTP.

Each test starts the fake Hub and ``hfpull serve`` in front of it; every client runs for real
(huggingface_hub and transformers in subprocesses, the ``hf`` CLI, curl).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import cli_env
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB
from tests.serve_helpers import running_mirror
from tests.test_interop import LOAD_MODEL, LOADED, model_files, run_python

AWKWARD = [
    "odd/a#b.txt",
    "odd/50%.txt",
    "odd/what?.txt",
    "odd/a+b&c;d.txt",
    "odd/[x]~y^z.txt",
    "odd/with space.txt",
    "odd/ünïcødé-名前.txt",
]


@pytest.fixture
def mirror(tmp_path: Path, fake_hub: FakeHub) -> str:
    with running_mirror(tmp_path, fake_hub.url) as url:
        yield url  # type: ignore[misc]


class ForeignHost:
    """A listener standing for a host the mirror must never contact."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.host = f"127.0.0.1:{sock.getsockname()[1]}"

    def assert_never_contacted(self) -> None:
        with pytest.raises(socket.timeout):
            self.sock.accept()


@pytest.fixture
def foreign() -> Iterator[ForeignHost]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0.2)
        yield ForeignHost(sock)


def _client_env(tmp_path: Path, url: str, cache: str) -> dict[str, str]:
    return cli_env(tmp_path, HF_ENDPOINT=url, HF_HUB_CACHE=str(tmp_path / cache),
                   HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1")  # fmt: skip


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    curl = shutil.which("curl")
    assert curl, "curl is needed for these tests (apt-get install curl)"
    return subprocess.run([curl, "-sS", *args], capture_output=True, timeout=60)


def test_transformers_loads_through_the_mirror_and_the_second_client_costs_nothing_upstream(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    fake_hub.add_repo("org/model", model_files())
    assert run_python(LOAD_MODEL, _client_env(tmp_path, mirror, "a")).splitlines() == LOADED
    fake_hub.reset_log()
    assert run_python(LOAD_MODEL, _client_env(tmp_path, mirror, "b")).splitlines() == LOADED
    assert fake_hub.bytes_sent("/resolve/") + fake_hub.bytes_sent("/cdn/") == 0


def test_the_hf_cli_and_hffilesystem_on_a_dataset_through_the_mirror(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    files = {
        "README.md": b"# data\n",
        "data/train-00000.parquet": os.urandom(200_000),
        "data/test-00000.parquet": os.urandom(50_000),
    }
    fake_hub.add_repo("org/data", files, repo_type="dataset")
    hf = Path(sys.executable).with_name("hf")
    assert hf.exists(), "the hf CLI comes with huggingface_hub"
    target = tmp_path / "hf-cli"
    result = subprocess.run(
        [str(hf), "download", "org/data", "--repo-type", "dataset", "--local-dir", str(target)],
        env=_client_env(tmp_path, mirror, "cli"), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    for name, data in files.items():
        assert (target / name).read_bytes() == data
    out = run_python(
        """
        import hashlib, json
        from huggingface_hub import HfFileSystem
        fs = HfFileSystem()
        names = sorted(fs.glob("datasets/org/data/data/*.parquet"))
        info = fs.info("datasets/org/data/data/train-00000.parquet")
        with fs.open("datasets/org/data/data/train-00000.parquet", "rb") as f:
            f.seek(1000)
            middle = f.read(5000)
        print(json.dumps({"names": names, "size": info["size"],
                          "middle": hashlib.sha256(middle).hexdigest()}))
        """,
        _client_env(tmp_path, mirror, "fs"),
    )
    seen = json.loads(out)
    assert seen["names"] == [
        "datasets/org/data/data/test-00000.parquet",
        "datasets/org/data/data/train-00000.parquet",
    ]
    train = files["data/train-00000.parquet"]
    assert seen["size"] == len(train)
    assert seen["middle"] == hashlib.sha256(train[1000:6000]).hexdigest()


def test_awkward_file_names_and_a_pr_revision_through_huggingface_hub_and_curl(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    files = {name: f"content of {name}".encode() for name in AWKWARD}
    fake_hub.add_repo("org/odd", files)
    pr = fake_hub.add_repo("org/odd", {"config.json": b'{"pr": 1}'}, branch="refs/pr/1")
    out = run_python(
        """
        import json
        from huggingface_hub import hf_hub_download, snapshot_download
        root = snapshot_download("org/odd")
        pr = hf_hub_download("org/odd", "config.json", revision="refs/pr/1")
        print(json.dumps({"root": root, "pr": pr}))
        """,
        _client_env(tmp_path, mirror, "hf"),
    )
    paths = json.loads(out)
    for name, data in files.items():
        assert (Path(paths["root"]) / name).read_bytes() == data
    assert Path(paths["pr"]).read_bytes() == b'{"pr": 1}'
    assert pr in paths["pr"]  # the snapshot is the PR's commit
    from urllib.parse import quote

    for name, data in files.items():
        fetched = _curl("-f", f"{mirror}/org/odd/resolve/main/{quote(name)}")
        assert fetched.returncode == 0 and fetched.stdout == data, (name, fetched.stderr)
    encoded = _curl("-f", f"{mirror}/org/odd/resolve/refs%2Fpr%2F1/config.json")
    assert encoded.returncode == 0 and encoded.stdout == b'{"pr": 1}'


def test_curl_ranges_resume_and_the_headers_clients_insist_on(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    data = os.urandom(3 * MiB + 11)
    commit = fake_hub.add_repo("org/m", {"w.safetensors": data, "small.txt": b"tiny"})
    url = f"{mirror}/org/m/resolve/main/w.safetensors"
    head = requests.head(url, timeout=30)
    assert head.status_code == 200
    assert head.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["X-Repo-Commit"] == commit
    assert head.headers["Accept-Ranges"] == "bytes"
    assert "immutable" not in head.headers["Cache-Control"]  # a branch can move
    pinned = requests.head(f"{mirror}/org/m/resolve/{commit}/w.safetensors", timeout=30)
    assert "immutable" in pinned.headers["Cache-Control"]
    assert not any(k.lower().startswith("x-xet") for k in head.headers)
    small = requests.head(f"{mirror}/org/m/resolve/main/small.txt", timeout=30)
    blob_id = hashlib.sha1(b"blob 4\0tiny").hexdigest()
    assert small.headers["ETag"] == f'"{blob_id}"'

    first = _curl("-f", "-r", "0-99", url)
    assert first.returncode == 0 and first.stdout == data[:100]
    part = tmp_path / "w.part"
    part.write_bytes(data[:1234567])
    resumed = _curl("-f", "-C", "-", "-o", str(part), url)
    assert resumed.returncode == 0, resumed.stderr
    assert part.read_bytes() == data
    beyond = requests.get(url, headers={"Range": f"bytes={len(data)}-"}, timeout=30)
    assert beyond.status_code == 416
    assert beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    suffix = requests.get(url, headers={"Range": "bytes=-10"}, timeout=30)
    assert suffix.status_code == 206 and suffix.content == data[-10:]
    assert suffix.headers["Content-Range"] == f"bytes {len(data) - 10}-{len(data) - 1}/{len(data)}"


def test_conditional_requests_judge_the_content_etag(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    data = os.urandom(MiB)
    fake_hub.add_repo("org/m", {"w.bin": data})
    url = f"{mirror}/org/m/resolve/main/w.bin"
    full = requests.get(url, timeout=30)
    etag = full.headers["ETag"]
    assert full.content == data and etag == f'"{hashlib.sha256(data).hexdigest()}"'
    same = requests.get(url, headers={"If-None-Match": etag}, timeout=30)
    assert same.status_code == 304 and same.content == b"" and same.headers["ETag"] == etag
    other = requests.get(url, headers={"If-None-Match": '"0000"'}, timeout=30)
    assert other.status_code == 200 and other.content == data
    stale = requests.get(url, headers={"Range": "bytes=10-", "If-Range": '"0000"'}, timeout=30)
    assert stale.status_code == 200 and stale.content == data  # never stitch onto old bytes
    fresh = requests.get(url, headers={"Range": "bytes=10-", "If-Range": etag}, timeout=30)
    assert fresh.status_code == 206 and fresh.content == data[10:]


def test_paths_info_online_and_from_the_snapshot_when_upstream_is_gone(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    files = model_files()
    fake_hub.add_repo("org/model", files)
    code = """
        import json
        from huggingface_hub import HfApi
        items = HfApi().get_paths_info("org/model", {paths!r})
        out = []
        for i in items:
            lfs = getattr(i, "lfs", None)
            out.append([type(i).__name__, i.path, getattr(i, "size", None),
                        getattr(i, "blob_id", None), lfs.sha256 if lfs else None])
        print(json.dumps(sorted(out)))
        """
    direct = run_python(code.format(paths=["config.json", "model.safetensors", "nested"]),
                        _client_env(tmp_path, fake_hub.url, "direct"))  # fmt: skip
    with running_mirror(tmp_path, fake_hub.url) as url:
        env = _client_env(tmp_path, url, "online")
        online = run_python(code.format(paths=["config.json", "model.safetensors", "nested"]), env)
        assert json.loads(online) == json.loads(direct)
        run_python("from huggingface_hub import snapshot_download; snapshot_download('org/model')",
                   env)  # fmt: skip
        fake_hub.stop()
        # a question never asked before, upstream gone: answered from the known snapshot
        offline = json.loads(run_python(code.format(paths=["model.safetensors", "nested/dir"]),
                                        env))  # fmt: skip
        weights = next(i for i in json.loads(direct) if i[1] == "model.safetensors")
        assert offline[0] == weights
        assert offline[1][:2] == ["RepoFolder", "nested/dir"]
        raw = requests.post(f"{url}/api/models/org/model/paths-info/main",
                            data={"paths": "config.json"}, timeout=30)  # fmt: skip
        assert raw.status_code == 200 and raw.headers["X-Cache"] == "STALE"
        assert [i["path"] for i in raw.json()] == ["config.json"]
        bad = requests.post(f"{url}/api/models/org/model/paths-info/main",
                            data={"paths": "../../etc/passwd"}, timeout=30)  # fmt: skip
        assert bad.status_code == 400 and bad.headers["X-Error-Code"]


def test_a_renamed_repo_is_followed_by_the_mirror(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    files = model_files()
    fake_hub.add_repo("org/old-name", files)
    fake_hub.rename_repo("org/old-name", "org/new-name")
    out = run_python(
        """
        from huggingface_hub import snapshot_download
        print(snapshot_download("org/old-name"))
        """,
        _client_env(tmp_path, mirror, "renamed"),
    )
    for name, data in files.items():
        assert (Path(out) / name).read_bytes() == data


def test_an_upstream_redirect_to_a_foreign_host_is_refused(
    tmp_path: Path, fake_hub: FakeHub, mirror: str, foreign: ForeignHost
) -> None:
    fake_hub.add_repo("org/model", {"config.json": b"{}"})
    fake_hub.faults.append(Fault("redirect", match="/api/models/org/model",
                                 location=f"http://{foreign.host}/steal"))  # fmt: skip
    answer = requests.get(f"{mirror}/api/models/org/model/revision/main", timeout=30)
    assert answer.status_code == 502 and answer.headers["X-Error-Code"]
    assert foreign.host not in answer.headers.get("Location", "")
    foreign.assert_never_contacted()


def test_the_access_log_is_one_json_line_per_request_without_secrets(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    secret, client_secret = "hf_upstream0123456789abcdef", "hf_client0123456789abcdef"
    data = os.urandom(300_000)
    fake_hub.add_repo("org/m", {"w.bin": data})
    fake_hub.tokens[secret] = {"org/m"}
    log = tmp_path / "access.jsonl"
    with running_mirror(tmp_path, fake_hub.url, "--access-log", str(log),
                        "--upstream-token", secret) as url:  # fmt: skip
        auth = {"Authorization": f"Bearer {client_secret}"}
        assert requests.get(f"{url}/org/m/resolve/main/w.bin?x={client_secret}",
                            headers=auth, timeout=30).content == data  # fmt: skip
        part = requests.get(f"{url}/org/m/resolve/main/w.bin",
                            headers={**auth, "Range": "bytes=0-9"}, timeout=30)  # fmt: skip
        assert part.status_code == 206
        assert requests.get(f"{url}/org/m/resolve/main/w.bin", timeout=30).content == data
        assert requests.get(f"{url}/org/m/resolve/main/nope", timeout=30).status_code == 404
        deadline = time.monotonic() + 10
        while log.read_text().count("org/m") < 4:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    text = log.read_text()
    assert secret not in text and client_secret not in text
    records = [json.loads(line) for line in text.splitlines()]
    first, ranged, hit, missing = [r for r in records if r["repo"] == "org/m"][:4]
    assert first["method"] == "GET" and first["status"] == 200
    assert len(data) < first["bytes_sent"] < len(data) + 4096  # the body and its headers
    assert first["repo"] == "org/m" and first["revision"] == "main" and first["path"] == "w.bin"
    assert first["cache"] == "MISS" and first["duration_ms"] >= 0 and first["client"]
    assert ranged["range"] == "bytes=0-9" and ranged["status"] == 206 and ranged["cache"] == "HIT"
    assert 10 < ranged["bytes_sent"] < 4096
    assert hit["cache"] == "HIT" and len(data) < hit["bytes_sent"] < len(data) + 4096  # sendfile
    assert missing["status"] == 404


def _slow_get(port: int, path: str) -> bytes:
    """GET through a 64 KiB receive buffer, read at ~16 MiB/s: the server cannot park the body
    in socket buffers, so the request is really in flight for seconds."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, body = answer.split(b"\r\n\r\n", 1)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
        received = bytearray(body)
        while len(received) < length:
            chunk = sock.recv(256 * 1024)
            if not chunk:
                break  # cut short
            received += chunk
            time.sleep(0.015)
        return bytes(received)


def test_sigterm_lets_an_in_flight_download_finish_then_exits_zero(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    data = os.urandom(32 * MiB)
    fake_hub.add_repo("org/m", {"w.bin": data})
    procs: list[subprocess.Popen[bytes]] = []
    with running_mirror(tmp_path, fake_hub.url, procs=procs) as url:
        path = "/org/m/resolve/main/w.bin"
        assert requests.get(url + path, timeout=30).content == data  # cached: served by the mirror
        port = int(url.rsplit(":", 1)[1])
        with ThreadPoolExecutor(1) as pool:
            download = pool.submit(_slow_get, port, path)
            time.sleep(0.5)
            assert not download.done()  # still streaming when the signal lands
            procs[0].send_signal(signal.SIGTERM)
            assert download.result(60) == data
        assert procs[0].wait(30) == 0


def test_after_snapshot_download_the_branch_still_resolves_with_upstream_gone(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    files = model_files()
    fake_hub.add_repo("org/model", files)
    # snapshot_download asks the branch's commit, then fetches every file by commit
    run_python("from huggingface_hub import snapshot_download; snapshot_download('org/model')",
               _client_env(tmp_path, mirror, "first"))  # fmt: skip
    fake_hub.stop()
    out = run_python(
        """
        from huggingface_hub import hf_hub_download
        print(hf_hub_download("org/model", "model.safetensors"))
        """,
        _client_env(tmp_path, mirror, "second"),
    )
    assert Path(out).read_bytes() == files["model.safetensors"]


def test_xet_is_never_advertised_through_the_mirror(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    fake_hub.xet = True  # the Hub advertises Xet storage for LFS files
    data = os.urandom(200_000)
    fake_hub.add_repo("org/x", {"w.safetensors": data, "config.json": b"{}"})
    code = """
        from huggingface_hub import hf_hub_download
        print(hf_hub_download("org/x", "w.safetensors"))
        """
    env = {k: v for k, v in _client_env(tmp_path, fake_hub.url, "direct").items()
           if k != "HF_HUB_DISABLE_XET"}  # fmt: skip
    direct = subprocess.run([sys.executable, "-c", code.replace("\n        ", "\n")], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert direct.returncode != 0  # the lure works: a client told of Xet leaves the HTTP path
    assert any("xet" in r.path for r in fake_hub.requests)
    fake_hub.reset_log()
    env = {k: v for k, v in _client_env(tmp_path, mirror, "mirror").items()
           if k != "HF_HUB_DISABLE_XET"}  # fmt: skip
    assert Path(run_python(code, env)).read_bytes() == data
    assert not any("xet" in r.path for r in fake_hub.requests)
    for path in ("/api/models/org/x/revision/main?blobs=true", "/api/models/org/x/tree/main"):
        answer = requests.get(f"{mirror}{path}", timeout=30)
        assert answer.ok and "w.safetensors" in answer.text and "xet" not in answer.text.lower()
    head = requests.head(f"{mirror}/org/x/resolve/main/w.safetensors", timeout=30)
    assert not any("xet" in f"{k}: {v}".lower() for k, v in head.headers.items())


def test_refs_and_a_paginated_tree_through_the_mirror(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    files = {f"dir{n % 3}/file{n}.txt": f"{n}".encode() for n in range(9)}
    commit = fake_hub.add_repo("org/t", files)
    pr = fake_hub.add_repo("org/t", {"only.txt": b"pr"}, branch="refs/pr/1")
    fake_hub.page_size = 4
    page = requests.get(f"{mirror}/api/models/org/t/tree/main?recursive=true", timeout=30)
    assert page.ok and page.headers["Link"].startswith(f"<{mirror}/api/models/org/t/tree/main")
    out = run_python(
        """
        import json
        from huggingface_hub import HfApi
        api = HfApi()
        tree = sorted(f.path for f in api.list_repo_tree("org/t", recursive=True)
                      if type(f).__name__ == "RepoFile")
        refs = api.list_repo_refs("org/t", include_pull_requests=True)
        print(json.dumps({"tree": tree,
                          "branches": [[b.name, b.target_commit] for b in refs.branches],
                          "prs": [[p.ref, p.target_commit] for p in refs.pull_requests]}))
        """,
        _client_env(tmp_path, mirror, "refs"),
    )
    seen = json.loads(out)
    assert seen["tree"] == sorted(files)
    assert seen["branches"] == [["main", commit]]
    assert seen["prs"] == [["refs/pr/1", pr]]


RAW_HOSTILE = [
    "/org/model/resolve/main/../../../etc/passwd",
    "/org/model/resolve/main/%2e%2e/%2e%2e/etc/passwd",
    "/org/model/resolve/main/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/org/model/resolve/..%2F..%2F/x",
    "/org/..%2Fmodel/resolve/main/x",
    "/org/model/resolve/main/a%00b",
    "/org/model/resolve/main/a%5C..%5Cb",
    "//{foreign}/org/model/resolve/main/x",
    "/%2F%2F{foreign}/org/model/resolve/main/x",
    "/http://{foreign}/org/model/resolve/main/x",
    "/http:%2F%2F{foreign}/x",
    "/@{foreign}/org/model/resolve/main/x",
    "/org/model@{foreign}/resolve/main/x",
    "http://{foreign}/org/model/resolve/main/x",
    "/api/models/..%2F..%2Fetc/revision/main",
    "/api/models/org/model/revision/..%2F..%2Fx",
    "/api/models/org/model/tree/main/%2e%2e%2f%2e%2e",
]


def _raw_request(port: int, target: str) -> tuple[int, dict[str, str]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())  # fmt: skip
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return int(head[0].split()[1]), headers


def test_hostile_request_lines_sent_verbatim_get_400_and_fetch_nothing(
    tmp_path: Path, fake_hub: FakeHub, mirror: str, foreign: ForeignHost
) -> None:
    fake_hub.add_repo("org/model", {"x": b"1"})
    fake_hub.reset_log()
    port = int(mirror.rsplit(":", 1)[1])
    for raw in RAW_HOSTILE:
        target = raw.format(foreign=foreign.host)
        status, headers = _raw_request(port, target)
        traversal = any(m in target.lower() for m in ("..", "%2e%2e", "%00", "%5c"))
        if traversal or not target.startswith("/") or target.startswith("//"):
            assert status == 400, (target, status)
        else:
            assert status in (400, 404), (target, status)  # no such route
        assert headers.get("X-Error-Code"), target
    foreign.assert_never_contacted()
    assert fake_hub.requests == []  # none of them made the mirror fetch anything


def test_a_moved_branch_is_seen_after_no_cache_or_the_metadata_ttl(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    old = fake_hub.add_repo("org/m", {"config.json": b'{"v": 1}'})
    with running_mirror(tmp_path, fake_hub.url, "--metadata-ttl", "2") as url:
        file = f"{url}/org/m/resolve/main/config.json"
        assert requests.get(file, timeout=30).content == b'{"v": 1}'
        new = fake_hub.add_repo("org/m", {"config.json": b'{"v": 2}'})
        cached = requests.get(file, timeout=30)  # within the TTL: the branch as last seen
        assert cached.content == b'{"v": 1}' and cached.headers["X-Repo-Commit"] == old
        forced = requests.get(file, headers={"Cache-Control": "no-cache"}, timeout=30)
        assert forced.content == b'{"v": 2}' and forced.headers["X-Repo-Commit"] == new
        newest = fake_hub.add_repo("org/m", {"config.json": b'{"v": 3}'})
        time.sleep(2.2)  # the TTL runs out: asked again without being told to
        later = requests.get(file, timeout=30)
        assert later.content == b'{"v": 3}' and later.headers["X-Repo-Commit"] == newest
