"""Filling the mirror: hfpull prewarm, hfpull serve import, hfpull serve refresh."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from unittest import mock

import pytest
import requests
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from hfpull.errors import EntryNotFoundError
from hfpull.models import RemoteFile, RepoRef, Snapshot
from hfpull.serve.access import CLIENT_KEY, PRINCIPAL_KEY, Principal
from hfpull.serve.admin import admin_allowed, prewarm_allowed
from hfpull.serve.metadata import revision_answer, tree_answer
from hfpull.serve.upstream import Upstream
from tests.conftest import RunCli, cli_env, fast_settings
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB, leftovers
from tests.serve_helpers import free_port, running_mirror
from tests.test_interop import run_python


def repo_files() -> dict[str, bytes]:
    return {
        "config.json": b'{"model_type": "bert"}',
        "tokenizer.json": b'{"version": "1.0"}' * 50,
        "model.safetensors": os.urandom(3 * MiB + 17),  # LFS
        "nested/dir/notes file#1.txt": b"hello",
    }


def stored_blobs(store: Path) -> set[str]:
    blobs = store / "blobs"
    return {p.name for p in blobs.rglob("*") if p.is_file()} if blobs.exists() else set()


def etag(data: bytes, lfs: bool) -> str:
    if lfs:
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def etags(files: dict[str, bytes]) -> set[str]:
    return {etag(data, name.endswith(".safetensors")) for name, data in files.items()}


def hf_download(tmp_path: Path, url: str, cache: str, call: str) -> str:
    env = cli_env(tmp_path, HF_ENDPOINT=url, HF_HUB_CACHE=str(tmp_path / cache),
                  HF_HUB_DISABLE_XET="1")  # fmt: skip
    return run_python(f"import huggingface_hub as h\nprint(h.{call})", env)


def assert_snapshot(folder: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (Path(folder) / name).read_bytes() == data, name


# -- prewarm ----------------------------------------------------------------------------------


def test_prewarm_fills_the_mirror_sends_the_caller_no_bytes_and_serves_with_upstream_gone(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    files = repo_files()
    fake_hub.add_repo("org/model", files)
    log = tmp_path / "access.jsonl"
    store = tmp_path / "store"
    with running_mirror(tmp_path, fake_hub.url, "--access-log", str(log), store=store) as url:
        result = run_cli("prewarm", "org/model", "--mirror", url)
        assert result.returncode == 0, result.stderr
        assert "4 files" in result.stdout and "stored" in result.stdout
        assert stored_blobs(store) == etags(files)
        # each blob crossed from upstream once, and none to the caller
        assert fake_hub.bytes_sent("/resolve/") + fake_hub.bytes_sent("/cdn/") == sum(
            len(d) for d in files.values()
        )
        seen = [json.loads(line) for line in log.read_text().splitlines()]
        ours = [r for r in seen if r["url"].startswith("/-/hfpull/")]
        assert ours and len(ours) == len(seen) - sum(r["url"] == "/healthz" for r in seen)
        assert sum(r["bytes_sent"] for r in ours) < 64 * 1024
        fake_hub.stop()
        out = hf_download(tmp_path, url, "client", "snapshot_download('org/model')")
        assert_snapshot(out, files)


def test_prewarm_include_fills_only_the_matching_files(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    files = repo_files()
    fake_hub.add_repo("org/model", files)
    store = tmp_path / "store"
    with running_mirror(tmp_path, fake_hub.url, store=store) as url:
        result = run_cli("prewarm", "org/model@main", "--include", "*.json", "--mirror", url)
        assert result.returncode == 0, result.stderr
        json_files = {k: v for k, v in files.items() if k.endswith(".json")}
        assert stored_blobs(store) == etags(json_files)
        none = run_cli("prewarm", "org/model", "--include", "*.gguf", "--mirror", url)
        assert none.returncode == 2 and "matches" in none.stderr


def test_prewarm_from_a_lock_fills_exactly_the_locked_files_and_refuses_a_drifted_lock(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    files = repo_files()
    fake_hub.add_repo("org/model", files)
    lock = tmp_path / "hfpull.lock"
    locked = run_cli("lock", "org/model", "--include", "*.safetensors", "-o", str(lock),
                     env=cli_env(tmp_path, HF_ENDPOINT=fake_hub.url))  # fmt: skip
    assert locked.returncode == 0, locked.stderr
    store = tmp_path / "store"
    with running_mirror(tmp_path, fake_hub.url, store=store) as url:
        result = run_cli("prewarm", "--lock", str(lock), "--mirror", url)
        assert result.returncode == 0, result.stderr
        assert stored_blobs(store) == etags({"model.safetensors": files["model.safetensors"]})
        doc = json.loads(lock.read_text())
        doc["repos"][0]["files"][0]["size"] += 1  # the lock no longer matches the Hub
        lock.write_text(json.dumps(doc))
        drifted = run_cli("prewarm", "--lock", str(lock), "--mirror", url)
        assert drifted.returncode == 4 and "differs from the lock" in drifted.stderr


def test_prewarm_of_a_missing_repo_fails_clearly_with_exit_8(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    with running_mirror(tmp_path, fake_hub.url) as url:
        result = run_cli("prewarm", "org/nothing", "--mirror", url)
    assert result.returncode == 8, result.stderr
    assert "org/nothing" in result.stderr and "not found" in result.stderr


def test_prewarm_exits_non_zero_when_upstream_sends_a_corrupt_body(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    fake_hub.add_repo("org/bad", {"w.safetensors": os.urandom(2 * MiB), "a.json": b"{}"})
    fake_hub.faults.append(Fault("flip", match="/cdn/", after_bytes=MiB + 3))  # every time
    store = tmp_path / "store"
    with running_mirror(tmp_path, fake_hub.url, store=store) as url:
        result = run_cli("prewarm", "org/bad", "--mirror", url)
    assert result.returncode == 4, result.stderr
    assert "w.safetensors" in result.stderr and "1 of 2" in result.stderr
    assert stored_blobs(store) == etags({"a.json": b"{}"})  # the good one is kept


def test_prewarming_an_edge_fills_the_regional_mirror_behind_it(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    files = repo_files()
    fake_hub.add_repo("org/model", files)
    regional_store, edge_store = tmp_path / "regional", tmp_path / "edge"
    with running_mirror(tmp_path, fake_hub.url, store=regional_store) as regional:
        with running_mirror(tmp_path, regional, store=edge_store) as edge:
            result = run_cli("prewarm", "org/model", "--mirror", edge, "--progress")
            assert result.returncode == 0, result.stderr
            assert "files 4/4" in result.stderr  # get's renderer drew the job
    assert stored_blobs(edge_store) == etags(files)
    assert stored_blobs(regional_store) == etags(files)
    assert fake_hub.bytes_sent("/cdn/") == len(files["model.safetensors"])


def test_a_prewarm_job_reports_progress_and_an_unknown_job_is_404(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    fake_hub.add_repo("org/model", {"a.bin": b"A" * 5000})
    with running_mirror(tmp_path, fake_hub.url) as url:
        body = {"repo": "org/model", "repo_type": "model", "revision": "main"}
        started = requests.post(f"{url}/-/hfpull/prewarm", json=body, timeout=30)
        assert started.status_code == 202
        job = started.json()
        assert [f["path"] for f in job["files"]] == ["a.bin"] and job["bytes_total"] == 5000
        status = requests.get(f"{url}/-/hfpull/prewarm/{job['job']}", timeout=30).json()
        assert status["job"] == job["job"] and status["commit"] == job["commit"]
        unknown = requests.get(f"{url}/-/hfpull/prewarm/{'0' * 16}", timeout=30)
        assert unknown.status_code == 404 and unknown.headers["X-Error-Code"] == "UnknownJob"
        bad = requests.post(f"{url}/-/hfpull/prewarm", data=b"{", timeout=30)
        assert bad.status_code == 400 and bad.headers["X-Error-Code"] == "BadRequest"


# -- import -----------------------------------------------------------------------------------


@pytest.fixture
def packed(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> tuple[Path, dict[str, bytes], str]:
    files = repo_files()
    commit = fake_hub.add_repo("org/model", files)
    archive = tmp_path / "model.tar"
    result = run_cli("pack", "org/model", "-o", str(archive), "--cache-dir",
                     str(tmp_path / "packer-cache"),
                     env=cli_env(tmp_path, HF_ENDPOINT=fake_hub.url))  # fmt: skip
    assert result.returncode == 0, result.stderr
    return archive, files, commit


def test_an_imported_archive_is_served_offline_by_branch_and_by_commit(
    tmp_path: Path, packed: tuple[Path, dict[str, bytes], str], run_cli: RunCli
) -> None:
    archive, files, commit = packed
    store = tmp_path / "store"
    result = run_cli("serve", "import", str(archive), "--cache-dir", str(store))
    assert result.returncode == 0, result.stderr
    assert f"org/model@main = {commit}: 4 new blobs" in result.stdout
    assert stored_blobs(store) == etags(files) and leftovers(store) == []
    nowhere = f"http://127.0.0.1:{free_port()}"
    with running_mirror(tmp_path, nowhere, "--offline", store=store) as url:
        for revision in ("main", commit):
            out = hf_download(tmp_path, url, f"one-{revision}",
                              f"hf_hub_download('org/model', 'model.safetensors', "
                              f"revision={revision!r})")  # fmt: skip
            assert Path(out).read_bytes() == files["model.safetensors"]
            out = hf_download(tmp_path, url, f"all-{revision}",
                              f"snapshot_download('org/model', revision={revision!r})")  # fmt: skip
            assert_snapshot(out, files)
    again = run_cli("serve", "import", str(archive), "--cache-dir", str(store))
    assert again.returncode == 0 and "0 new blobs" in again.stdout and "4 already" in again.stdout


def test_a_corrupt_archive_imports_nothing_not_even_the_good_archive_beside_it(
    tmp_path: Path, packed: tuple[Path, dict[str, bytes], str], run_cli: RunCli
) -> None:
    archive, files, _ = packed
    data = bytearray(archive.read_bytes())
    at = bytes(data).index(files["model.safetensors"][:64]) + 1000
    data[at] ^= 0x01  # one flipped bit inside the weights
    broken = tmp_path / "broken.tar"
    broken.write_bytes(bytes(data))
    store = tmp_path / "store"
    result = run_cli("serve", "import", str(archive), str(broken), "--cache-dir", str(store))
    assert result.returncode == 4, result.stderr
    assert "model.safetensors" in result.stderr and "mismatch" in result.stderr
    assert stored_blobs(store) == set()
    assert not (store / "meta").exists() and [p.name for p in store.iterdir()] == []


def test_a_hostile_archive_imports_nothing(tmp_path: Path, run_cli: RunCli) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("../../etc/x")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    store = tmp_path / "store"
    result = run_cli("serve", "import", str(evil), "--cache-dir", str(store))
    assert result.returncode == 6, result.stderr
    assert stored_blobs(store) == set() and [p.name for p in store.iterdir()] == []


# -- refresh ----------------------------------------------------------------------------------


def test_refresh_after_upstream_moved_a_branch_serves_the_new_commit_at_once(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    old = fake_hub.add_repo("org/model", {"a.txt": b"old"})
    with running_mirror(tmp_path, fake_hub.url) as url:  # --metadata-ttl 600: no expiry here
        file_url = f"{url}/org/model/resolve/main/a.txt"
        api_url = f"{url}/api/models/org/model/revision/main"
        assert requests.get(file_url, timeout=30).content == b"old"
        assert requests.get(api_url, timeout=30).json()["sha"] == old
        new = fake_hub.add_repo("org/model", {"a.txt": b"new"})
        assert requests.get(file_url, timeout=30).content == b"old"  # cached, within the TTL
        result = run_cli("serve", "refresh", "org/model@main", "--mirror", url)
        assert result.returncode == 0, result.stderr
        assert f"{old} -> {new}" in result.stdout
        response = requests.get(file_url, timeout=30)
        assert response.content == b"new" and response.headers["X-Repo-Commit"] == new
        assert requests.get(api_url, timeout=30).json()["sha"] == new
        same = run_cli("serve", "refresh", "org/model", "--mirror", url)
        assert same.returncode == 0 and "unchanged" in same.stdout


def test_admin_routes_refuse_a_proxied_caller_when_no_tokens_are_configured(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    fake_hub.add_repo("org/model", {"a.txt": b"x"})
    with running_mirror(tmp_path, fake_hub.url) as url:
        body = {"repo": "org/model", "revision": "main"}
        for route in ("refresh", "prewarm"):
            response = requests.post(f"{url}/-/hfpull/{route}", json=body, timeout=30,
                                     headers={"X-Forwarded-For": "10.0.0.7"})  # fmt: skip
            assert response.status_code == 403, route
            assert response.headers["X-Error-Code"] == "Forbidden"
        assert requests.post(f"{url}/-/hfpull/refresh", json=body, timeout=30).ok
        wrong = requests.get(f"{url}/-/hfpull/refresh", timeout=30)
        assert wrong.status_code == 405


def _request(
    peer: str, principal: Principal | None = None, client: str | None = None, **headers: str
) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    request = make_mocked_request("POST", "/-/hfpull/refresh", headers=headers,
                                  transport=transport)  # fmt: skip
    request[PRINCIPAL_KEY] = principal or Principal()  # what the access middleware sets
    request[CLIENT_KEY] = client or peer
    return request


@pytest.mark.filterwarnings("ignore::aiohttp.web.NotAppKeyWarning")  # string request keys
def test_admin_allowed_follows_the_mirror_token_else_only_unproxied_loopback() -> None:
    admin = Principal(name="ops", admin=True)
    reader = Principal(name="ci", admin=False)
    assert admin_allowed(_request("10.0.0.7", admin))
    assert not admin_allowed(_request("127.0.0.1", reader))  # a mirror token decides alone
    assert prewarm_allowed(_request("10.0.0.7", reader))  # any mirror token may prewarm
    assert admin_allowed(_request("127.0.0.1")) and admin_allowed(_request("::1"))
    assert not admin_allowed(_request("10.0.0.7")) and not prewarm_allowed(_request("10.0.0.7"))
    # A client's own HF token (no tokens file) is no mirror token: the loopback rule holds.
    assert not admin_allowed(_request("10.0.0.7", Principal(hf_token="hf_x")))
    # An unnamed proxy on the same box: its address is not the caller's.
    assert not admin_allowed(_request("127.0.0.1", Forwarded="for=10.0.0.7"))
    # A proxy --trust-proxy names: the client behind it decides.
    assert not admin_allowed(
        _request("127.0.0.1", client="10.0.0.7", **{"X-Forwarded-For": "10.0.0.7"})
    )
    assert admin_allowed(
        _request("10.9.9.9", client="127.0.0.1", **{"X-Forwarded-For": "127.0.0.1"})
    )


# -- answers made from a snapshot (upstream gone) ---------------------------------------------


@pytest.mark.parametrize("where", ["", "/nested", "/nested/dir"])
@pytest.mark.parametrize("recursive", [True, False])
def test_a_tree_answer_made_from_a_snapshot_is_the_hubs(
    fake_hub: FakeHub, where: str, recursive: bool
) -> None:
    files = {**repo_files(), "nested/b.txt": b"bee"}
    fake_hub.add_repo("org/model", files)
    query = "recursive=True&expand=False" if recursive else ""
    hub = requests.get(f"{fake_hub.url}/api/models/org/model/tree/main{where}?{query}", timeout=10)
    snapshot = Upstream(fast_settings(fake_hub.url, Path("unused"))).resolve(
        RepoRef("org/model"), "main"
    )
    ours = json.loads(tree_answer(snapshot, where.lstrip("/"), query))
    theirs = hub.json()
    # directory ids are git's own (checked against git in test_serve_units); the fake Hub's
    # are not, and it leaves out the size 0 the Hub sends for directories
    for entry in [*ours, *theirs]:
        if entry["type"] == "directory":
            entry.pop("oid")
            assert entry.pop("size", 0) == 0
    assert ours == theirs


def test_a_tree_answer_for_a_missing_folder_is_not_found() -> None:
    snapshot = Snapshot(RepoRef("org/model"), "main", "a" * 40, (RemoteFile("x", 1, "b" * 40),))
    with pytest.raises(EntryNotFoundError):
        tree_answer(snapshot, "nowhere", "")


def test_a_revision_answer_made_from_a_snapshot_is_read_by_huggingface_hub(
    fake_hub: FakeHub,
) -> None:
    from huggingface_hub.hf_api import ModelInfo

    files = repo_files()
    fake_hub.add_repo("org/model", files)
    snapshot = Upstream(fast_settings(fake_hub.url, Path("unused"))).resolve(
        RepoRef("org/model"), "main"
    )
    info = ModelInfo(**json.loads(revision_answer(snapshot)))
    answer = requests.get(f"{fake_hub.url}/api/models/org/model?blobs=True", timeout=10)
    hub = ModelInfo(**answer.json())
    assert info.sha == hub.sha
    assert sorted(info.siblings or [], key=str) == sorted(hub.siblings or [], key=str)
