"""Routes of the hub listener: repo info, tree listing, resolve and search."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote, unquote, urlencode

from .replies import Reply, Request, error_reply, json_reply, not_found, text_reply
from .store import Commit, Entry, Repo

if TYPE_CHECKING:
    from .server import FakeHub

PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"datasets": "dataset", "spaces": "space"}
TRUE = ("1", "true", "True")


@dataclass(frozen=True)
class Auth:
    has_header: bool
    allowed: frozenset[str]  # gated/private repo ids the token may access


class HubApi:
    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.store = hub.store

    def route(self, req: Request, applied: list[str]) -> Reply:
        segs = req.segments
        paths_info = req.method == "POST" and len(segs) > 4 and segs[4] == "paths-info"
        if req.method not in ("GET", "HEAD") and not paths_info:
            return not_found()
        if segs[:2] == ["api", "agent-harnesses"]:
            return not_found()
        auth = self._auth(req)
        if isinstance(auth, Reply):
            return auth
        if segs[0] == "api":
            return self._api(req, segs[1:], auth)
        return self._resolve(req, segs, auth, applied)

    # -- auth & repo access -------------------------------------------------------------

    def _auth(self, req: Request) -> Auth | Reply:
        header = req.headers.get("authorization")
        if header is None:
            return Auth(False, frozenset())
        scheme, _, token = header.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else header.strip()
        tokens = self.hub.tokens
        if token not in tokens:
            # X-Error-Code deliberately absent, like the real Hub.
            return error_reply(401, None, "Invalid credentials in Authorization header")
        return Auth(True, frozenset(tokens[token]))

    def _open_repo(
        self, repo_type: str, repo_id: str, auth: Auth, before: str, after: str, files: bool
    ) -> Repo | Reply:
        """The repo if visible to `auth`, else the error (or rename redirect) to answer.

        As on the real Hub, a gated repo's info and file list are public; only its files
        (`files=True`: resolve) need access."""
        found = self.store.lookup(repo_type, repo_id)
        if isinstance(found, str):
            location = before + quote(found, safe="/") + after
            return Reply(
                307,
                {"Location": location, "Content-Type": "text/plain; charset=utf-8"},
                f"Temporary Redirect. Redirecting to {location}".encode(),
            )
        allowed = repo_id in auth.allowed
        if found is None or (found.private and not allowed):
            message = "Repository not found"
            return error_reply(404 if auth.has_header else 401, "RepoNotFound", message)
        if files and found.gated and not allowed:
            message = (
                f"Access to {repo_type} {repo_id} is restricted. You must have access to it "
                "and be authenticated to access it. Please log in."
            )
            return error_reply(403 if auth.has_header else 401, "GatedRepo", message)
        return found

    def _commit(self, repo: Repo, rev: str) -> Commit | Reply:
        commit = self.store.resolve(repo, rev)
        if commit is None:
            return error_reply(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return commit

    # -- /api/... ---------------------------------------------------------------------------

    def _api(self, req: Request, segs: list[str], auth: Auth) -> Reply:
        if not segs or segs[0] not in PLURALS:
            return not_found()
        repo_type, rest = PLURALS[segs[0]], segs[1:]
        if not rest or rest == [""]:
            return self._search(req, repo_type, auth)
        if len(rest) < 2 or (
            len(rest) > 2 and rest[2] not in ("revision", "tree", "paths-info", "refs")
        ):
            return not_found()
        repo_id = f"{unquote(rest[0])}/{unquote(rest[1])}"
        after = req.raw_path[len(f"/api/{segs[0]}/{rest[0]}/{rest[1]}") :]
        repo = self._open_repo(repo_type, repo_id, auth, f"/api/{segs[0]}/", after, files=False)
        if isinstance(repo, Reply):
            return repo
        tail = rest[2:]
        if tail == ["refs"]:
            return self._refs(req, repo)
        if not tail or tail[0] == "revision":
            rev = unquote("/".join(tail[1:])) if len(tail) > 1 else "main"
            commit = self._commit(repo, rev)
            return commit if isinstance(commit, Reply) else self._info(req, repo, commit)
        if len(tail) < 2 or not tail[1]:
            return not_found()
        commit = self._commit(repo, unquote(tail[1]))
        if isinstance(commit, Reply):
            return commit
        if tail[0] == "paths-info":
            return self._paths_info(req, commit)
        base = "/".join(unquote(s) for s in tail[2:] if s)
        return self._tree(req, commit, base)

    def _info(self, req: Request, repo: Repo, commit: Commit) -> Reply:
        blobs = req.query.get("blobs") in TRUE
        siblings = [_sibling(e, blobs, self.hub.xet) for e in commit.files.values()]
        if self.hub.siblings_limit is not None:
            siblings = siblings[: self.hub.siblings_limit]
        info = _summary(repo, commit)
        info.update(
            siblings=siblings,
            usedStorage=sum(e.blob.size for e in commit.files.values()),
        )
        return json_reply(info)

    def _tree(self, req: Request, commit: Commit, base: str) -> Reply:
        listing = commit.listing(base, recursive=req.query.get("recursive") in TRUE)
        if listing is None:
            return error_reply(
                404,
                "EntryNotFound",
                f"{base} does not exist on {commit.sha}",
                {"X-Repo-Commit": commit.sha},
            )
        cursor = req.query.get("cursor", "0")
        offset = int(cursor) if cursor.isdigit() else 0
        size = max(1, self.hub.page_size)
        page = listing[offset : offset + size]
        headers = {"X-Repo-Commit": commit.sha}
        if offset + size < len(listing):
            params = [(k, v) for k, v in req.query.items() if k != "cursor"]
            params.append(("cursor", str(offset + size)))
            next_url = f"{self.hub.url}{req.path}?{urlencode(params)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        items = [_tree_item(i, commit, self.hub.xet) for i in page]
        return json_reply(items, headers=headers)

    def _refs(self, req: Request, repo: Repo) -> Reply:
        def ref(name: str, sha: str) -> dict[str, str]:
            full = name if name.startswith("refs/") else f"refs/heads/{name}"
            return {"name": name, "ref": full, "targetCommit": sha}

        refs = self.store.refs(repo)
        answer: dict[str, object] = {
            "branches": [ref(n, s) for n, s in refs.items() if not n.startswith("refs/")],
            "converts": [],
            "tags": [],
        }
        if req.query.get("include_prs") in TRUE:
            answer["pullRequests"] = [
                ref(n, s) for n, s in refs.items() if n.startswith("refs/pr/")
            ]
        return json_reply(answer)

    def _paths_info(self, req: Request, commit: Commit) -> Reply:
        if req.method != "POST":
            return error_reply(405, "MethodNotAllowed", "paths-info takes a POST form")
        form = parse_qs(req.body.decode("utf-8", "replace"))
        wanted = form.get("paths", [])
        items: list[dict[str, object]] = []
        for path in dict.fromkeys(p.strip("/") for p in wanted):
            entry = commit.files.get(path)
            if entry is not None:
                items.append(_tree_item(entry, commit, self.hub.xet))
            elif any(name.startswith(path + "/") for name in commit.files):
                items.append(_tree_item(path, commit))
        return json_reply(items, headers={"X-Repo-Commit": commit.sha})

    def _search(self, req: Request, repo_type: str, auth: Auth) -> Reply:
        needle = req.query.get("search", "").lower()
        author = req.query.get("author")
        found = []
        for repo in self.store.repos(repo_type):
            if needle not in repo.repo_id.lower():
                continue
            if author and repo.repo_id.split("/")[0] != author:
                continue
            if repo.private and repo.repo_id not in auth.allowed:
                continue
            head = self.store.head(repo)
            found.append(_summary(repo, head))
        limit = req.query.get("limit", "")
        if limit.isdigit():
            found = found[: int(limit)]
        return json_reply(found)

    # -- /{prefix}{org}/{name}/resolve/{rev}/{path} -----------------------------------------

    def _resolve(self, req: Request, segs: list[str], auth: Auth, applied: list[str]) -> Reply:
        repo_type, before = "model", "/"
        if segs and segs[0] in URL_PREFIXES:
            repo_type, before, segs = URL_PREFIXES[segs[0]], f"/{segs[0]}/", segs[1:]
        if len(segs) < 5 or segs[2] != "resolve" or "" in segs[:4] or "" in segs[4:]:
            return not_found()
        org, name, _, rev, *parts = segs
        after = req.raw_path[len(f"{before}{org}/{name}") :]
        repo_id = f"{unquote(org)}/{unquote(name)}"
        repo = self._open_repo(repo_type, repo_id, auth, before, after, files=True)
        if isinstance(repo, Reply):
            return repo
        commit = self._commit(repo, unquote(rev))
        if isinstance(commit, Reply):
            return commit
        entry = commit.files.get("/".join(unquote(p) for p in parts))
        if entry is None:
            headers = {"X-Repo-Commit": commit.sha}
            return error_reply(404, "EntryNotFound", "Entry not found", headers)
        if entry.lfs:
            return self._redirect_to_cdn(req, commit, entry, applied)
        headers = {
            "X-Repo-Commit": commit.sha,
            "ETag": f'"{entry.oid}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        return Reply(200, headers, entry.blob, etag=headers["ETag"])

    def _redirect_to_cdn(
        self, req: Request, commit: Commit, entry: Entry, applied: list[str]
    ) -> Reply:
        expire = self.hub.fault_book.take(req, ("expire",))
        if expire is not None:
            applied.append("expire")
            expires = f"{time.time() + expire.seconds:.3f}"
        else:
            expires = str(int(time.time() + self.hub.cdn_url_ttl))
        filename = entry.path.rsplit("/", 1)[-1]
        location = self.hub.signer.url(self.hub.cdn_url, entry.blob.sha256, expires, filename)
        reply = text_reply(302, f"Found. Redirecting to {location}")
        reply.headers.update(
            {
                "Location": location,
                "X-Repo-Commit": commit.sha,
                "X-Linked-Etag": f'"{entry.blob.sha256}"',
                "X-Linked-Size": str(entry.blob.size),
                "ETag": f'"{entry.oid}"',
            }
        )
        if self.hub.xet:
            token_route = f"{self.hub.url}/api/models/xet-read-token/{commit.sha}"
            reply.headers["X-Xet-Hash"] = _xet_hash(entry)
            reply.headers["Link"] = f'<{token_route}>; rel="xet-auth"'
        return reply


def _summary(repo: Repo, commit: Commit | None) -> dict[str, object]:
    org = repo.repo_id.split("/")[0]
    return {
        "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
        "id": repo.repo_id,
        "author": org,
        "sha": commit.sha if commit else None,
        "lastModified": commit.date if commit else None,
        "private": repo.private,
        "gated": "auto" if repo.gated else False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
    }


def _xet_hash(entry: Entry) -> str:
    return hashlib.sha256(b"xet:" + entry.blob.sha256.encode()).hexdigest()


def _sibling(entry: Entry, blobs: bool, xet: bool = False) -> dict[str, object]:
    item: dict[str, object] = {"rfilename": entry.path}
    if blobs:
        item.update(size=entry.blob.size, blobId=entry.oid)
        if entry.lfs:
            item["lfs"] = {
                "size": entry.blob.size,
                "sha256": entry.blob.sha256,
                "pointerSize": entry.pointer_size,
            }
            if xet:
                item["xetHash"] = _xet_hash(entry)
    return item


def _tree_item(item: Entry | str, commit: Commit, xet: bool = False) -> dict[str, object]:
    if isinstance(item, str):
        oid = hashlib.sha1(f"tree {commit.sha}:{item}".encode()).hexdigest()
        return {"type": "directory", "oid": oid, "path": item}
    out: dict[str, object] = {
        "type": "file",
        "oid": item.oid,
        "size": item.blob.size,
        "path": item.path,
    }
    if item.lfs:
        out["lfs"] = {
            "oid": item.blob.sha256,
            "size": item.blob.size,
            "pointerSize": item.pointer_size,
        }
        if xet:
            out["xetHash"] = _xet_hash(item)
    return out
