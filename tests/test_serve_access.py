"""hfpull serve's access control, as a real subprocess in front of the fake Hub: mirror
tokens on every route, address ranges and proxies, repo rules, gated and private repos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import RunCli, cli_env
from tests.fakehub import FakeHub
from tests.serve_helpers import running_mirror
from tests.test_interop import run_python

ALICE = "mirror-alice-0123456789abcdef"
BOB = "mirror-bobbb-0123456789abcdef"  # as long as ALICE (the SIGHUP test swaps them)
UPSTREAM = "hf_upstream_0123456789abcdef"
CLIENT_OK = "hf_client_ok_0123456789abcd"
CLIENT_NO = "hf_client_no_0123456789abcd"


def _tokens_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    path.chmod(0o600)
    return path


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _no_secret_in_logs(tmp_path: Path, *secrets: str) -> None:
    logs = [*tmp_path.glob("serve-*.log"), *tmp_path.glob("access*.jsonl")]
    assert logs
    for log in logs:
        text = log.read_text()
        for secret in secrets:
            assert secret not in text, (log.name, secret[:8])


def _wait_for_log(log: Path, lines: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    while not log.exists() or len(log.read_text().splitlines()) < lines:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return [json.loads(line) for line in log.read_text().splitlines()]


def _hf_hub_download(tmp_path: Path, url: str, repo: str, name: str, token: str | None) -> str:
    """hf_hub_download through the mirror; prints the path, or the exception's class name."""
    env = cli_env(tmp_path, HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1",
                  HF_HUB_CACHE=str(tmp_path / f"client-{os.urandom(4).hex()}"))  # fmt: skip
    return run_python(
        f"""
        from huggingface_hub import hf_hub_download
        try:
            print(hf_hub_download({repo!r}, {name!r}, token={token!r}))
        except Exception as exc:
            print(type(exc).__name__)
        """,
        env,
    )


# Every kind of route: Hub API, resolve, paths-info, the status page, metrics, admin routes,
# routes that do not exist, and spellings that try to slip past a router.
ROUTES = [
    ("GET", "/"),
    ("GET", "/metrics"),
    ("POST", "/-/hfpull/refresh"),
    ("GET", "/api/models/org/m"),
    ("GET", "/api/models/org/m/revision/main"),
    ("GET", "/api/models/org/m/tree/main?recursive=true"),
    ("GET", "/api/models/org/m/refs"),
    ("POST", "/api/models/org/m/paths-info/main"),
    ("GET", "/org/m/resolve/main/config.json"),
    ("HEAD", "/org/m/resolve/main/config.json"),
    ("GET", "/datasets/org/d/resolve/main/x.csv"),
    ("OPTIONS", "/org/m/resolve/main/config.json"),
    ("GET", "//api/models/org/m"),
    ("GET", "/API/models/org/m"),
    ("GET", "/healthz/../api/models/org/m"),
    ("GET", "/nothing/here"),
]


def test_with_a_tokens_file_every_route_but_healthz_needs_a_token_and_both_forms_work(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    files = {"config.json": b'{"a": 1}', "w.bin": os.urandom(200_000)}
    fake_hub.add_repo("org/m", files)
    tokens = _tokens_file(tmp_path, f"# team\nalice {ALICE}\nbob {BOB} +admin\n")
    log = tmp_path / "access.jsonl"
    with running_mirror(tmp_path, fake_hub.url, "--auth-tokens", str(tokens),
                        "--access-log", str(log)) as url:  # fmt: skip
        fake_hub.reset_log()
        for method, path in ROUTES:
            for headers in ({}, _bearer("mirror-wrong-0123456789abcdef"), _bearer(UPSTREAM)):
                response = requests.request(method, url + path, headers=headers, timeout=10)
                assert response.status_code == 401, (method, path, response.status_code)
                assert response.headers["X-Error-Code"] == "Unauthorized", (method, path)
                assert "Basic" in response.headers["WWW-Authenticate"]
        assert fake_hub.requests == []  # nothing refused reached upstream
        assert requests.get(url + "/healthz", timeout=10).json()["ok"] is True

        # huggingface_hub sends HF_TOKEN / token= as a bearer token
        got = _hf_hub_download(tmp_path, url, "org/m", "w.bin", ALICE)
        assert Path(got).read_bytes() == files["w.bin"]
        assert _hf_hub_download(tmp_path, url, "org/m", "w.bin", None) == "HfHubHTTPError"
        # basic auth: user:token in the URL (requests and curl), or curl -u
        host = url.removeprefix("http://")
        file_url = f"http://bob:{BOB}@{host}/org/m/resolve/main/config.json"
        assert requests.get(file_url, timeout=10).content == files["config.json"]
        curl = subprocess.run(["curl", "-sf", file_url], capture_output=True, timeout=30)
        assert curl.returncode == 0 and curl.stdout == files["config.json"]
        curl = subprocess.run(["curl", "-sf", "-u", f"alice:{ALICE}", url + "/api/models/org/m"],
                              capture_output=True, timeout=30)  # fmt: skip
        assert curl.returncode == 0 and json.loads(curl.stdout)["id"] == "org/m"
        records = _wait_for_log(log, len(ROUTES) * 3 + 5)
    users = {r["user"] for r in records if r["status"] == 200 and r["repo"] == "org/m"}
    assert users == {"alice", "bob"}
    assert {r["user"] for r in records if r["status"] == 401} == {None}
    _no_secret_in_logs(tmp_path, ALICE, BOB, UPSTREAM, "mirror-wrong-0123456789abcdef")


def _rewrite_in_place(path: Path, text: str) -> None:
    """Same inode, size and mtime: only an explicit reload (SIGHUP) can see the change."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    with open(path, "r+", encoding="utf-8") as handle:
        handle.write(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_sighup_and_a_changed_file_reload_the_tokens_and_a_broken_one_keeps_the_old(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    fake_hub.add_repo("org/m", {"config.json": b"{}"})
    tokens = _tokens_file(tmp_path, f"alice {ALICE}\n")
    procs: list[subprocess.Popen[bytes]] = []
    with running_mirror(tmp_path, fake_hub.url, "--auth-tokens", str(tokens),
                        procs=procs) as url:  # fmt: skip
        api = url + "/api/models/org/m"
        assert requests.get(api, headers=_bearer(ALICE), timeout=10).ok
        _rewrite_in_place(tokens, f"bobbb {BOB}\n")
        time.sleep(1.2)  # past the once-a-second change check: no change can be seen
        assert requests.get(api, headers=_bearer(BOB), timeout=10).status_code == 401
        procs[0].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while requests.get(api, headers=_bearer(BOB), timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "SIGHUP did not reload the tokens file"
            time.sleep(0.05)
        assert requests.get(api, headers=_bearer(ALICE), timeout=10).status_code == 401
        tokens.write_text(f"bobbb {BOB}\nalice {ALICE}\n")  # a real change: seen by itself
        deadline = time.monotonic() + 10
        while requests.get(api, headers=_bearer(ALICE), timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "a changed tokens file was not reloaded"
            time.sleep(0.1)
        tokens.write_text(f"bobbb {BOB}\nalice\n")  # broken: the table in force stays
        time.sleep(1.2)
        for _ in range(3):
            assert requests.get(api, headers=_bearer(ALICE), timeout=10).ok
            time.sleep(0.5)
        assert procs[0].poll() is None
    stderr = next(tmp_path.glob("serve-*.log")).read_text()
    assert "line 2" in stderr and "old one stays" in stderr
    _no_secret_in_logs(tmp_path, ALICE, BOB)


def test_a_broken_tokens_file_or_a_bad_range_stops_the_mirror_at_start_with_one_line(
    tmp_path: Path, run_cli: RunCli
) -> None:
    tokens = _tokens_file(tmp_path, f"alice {ALICE}\nbob {BOB} +adm1n\n")
    store = str(tmp_path / "store")
    done = run_cli("serve", "--cache-dir", store, "--port", "1", "--auth-tokens", str(tokens))
    assert done.returncode == 2
    assert "line 2" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert ALICE not in done.stderr and BOB not in done.stderr
    done = run_cli("serve", "--cache-dir", store, "--port", "1", "--allow", "10.0.0.0/40")
    assert done.returncode == 2 and "--allow" in done.stderr


@pytest.mark.parametrize(
    ("flags", "headers", "allowed"),
    [
        (["--allow", "127.0.0.1/32"], {}, True),
        (["--allow", "10.0.0.0/8", "--allow", "127.0.0.0/8"], {}, True),
        (["--allow", "10.0.0.0/8"], {}, False),
        # a client cannot name itself: X-Forwarded-For from an untrusted peer is ignored
        (["--allow", "10.0.0.0/8"], {"X-Forwarded-For": "10.1.2.3"}, False),
        (["--allow", "10.0.0.0/8", "--trust-proxy", "127.0.0.1/32"],
         {"X-Forwarded-For": "10.1.2.3"}, True),
        (["--allow", "10.0.0.0/8", "--trust-proxy", "127.0.0.1/32"], {}, False),
        # what a client put before the proxy's own entry is not believed
        (["--allow", "10.0.0.0/8", "--trust-proxy", "127.0.0.1/32"],
         {"X-Forwarded-For": "10.1.2.3, 192.168.0.9"}, False),
    ],
)  # fmt: skip
def test_address_ranges_and_trusted_proxies(
    tmp_path: Path, fake_hub: FakeHub, flags: list[str], headers: dict[str, str], allowed: bool
) -> None:
    fake_hub.add_repo("org/m", {"config.json": b"{}"})
    log = tmp_path / "access.jsonl"
    with running_mirror(tmp_path, fake_hub.url, *flags, "--access-log", str(log)) as url:
        assert requests.get(url + "/healthz", timeout=10).ok  # probes are answered anyway
        fake_hub.reset_log()
        for path in ("/org/m/resolve/main/config.json", "/api/models/org/m", "/"):
            response = requests.get(url + path, headers=headers, timeout=10)
            if allowed:
                assert response.status_code in (200, 404), path  # (no page at / yet)
            else:
                assert response.status_code == 403, path
                assert response.headers["X-Error-Code"] == "Forbidden"
        assert bool(fake_hub.requests) == allowed
        records = _wait_for_log(log, 4)
    if "--trust-proxy" in flags and allowed:
        assert records[-1]["client"] == "10.1.2.3"  # the log names the client, not the proxy


def test_repo_rules_refuse_before_anything_reaches_upstream(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    for repo in ("org/ok", "org/secret-x", "other/x", "org/old"):
        fake_hub.add_repo(repo, {"config.json": b"{}"})
    fake_hub.rename_repo("org/old", "org/secret-new")
    with running_mirror(tmp_path, fake_hub.url, "--allow-repo", "org/*",
                        "--deny-repo", "org/secret*") as url:  # fmt: skip
        fake_hub.reset_log()
        for repo in ("org/secret-x", "Org/Secret-X", "other/x"):
            for path in (
                f"/{repo}/resolve/main/config.json",
                f"/api/models/{repo}",
                f"/api/models/{repo}/revision/main",
                f"/api/models/{repo}/tree/main",
            ):
                response = requests.get(url + path, timeout=10)  # fmt: skip
                assert response.status_code == 404, path
                assert response.headers["X-Error-Code"] == "RepoNotFound", path
        assert fake_hub.requests == []  # a denied repo costs nothing upstream
        assert requests.get(url + "/org/ok/resolve/main/config.json", timeout=10).content == b"{}"
        # allowed by name, but upstream knows it by a denied name now
        moved = requests.get(url + "/org/old/resolve/main/config.json", timeout=10)
        assert moved.status_code == 404 and moved.headers["X-Error-Code"] == "RepoNotFound"
        assert fake_hub.bytes_sent("/resolve/") == len(b"{}")  # only org/ok's bytes came


def test_gated_and_private_bytes_go_only_to_tokens_granted_those_repos(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    weights = os.urandom(300_000)
    fake_hub.add_repo("org/gated", {"w.bin": weights, "config.json": b"{}"}, gated=True)
    fake_hub.add_repo("org/private", {"w.bin": weights[::-1]}, private=True)
    fake_hub.tokens[UPSTREAM] = {"org/gated", "org/private"}
    tokens = _tokens_file(tmp_path, f"alice {ALICE} org/gated org/priv*\nbob {BOB} org/other\n")
    store = tmp_path / "store"
    flags = ("--auth-tokens", str(tokens), "--upstream-token", UPSTREAM)
    with running_mirror(tmp_path, fake_hub.url, *flags, store=store) as url:
        gated = f"{url}/org/gated/resolve/main/w.bin"
        got = _hf_hub_download(tmp_path, url, "org/gated", "w.bin", ALICE)
        assert Path(got).read_bytes() == weights  # alice's request filled the cache
        for method in ("GET", "HEAD"):
            refused = requests.request(method, gated, headers=_bearer(BOB), timeout=10)
            assert refused.status_code == 403 and refused.headers["X-Error-Code"] == "GatedRepo"
            assert "ETag" not in refused.headers and not refused.content.startswith(weights[:64])
        assert _hf_hub_download(tmp_path, url, "org/gated", "w.bin", BOB) == "GatedRepoError"
        info = requests.get(f"{url}/api/models/org/gated", headers=_bearer(BOB), timeout=10)
        assert info.ok and info.json()["id"] == "org/gated"  # as on the Hub: info is public
        for target in (f"{url}/org/private/resolve/main/w.bin", f"{url}/api/models/org/private",
                       f"{url}/api/models/org/private/revision/main",
                       f"{url}/api/models/org/private/tree/main"):  # fmt: skip
            assert requests.get(target, headers=_bearer(ALICE), timeout=10).ok, target
            refused = requests.get(target, headers=_bearer(BOB), timeout=10)
            assert refused.status_code == 404, target
            assert refused.headers["X-Error-Code"] == "RepoNotFound"
            assert b"w.bin" not in refused.content and weights[-64:] not in refused.content
        fake_hub.reset_log()
        assert requests.get(gated, headers=_bearer(ALICE), timeout=10).content == weights
        assert fake_hub.bytes_sent() == 0  # served from the cache, nothing asked upstream
    fake_hub.stop()  # upstream gone, mirror restarted: what it learnt still holds
    with running_mirror(tmp_path, fake_hub.url, *flags, store=store) as url:
        gated = f"{url}/org/gated/resolve/main/w.bin"
        assert requests.get(gated, headers=_bearer(BOB), timeout=10).status_code == 403
        assert requests.get(gated, headers=_bearer(ALICE), timeout=10).content == weights
        blocked = requests.get(f"{url}/org/private/resolve/main/w.bin", headers=_bearer(BOB),
                               timeout=10)  # fmt: skip
        assert blocked.status_code == 404
    _no_secret_in_logs(tmp_path, ALICE, BOB, UPSTREAM)


def test_without_a_tokens_file_a_client_proves_gated_access_with_its_own_hf_token(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    weights = os.urandom(300_000)
    fake_hub.add_repo("org/gated", {"w.bin": weights}, gated=True)
    fake_hub.add_repo("org/private", {"p.bin": b"private bytes"}, private=True)
    fake_hub.tokens[UPSTREAM] = {"org/gated", "org/private"}
    fake_hub.tokens[CLIENT_OK] = {"org/gated", "org/private"}
    fake_hub.tokens[CLIENT_NO] = set()
    with running_mirror(tmp_path, fake_hub.url, "--upstream-token", UPSTREAM) as url:
        gated = f"{url}/org/gated/resolve/main/w.bin"
        got = _hf_hub_download(tmp_path, url, "org/gated", "w.bin", CLIENT_OK)
        assert Path(got).read_bytes() == weights
        anonymous = requests.get(gated, timeout=10)
        assert anonymous.status_code == 401 and anonymous.headers["X-Error-Code"] == "GatedRepo"
        refused = requests.get(gated, headers=_bearer(CLIENT_NO), timeout=10)
        assert refused.status_code == 403 and refused.headers["X-Error-Code"] == "GatedRepo"
        assert _hf_hub_download(tmp_path, url, "org/gated", "w.bin", None) == "GatedRepoError"
        private = f"{url}/org/private/resolve/main/p.bin"
        assert requests.get(private, headers=_bearer(CLIENT_OK), timeout=10).ok
        assert requests.get(private, headers=_bearer(CLIENT_NO), timeout=10).status_code == 404
        fake_hub.reset_log()
        for _ in range(3):  # the yes is kept for a while: not asked again
            assert requests.get(gated, headers=_bearer(CLIENT_OK), timeout=10).content == weights
        assert fake_hub.requests == []
    _no_secret_in_logs(tmp_path, UPSTREAM, CLIENT_OK, CLIENT_NO)


def test_a_client_token_goes_to_upstreams_origin_only_never_to_its_cdn(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    fake_hub.add_repo("org/gated", {"w.bin": os.urandom(300_000)}, gated=True)
    fake_hub.tokens[UPSTREAM] = {"org/gated"}
    fake_hub.tokens[CLIENT_OK] = {"org/gated"}
    with running_mirror(tmp_path, fake_hub.url, "--upstream-token", UPSTREAM) as url:
        fake_hub.reset_log()
        gated = f"{url}/org/gated/resolve/main/w.bin"
        assert requests.get(gated, headers=_bearer(CLIENT_OK), timeout=30).ok
    with_client = [r for r in fake_hub.requests
                   if r.headers.get("authorization") == f"Bearer {CLIENT_OK}"]  # fmt: skip
    assert [(r.server, r.method) for r in with_client] == [("hub", "HEAD")]  # one check
    cdn = [r for r in fake_hub.requests if r.server == "cdn"]
    assert cdn and not any("authorization" in r.headers for r in cdn)


def test_prewarm_and_refresh_follow_the_mirror_tokens_and_the_repo_rules(
    tmp_path: Path, fake_hub: FakeHub, run_cli: RunCli
) -> None:
    fake_hub.add_repo("org/open", {"a.bin": os.urandom(5000)})
    fake_hub.add_repo("secret/x", {"s.bin": os.urandom(5000)})
    fake_hub.add_repo("org/hidden", {"h.bin": os.urandom(5000)}, private=True)
    fake_hub.tokens[UPSTREAM] = {"org/hidden"}
    tokens = _tokens_file(tmp_path, f"alice {ALICE}\nbob {BOB} +admin\n")
    rules = ("--auth-tokens", str(tokens), "--upstream-token", UPSTREAM, "--deny-repo", "secret/*")
    with running_mirror(tmp_path, fake_hub.url, *rules) as url:

        def prewarm(repo: str, token: str | None) -> int:
            extra = ["--token", token] if token else []
            return run_cli("prewarm", repo, "--mirror", url, "--quiet", *extra).returncode

        assert prewarm("org/open", None) == 7  # no mirror token: refused (401)
        assert prewarm("org/open", ALICE) == 0  # any mirror token may prewarm
        fake_hub.reset_log()
        assert prewarm("secret/x", BOB) == 8  # denied: like a missing repo, even for admins
        assert not [r for r in fake_hub.requests if "secret" in r.path]  # never asked upstream
        assert prewarm("org/hidden", ALICE) == 8  # private, not granted: its files stay unseen
        assert prewarm("org/hidden", BOB) == 0  # an admin may
        refresh = ["serve", "refresh", "org/open", "--mirror", url]
        assert run_cli(*refresh, "--token", ALICE).returncode == 7  # not +admin
        assert run_cli(*refresh, "--token", BOB).returncode == 0
    _no_secret_in_logs(tmp_path, ALICE, BOB, UPSTREAM)
