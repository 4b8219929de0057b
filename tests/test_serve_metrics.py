"""Observability of hfpull serve: /metrics counts what clients did, the status page shows it.

A real ``hfpull serve`` in front of the fake Hub, a known sequence of requests, then exact
counts and byte sums from ``/metrics`` (parsed with prometheus_client's own parser) and the
status page parsed with ``html.parser``; tokens must appear in neither.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hfpull.serve.metrics import Metrics, RecentError, Totals, Window, redact, route_kind
from hfpull.serve.status import FillRow, RepoRow, StatusView, render
from tests.conftest import ROOT
from tests.fakehub import FakeHub, Fault
from tests.helpers import MiB
from tests.serve_helpers import running_mirror

UPSTREAM_TOKEN = "hf_upstreamsecret0123456789"
CLIENT_TOKEN = "hf_clientsecret9876543210"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[Samples, str]:
    response = requests.get(url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    text = response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Page(HTMLParser):
    """``data-field`` texts (page-wide and per table row) and the rows by class."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.rows: list[tuple[str, dict[str, str]]] = []
        self.ids: set[str] = set()
        self._open: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(str(attributes["id"]))
        if tag == "tr":
            self.rows.append((str(attributes.get("class") or ""), {}))
        field = attributes.get("data-field")
        if field:
            self._open.append(field)
            self._set(field, "")
            if tag == "data":  # <data value=...>: the exact figure beside the shown one
                self._set(field, str(attributes.get("value")))
                self._open[-1] = ""

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1]:
            field = self._open[-1]
            self._set(field, self._get(field) + data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("span", "td", "b", "data") and self._open:
            self._open.pop()

    def _get(self, field: str) -> str:
        return self.rows[-1][1].get(field, "") if self.rows else self.fields.get(field, "")

    def _set(self, field: str, text: str) -> None:
        if self.rows:
            self.rows[-1][1][field] = text
        self.fields[field] = text

    def rows_of(self, kind: str) -> list[dict[str, str]]:
        return [cells for cls, cells in self.rows if cls == kind]


def status_page(url: str, headers: dict[str, str] | None = None) -> tuple[Page, str]:
    response = requests.get(url + "/", headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    return Page(response.text), response.text


def test_metrics_and_the_status_page_count_exactly_what_clients_did(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    weights = os.urandom(300_000)
    fake_hub.add_repo("org/private", {"w.safetensors": weights, "config.json": b"{}"},
                      private=True)  # fmt: skip
    fake_hub.tokens[UPSTREAM_TOKEN] = {"org/private"}
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {CLIENT_TOKEN} org/private\n")  # a mirror token granted the repo
    tokens.chmod(0o600)
    with running_mirror(
        tmp_path, fake_hub.url, "--upstream-token", UPSTREAM_TOKEN, "--auth-tokens", str(tokens)
    ) as url:
        auth = {"Authorization": f"Bearer {CLIENT_TOKEN}"}
        file_url = f"{url}/org/private/resolve/main/w.safetensors"
        api_url = f"{url}/api/models/org/private/revision/main"
        answers = [requests.get(file_url, headers=auth, timeout=30) for _ in range(3)]
        ranged = requests.get(file_url, headers={**auth, "Range": "bytes=10-1009"}, timeout=30)
        missing = requests.get(f"{url}/org/private/resolve/main/nope.bin", headers=auth, timeout=30)
        info = requests.get(api_url, headers=auth, timeout=30)
        fake_hub.stop()  # upstream gone: the revision answer is served STALE
        stale = requests.get(api_url, headers={**auth, "Cache-Control": "no-cache"}, timeout=30)
        samples, text = scrape(url, auth)
        page, html = status_page(url, auth)

    assert [a.headers["X-Cache"] for a in answers] == ["MISS", "HIT", "HIT"]
    assert all(a.content == weights for a in answers)
    assert ranged.status_code == 206 and ranged.headers["X-Cache"] == "HIT"
    assert ranged.content == weights[10:1010]
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    assert info.headers["X-Cache"] == "MISS" and stale.headers["X-Cache"] == "STALE"

    def requests_total(route: str, status: str) -> float:
        return value(samples, "hfpull_http_requests_total", route=route, status=status)

    assert requests_total("resolve", "200") == 3
    assert requests_total("resolve", "206") == 1
    assert requests_total("resolve", "404") == 1
    assert requests_total("api", "200") == 2

    def cache(route: str, result: str) -> tuple[float, float]:
        labels = {"route": route, "result": result}
        return (
            value(samples, "hfpull_cache_requests_total", **labels),
            value(samples, "hfpull_cache_bytes_total", **labels),
        )

    assert cache("resolve", "miss") == (1, len(weights))
    assert cache("resolve", "hit") == (3, 2 * len(weights) + 1000)
    assert cache("resolve", "stale") == (0, 0)
    assert cache("api", "miss") == (1, len(info.content))
    assert cache("api", "stale") == (1, len(stale.content))
    resolve_body = 3 * len(weights) + 1000 + len(missing.content)
    assert value(samples, "hfpull_http_response_body_bytes_total", route="resolve") == resolve_body
    assert value(samples, "hfpull_errors_total", kind="EntryNotFound") == 1

    # upstream: exactly what the fake Hub sent (its count is of 2xx bodies; all were 2xx)
    hub_api = [r for r in fake_hub.requests if r.server == "hub" and "/api/" in r.path]
    assert hub_api and all(r.status == 200 for r in hub_api)
    assert value(samples, "hfpull_upstream_bytes_total", kind="file") == fake_hub.bytes_sent(
        "/cdn/"
    ) == len(weights)  # fmt: skip
    assert value(samples, "hfpull_upstream_bytes_total", kind="api") == fake_hub.bytes_sent(
        "/api/"
    )  # fmt: skip
    assert value(samples, "hfpull_upstream_api_requests_total", status="200") == len(hub_api)
    api_latency = "hfpull_upstream_latency_seconds_count"
    assert value(samples, api_latency, kind="api") == len(hub_api)
    assert value(samples, api_latency, kind="fill_first_byte") == 1

    assert value(samples, "hfpull_fills_started_total") == 1
    assert value(samples, "hfpull_fills_in_progress") == 0
    assert value(samples, "hfpull_responses_in_flight") == 1  # the scrape itself
    assert value(samples, "hfpull_store_blobs") == 1
    assert value(samples, "hfpull_store_bytes") == len(weights)

    # the status page: the repo, the last hour's ratios, the error
    (repo,) = page.rows_of("repo")
    assert repo["repo"] == "org/private" and repo["size"] == "293.0 KiB"
    assert repo["last-use"] == "just now"
    # 6 answers carried X-Cache; 3 hits and 1 stale came from the store
    assert page.fields["answers-hour"] == "6"
    assert page.fields["hit-ratio-requests-hour"] == "66.7%"
    saved = 2 * len(weights) + 1000 + len(stale.content)
    sent = saved + len(weights) + len(info.content)
    assert page.fields["hit-ratio-bytes-hour"] == f"{saved / sent:.1%}"
    upstream = (len(weights) + fake_hub.bytes_sent("/api/")) / 1024
    assert page.fields["upstream-hour"] == f"{upstream:.1f} KiB"
    (error,) = page.rows_of("error")
    assert (error["route"], error["status"], error["code"]) == ("resolve", "404", "EntryNotFound")
    assert "nope.bin" in error["message"]
    assert page.fields["upstream"] == fake_hub.url

    for secret in (UPSTREAM_TOKEN, CLIENT_TOKEN):
        assert secret not in text and secret not in html


def test_a_fill_in_progress_shows_on_the_status_page_and_in_the_gauges(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    data = os.urandom(4 * MiB)
    fake_hub.add_repo("org/big", {"w.safetensors": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=256 * 1024))
    received: list[bytes] = []
    with running_mirror(tmp_path, fake_hub.url) as url:
        client = threading.Thread(
            target=lambda: received.append(
                requests.get(f"{url}/org/big/resolve/main/w.safetensors", timeout=60).content
            )
        )
        client.start()
        deadline = time.monotonic() + 30
        while True:
            page, _ = status_page(url)
            fills = page.rows_of("fill")
            if fills and int(fills[0]["done"]) > 0:
                break
            assert time.monotonic() < deadline, "no fill with bytes showed on the page"
            time.sleep(0.05)
        samples, _ = scrape(url)
        client.join(60)
        after, _ = status_page(url)
        samples_after, _ = scrape(url)

    (fill,) = fills
    assert (fill["repo"], fill["path"], fill["total"]) == ("org/big", "w.safetensors", str(4 * MiB))
    assert 0 < int(fill["done"]) < 4 * MiB
    assert page.fields["fills-now"] == "1"
    assert value(samples, "hfpull_fills_in_progress") == 1
    assert value(samples, "hfpull_responses_in_flight") == 2  # the client and the scrape
    assert received == [data]
    assert after.rows_of("fill") == [] and "no-fills" in after.ids
    assert value(samples_after, "hfpull_fills_in_progress") == 0
    assert value(samples_after, "hfpull_responses_in_flight") == 1


def test_a_body_the_mirror_cuts_counts_as_a_stream_cut_with_the_bytes_it_sent(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    data = os.urandom(3 * MiB)
    fake_hub.add_repo("org/bad", {"w.safetensors": data})
    fake_hub.faults.append(Fault("flip", match="/cdn/", after_bytes=2 * MiB + 5))  # always
    received = 0
    with running_mirror(tmp_path, fake_hub.url) as url:
        with pytest.raises(requests.RequestException):  # cut, never a clean end
            with requests.get(f"{url}/org/bad/resolve/main/w.safetensors", stream=True,
                              timeout=60) as response:  # fmt: skip
                for chunk in response.iter_content(1 << 14):
                    received += len(chunk)
        deadline = time.monotonic() + 30
        while True:
            samples, _ = scrape(url)
            if value(samples, "hfpull_errors_total", kind="StreamCut"):
                break
            assert time.monotonic() < deadline, "the cut never showed in /metrics"
            time.sleep(0.05)
        page, _ = status_page(url)
    assert value(samples, "hfpull_errors_total", kind="StreamCut") == 1
    assert value(samples, "hfpull_http_requests_total", route="resolve", status="200") == 1
    sent = value(samples, "hfpull_cache_bytes_total", route="resolve", result="miss")
    assert received <= sent < len(data)  # what went out, not the Content-Length
    assert [e["code"] for e in page.rows_of("error")] == ["StreamCut"]


def test_the_documented_alerts_and_queries_name_metrics_and_kinds_the_mirror_exports(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    """docs/examples/hfpull-alerts.yml and the PromQL in docs/mirror.md cannot rot."""
    fake_hub.add_repo("org/m", {"w.bin": os.urandom(5000)})
    with running_mirror(tmp_path, fake_hub.url) as url:
        assert requests.get(f"{url}/org/m/resolve/main/w.bin", timeout=30).ok
        assert requests.get(f"{url}/org/m/resolve/main/nope", timeout=30).status_code == 404
        samples, _ = scrape(url)
    exported = {name for name, _ in samples}
    exported |= {re.sub(r"_(bucket|count|sum)$", "", name) for name in exported}  # histograms
    docs = ROOT / "docs"
    texts = [
        (docs / "examples" / "hfpull-alerts.yml").read_text(),
        (docs / "mirror.md").read_text(),
    ]
    named = {n for text in texts for n in re.findall(r"\bhfpull_[a-z_]+\b", text)}
    named -= {"hfpull_serve"}  # not a metric: the docs' name for things
    assert named and named <= exported, f"documented but not exported: {named - exported}"
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "hfpull" / "serve").glob("*.py"))
    kinds = {
        kind
        for text in texts
        for group in re.findall(r'kind=~?"([^"]+)"', text)
        for kind in group.split("|")
    }
    assert kinds and all(f'"{kind}"' in source for kind in kinds), kinds


def test_a_client_that_leaves_mid_body_counts_as_499_with_the_bytes_it_got(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    data = os.urandom(2 * MiB)
    fake_hub.add_repo("org/slow", {"w.safetensors": data})
    fake_hub.faults.append(Fault("throttle", match="/cdn/", rate=256 * 1024))
    with running_mirror(tmp_path, fake_hub.url) as url:
        with requests.get(f"{url}/org/slow/resolve/main/w.safetensors", stream=True,
                          timeout=60) as response:  # fmt: skip
            assert len(response.raw.read(1 << 16)) == 1 << 16
        deadline = time.monotonic() + 30
        while True:
            samples, _ = scrape(url)
            if value(samples, "hfpull_errors_total", kind="ClientDisconnected"):
                break
            assert time.monotonic() < deadline, "the departure never showed in /metrics"
            time.sleep(0.05)
    assert value(samples, "hfpull_http_requests_total", route="resolve", status="499") == 1
    assert value(samples, "hfpull_responses_in_flight") == 1  # the scrape only
    assert 1 << 16 <= value(samples, "hfpull_cache_bytes_total", route="resolve",
                            result="miss") < len(data)  # fmt: skip


def test_no_metrics_turns_the_counting_off(tmp_path: Path, fake_hub: FakeHub) -> None:
    with running_mirror(tmp_path, fake_hub.url, "--no-metrics") as url:
        off = requests.get(url + "/metrics", timeout=10)
        page, _ = status_page(url)
    assert off.status_code == 404 and off.headers["X-Error-Code"] == "EntryNotFound"
    assert "answers-hour" not in page.fields and "store-bytes" in page.fields


# -- units ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/", "status"),
        ("/metrics", "metrics"),
        ("/healthz", "healthz"),
        ("/org/m/resolve/main/a.bin", "resolve"),
        ("/datasets/org/d/resolve/main/tree/x", "resolve"),
        ("/api/models/org/m/revision/main", "api"),
        ("/api/models/org/m", "api"),
        ("/api/models/org/m/tree/main/sub", "tree"),
        ("/api/datasets/org/d/paths-info/main", "paths-info"),
        ("/favicon.ico", "other"),
        ("/org/secret-repo-name", "other"),
    ],
)
def test_route_labels_are_kinds_never_names(path: str, kind: str) -> None:
    assert route_kind(path) == kind


def test_error_codes_from_upstream_cannot_grow_the_label_set() -> None:
    metrics = Metrics()
    assert metrics._error_kind("EntryNotFound") == "EntryNotFound"
    assert metrics._error_kind("hf_x y") == "Other"  # not code-shaped
    kinds = {metrics._error_kind(f"Code{i}") for i in range(500)}
    assert len(kinds) <= 64 + 1 and "Other" in kinds


def test_the_window_forgets_after_an_hour_and_a_day() -> None:
    now = [1_000_000.0]
    window = Window(lambda: now[0])
    window.answer("hit", 100)
    window.upstream(7)
    now[0] += 30 * 60
    window.answer("miss", 50)
    assert window.last(60) == Totals(hit=1, miss=1, hit_bytes=100, miss_bytes=50, upstream_bytes=7)
    now[0] += 40 * 60  # the first minute is now more than an hour old
    assert window.last(60) == Totals(miss=1, miss_bytes=50)
    assert window.last(1440).hit == 1
    now[0] += 24 * 3600
    assert window.last(1440) == Totals()


def test_tokens_are_redacted_from_error_messages() -> None:
    assert redact("upstream said hf_abcdefghijkl and Bearer s3cr3t!") == (
        "upstream said [redacted] and [redacted]"
    )


def test_the_page_escapes_everything_it_shows() -> None:
    hostile = "<script>alert(1)</script>"
    view = StatusView(
        now=time.time(), upstream="http://h", offline=False, uptime=5, store_bytes=0,
        store_blobs=0, metrics_on=True, hour=Totals(), day=Totals(),
        repos=[RepoRow("model", hostile, (hostile,), 1, 1, 1, 10, time.time())],
        fills=[FillRow(hostile, hostile, 1, 2, time.time())],
        errors=[RecentError(time.time(), "resolve", 404, "EntryNotFound", hostile)],
    )  # fmt: skip
    text = render(view)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert '<meta name="viewport"' in text


# -- a real browser ---------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.mark.slow
def test_the_status_page_renders_in_headless_chromium_at_phone_width(
    tmp_path: Path, fake_hub: FakeHub
) -> None:
    if not (shutil.which("chromium") or os.path.exists(CHROMIUM)):
        pytest.fail("chromium is not installed: apt-get install -y chromium (Debian)")
    fake_hub.add_repo("org/model", {"model.safetensors": os.urandom(200_000), "c.json": b"{}"})
    with running_mirror(tmp_path, fake_hub.url) as url:
        for _ in range(3):
            requests.get(f"{url}/org/model/resolve/main/model.safetensors", timeout=30)
        requests.get(f"{url}/org/model/resolve/main/missing.bin", timeout=30)
        shot = tmp_path / "page.png"
        flags = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}",
            "--window-size=390,844", "--hide-scrollbars",
        ]  # fmt: skip
        subprocess.run([*flags, f"--screenshot={shot}", url + "/"], capture_output=True,
                       timeout=120, check=True)  # fmt: skip
        dom = subprocess.run([*flags, "--dump-dom", url + "/"], capture_output=True, text=True,
                             timeout=120, check=True).stdout  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 10_000  # a rendered page, not a blank one
    page = Page(dom)
    assert [row["repo"] for row in page.rows_of("repo")] == ["org/model"]
    assert page.rows_of("error")[0]["code"] == "EntryNotFound"
    assert page.fields["hit-ratio-requests-hour"] == "66.7%"
    if os.environ.get("HFPULL_SAVE_SCREENSHOT"):
        shutil.copy(shot, os.environ["HFPULL_SAVE_SCREENSHOT"])
