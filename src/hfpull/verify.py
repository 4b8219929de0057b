"""hfpull verify: prove a cached snapshot, a folder or an archive is exactly what was published.

Files are re-hashed (SHA-256 for LFS, git blob SHA-1 otherwise; sizes first) in parallel,
bounded by the cores. Missing and mismatched files always fail; extra files fail with
``--fail-on-extra``. A snapshot link pointing at the wrong blob counts as a mismatch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from hfpull.archive.manifest import Manifest, parse_manifest
from hfpull.cache.layout import CacheLayout
from hfpull.cache.offline import cached_commit, read_tree_listing
from hfpull.engine.plan import select
from hfpull.errors import IntegrityError, NetworkError, NotFoundError, UnsafeInputError, UsageError
from hfpull.hashing import HASH_THREADS, hash_file
from hfpull.lock import LockedRepo, read_lock
from hfpull.models import Plan, PlannedFile, RemoteFile, RepoRef
from hfpull.names import COMMIT_RE, validate_repo_id, validate_repo_type, validate_revision
from hfpull.pull import Session
from hfpull.settings import Settings, from_environment
from hfpull.unpack import read_archive, read_manifest_only

_IGNORED_PREFIXES = (".cache/huggingface/", ".git/")


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # missing | mismatch | wrong-link | extra | corrupt
    expected: str | None = None
    actual: str | None = None
    algorithm: str | None = None

    def describe(self) -> str:
        if self.kind in ("missing", "extra"):
            return f"{self.kind}: {self.path}"
        if self.kind == "corrupt":
            return f"corrupt archive: {self.actual}"
        detail = f"{self.algorithm} expected {self.expected}, got {self.actual}"
        return f"{self.kind}: {self.path} ({detail})"


@dataclass(frozen=True)
class VerifyReport:
    target: str
    repo: str | None
    commit: str | None
    checked: int
    problems: tuple[Problem, ...]

    def failures(self, fail_on_extra: bool = False) -> list[Problem]:
        return [p for p in self.problems if p.kind != "extra" or fail_on_extra]

    def intact(self, fail_on_extra: bool = False) -> bool:
        return not self.failures(fail_on_extra)


def verify_snapshot(
    cache: CacheLayout, commit: str, expected: Iterable[RemoteFile]
) -> VerifyReport:
    """Check ``snapshots/<commit>`` of a cached repo: links, blobs, hashes, extras."""
    root = cache.result_path(commit)
    files = list(expected)

    def check(file: RemoteFile) -> Problem | None:
        pointer = root / file.path
        if not os.path.lexists(pointer):
            return Problem(file.path, "missing")
        if pointer.is_symlink():
            target = os.path.normpath(os.path.join(pointer.parent, os.readlink(pointer)))
            if target != os.path.normpath(cache.blob_path(file)):
                actual = os.path.basename(target)
                return Problem(file.path, "wrong-link", file.etag, actual, "blob")
        return _check_content(pointer, file)

    problems = _run(check, files)
    problems += [Problem(p, "extra") for p in _extra_files(root, files)]
    return VerifyReport(str(root), cache.repo.repo_id, commit, len(files), tuple(problems))


def verify_folder(root: Path, expected: Iterable[RemoteFile], commit: str | None) -> VerifyReport:
    """Check plain files at their repo paths (a --local-dir download or an unpacked folder)."""
    files = list(expected)

    def check(file: RemoteFile) -> Problem | None:
        path = root / file.path
        if path.is_symlink() or not path.is_file():
            return Problem(file.path, "missing")
        return _check_content(path, file)

    problems = _run(check, files)
    problems += [Problem(p, "extra") for p in _extra_files(root, files)]
    return VerifyReport(str(root), None, commit, len(files), tuple(problems))


def verify_archive(source: IO[bytes], name: str) -> VerifyReport:
    """Read a whole archive, checking every member against its manifest; writes nothing."""
    try:
        contents = read_archive(source, staging=None, collect_mismatches=True)
    except (IntegrityError, UnsafeInputError) as error:
        return VerifyReport(name, None, None, 0, (Problem(name, "corrupt", actual=error.message),))
    manifest = contents.manifest
    problems = tuple(
        Problem(m.path, "mismatch", m.expected, m.actual, m.algorithm) for m in contents.mismatches
    )
    return VerifyReport(name, manifest.repo.repo_id, manifest.commit, len(manifest.files), problems)


def _check_content(path: Path, file: RemoteFile) -> Problem | None:
    size = os.stat(path).st_size
    if size != file.size:
        return Problem(file.path, "mismatch", f"{file.size} bytes", f"{size} bytes", "size")
    actual = hash_file(str(path), file)
    if actual != file.etag:
        return Problem(file.path, "mismatch", file.etag, actual, file.hash_kind)
    return None


def _run(check: Callable[[RemoteFile], Problem | None], files: list[RemoteFile]) -> list[Problem]:
    # Largest first, so one big file does not start last and leave the other cores idle.
    ordered = sorted(files, key=lambda f: f.size, reverse=True)
    with ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="hfpull-verify") as pool:
        results = list(pool.map(check, ordered))
    return sorted((p for p in results if p is not None), key=lambda p: p.path)


def _extra_files(root: Path, files: list[RemoteFile]) -> list[str]:
    if not root.is_dir():
        return []
    known = {f.path for f in files}
    extra = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if rel not in known and not rel.startswith(_IGNORED_PREFIXES):
                extra.append(rel)
    return sorted(extra)


# -- choosing the target and what it is checked against ---------------------------------------


def verify_target(
    target: str | None,
    *,
    repo_type: str = "model",
    revision: str = "main",
    manifest: Path | None = None,
    lock: Path | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    settings: Settings | None = None,
    strict_hub: bool = False,
    note: Callable[[str], None] = lambda _message: None,
) -> list[VerifyReport]:
    """Verify an archive file, a folder, or a cached repo (by id) against the Hub's listing
    for its commit (default when online), an archive manifest, or a lock file.

    Offline (HF_HUB_OFFLINE, or the Hub cannot be reached) a cached repo is checked against
    the listing saved at download time, unless ``strict_hub`` (``--against hub``)."""
    settings = settings or from_environment()
    if lock is not None:
        return _verify_lock(target, read_lock(lock), settings)
    if target is None:
        raise UsageError("verify needs a TARGET (repo id, folder or archive) or --lock FILE")
    path = Path(target)
    if path.is_file():
        with open(path, "rb") as handle:
            return [verify_archive(handle, target)]
    if path.is_dir():
        expected, commit = _folder_expectation(path, revision, manifest, include, exclude)
        return [verify_folder(path, expected, commit)]
    repo = RepoRef(validate_repo_id(target), validate_repo_type(repo_type))
    cache = CacheLayout(settings.cache_dir, repo)
    if manifest is not None:  # the manifest names the snapshot to check
        loaded = _load_manifest(manifest)
        commit, files = loaded.commit, [f.remote for f in loaded.files]
    else:
        commit = cached_commit(cache, validate_revision(revision))
        files = _hub_or_saved_listing(cache, commit, settings, strict_hub, note)
    return [verify_snapshot(cache, commit, select(files, include, exclude))]


def _hub_or_saved_listing(
    cache: CacheLayout,
    commit: str,
    settings: Settings,
    strict_hub: bool,
    note: Callable[[str], None],
) -> list[RemoteFile]:
    saved = read_tree_listing(cache.repo_dir / "trees" / f"{commit}.json")
    if settings.offline and not strict_hub and saved is not None:
        note("offline: checking against the file list saved at download time")
        return saved
    session = Session(cache.repo.repo_id, repo_type=cache.repo.repo_type, revision=commit,
                      settings=settings)  # fmt: skip
    try:
        return list(session.hub.resolve(cache.repo, commit).files)
    except NetworkError:
        if strict_hub or saved is None:
            raise
        note("the Hub could not be reached: checking against the file list saved at download time")
        return saved


def repair(report: VerifyReport, repo_type: str, settings: Settings | None = None) -> VerifyReport:
    """Refetch only what is broken or missing in a cached snapshot, then check it again."""
    if report.repo is None or report.commit is None:
        raise UsageError("--repair works on cached repos (a repo id target)")
    settings = settings or from_environment()
    session = Session(report.repo, repo_type=repo_type, revision=report.commit, settings=settings)
    snapshot = session.hub.resolve(session.repo, report.commit)
    broken = {p.path for p in report.failures() if p.kind != "extra"}
    files = [f for f in snapshot.files if f.path in broken]
    cache = session.cache
    for file in files:
        pointer = cache.pointer_path(report.commit, file)
        if os.path.lexists(pointer):
            pointer.unlink()
        blob = cache.blob_path(file)
        if blob.exists() and _check_content(blob, file) is not None:
            blob.unlink()  # its bytes do not match its name: corrupt for every snapshot
    planned = tuple(PlannedFile(f, cache.status(f, report.commit)) for f in files)
    session.run(Plan(snapshot, planned))
    return verify_snapshot(cache, report.commit, [f for f in snapshot.files if f.path in broken])


def _verify_lock(
    target: str | None, locked: list[LockedRepo], settings: Settings
) -> list[VerifyReport]:
    if target is not None and Path(target).is_dir():
        if len(locked) != 1:
            raise UsageError("to verify a folder against a lock, the lock must hold one repo")
        return [verify_folder(Path(target), locked[0].files, locked[0].commit)]
    chosen = [lr for lr in locked if target is None or lr.repo.repo_id == target]
    if not chosen:
        raise UsageError(f"{target!r} is not in the lock file")
    reports = []
    for entry in chosen:
        cache = CacheLayout(settings.cache_dir, entry.repo)
        reports.append(verify_snapshot(cache, entry.commit, entry.files))
    return reports


def _folder_expectation(
    root: Path,
    revision: str,
    manifest: Path | None,
    include: Sequence[str],
    exclude: Sequence[str],
) -> tuple[list[RemoteFile], str | None]:
    """What a folder should hold: a manifest if given, else the listing hfpull/huggingface_hub
    saved in it at download time (restricted to the files it recorded as downloaded)."""
    if manifest is not None:
        loaded = _load_manifest(manifest)
        return select([f.remote for f in loaded.files], include, exclude), loaded.commit
    meta = root / ".cache" / "huggingface"
    trees = sorted((meta / "trees").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if COMMIT_RE.match(revision):
        trees = [t for t in trees if t.stem == revision]
    if not trees:
        raise NotFoundError(
            f"{root} holds no saved file listing to check against",
            hint="pass --manifest FILE or --lock FILE",
        )
    commit = trees[-1].stem
    listing = read_tree_listing(trees[-1])
    if listing is None:
        raise UnsafeInputError(f"the saved listing {trees[-1]} is damaged")
    files = select(listing, include, exclude)
    if not include and not exclude:
        downloaded = {
            str(p.relative_to(meta / "download"))[: -len(".metadata")]
            for p in (meta / "download").rglob("*.metadata")
        }
        if downloaded:
            files = [f for f in files if f.path in downloaded]
    return files, commit


def _load_manifest(path: Path) -> Manifest:
    with open(path, "rb") as handle:
        head = handle.read(1)
        handle.seek(0)
        return parse_manifest(handle.read()) if head == b"{" else read_manifest_only(handle)
