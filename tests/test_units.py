"""Unit tests for pure pieces: names, Content-Range, Retry-After, intervals, backoff, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from hfpull.engine.partial import IntervalSet
from hfpull.errors import UnsafeInputError, UsageError
from hfpull.hashing import git_blob_sha1
from hfpull.hub.http import parse_content_range, parse_retry_after
from hfpull.hub.sources import RetryPolicy
from hfpull.names import check_repo_path, validate_repo_id, validate_revision
from hfpull.settings import default_cache_dir, from_environment, resolve_token

UNSAFE_NAMES = [
    "../x", "a/../../x", "/abs", "C:\\x", "C:x", "\\\\host\\share\\x", "a\\..\\x", "a\x00b",
    "", ".", "a//b", "a/", "line\nfeed", "esc\x1b[31m", "x" * 256, "CON", "nul.txt", "dir/aux.json",
    ".cache/huggingface/download/x.metadata", "trailing.", "trailing ",
]  # fmt: skip


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_unsafe_repo_paths_are_refused(name: str) -> None:
    with pytest.raises(UnsafeInputError):
        check_repo_path(name)


@pytest.mark.parametrize(
    "name",
    ["config.json", "dir/sub file#1.txt", "ünïcode/名前.bin", "-leading-dash", ".gitattributes"],
)
def test_ordinary_repo_paths_pass(name: str) -> None:
    assert check_repo_path(name) == name


@pytest.mark.parametrize("repo", ["org/model", "model", "Tencent-Hunyuan/HunyuanOCR", "a.b/c_d-e"])
def test_valid_repo_ids(repo: str) -> None:
    assert validate_repo_id(repo) == repo


@pytest.mark.parametrize(
    "repo", ["", "a/b/c", "../x", "org/..", "a--b/c", "org/.hidden", "o/x" + "y" * 96]
)
def test_invalid_repo_ids(repo: str) -> None:
    with pytest.raises(UsageError):
        validate_repo_id(repo)


@pytest.mark.parametrize("rev", ["main", "refs/pr/1", "v1.0", "feature/x", "a" * 40])
def test_valid_revisions(rev: str) -> None:
    assert validate_revision(rev) == rev


@pytest.mark.parametrize("rev", ["", "../../x", "main\n", "/main", "a//b", "a\\b", "x/.."])
def test_invalid_revisions(rev: str) -> None:
    with pytest.raises(UsageError):
        validate_revision(rev)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-9/100", (0, 9, 100)),
        ("bytes 90-99/100", (90, 99, 100)),
        ("bytes 5-5/*", (5, 5, None)),
        ("bytes 0-100/100", None),  # end beyond total
        ("bytes 9-0/100", None),
        ("bytes */100", None),
        ("bytes 0-9", None),
        ("items 0-9/100", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_content_range(
    value: str | None, expected: tuple[int, int, int | None] | None
) -> None:
    parsed = parse_content_range(value)
    assert (None if parsed is None else (parsed.start, parsed.end, parsed.total)) == expected


def _response(headers: dict[str, str]) -> requests.Response:
    response = requests.Response()
    response.status_code = 429
    response.headers.update(headers)
    return response


def test_retry_after_seconds_date_and_ratelimit() -> None:
    assert parse_retry_after(_response({"Retry-After": "7"})) == 7
    dated = _response(
        {"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT", "Date": "Wed, 21 Oct 2015 07:28:00 GMT"}
    )
    assert parse_retry_after(dated) == 30  # measured against the server's Date, not our clock
    assert parse_retry_after(_response({"RateLimit": '"api";r=0;t=55'})) == 55
    assert parse_retry_after(_response({})) is None


def test_interval_set_merges_and_finds_gaps() -> None:
    done = IntervalSet([(10, 20), (0, 5), (18, 30)])
    assert done.ranges == [(0, 5), (10, 30)]
    assert done.prefix_end() == 5
    assert done.missing(40) == [(5, 10), (30, 40)]
    done.add(5, 10)
    assert done.ranges == [(0, 30)] and done.total() == 30
    assert IntervalSet().missing(3) == [(0, 3)] and IntervalSet().prefix_end() == 0


def test_backoff_grows_caps_and_honours_retry_after() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0, retry_after_max=60.0)
    assert 0.5 <= policy.delay(1) <= 1.0
    assert 4.0 <= policy.delay(4) <= 8.0
    assert policy.delay(10) <= 8.0
    assert policy.delay(1, retry_after=20) == 20
    assert policy.delay(1, retry_after=1000) == 60


def test_git_blob_sha1_matches_git() -> None:
    # `printf 'hello\n' | git hash-object --stdin`
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_cache_dir_and_token_resolution(tmp_path: Path) -> None:
    assert default_cache_dir({"HF_HUB_CACHE": "/x/hub"}) == Path("/x/hub")
    assert default_cache_dir({"HF_HOME": "/h"}) == Path("/h/hub")
    assert default_cache_dir({"XDG_CACHE_HOME": "/xdg"}) == Path("/xdg/huggingface/hub")
    (tmp_path / "token").write_text("hf_stored\n")
    env = {"HF_HOME": str(tmp_path)}
    assert resolve_token(None, env) == "hf_stored"
    assert resolve_token(None, {**env, "HF_TOKEN": "hf_env"}) == "hf_env"
    assert resolve_token("hf_flag", {**env, "HF_TOKEN": "hf_env"}) == "hf_flag"
    assert resolve_token(None, {**env, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}) is None


def test_settings_sources_order_mirrors_first() -> None:
    settings = from_environment(
        {"HF_ENDPOINT": "http://origin/", "HFPULL_MIRRORS": "http://m1, http://m2/"}
    )
    assert settings.sources == ("http://m1", "http://m2", "http://origin")
    assert "token" not in repr(from_environment({"HF_TOKEN": "hf_secret"})).replace("token=", "")
    assert "hf_secret" not in repr(from_environment({"HF_TOKEN": "hf_secret"}))


def test_bad_closed_choices_through_the_api_are_usage_errors(tmp_path: Path) -> None:
    """Checked before any request: nothing listens on the endpoint, so a late check would
    surface as a NetworkError instead."""
    from hfpull.pack import pack
    from hfpull.pull import Session
    from hfpull.settings import Settings
    from hfpull.verify import verify_target

    settings = Settings(endpoint="http://127.0.0.1:9", cache_dir=tmp_path, max_retries=0)
    with pytest.raises(UsageError, match="invalid repo type 'models'"):
        Session("org/model", repo_type="models", settings=settings)
    with pytest.raises(UsageError, match="invalid repo type 'foo'"):
        verify_target("org/model", repo_type="foo", settings=settings)
    with pytest.raises(UsageError, match="unknown compression 'bz2'"):
        pack("org/model", tmp_path / "x.tar", compression="bz2", settings=settings)
