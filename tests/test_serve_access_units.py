"""The mirror's access policy without sockets: peers, proxies, repo globs, the tokens file,
the visibility record and the client-token check."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest
import requests
import responses

from hfpull.errors import NetworkError, UsageError
from hfpull.models import RepoRef
from hfpull.serve.access import PeerPolicy, Principal, RepoPolicy, parse_address
from hfpull.serve.client_tokens import ClientTokenCheck
from hfpull.serve.tokens import TokensFile, TokensFileError, bearer_token, parse_tokens
from hfpull.serve.visibility import VisibilityCache

TOKEN_A = "tok-alice-0123456789abcdef"
TOKEN_B = "tok-bob-0123456789abcdef00"


# -- peers and proxies ----------------------------------------------------------------------


def test_allow_ranges_admit_only_their_addresses() -> None:
    policy = PeerPolicy.parse(["10.0.0.0/8", "fd00::/8"], [])
    assert policy.admits(parse_address("10.1.2.3"))
    assert policy.admits(parse_address("fd00::1"))
    assert not policy.admits(parse_address("192.168.1.1"))
    assert not policy.admits(parse_address("::1"))
    assert not policy.admits(None)
    assert PeerPolicy().admits(parse_address("203.0.113.9"))  # no --allow: every peer


def test_a_dual_stack_socket_peer_is_judged_as_ipv4() -> None:
    policy = PeerPolicy.parse(["127.0.0.1/32"], [])
    assert policy.admits(policy.client("::ffff:127.0.0.1"))


def test_forwarded_for_is_believed_only_from_trusted_proxies_right_to_left() -> None:
    policy = PeerPolicy.parse(["10.0.0.0/8"], ["127.0.0.1/32", "172.16.0.0/12"])
    # not a trusted peer: its header is ignored whatever it says
    assert str(policy.client("192.168.1.5", ["10.1.1.1"])) == "192.168.1.5"
    # the trusted proxy appended the real client; what the client prepended is ignored
    assert str(policy.client("127.0.0.1", ["10.9.9.9, 192.168.7.7"])) == "192.168.7.7"
    # two trusted hops (one header each): the first untrusted one from the right
    assert str(policy.client("127.0.0.1", ["10.2.2.2", "172.16.0.4"])) == "10.2.2.2"
    assert str(policy.client("127.0.0.1", ["10.3.3.3:5555"])) == "10.3.3.3"
    assert str(policy.client("127.0.0.1", [])) == "127.0.0.1"  # no header: the proxy itself
    assert policy.client("127.0.0.1", ["not-an-address"]) is None
    assert not policy.admits(policy.client("127.0.0.1", ["not-an-address"]))


def test_links_use_the_scheme_and_host_a_trusted_proxy_forwarded() -> None:
    policy = PeerPolicy.parse([], ["127.0.0.1/32"])
    tls = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "mirror.example:443"}
    assert policy.public_origin("127.0.0.1", "http", "127.0.0.1:8090", tls) == (
        "https://mirror.example:443"
    )
    # only the proto: the Host header nginx passed on stays
    only_proto = {"X-Forwarded-Proto": "https, http"}
    assert policy.public_origin("127.0.0.1", "http", "m:8443", only_proto) == "https://m:8443"
    # an untrusted peer's forwarding headers are ignored
    assert policy.public_origin("10.0.0.9", "http", "m:8090", tls) == "http://m:8090"
    # nothing that could inject text into a Link header is taken
    hostile = {"X-Forwarded-Proto": "javascript", "X-Forwarded-Host": 'evil>; rel="next"'}
    assert policy.public_origin("127.0.0.1", "http", "m:8090", hostile) == "http://m:8090"


def test_bad_ranges_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="--allow"):
        PeerPolicy.parse(["10.0.0.0/33"], [])
    with pytest.raises(UsageError, match="--trust-proxy"):
        PeerPolicy.parse([], ["proxy.local"])


# -- repo rules -------------------------------------------------------------------------------


def test_repo_rules_deny_first_then_allow_case_insensitive() -> None:
    policy = RepoPolicy.parse(["org/*", "meta-llama/Llama-3*"], ["org/secret*"])
    assert policy.permits("org/model")
    assert policy.permits("META-LLAMA/llama-3.1-8b")
    assert not policy.permits("org/secret-weights")
    assert not policy.permits("Org/Secret-Weights")  # no way around a deny by case
    assert not policy.permits("other/model")
    assert RepoPolicy.parse([], ["org/x"]).permits("anyone/else")
    with pytest.raises(UsageError, match="--deny-repo"):
        RepoPolicy.parse([], ["org/ spaced"])


def test_a_principal_reads_the_gated_repos_its_globs_grant() -> None:
    principal = Principal("alice", False, ("org/gated-*",))
    assert principal.granted("org/gated-7b") and principal.granted("ORG/Gated-7b")
    assert not principal.granted("org/other")
    assert "secret" not in repr(Principal(hf_token="hf_secret0123456789"))


# -- the tokens file ---------------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_tokens_file_lines_scopes_and_both_header_forms() -> None:
    table = parse_tokens(
        f"# the team\n\nalice {TOKEN_A} org/gated-* +admin  # lead\nbob {TOKEN_B}\n", "tokens"
    )
    alice = table.authenticate(f"Bearer {TOKEN_A}")
    assert alice == Principal("alice", True, ("org/gated-*",))
    assert table.authenticate(f"bearer  {TOKEN_B} ") == Principal("bob")
    assert table.authenticate(_basic("alice", TOKEN_A)) == alice
    assert table.authenticate(_basic("whoever", TOKEN_B)) == Principal("bob")
    assert table.authenticate(_basic(TOKEN_B, "")) == Principal("bob")  # curl -u TOKEN:
    for refused in (None, "", "Bearer", f"Bearer {TOKEN_A}x", TOKEN_A, _basic("alice", "no"),
                    "Basic !!!notbase64", f"Token {TOKEN_A}"):  # fmt: skip
        assert table.authenticate(refused) is None, refused


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f"alice {TOKEN_A}\nbob\n", "line 2: expected NAME TOKEN"),
        ("alice short\n", "line 1: the TOKEN must be at least 16"),
        (f"alice {TOKEN_A}\nalice {TOKEN_B}\n", "line 2: the NAME is already used on line 1"),
        (f"alice {TOKEN_A}\n\nbob {TOKEN_A}\n", "line 3: the TOKEN is already used on line 1"),
        (f"alice {TOKEN_A} +root\n", "line 1: scope 1 is not +admin"),
        (f"al!ce {TOKEN_A}\n", "line 1: the NAME must be"),
        (f"alice {TOKEN_A} org/x {TOKEN_B}:\n", "line 1: scope 2 is not +admin or a repo glob"),
    ],
)
def test_a_malformed_tokens_file_names_the_line_never_the_token(text: str, problem: str) -> None:
    with pytest.raises(TokensFileError) as caught:
        parse_tokens(text, "tokens")
    message = str(caught.value)
    assert message.startswith("tokens: ") and problem in message
    assert TOKEN_A not in message and TOKEN_B not in message and "short" not in message


def test_client_hf_tokens_come_from_bearer_headers_only() -> None:
    assert bearer_token("Bearer hf_abc") == "hf_abc"
    assert bearer_token(_basic("u", "hf_abc")) is None
    assert bearer_token(None) is None and bearer_token("Bearer ") is None


def test_the_tokens_file_reloads_on_change_and_keeps_the_old_table_when_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"alice {TOKEN_A}\n")
    path.chmod(0o600)
    clock = [1000.0]
    monkeypatch.setattr("hfpull.serve.tokens.time.monotonic", lambda: clock[0])
    tokens = TokensFile(path)
    assert tokens.current().authenticate(f"Bearer {TOKEN_A}") is not None
    path.write_text(f"bob {TOKEN_B}\n")
    assert tokens.current().authenticate(f"Bearer {TOKEN_B}") is None  # looked < 1 s ago
    clock[0] += 1.5
    assert tokens.current().authenticate(f"Bearer {TOKEN_B}") == Principal("bob")
    assert tokens.current().authenticate(f"Bearer {TOKEN_A}") is None  # alice is revoked
    path.write_text(f"bob {TOKEN_B}\ncarol short\n")
    clock[0] += 1.5
    with caplog.at_level(logging.WARNING, "hfpull.serve"):
        assert tokens.current().authenticate(f"Bearer {TOKEN_B}") == Principal("bob")
    assert "line 2" in caplog.text and "old one stays" in caplog.text
    assert TOKEN_B not in caplog.text and "short" not in caplog.text
    path.unlink()
    assert not tokens.reload() and tokens.current().entries  # gone: the last table stays


def test_a_tokens_file_that_cannot_be_used_at_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TokensFileError, match="line 1"):
        (tmp_path / "bad").write_text("just-a-name\n")
        TokensFile(tmp_path / "bad")
    with pytest.raises(TokensFileError):
        TokensFile(tmp_path / "missing")


# -- the visibility record --------------------------------------------------------------------


class FakeInfo:
    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes, dict[str, str]] | Exception] = {}
        self.asked: list[str] = []

    def __call__(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        self.asked.append(path)
        answer = self.answers[path]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _info(repo_id: str, **fields: object) -> tuple[int, bytes, dict[str, str]]:
    return 200, json.dumps({"id": repo_id, **fields}).encode(), {}


def test_visibility_is_recorded_kept_on_disk_and_survives_upstream_outages(
    tmp_path: Path,
) -> None:
    info = FakeInfo()
    repo, path = RepoRef("org/gated"), "/api/models/org/gated"
    info.answers[path] = _info("org/gated", gated="manual", private=False)
    cache = VisibilityCache(tmp_path, 600, False, info)
    assert cache.fresh(repo) is None
    record = cache.lookup(repo)
    assert record is not None and record.gated and not record.restricted
    assert cache.fresh(repo) == record and cache.lookup(repo) == record
    assert info.asked == [path]  # within the TTL: asked once
    info.answers[path] = NetworkError("down")
    restarted = VisibilityCache(tmp_path, 0, False, info)  # expired at once, upstream down
    assert restarted.lookup(repo) == record  # the last word stands
    offline = VisibilityCache(tmp_path, 0, True, info)
    asked = len(info.asked)
    assert offline.lookup(repo) == record and len(info.asked) == asked
    assert offline.lookup(RepoRef("org/never-seen")) is None


def test_a_repo_upstream_no_longer_shows_becomes_restricted(tmp_path: Path) -> None:
    info = FakeInfo()
    repo, path = RepoRef("org/m", "dataset"), "/api/datasets/org/m"
    info.answers[path] = _info("org/m", gated=False, private=False)
    cache = VisibilityCache(tmp_path, 0, False, info)
    assert not cache.lookup(repo).restricted  # type: ignore[union-attr]
    info.answers[path] = (404, b"{}", {"X-Error-Code": "RepoNotFound"})
    assert cache.lookup(repo).restricted  # type: ignore[union-attr]
    info.answers[path] = (503, b"", {})  # an error says nothing: the last record stays
    assert cache.lookup(repo).restricted  # type: ignore[union-attr]
    info.answers[path] = _info("org/renamed", gated=False, private=True)
    record = cache.lookup(repo)
    assert record is not None and record.private and record.repo_id == "org/renamed"


# -- a client's own HF token, checked upstream -------------------------------------------------

UP = "http://upstream.test"
CDN = "http://cdn.test/blob?sig=1"


@responses.activate
def test_a_client_token_is_checked_on_upstream_only_and_kept_briefly() -> None:
    check = ClientTokenCheck(UP, requests.Session, (2, 2))
    repo = RepoRef("org/gated")
    path = "/org/gated/resolve/main/w.bin"
    responses.add(responses.HEAD, UP + path, status=302, headers={"Location": CDN})
    responses.add(responses.HEAD, UP + "/org/gated/resolve/main/x.bin", status=403)
    responses.add(responses.GET, UP + "/api/models/org/gated", status=404)
    assert check.cached("hf_good", repo, True) is None
    assert check.check("hf_good", repo, True, path) is True
    assert check.cached("hf_good", repo, True) is True
    assert check.check("hf_bad", repo, True, "/org/gated/resolve/main/x.bin") is False
    assert check.check("hf_good", repo, False, path) is False  # the repo info said no
    assert check.cached("hf_other", repo, True) is None
    assert all(c.request.url.startswith(UP) for c in responses.calls)  # never the CDN
    assert responses.calls[0].request.headers["Authorization"] == "Bearer hf_good"
    assert not any("hf_good" in str(k) for k in check._answers)  # kept by hash only


@responses.activate
def test_a_client_token_check_that_gets_no_clear_answer_is_an_error() -> None:
    check = ClientTokenCheck(UP, requests.Session, (2, 2))
    responses.add(responses.HEAD, UP + "/org/g/resolve/main/a", status=503)
    with pytest.raises(NetworkError):
        check.check("hf_x", RepoRef("org/g"), True, "/org/g/resolve/main/a")
    assert check.cached("hf_x", RepoRef("org/g"), True) is None


def test_tokens_file_permissions_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"alice {TOKEN_A}\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, "hfpull.serve"):
        TokensFile(path)
    assert "readable by every user" in caplog.text
