"""The status page at ``/``: one server-rendered HTML page, readable on a phone, no script.

Cached repos (from the metadata cache's snapshots and the store), the share of answers and
bytes served from the store over the last hour and day, fills in progress, recent errors.
Every text that reaches the page goes through ``html.escape``; no request header, token or
upstream credential is ever shown (error messages are redacted once more on top).

On an object store the page must answer when the store is down or hangs: it asks the
store's state first (a probe with a short timeout), and while the store is down it shows the
figures and repo list it last read, with the store marked down, instead of reading it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from hfpull.blobstore.objects import StoreUnavailable
from hfpull.hub.http import host_of
from hfpull.names import COMMIT_RE
from hfpull.serve.metrics import RecentError, Totals
from hfpull.version import __version__

if TYPE_CHECKING:
    from hfpull.serve.app import Mirror

CENSUS_REFRESH = 10.0  # seconds the repo list (a walk of meta/ and blob sizes) is reused
REFRESH_PAGE = 15  # the page reloads itself (a meta refresh, no script)
GATHER_TIMEOUT = 3.0  # seconds the page waits on the store before showing what it has


@dataclass(frozen=True)
class RepoRow:
    repo_type: str
    repo_id: str
    revisions: tuple[str, ...]  # branch and tag names (commits are counted, not listed)
    commits: int
    files: int
    stored_files: int
    stored_bytes: int
    last_use: float


@dataclass(frozen=True)
class FillRow:
    repo: str
    path: str
    done: int
    total: int
    started: float


@dataclass
class StatusView:
    now: float
    upstream: str
    offline: bool
    uptime: float
    store_bytes: int
    store_blobs: int
    metrics_on: bool
    hour: Totals
    day: Totals
    repos: list[RepoRow] = field(default_factory=list)
    fills: list[FillRow] = field(default_factory=list)
    errors: list[RecentError] = field(default_factory=list)
    store: str = ""  # the object store's name ("" on local disk)
    store_down: bool = False


class _Census:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = -CENSUS_REFRESH
        self.rows: list[RepoRow] = []


_censuses: weakref.WeakKeyDictionary[Mirror, _Census] = weakref.WeakKeyDictionary()


async def status_answer(request: web.Request, mirror: Mirror) -> web.Response:
    if request.method not in ("GET", "HEAD"):
        return web.json_response(
            {"error": f"{request.method} is not served"}, status=405,
            headers={"X-Error-Code": "MethodNotAllowed"},
        )  # fmt: skip
    up = await mirror.store_state.up(mirror.blocking)
    try:
        view = await asyncio.wait_for(mirror.blocking(gather, mirror, up), GATHER_TIMEOUT)
    except (TimeoutError, StoreUnavailable):  # down since the probe: what memory has
        view = await mirror.blocking(gather, mirror, False)
    return web.Response(
        text=render(view), content_type="text/html", charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )  # fmt: skip


def gather(mirror: Mirror, store_up: bool = True) -> StatusView:
    """Everything the page shows; blocking (walks the store), so run it in a thread.
    ``store_up`` False: the store is not read (last figures, last repo list)."""
    metrics = mirror.metrics
    now = time.time()
    figures = metrics.store
    if figures is None:
        store_bytes, store_blobs = 0, 0
    else:
        store_bytes, store_blobs = figures.get() if store_up else figures.last()
    view = StatusView(
        now=now,
        upstream=_safe_url(mirror.config.settings.endpoint),
        offline=mirror.config.offline,
        uptime=now - metrics.started,
        store_bytes=store_bytes,
        store_blobs=store_blobs,
        metrics_on=metrics.enabled,
        hour=metrics.window.last(60),
        day=metrics.window.last(1440),
        store=mirror.config.store_label or ("object store" if mirror.objects else ""),
        store_down=not store_up,
    )
    view.repos = _repos(mirror, store_up)
    for fill in mirror.fills.in_progress():
        origin = mirror.fill_origin.get(fill.file.etag)
        partial = fill.partial
        view.fills.append(
            FillRow(
                repo=origin[0].repo_id if origin is not None else "?",
                path=fill.file.path,
                done=partial.snapshot_done().total() if partial is not None else 0,
                total=fill.file.size,
                started=fill.started,
            )
        )
    view.errors = list(reversed(metrics.recent_errors))
    return view


def _repos(mirror: Mirror, store_up: bool = True) -> list[RepoRow]:
    census = _censuses.setdefault(mirror, _Census())
    if not store_up:  # no lock: a census stuck on the store may hold it
        rows = census.rows
    else:
        with census.lock:
            if time.monotonic() - census.at >= CENSUS_REFRESH:
                census.rows = _take_census(mirror)
                census.at = time.monotonic()
            rows = census.rows
    last_use = mirror.metrics.last_use
    return sorted(
        (_with_last_use(row, last_use.get((row.repo_type, row.repo_id), 0.0)) for row in rows),
        key=lambda row: -row.last_use,
    )


def _with_last_use(row: RepoRow, used: float) -> RepoRow:
    return row if used <= row.last_use else dataclasses.replace(row, last_use=used)


@dataclass
class _Seen:
    revisions: set[str] = field(default_factory=set)
    commits: set[str] = field(default_factory=set)
    files: dict[str, int] = field(default_factory=dict)  # blob -> size
    saved: float = 0.0


def _take_census(mirror: Mirror) -> list[RepoRow]:
    grouped: dict[tuple[str, str], _Seen] = {}
    for snapshot, saved_at in mirror.metadata.known_snapshots():
        seen = grouped.setdefault((snapshot.repo.repo_type, snapshot.repo.repo_id), _Seen())
        if not COMMIT_RE.fullmatch(snapshot.revision):
            seen.revisions.add(snapshot.revision)
        seen.commits.add(snapshot.commit)
        seen.files.update((f.etag, f.size) for f in snapshot.files)
        seen.saved = max(seen.saved, saved_at)
    rows = []
    size_of: Callable[[str], int | None] = mirror.store.size
    if not mirror.local:  # one listing, not a HEAD per file (an object store bills both)
        size_of = dict(mirror.store.keys()).get
    for (repo_type, repo_id), seen in grouped.items():
        stored = [size for etag, size in seen.files.items() if size_of(etag) == size]
        rows.append(
            RepoRow(
                repo_type=repo_type,
                repo_id=repo_id,
                revisions=tuple(sorted(seen.revisions)),
                commits=len(seen.commits),
                files=len(seen.files),
                stored_files=len(stored),
                stored_bytes=sum(stored),
                last_use=seen.saved,
            )
        )
    return rows


def _safe_url(url: str) -> str:
    """The upstream as scheme://host[:port]: never userinfo, a path or a query."""
    scheme = url.split("://", 1)[0] if "://" in url else "http"
    return f"{scheme}://{host_of(url)}"


# -- rendering (pure) -----------------------------------------------------------------------

CSS = """
:root{color-scheme:light dark;--line:#8884;--muted:#888}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:64rem;padding:.75rem}
h1{font-size:1.25rem;margin:.2rem 0}h2{font-size:1.05rem;margin:1.2rem 0 .4rem}
.muted{color:var(--muted)}.cards{display:grid;gap:.5rem;
grid-template-columns:repeat(auto-fit,minmax(9.5rem,1fr))}
.card{border:1px solid var(--line);border-radius:.5rem;padding:.45rem .6rem}
.card b{display:block;font-size:1.15rem}.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:.3rem .45rem;border-bottom:1px solid var(--line);
vertical-align:top}th{font-weight:600}td.n,th.n{text-align:right;white-space:nowrap}
td.path,.path{word-break:break-all}progress{width:100%;min-width:5rem}
.bad{color:#c0392b}
"""


def render(view: StatusView) -> str:
    e = html.escape
    mode = " (offline)" if view.offline else ""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{REFRESH_PAGE}">',
        "<title>hfpull serve</title>",
        f"<style>{CSS}</style></head><body>",
        "<header><h1>hfpull serve</h1>",
        f'<div class="muted">upstream <span data-field="upstream">{e(view.upstream)}</span>'
        f"{e(mode)} · up {e(_duration(view.uptime))} · v{e(__version__)} · "
        f"{e(_clock(view.now))} UTC</div>",
        *_store_line(view),
        "</header>",
        '<section class="cards">',
        _card("Store", _bytes(view.store_bytes), _count(view.store_blobs, "blob"), "store-bytes"),
        _card("Fills now", str(len(view.fills)), "from upstream", "fills-now"),
    ]
    if view.metrics_on:
        parts += [
            _card(
                "Answers from store",
                _ratio(view.hour.ratio()),
                f"last hour, of {view.hour.answers}",
                "card-hit-ratio-requests",
            ),
            _card(
                "Bytes from store",
                _ratio(view.hour.byte_ratio()),
                f"last hour, {_bytes(view.hour.saved_bytes)}",
                "card-hit-ratio-bytes",
            ),
        ]
    parts.append("</section>")
    parts += (
        _traffic(view)
        if view.metrics_on
        else ['<p class="muted">Metrics are off (--no-metrics): no traffic figures.</p>']
    )
    parts += _fills(view.fills, view.now)
    parts += _repo_table(view.repos, view.now)
    if view.metrics_on:
        parts += _errors(view.errors)
    parts.append(
        '<footer class="muted"><p>Prometheus: <a href="/metrics">/metrics</a> · '
        'health: <a href="/healthz">/healthz</a></p></footer></body></html>'
    )
    return "\n".join(parts)


def _store_line(view: StatusView) -> list[str]:
    if not view.store:
        return []
    state = (
        '<b class="bad" data-field="store-state">down</b> (figures below are the last read)'
        if view.store_down
        else '<span data-field="store-state">up</span>'
    )
    return [
        f'<div class="muted">store <span data-field="store">{html.escape(view.store)}</span>'
        f" · {state}</div>"
    ]


def _card(title: str, value: str, note: str, name: str) -> str:
    e = html.escape
    return (
        f'<div class="card"><span class="muted">{e(title)}</span>'
        f'<b data-field="{e(name)}">{e(value)}</b><span class="muted">{e(note)}</span></div>'
    )


def _traffic(view: StatusView) -> list[str]:
    """Measures down, spans across: narrow enough for a phone."""
    measures: list[tuple[str, str, Callable[[Totals], str]]] = [
        ("answers", "answers", lambda t: str(t.answers)),
        ("hit-ratio-requests", "from store", lambda t: _ratio(t.ratio())),
        ("hit-ratio-bytes", "bytes from store", lambda t: _ratio(t.byte_ratio())),
        ("saved", "upstream bytes saved", lambda t: _bytes(t.saved_bytes)),
        ("upstream", "fetched upstream", lambda t: _bytes(t.upstream_bytes)),
        ("stale", "stale answers", lambda t: str(t.stale)),
    ]
    rows = []
    for name, label, shown in measures:
        cells = "".join(
            f'<td class="n" data-field="{name}-{span}">{html.escape(shown(totals))}</td>'
            for span, totals in (("hour", view.hour), ("day", view.day))
        )
        rows.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    return [
        "<h2>Traffic</h2>",
        '<div class="scroll"><table id="traffic"><thead><tr><th></th>'
        '<th class="n">last hour</th><th class="n">last day</th></tr></thead><tbody>',
        *rows,
        "</tbody></table></div>",
        '<p class="muted">Answers with an X-Cache result; HIT and STALE come from the store.</p>',
    ]


def _fills(fills: Iterable[FillRow], now: float) -> list[str]:
    """One cell per fill, so a long file name wraps instead of squeezing the numbers."""
    e = html.escape
    rows = []
    for fill in fills:
        share = fill.done / fill.total if fill.total else 1.0
        rate = fill.done / max(now - fill.started, 1e-3)
        rows.append(
            f'<tr class="fill"><td><span data-field="repo">{e(fill.repo)}</span> · '
            f'<span class="path" data-field="path">{e(fill.path)}</span><br>'
            f'<progress max="{fill.total}" value="{fill.done}"></progress><br>'
            f'<data data-field="done" value="{fill.done}">{e(_bytes(fill.done))}</data> of '
            f'<data data-field="total" value="{fill.total}">{e(_bytes(fill.total))}</data>'
            f" ({share:.0%}) · {e(_bytes(int(rate)))}/s</td></tr>"
        )
    if not rows:
        return ["<h2>Fills in progress</h2>", '<p class="muted" id="no-fills">None.</p>']
    return [
        "<h2>Fills in progress</h2>",
        '<table id="fills"><tbody>',
        *rows,
        "</tbody></table>",
    ]


def _repo_table(repos: list[RepoRow], now: float) -> list[str]:
    e = html.escape
    rows = []
    for repo in repos:
        kind = "" if repo.repo_type == "model" else f"{repo.repo_type}: "
        names = ", ".join(repo.revisions)
        commits = _count(repo.commits, "commit")
        revisions = f"{names} · {commits}" if names else commits
        rows.append(
            f'<tr class="repo"><td><span data-field="repo">{e(kind + repo.repo_id)}</span>'
            f'<br><span class="muted">{e(revisions)}</span></td>'
            f'<td class="n" data-field="size">{e(_bytes(repo.stored_bytes))}</td>'
            f'<td class="n">{repo.stored_files}/{repo.files}</td>'
            f'<td class="n" data-field="last-use">{e(_ago(now - repo.last_use))}</td></tr>'
        )
    if not rows:
        return ["<h2>Cached repos</h2>", '<p class="muted">None yet.</p>']
    return [
        f"<h2>Cached repos ({len(rows)})</h2>",
        '<div class="scroll"><table id="repos"><thead><tr><th>repo</th>'
        '<th class="n">stored</th><th class="n">files</th><th class="n">last use</th>'
        "</tr></thead><tbody>",
        *rows,
        "</tbody></table></div>",
    ]


def _errors(errors: list[RecentError]) -> list[str]:
    e = html.escape
    rows = [
        f'<tr class="error"><td class="n">{e(_clock(err.time)[11:])}<br>'
        f'<span class="muted" data-field="route">{e(err.route)}</span> '
        f'<span data-field="status">{err.status}</span></td>'
        f'<td class="path"><b data-field="code" class="bad">{e(err.code)}</b><br>'
        f'<span data-field="message">{e(err.message)}</span></td></tr>'
        for err in errors
    ]
    if not rows:
        return ["<h2>Recent errors</h2>", '<p class="muted">None.</p>']
    return [
        f"<h2>Recent errors (last {len(rows)})</h2>",
        '<div class="scroll"><table id="errors"><thead><tr><th class="n">time (UTC)</th>'
        "<th>error</th></tr></thead><tbody>",
        *rows,
        "</tbody></table></div>",
    ]


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _ago(seconds: float) -> str:
    return "just now" if seconds < 5 else _duration(seconds) + " ago"
