"""Single HTTP exchanges with `responses`: redirects, token scope, error mapping."""

from __future__ import annotations

import pytest
import requests
import responses

from hfpull.errors import (
    GatedRepoError,
    InvalidTokenError,
    NetworkError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from hfpull.hub.http import BodyReader, error_from_response, origin, request_following_redirects

HUB = "https://hub.example"
CDN = "https://cdn.example"


@responses.activate
def test_token_goes_to_the_origin_but_never_across_a_redirect() -> None:
    responses.get(
        f"{HUB}/org/m/resolve/abc/w.bin", status=302, headers={"Location": f"{CDN}/blob?sig=1"}
    )
    responses.get(f"{CDN}/blob?sig=1", body=b"data")
    session = requests.Session()
    response = request_following_redirects(
        session,
        "GET",
        f"{HUB}/org/m/resolve/abc/w.bin",
        token="hf_secret",
        trusted_origin=origin(HUB),
    )
    assert response.content == b"data" and response.url == f"{CDN}/blob?sig=1"
    first, second = responses.calls
    assert first.request.headers["Authorization"] == "Bearer hf_secret"
    assert "Authorization" not in second.request.headers


@responses.activate
def test_same_origin_redirect_keeps_the_token() -> None:
    responses.get(
        f"{HUB}/old/m/resolve/x/f", status=307, headers={"Location": "/new/m/resolve/x/f"}
    )
    responses.get(f"{HUB}/new/m/resolve/x/f", body=b"ok")
    request_following_redirects(
        requests.Session(), "GET", f"{HUB}/old/m/resolve/x/f", token="t", trusted_origin=origin(HUB)
    )
    assert all(c.request.headers["Authorization"] == "Bearer t" for c in responses.calls)


@responses.activate
def test_https_to_http_downgrade_is_refused() -> None:
    responses.get(f"{HUB}/f", status=302, headers={"Location": "http://cdn.example/f"})
    with pytest.raises(NetworkError, match="https to plain http"):
        request_following_redirects(
            requests.Session(), "GET", f"{HUB}/f", token="t", trusted_origin=origin(HUB)
        )


@responses.activate
def test_redirect_loop_stops() -> None:
    responses.get(f"{HUB}/a", status=302, headers={"Location": "/b"})
    responses.get(f"{HUB}/b", status=302, headers={"Location": "/a"})
    with pytest.raises(NetworkError, match="too many redirects"):
        request_following_redirects(
            requests.Session(), "GET", f"{HUB}/a", token=None, trusted_origin=origin(HUB)
        )


def _error(status: int, headers: dict[str, str], url: str = f"{HUB}/api/models/o/m") -> object:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers)
    response.url = url
    return error_from_response(response, "o/m")


def test_error_mapping_follows_x_error_code() -> None:
    assert isinstance(_error(404, {"X-Error-Code": "RevisionNotFound"}), RevisionNotFoundError)
    assert isinstance(_error(401, {"X-Error-Code": "RepoNotFound"}), RepoNotFoundError)
    assert isinstance(_error(403, {"X-Error-Code": "GatedRepo"}), GatedRepoError)
    invalid = _error(401, {"X-Error-Message": "Invalid credentials in Authorization header"})
    assert isinstance(invalid, InvalidTokenError)
    for transient in (429, 500, 502, 503, 504, 408):
        assert _error(transient, {}) is None


@responses.activate
def test_body_reader_on_another_transport_reads_the_whole_body_in_buffer_sized_parts() -> None:
    # responses' bodies are not http.client's: the reader takes urllib3's own path.
    body = bytes(range(256)) * 40  # 10,240 bytes
    responses.add(responses.GET, "https://cdn.example/blob", body=body)
    response = requests.get("https://cdn.example/blob", stream=True, timeout=5)
    reader = BodyReader(response)
    buffer = memoryview(bytearray(4096))
    got = bytearray()
    while count := reader.readinto(buffer):
        assert count <= len(buffer)
        got += buffer[:count]
    reader.finish()
    assert bytes(got) == body
