"""hfpull serve in front of the fake Hub: real clients, single flight, verification, safety."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import RunCli, cli_env
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB, leftovers
from tests.serve_helpers import free_port, running_mirror
from tests.test_interop import model_files, run_python


@pytest.fixture
def mirror(tmp_path: Path, fake_hub: FakeHub) -> str:
    with running_mirror(tmp_path, fake_hub.url) as url:
        yield url  # type: ignore[misc]


def _snapshot_download(tmp_path: Path, url: str, cache: str, repo: str = "org/model") -> str:
    env = cli_env(tmp_path, HF_ENDPOINT=url, HF_HUB_CACHE=str(tmp_path / cache),
                  HF_HUB_DISABLE_XET="1")  # fmt: skip
    return run_python(
        f"""
        from huggingface_hub import snapshot_download
        print(snapshot_download({repo!r}))
        """,
        env,
    )


def test_huggingface_hub_downloads_through_the_mirror_and_the_second_costs_nothing_upstream(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    files = model_files()
    fake_hub.add_repo("org/model", files)
    first = Path(_snapshot_download(tmp_path, mirror, "client-a"))
    for name, data in files.items():
        assert (first / name).read_bytes() == data
    fake_hub.reset_log()
    second = Path(_snapshot_download(tmp_path, mirror, "client-b"))  # an empty client cache
    for name, data in files.items():
        assert (second / name).read_bytes() == data
    assert fake_hub.bytes_sent("/resolve/") + fake_hub.bytes_sent("/cdn/") == 0


def test_twenty_clients_on_one_cold_blob_cause_one_upstream_fetch(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    data = os.urandom(6 * MiB)
    fake_hub.add_repo("org/big", {"w.safetensors": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=4 * MiB))
    url = f"{mirror}/org/big/resolve/main/w.safetensors"
    digests: list[str] = []

    def client() -> None:
        with requests.get(url, stream=True, timeout=60) as response:
            response.raise_for_status()
            digest = hashlib.sha256()
            for chunk in response.iter_content(1 << 16):
                digest.update(chunk)
            digests.append(digest.hexdigest())

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert digests == [hashlib.sha256(data).hexdigest()] * 20
    served = fake_hub.bytes_sent("/cdn/")
    assert len(data) <= served <= len(data) + MiB  # once (plus at most a retried segment)
    assert requests.get(mirror + "/healthz", timeout=5).json()["fills"] == 1


@pytest.mark.parametrize("byte_range", [None, "bytes=0-99999"], ids=["whole", "range"])
def test_a_corrupt_upstream_body_is_never_cached_nor_ends_cleanly(
    tmp_path: Path, fake_hub: FakeHub, mirror: str, byte_range: str | None
) -> None:
    data = os.urandom(3 * MiB)
    fake_hub.add_repo("org/bad", {"w.safetensors": data})
    fake_hub.faults.append(Fault("flip", match="/cdn/", after_bytes=2 * MiB + 5))  # always
    url = f"{mirror}/org/bad/resolve/main/w.safetensors"
    asked = len(data) if byte_range is None else 100_000
    headers = {} if byte_range is None else {"Range": byte_range}
    received = 0
    with pytest.raises(requests.RequestException):  # cut, never a clean end
        with requests.get(url, headers=headers, stream=True, timeout=60) as response:
            for chunk in response.iter_content(1 << 12):
                received += len(chunk)
    assert received < asked  # a range gets at most all but its last byte, then the cut
    deadline = time.monotonic() + 30
    while requests.get(mirror + "/healthz", timeout=5).json()["filling"]:
        assert time.monotonic() < deadline, "the failing fill never ended"
        time.sleep(0.05)
    fake_hub.faults.clear()
    fake_hub.reset_log()
    again = requests.get(url, timeout=60)
    assert again.status_code == 200 and again.content == data
    assert fake_hub.bytes_sent("/cdn/") >= len(data)  # not cached: fetched again


def test_a_range_on_a_cold_blob_waits_for_verified_bytes(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    data = os.urandom(2 * MiB + 7)
    fake_hub.add_repo("org/r", {"w.safetensors": data})
    url = f"{mirror}/org/r/resolve/main/w.safetensors"
    head = requests.head(url, timeout=10)
    assert head.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert head.headers["Content-Length"] == str(len(data)) and "X-Repo-Commit" in head.headers
    beyond = requests.get(url, headers={"Range": f"bytes={len(data) + 5}-"}, timeout=10)
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(data)}"
    part = requests.get(url, headers={"Range": "bytes=100-"}, timeout=60)
    assert part.status_code == 206 and part.content == data[100:]
    assert part.headers["ETag"] == head.headers["ETag"]
    assert part.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"


def test_a_range_on_a_filling_blob_streams_and_ends_only_once_the_blob_verified(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    data = os.urandom(8 * MiB)
    fake_hub.add_repo("org/r", {"w.safetensors": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=512 * 1024))
    url = f"{mirror}/org/r/resolve/main/w.safetensors"
    body = bytearray()
    filling_at_first_byte = None
    with requests.get(url, headers={"Range": "bytes=1000-1048575"}, stream=True,
                      timeout=60) as response:  # fmt: skip
        assert response.status_code == 206
        for chunk in response.iter_content(1 << 14):
            if filling_at_first_byte is None:
                filling_at_first_byte = requests.get(mirror + "/healthz", timeout=5).json()
            body += chunk
    assert bytes(body) == data[1000:1048576]
    assert filling_at_first_byte is not None and filling_at_first_byte["filling"] == 1
    # the range's last byte went out only after the whole blob verified and was stored
    assert requests.get(mirror + "/healthz", timeout=5).json()["filling"] == 0


HOSTILE = [
    "/org/model/resolve/main/../../etc/passwd",
    "/org/model/resolve/main/%2e%2e/%2e%2e/etc/passwd",
    "/org/model/resolve/..%2F..%2Fetc/x",
    "//evil.example/org/model/resolve/main/x",
    "/http://evil.example/org/model/resolve/main/x",
    "/org/model/resolve/main/a%00b",
    "/api/models/..%2F..%2Fetc/revision/main",
]


def test_traversal_and_foreign_hosts_are_refused(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    fake_hub.add_repo("org/model", {"x": b"1"})
    fake_hub.reset_log()
    for path in HOSTILE:
        response = requests.get(mirror + path, timeout=10)
        assert response.status_code in (400, 404), path
        assert response.headers.get("X-Error-Code"), path
    assert fake_hub.requests == []  # none of them made the mirror fetch anything


def test_upstream_down_cached_repos_still_download_by_branch_and_commit(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    commit = fake_hub.add_repo("org/kept", {"a.bin": b"A" * 5000, "b.txt": b"bee"})
    fake_hub.add_repo("org/never", {"x": b"x"})
    for rev in ("main", commit):
        for name in ("a.bin", "b.txt"):
            assert requests.get(f"{mirror}/org/kept/resolve/{rev}/{name}", timeout=30).ok
    fake_hub.stop()
    for rev in ("main", commit):
        response = requests.get(
            f"{mirror}/org/kept/resolve/{rev}/a.bin", headers={"Cache-Control": "no-cache"},
            timeout=30,
        )  # fmt: skip
        assert response.status_code == 200 and response.content == b"A" * 5000
    started = time.monotonic()
    response = requests.get(f"{mirror}/org/never/resolve/main/x", timeout=30)
    assert response.status_code in (502, 504) and response.headers["X-Error-Code"]
    assert time.monotonic() - started < 15


def test_hfpull_get_through_two_tiers_of_mirrors_with_a_pr_revision(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    files = model_files()
    commit = fake_hub.add_repo("org/model", files)
    fake_hub.add_branch("org/model", "refs/pr/1", commit)
    with running_mirror(tmp_path, fake_hub.url, store=tmp_path / "regional") as regional:
        with running_mirror(tmp_path, regional, store=tmp_path / "edge") as edge:
            env = cli_env(tmp_path, HF_ENDPOINT=edge)
            for revision in ("main", "refs/pr/1"):
                cache = tmp_path / f"client-{revision.replace('/', '-')}"
                result = run_cli(
                    "get", "org/model", "--revision", revision, "--cache-dir", str(cache),
                    env=env,
                )  # fmt: skip
                assert result.returncode == 0, result.stderr
                snapshot = Path(result.stdout.strip())
                for name, data in files.items():
                    assert (snapshot / name).read_bytes() == data
    lfs = fake_hub.bytes_sent("/cdn/")
    assert lfs == len(files["model.safetensors"])  # the origin sent the weights once


def test_the_upstream_token_reaches_upstream_only_never_clients_the_cdn_or_the_log(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    secret = "hf_mirrorsecret0123456789"
    files = {"w.safetensors": os.urandom(300_000), "config.json": b"{}"}
    fake_hub.add_repo("org/private", files, private=True)
    fake_hub.tokens[secret] = {"org/private"}
    # the mirror hands a private repo only to a client granted it (a mirror token's scope)
    tokens = tmp_path / "tokens"
    tokens.write_text("team mirror-team-0123456789abcdef org/private\n")
    auth = {"Authorization": "Bearer mirror-team-0123456789abcdef"}
    with running_mirror(tmp_path, fake_hub.url, "--upstream-token", secret,
                        "--auth-tokens", str(tokens)) as url:  # fmt: skip
        seen = []
        for name, data in files.items():
            response = requests.get(
                f"{url}/org/private/resolve/main/{name}", headers=auth, timeout=30
            )
            assert response.status_code == 200 and response.content == data
            seen.append(str(response.headers) + response.text[:0])
        info = requests.get(f"{url}/api/models/org/private/revision/main", headers=auth,
                            timeout=30)  # fmt: skip
        assert info.ok and secret not in info.text and secret not in str(info.headers)
        bad = requests.get(f"{url}/org/private/resolve/main/missing.bin", headers=auth,
                           timeout=30)  # fmt: skip
        assert secret not in bad.text and secret not in str(bad.headers)
    assert not any(secret in s for s in seen)
    hub = [r for r in fake_hub.requests if r.server == "hub"]
    cdn = [r for r in fake_hub.requests if r.server == "cdn"]
    assert hub and all(r.headers.get("authorization") == f"Bearer {secret}" for r in hub)
    assert cdn and not any("authorization" in r.headers for r in cdn)
    for log in tmp_path.glob("serve-*.log"):
        assert secret not in log.read_text()


def test_a_mirror_killed_mid_fill_resumes_the_blob_and_keeps_nothing_corrupt(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    data = os.urandom(4 * MiB)
    fake_hub.add_repo("org/big", {"w.safetensors": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=1 * MiB))
    store = tmp_path / "store"
    procs: list[subprocess.Popen[bytes]] = []
    with running_mirror(tmp_path, fake_hub.url, store=store, procs=procs) as url:
        threading.Thread(target=_get_quietly, args=(f"{url}/org/big/resolve/main/w.safetensors",),
                         daemon=True).start()  # fmt: skip
        deadline = time.monotonic() + 30
        while held_in(store) < MiB:
            assert time.monotonic() < deadline, "the fill never got going"
            time.sleep(0.05)
        procs[0].kill()  # kill -9 mid-fill
        procs[0].wait()
    fake_hub.faults.clear()
    before = fake_hub.bytes_sent("/cdn/")
    with running_mirror(tmp_path, fake_hub.url, store=store) as url:
        response = requests.get(f"{url}/org/big/resolve/main/w.safetensors", timeout=60)
        assert response.status_code == 200 and response.content == data
    assert fake_hub.bytes_sent("/cdn/") - before < len(data)  # resumed, not refetched
    assert leftovers(store) == []
    for blob in (store / "blobs").rglob("*"):
        if blob.is_file():
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name


def _get_quietly(url: str) -> None:
    try:
        requests.get(url, timeout=60)
    except requests.RequestException:
        pass  # the mirror is killed under it


def held_in(store: Path) -> int:
    total = 0
    for journal in (store / "partials").glob("*.journal"):
        try:
            total += sum(e - s for s, e in json.loads(journal.read_text())["done"])
        except (OSError, ValueError, KeyError):
            pass
    return total


def test_an_air_gapped_mirror_seeded_from_an_hf_cache_serves_it_offline(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    files = model_files()
    commit = fake_hub.add_repo("org/model", files)
    cache = tmp_path / "hf-cache"
    fetched = run_cli("get", "org/model", "--cache-dir", str(cache),
                      env=cli_env(tmp_path, HF_ENDPOINT=fake_hub.url))  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    # damage one blob of the cache: it must be refused, not seeded
    damaged = next(p for p in (cache / "models--org--model" / "blobs").iterdir()
                   if p.stat().st_size == len(files["config.json"]))  # fmt: skip
    damaged.write_bytes(b"X" * damaged.stat().st_size)
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: offline means offline
    with running_mirror(tmp_path, nowhere, "--offline", "--seed", str(cache)) as url:
        for revision in ("main", commit):
            env = cli_env(tmp_path, HF_ENDPOINT=url, HF_HUB_CACHE=str(tmp_path / revision),
                          HF_HUB_DISABLE_XET="1")  # fmt: skip
            out = run_python(
                f"""
                from huggingface_hub import hf_hub_download
                print(hf_hub_download("org/model", "model.safetensors", revision={revision!r}))
                """,
                env,
            )
            assert Path(out).read_bytes() == files["model.safetensors"]
        broken = requests.get(f"{url}/org/model/resolve/main/config.json", timeout=10)
        assert broken.status_code >= 500 and broken.headers["X-Error-Code"]  # refused, not served
    assert "damaged blobs" in next(tmp_path.glob("serve-*.log")).read_text()


def test_aria2c_style_segments_on_a_cold_blob_are_byte_exact_from_one_upstream_fetch(
    tmp_path: Path, fake_hub: FakeHub, mirror: str
) -> None:
    data = os.urandom(6 * MiB + 123)
    fake_hub.add_repo("org/seg", {"w.safetensors": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=2 * MiB))
    url = f"{mirror}/org/seg/resolve/main/w.safetensors"
    step = len(data) // 8 + 1
    parts: dict[int, bytes] = {}

    def segment(start: int) -> None:
        end = min(start + step, len(data)) - 1
        response = requests.get(url, headers={"Range": f"bytes={start}-{end}"}, timeout=90)
        assert response.status_code == 206
        parts[start] = response.content

    with ThreadPoolExecutor(8) as pool:  # a failed segment raises here
        list(pool.map(segment, range(0, len(data), step)))
    assert b"".join(parts[s] for s in sorted(parts)) == data
    assert len(data) <= fake_hub.bytes_sent("/cdn/") <= len(data) + MiB
    assert requests.get(mirror + "/healthz", timeout=5).json()["fills"] == 1
