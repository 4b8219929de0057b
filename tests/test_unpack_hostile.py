"""Hostile archives against ``hfpull unpack``: each is refused and nothing leaks out.

Archives are built by hand in memory (``TarBuilder`` writes ``tarfile.TarInfo`` headers and
data itself, so any member type, name or lying header can be produced). Every rejected case
checks: the specific error; nothing published (an empty cache stays empty, a populated cache
stays byte for byte the same); no ``.hfpull-staging-*`` folder left; and nothing created,
changed or removed anywhere else in the test's sandbox.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import stat
import tarfile
import tracemalloc
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard

from hfpull.archive.manifest import MANIFEST_NAME, Manifest, ManifestFile, parse_manifest
from hfpull.errors import HfpullError, IntegrityError, UnsafeInputError
from hfpull.models import RepoRef
from hfpull.pack import write_archive
from hfpull.settings import Settings
from hfpull.unpack import UnpackResult, unpack

REPO_ID = "org/name"
REPO_FOLDER = RepoRef(REPO_ID).cache_folder_name
COMMIT_A = hashlib.sha1(b"commit a").hexdigest()
COMMIT_B = hashlib.sha1(b"commit b").hexdigest()
BLOCK = tarfile.BLOCKSIZE
MiB = 1 << 20
BOMB_BYTES = 200 * MiB
_rng = random.Random(20250101)
WEIGHTS = _rng.randbytes(96 * 1024)  # incompressible, so compressed offsets track tar offsets
CONTENT: dict[str, bytes] = {
    "config.json": b'{"model_type": "toy", "hidden_size": 8}\n',
    "model.safetensors": WEIGHTS,
    "sub/tokenizer.json": b'{"vocab": {"a": 0, "b": 1}}\n' * 40,
}
LFS = frozenset({"model.safetensors"})
REJECTED = (UnsafeInputError, IntegrityError)


# --------------------------------------------------------------------------- archive maker


def git_sha1(data: bytes) -> str:
    """The git blob id of ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer_id(data: bytes) -> str:
    """The git blob id of the LFS pointer file describing ``data``."""
    pointer = (
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n"
    )
    return git_sha1(pointer.encode())


def file_entry(path: str, data: bytes, lfs: bool) -> dict[str, Any]:
    """One manifest ``files`` item computed from the content."""
    return {
        "path": path,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "git_sha1": lfs_pointer_id(data) if lfs else git_sha1(data),
        "lfs": lfs,
    }


def manifest_doc(
    files: Mapping[str, bytes] = CONTENT,
    *,
    lfs: Collection[str] = LFS,
    **fields: Any,
) -> dict[str, Any]:
    """A valid manifest document for ``files``; ``fields`` override top-level keys."""
    doc: dict[str, Any] = {
        "format": "hfpull-archive",
        "format_version": 1,
        "tool": "hfpull test",
        "repo_id": REPO_ID,
        "repo_type": "model",
        "revision": "main",
        "commit": COMMIT_A,
        "complete": True,
        "files": [file_entry(p, d, p in lfs) for p, d in sorted(files.items())],
    }
    doc.update(fields)
    return doc


def encode(doc: Mapping[str, Any]) -> bytes:
    """Serialize a manifest the way ``Manifest.to_bytes`` does."""
    return (json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode()


def compress(data: bytes, kind: str) -> bytes:
    """Wrap a tar stream in gzip or zstd (``none`` returns it unchanged)."""
    if kind == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if kind == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    assert kind == "none"
    return data


class TarBuilder:
    """Writes tar headers and data by hand, so any member, name or lie can be produced."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.marks: dict[str, tuple[int, int, int]] = {}  # name -> header, data, data end

    def member(
        self,
        name: str,
        data: bytes = b"",
        *,
        kind: bytes = tarfile.REGTYPE,
        size: int | None = None,
        linkname: str = "",
        pax: Mapping[str, str] | None = None,
        fmt: int = tarfile.PAX_FORMAT,
        devmajor: int = 0,
        devminor: int = 0,
    ) -> TarBuilder:
        """Append one member; ``size`` may lie about ``data`` (which is padded to a block)."""
        info = tarfile.TarInfo(name)
        info.type = kind
        info.size = len(data) if size is None else size
        info.linkname = linkname
        info.mode = 0o644
        info.mtime = 0
        info.devmajor, info.devminor = devmajor, devminor
        if pax:
            info.pax_headers = dict(pax)
        start = len(self.buf)
        self.buf += info.tobuf(fmt, "utf-8", "surrogateescape")
        data_start = len(self.buf)
        self.buf += data + bytes(-len(data) % BLOCK)
        self.marks.setdefault(name, (start, data_start, data_start + len(data)))
        return self

    def manifest(self, doc: Mapping[str, Any] | bytes | None = None) -> TarBuilder:
        """Append ``hfpull-manifest.json`` (a document, raw bytes, or the default manifest)."""
        body = doc if isinstance(doc, bytes) else encode(doc or manifest_doc())
        return self.member(MANIFEST_NAME, body)

    def files(self, files: Mapping[str, bytes] = CONTENT, skip: Collection[str] = ()) -> TarBuilder:
        """Append regular members for ``files`` in path order."""
        for path, data in sorted(files.items()):
            if path not in skip:
                self.member(path, data)
        return self

    def raw(self, data: bytes) -> TarBuilder:
        """Append bytes verbatim (a hand-made header, garbage, ...)."""
        self.buf += data
        return self

    def end(self) -> TarBuilder:
        """Append the two zero blocks that end a tar archive."""
        self.buf += bytes(2 * BLOCK)
        return self

    def build(self, compression: str = "none") -> bytes:
        """The archive bytes as they are now (call ``end()`` first for a complete one)."""
        return compress(bytes(self.buf), compression)


def valid(files: Mapping[str, bytes] = CONTENT, **fields: Any) -> TarBuilder:
    """Manifest plus every file, not yet ended: hostile members can be appended."""
    return TarBuilder().manifest(manifest_doc(files, **fields)).files(files)


def listing(extra: Mapping[str, bytes]) -> TarBuilder:
    """A manifest listing CONTENT plus ``extra``, then only the CONTENT members.

    The hostile member appended next carries a listed name (usually an empty file), so only
    the type check stands between it and the disk."""
    return TarBuilder().manifest(manifest_doc({**CONTENT, **extra})).files(CONTENT)


def packed(
    src: Path,
    files: Mapping[str, bytes],
    commit: str,
    compression: str = "none",
    revision: str = "main",
) -> bytes:
    """An archive written by the production writer (``hfpull.pack.write_archive``)."""
    sources: dict[str, Path] = {}
    entries = []
    for path, data in sorted(files.items()):
        blob = src / commit[:12] / hashlib.sha256(path.encode()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        sources[path] = blob
        item = file_entry(path, data, path in LFS)
        entries.append(ManifestFile(path, len(data), item["sha256"], item["git_sha1"], item["lfs"]))
    manifest = Manifest(
        RepoRef(REPO_ID), revision, commit, "hfpull test", tuple(entries), complete=True
    )
    out = io.BytesIO()
    write_archive(out, manifest, sources, compression)
    return out.getvalue()


# --------------------------------------------------------------------------- sandbox checks


def tree_state(root: Path, skip: Collection[Path] = ()) -> dict[str, tuple[object, ...]]:
    """Every path below ``root`` (links never followed): kind, link target or content hash,
    plus inode and mtime of files, so a replaced or rewritten file shows up too."""
    state: dict[str, tuple[object, ...]] = {}
    if not root.is_dir() or root.is_symlink():
        return state
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in dirnames + filenames:
            path = here / name
            if path in skip:
                continue
            info = path.lstat()
            key = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                state[key] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                state[key] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                state[key] = ("file", digest, info.st_ino, info.st_mtime_ns, info.st_mode)
    return state


def staging_leftovers(root: Path) -> list[Path]:
    """Staging folders anywhere below ``root``."""
    return [p for p in root.rglob("*") if p.name.startswith(".hfpull-staging-")]


@dataclass
class Sandbox:
    """One test's whole world: the cache, a decoy folder beside it, and nothing else."""

    root: Path
    cache: Path
    outside: Path

    def settings(self, local_dir: Path | None = None) -> Settings:
        return Settings(cache_dir=self.cache, local_dir=local_dir)

    def unpack(self, archive: bytes, local_dir: Path | None = None) -> UnpackResult:
        return unpack(io.BytesIO(archive), self.settings(local_dir))

    def outside_state(self, local_dir: Path | None = None) -> dict[str, tuple[object, ...]]:
        """Everything in the sandbox except the target (cache, and local dir if any)."""
        return tree_state(self.root, skip={self.cache, *([local_dir] if local_dir else [])})


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "victim.txt").write_bytes(b"must never change\n")
    return Sandbox(tmp_path, tmp_path / "cache", outside)


def _target_state(sandbox: Sandbox, local_dir: Path | None) -> dict[str, tuple[object, ...]]:
    state = tree_state(local_dir or sandbox.cache)
    if local_dir is not None:  # the (empty) staging root may stay behind in a local dir
        for key in (".cache/huggingface", ".cache"):
            if state.get(key, ("",))[0] == "dir" and not any(
                k.startswith(key + "/") for k in state
            ):
                del state[key]
    return state


def assert_rejected(
    sandbox: Sandbox,
    archive: bytes,
    error: type[HfpullError] | tuple[type[HfpullError], ...],
    *,
    local_dir: Path | None = None,
) -> HfpullError:
    """Unpack must raise ``error``, publish nothing and touch nothing outside the target."""
    outside = sandbox.outside_state(local_dir)
    target = _target_state(sandbox, local_dir)
    raised: BaseException | None = None
    try:
        sandbox.unpack(archive, local_dir)
    except Exception as exc:
        raised = exc
    assert sandbox.outside_state(local_dir) == outside, "something changed outside the target"
    assert isinstance(raised, error), f"expected {error}, got {raised!r}"
    assert not staging_leftovers(sandbox.root), "a staging folder was left behind"
    assert _target_state(sandbox, local_dir) == target, "the target was altered"
    if local_dir is not None:
        assert tree_state(sandbox.cache) == {}, "local-dir mode touched the cache"
    return raised


def snapshot_dir(cache: Path, commit: str) -> Path:
    return cache / REPO_FOLDER / "snapshots" / commit


def assert_published(cache: Path, files: Mapping[str, bytes], commit: str) -> None:
    """The snapshot holds exactly ``files`` as links into blobs named by their etag."""
    snap = snapshot_dir(cache, commit)
    found = {p.relative_to(snap).as_posix() for p in snap.rglob("*") if not p.is_dir()}
    assert found == set(files)
    for path, data in files.items():
        link = snap / path
        assert link.is_symlink() and link.read_bytes() == data
        etag = hashlib.sha256(data).hexdigest() if path in LFS else git_sha1(data)
        assert link.resolve() == (cache / REPO_FOLDER / "blobs" / etag).resolve()


# --------------------------------------------------------------------------- control cases


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_control_archive_from_write_archive_unpacks(
    sandbox: Sandbox, compression: str, tmp_path: Path
) -> None:
    archive = packed(tmp_path / "src", CONTENT, COMMIT_A, compression)
    outside = sandbox.outside_state()
    result = sandbox.unpack(archive)
    assert result.path == str(snapshot_dir(sandbox.cache, COMMIT_A))
    assert result.manifest.commit == COMMIT_A
    assert_published(sandbox.cache, CONTENT, COMMIT_A)
    assert (sandbox.cache / REPO_FOLDER / "refs" / "main").read_text() == COMMIT_A
    assert not staging_leftovers(sandbox.root)
    assert sandbox.outside_state() == outside


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_control_hand_built_archive_unpacks(sandbox: Sandbox, compression: str) -> None:
    """The maker's valid archive is accepted, so every rejection below is about the lie."""
    archive = valid().end().build(compression)
    outside = sandbox.outside_state()
    sandbox.unpack(archive)
    assert_published(sandbox.cache, CONTENT, COMMIT_A)
    assert not staging_leftovers(sandbox.root)
    assert sandbox.outside_state() == outside


def test_control_hand_built_manifest_matches_the_production_writer(tmp_path: Path) -> None:
    ours = encode(manifest_doc())
    assert parse_manifest(ours).to_bytes() == ours
    with tarfile.open(fileobj=io.BytesIO(packed(tmp_path, CONTENT, COMMIT_A))) as tar:
        first = tar.next()
        assert first is not None and first.name == MANIFEST_NAME
        handle = tar.extractfile(first)
        assert handle is not None
        assert handle.read() == ours


# --------------------------------------------------------------------------- hostile cases

Build = Callable[[], bytes]
SYM, LNK = tarfile.SYMTYPE, tarfile.LNKTYPE
PAYLOAD = b"pwned\n"


def case(
    id: str,
    build: Build,
    error: type[HfpullError] | tuple[type[HfpullError], ...] = UnsafeInputError,
) -> Any:
    """A parametrized hostile case."""
    return pytest.param(build, error, id=id)


def replacing(path: str, doc: Mapping[str, Any] | None = None) -> TarBuilder:
    """The default manifest and every CONTENT member except ``path`` (added by the caller)."""
    return TarBuilder().manifest(doc).files(CONTENT, skip={path})


def extra_member(name: str, pax: Mapping[str, str] | None = None) -> Build:
    """A valid archive followed by one more regular member called ``name``."""
    return lambda: valid().member(name, PAYLOAD, pax=pax).end().build()


def listed_special(name: str, kind: bytes, linkname: str = "", dev: int = 0) -> Build:
    """A non-regular member whose name the manifest lists as an empty file."""
    return lambda: (
        listing({name: b""})
        .member(name, kind=kind, linkname=linkname, devmajor=dev, devminor=dev)
        .end()
        .build()
    )


def through_links(links: Mapping[str, str], victim: str) -> Build:
    """Links first, then a file written "through" them (all names listed in the manifest)."""

    def build() -> bytes:
        builder = listing({**dict.fromkeys(links, b""), victim: PAYLOAD})
        for name, target in links.items():
            builder.member(name, kind=SYM, linkname=target)
        return builder.member(victim, PAYLOAD).end().build()

    return build


def lying_header(kind: bytes, name: str) -> Build:
    """A GNU/pax meta header declaring 1 TiB, followed by a few blocks and then nothing."""
    return lambda: (
        valid()
        .member(name, bytes(4 * BLOCK), kind=kind, size=1 << 40, fmt=tarfile.GNU_FORMAT)
        .build()
    )


def altered(key: str, value: object) -> Build:
    """A manifest whose ``config.json`` entry has ``key`` changed; members unchanged."""

    def build() -> bytes:
        doc = manifest_doc()
        next(f for f in doc["files"] if f["path"] == "config.json")[key] = value
        return TarBuilder().manifest(doc).files().end().build()

    return build


def raw_manifest(body: bytes) -> Build:
    return lambda: TarBuilder().manifest(body).files().end().build()


def many_entries(count: int) -> bytes:
    builder = valid()
    for index in range(count):
        builder.member(f"extra/{index:05d}")
    return builder.end().build()


def duplicate_listing() -> bytes:
    doc = manifest_doc()
    doc["files"].append(dict(doc["files"][0]))
    return TarBuilder().manifest(doc).files().end().build()


HOSTILE_NAMES = {
    "dotdot": "../x",
    "dotdot-inner": "a/../../x",
    "dotdot-deep": "sub/../../../outside/victim.txt",
    "absolute": "/abs/x",
    "absolute-etc": "/etc/passwd",
    "drive-backslash": "C:\\x",
    "drive-relative": "C:x",
    "backslash-dotdot": "..\\..\\x",
    "unc": "\\\\server\\share\\x",
    "newline": "x\ny",
    "carriage-return": "x\r.txt",
    "empty": "",
    "dot": ".",
    "dot-prefix": "./config.json",
    "trailing-slash": "config.json/",
    "double-slash": "sub//tokenizer.json",
    "reserved-metadata": ".cache/huggingface/download/x.metadata",
    "windows-reserved": "con.txt",
    "long-component": "a" * 300,
}
SPECIAL_TYPES = {
    "fifo": tarfile.FIFOTYPE,
    "char-device": tarfile.CHRTYPE,
    "block-device": tarfile.BLKTYPE,
    "directory": tarfile.DIRTYPE,
    "contiguous": tarfile.CONTTYPE,
    "gnu-sparse": tarfile.GNUTYPE_SPARSE,
    "unknown": b"Z",
}
CONFIG = CONTENT["config.json"]

CASES: list[Any] = [
    # member names
    *(case(f"name-{key}", extra_member(name)) for key, name in HOSTILE_NAMES.items()),
    case("name-nul-in-pax-path", extra_member("x.txt", {"path": "x\x00/../../y"})),
    case("name-pax-path-overrides-benign-ustar-name", extra_member("x.txt", {"path": "../x"})),
    case(
        "name-gnu-longname-dotdot",
        lambda: valid().member("../" * 40 + "x", PAYLOAD, fmt=tarfile.GNU_FORMAT).end().build(),
    ),
    # symlinks: refused whatever they point at (the manifest even lists the name as a file)
    case("symlink-relative-inside", listed_special("link.json", SYM, "config.json")),
    case("symlink-pointing-outside", listed_special("link", SYM, "../outside/victim.txt")),
    case("symlink-absolute", listed_special("link", SYM, "/etc/passwd")),
    case(
        "symlink-then-file-through-it-cve-2025-45582",
        through_links({"escape": "../outside"}, "escape/victim.txt"),
    ),
    case("symlink-chain", through_links({"a": "b", "b": "../outside"}, "a/victim.txt")),
    case(
        "symlink-instead-of-listed-file",
        lambda: (
            replacing("config.json")
            .member("config.json", kind=SYM, linkname="/etc/passwd")
            .end()
            .build()
        ),
    ),
    case(
        "manifest-name-as-symlink",
        lambda: (
            TarBuilder()
            .member(MANIFEST_NAME, kind=SYM, linkname="/etc/passwd")
            .files()
            .end()
            .build()
        ),
    ),
    # hard links
    case("hardlink-inside", listed_special("hard", LNK, "config.json")),
    case("hardlink-etc-passwd", listed_special("hard", LNK, "/etc/passwd")),
    case(
        "hardlink-instead-of-listed-file",
        lambda: (
            replacing("config.json")
            .member("config.json", kind=LNK, linkname="/etc/passwd")
            .end()
            .build()
        ),
    ),
    # other member types, each carrying a name the manifest lists as an empty file
    *(
        case(f"type-{key}", listed_special("node", kind, dev=1))
        for key, kind in SPECIAL_TYPES.items()
    ),
    case(
        "type-directory-named-like-a-folder",
        lambda: valid().member("sub", kind=tarfile.DIRTYPE).end().build(),
    ),
    # duplicates, unlisted members, wrong sizes
    case("duplicate-file", lambda: valid().member("config.json", CONFIG).end().build()),
    case(
        "duplicate-file-different-content",
        lambda: valid().member("config.json", b"x" * len(CONFIG)).end().build(),
    ),
    case("manifest-again-later", lambda: valid().manifest().end().build()),
    case(
        "manifest-again-later-altered",
        lambda: valid().manifest(manifest_doc(commit=COMMIT_B)).end().build(),
    ),
    case("member-not-in-manifest", extra_member("extra.txt")),
    case(
        "member-not-in-manifest-before-listed",
        lambda: TarBuilder().manifest().member("extra.txt", PAYLOAD).files().end().build(),
    ),
    case(
        "member-larger-than-manifest",
        lambda: replacing("config.json").member("config.json", CONFIG + b"\n").end().build(),
    ),
    case(
        "member-smaller-than-manifest",
        lambda: replacing("config.json").member("config.json", CONFIG[:-1]).end().build(),
    ),
    # tar bombs: lying headers with truncated data, never gigabytes for real
    case(
        "tar-bomb-header-size-1TiB",
        lambda: replacing("config.json").member("config.json", bytes(BLOCK), size=1 << 40).build(),
    ),
    case(
        "tar-bomb-pax-size-overrides-honest-ustar-size",
        lambda: (
            replacing("config.json")
            .member("config.json", CONFIG, pax={"size": str(1 << 40)})
            .end()
            .build()
        ),
    ),
    case("tar-bomb-pax-header-1TiB", lying_header(tarfile.XHDTYPE, "././@PaxHeader"), REJECTED),
    case(
        "tar-bomb-gnu-longname-1TiB",
        lying_header(tarfile.GNUTYPE_LONGNAME, "././@LongLink"),
        REJECTED,
    ),
    case(
        "tar-bomb-manifest-declared-1TiB",
        lambda: TarBuilder().member(MANIFEST_NAME, bytes(BLOCK), size=1 << 40).build(),
    ),
    case("tar-bomb-many-extra-entries", lambda: many_entries(5000)),
    # the manifest itself
    case("manifest-missing", lambda: TarBuilder().files().end().build()),
    case(
        "manifest-not-first",
        lambda: (
            TarBuilder()
            .member("config.json", CONFIG)
            .manifest()
            .files(CONTENT, skip={"config.json"})
            .end()
            .build()
        ),
    ),
    case("manifest-hash-changed", altered("sha256", "0" * 64), IntegrityError),
    case("manifest-git-sha1-changed", altered("git_sha1", "0" * 40), IntegrityError),
    case("manifest-size-changed", altered("size", len(CONFIG) + 1)),
    case("manifest-path-changed", altered("path", "konfig.json")),
    case("manifest-hostile-path", altered("path", "../x")),
    case("manifest-negative-size", altered("size", -1)),
    case("manifest-lfs-flag-not-bool", altered("lfs", "yes")),
    case("manifest-invalid-json", raw_manifest(b'{"format": "hfpull-archive",')),
    case("manifest-nesting-bomb", raw_manifest(b"[" * 100_000 + b"]" * 100_000)),
    case("manifest-not-an-object", raw_manifest(b"[]")),
    case("manifest-unknown-format-version", lambda: valid(format_version=2).end().build()),
    case("manifest-wrong-format", lambda: valid(format="tar").end().build()),
    case("manifest-invalid-commit", lambda: valid(commit="../../x").end().build()),
    case("manifest-hostile-repo-type", lambda: valid(repo_type="../models").end().build()),
    case(
        "manifest-hostile-repo-id",
        lambda: valid(repo_id="../../outside").end().build(),
    ),
    case("manifest-lists-a-file-twice", duplicate_listing),
    case(
        "manifest-lists-a-file-the-archive-lacks",
        lambda: replacing("sub/tokenizer.json").end().build(),
        IntegrityError,
    ),
    case(
        "manifest-lists-a-file-and-a-folder-of-the-same-name",
        lambda: valid({**CONTENT, "a": b"file", "a/b": b"nested"}).end().build(),
    ),
    # not an archive at all
    case("empty-input", lambda: b"", IntegrityError),
    case("garbage-input", lambda: random.Random(7).randbytes(4096), IntegrityError),
    case("gzip-of-garbage", lambda: gzip.compress(b"\x01" * 4096, mtime=0), IntegrityError),
]


@pytest.mark.parametrize(("build", "error"), CASES)
def test_hostile_archive_is_refused(sandbox: Sandbox, build: Build, error: Any) -> None:
    assert_rejected(sandbox, build(), error)


def test_hostile_repo_id_is_reported_as_unsafe_input(sandbox: Sandbox) -> None:
    """A hostile repo id inside an archive is hostile input (exit 6), not a usage error."""
    assert_rejected(sandbox, valid(repo_id="../../outside").end().build(), UnsafeInputError)


@pytest.mark.parametrize(
    "revision",
    [
        pytest.param(
            "../../../escaped",
            id="dotdot-escapes-the-cache",
        ),
        pytest.param(
            "{root}/abs-escaped",
            id="absolute",
        ),
        pytest.param(
            "",
            id="empty",
        ),
        pytest.param(
            "a\x00b",
            id="nul",
        ),
    ],
)
def test_manifest_revision_cannot_escape_the_cache(sandbox: Sandbox, revision: str) -> None:
    archive = valid(revision=revision.format(root=sandbox.root)).end().build()
    assert_rejected(sandbox, archive, UnsafeInputError)


# --------------------------------------------------------------------------- bombs


def _bomb_stream(prefix: bytes, zeros: int, suffix: bytes, kind: str) -> bytes:
    """``prefix + zeros x NUL + suffix`` compressed as ONE gzip/zstd stream, built in chunks."""
    if kind == "gzip":
        comp: Any = zlib.compressobj(6, zlib.DEFLATED, 31)
    else:
        comp = zstandard.ZstdCompressor(level=3).compressobj()
    out = [comp.compress(prefix)]
    chunk = bytes(MiB)
    for _ in range(zeros // MiB):
        out.append(comp.compress(chunk))
    out.append(comp.compress(suffix))
    out.append(comp.flush())
    return b"".join(out)


TEN = b"0123456789"
BOMB_FILES = {"ten.bin": TEN}


def _bomb(shape: str, kind: str) -> bytes:
    """200 MiB of zeros where the manifest expects a 10-byte file."""
    head = TarBuilder().manifest(manifest_doc(BOMB_FILES, lfs=()))
    info = tarfile.TarInfo()
    if shape == "member-honest-header":  # the header says 200 MiB, the manifest 10 bytes
        head.member("ten.bin", size=BOMB_BYTES)
    elif shape == "member-lying-header":  # the header agrees with the manifest; zeros follow
        head.raw(TarBuilder().member("ten.bin", size=10).buf)
    elif shape in ("pax-header", "pax-header-before-manifest"):
        info = tarfile.TarInfo("././@PaxHeader")
        info.type, info.size = tarfile.XHDTYPE, BOMB_BYTES
        if shape == "pax-header-before-manifest":
            head = TarBuilder()
        head.raw(info.tobuf(tarfile.USTAR_FORMAT))
    elif shape == "gnu-longname":
        info = tarfile.TarInfo("././@LongLink")
        info.type, info.size = tarfile.GNUTYPE_LONGNAME, BOMB_BYTES
        head.raw(info.tobuf(tarfile.GNU_FORMAT))
    tail = TarBuilder().member("ten.bin", TEN).end().buf
    return _bomb_stream(bytes(head.buf), BOMB_BYTES, bytes(tail), kind)


class _CountingReader(io.RawIOBase):
    """Counts the decoded bytes unpack pulls out of the decompressor."""

    def __init__(self, inner: Any, counts: list[int]) -> None:
        self.inner, self.counts, self.index = inner, counts, len(counts)
        counts.append(0)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.inner.read(n)
        self.counts[self.index] += len(data)
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
@pytest.mark.parametrize(
    ("shape", "error", "peak_mib"),
    [
        ("member-honest-header", UnsafeInputError, 32),
        ("member-lying-header", IntegrityError, 32),
        ("pax-header", UnsafeInputError, 32),
        ("gnu-longname", UnsafeInputError, 32),
        # before the manifest nothing bounds the stream but MAX_MANIFEST_BYTES (64 MiB)
        ("pax-header-before-manifest", UnsafeInputError, 100),
    ],
)
def test_compression_bomb_stops_early(
    sandbox: Sandbox,
    kind: str,
    shape: str,
    error: type[HfpullError],
    peak_mib: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hfpull.unpack

    decoded: list[int] = []
    real = hfpull.unpack.decompressing_reader
    monkeypatch.setattr(
        hfpull.unpack, "decompressing_reader", lambda s: _CountingReader(real(s), decoded)
    )
    archive = _bomb(shape, kind)
    assert len(archive) < 2 * MiB  # really a bomb: > 100x expansion
    tracemalloc.start()
    try:
        assert_rejected(sandbox, archive, error)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Stopping early, counted in bytes rather than seconds: of the 200 MiB the stream
    # expands to, no more than the bound for this shape was ever decoded.
    assert decoded and sum(decoded) < peak_mib * MiB, f"decoded {sum(decoded) / MiB:.0f} MiB"
    assert peak < peak_mib * MiB, f"peak memory {peak / MiB:.0f} MiB"


# --------------------------------------------------------------------------- truncation


def _cut_points() -> dict[str, int]:
    marks = valid().end().marks
    manifest, data, last = (
        marks[MANIFEST_NAME],
        marks["model.safetensors"],
        marks["sub/tokenizer.json"],
    )
    return {
        "in-manifest-header": 100,
        "in-manifest-data": manifest[1] + 10,
        "between-members": data[0],
        "in-member-header": data[0] + 300,
        "in-member-data": data[1] + 5000,
        "in-last-member-data": last[1] + 3,
    }


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("where", list(_cut_points()))
def test_truncated_tar_is_refused(sandbox: Sandbox, kind: str, where: str) -> None:
    whole = valid().end().build()
    cut = whole[: _cut_points()[where]]
    assert_rejected(sandbox, compress(cut, kind), IntegrityError)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
@pytest.mark.parametrize("fraction", [0.0001, 0.25, 0.5, 0.75, 0.95])
def test_truncated_compressed_stream_is_refused(
    sandbox: Sandbox, kind: str, fraction: float
) -> None:
    stream = valid().end().build(kind)
    assert_rejected(sandbox, stream[: max(2, int(len(stream) * fraction))], IntegrityError)


# --------------------------------------------------------------------------- corruption


@pytest.mark.parametrize(
    ("path", "offset"), [("model.safetensors", 4321), ("config.json", 3), ("sub/tokenizer.json", 0)]
)
def test_flipped_byte_in_content_names_the_file_and_hashes(
    sandbox: Sandbox, path: str, offset: int
) -> None:
    builder = valid().end()
    archive = bytearray(builder.build())
    archive[builder.marks[path][1] + offset] ^= 0x01
    corrupted = bytearray(CONTENT[path])
    corrupted[offset] ^= 0x01
    message = str(assert_rejected(sandbox, bytes(archive), IntegrityError))
    assert path in message
    assert hashlib.sha256(CONTENT[path]).hexdigest() in message
    assert hashlib.sha256(bytes(corrupted)).hexdigest() in message


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_flipped_byte_in_compressed_stream_is_refused(
    sandbox: Sandbox, kind: str, fraction: float
) -> None:
    stream = bytearray(valid().end().build(kind))
    stream[int(len(stream) * fraction)] ^= 0x20
    assert_rejected(sandbox, bytes(stream), IntegrityError)


# --------------------------------------------------------------------------- populated cache

FILES_B = {
    "config.json": b'{"model_type": "toy", "hidden_size": 16}\n',  # changed
    "model.safetensors": WEIGHTS,  # same blob as commit A
    "sub/tokenizer.json": CONTENT["sub/tokenizer.json"],  # same blob as commit A
    "new.txt": b"only in commit b\n",
}


@pytest.fixture
def populated(sandbox: Sandbox, tmp_path: Path) -> Sandbox:
    """A cache already holding org/name at COMMIT_A (restored from a write_archive archive)."""
    sandbox.unpack(packed(tmp_path / "src", CONTENT, COMMIT_A))
    assert_published(sandbox.cache, CONTENT, COMMIT_A)
    return sandbox


def _blob(cache: Path, path: str, data: bytes) -> Path:
    etag = hashlib.sha256(data).hexdigest() if path in LFS else git_sha1(data)
    return cache / REPO_FOLDER / "blobs" / etag


def test_valid_archive_into_populated_cache_reuses_blobs(
    populated: Sandbox, tmp_path: Path
) -> None:
    cache = populated.cache
    before = tree_state(cache)
    shared = [_blob(cache, p, FILES_B[p]) for p in ("model.safetensors", "sub/tokenizer.json")]
    inodes = [p.stat().st_ino for p in shared]
    archive = packed(tmp_path / "src", FILES_B, COMMIT_B, "zstd")
    outside = populated.outside_state()

    populated.unpack(archive)

    assert_published(cache, FILES_B, COMMIT_B)
    assert [p.stat().st_ino for p in shared] == inodes, "existing blobs were rewritten"
    after = tree_state(cache)
    changed = {k for k in before if after.get(k) != before[k]}
    assert changed == {f"{REPO_FOLDER}/refs/main"}  # only the branch moved; A is untouched
    assert (cache / REPO_FOLDER / "refs" / "main").read_text() == COMMIT_B
    assert_published(cache, CONTENT, COMMIT_A)
    assert not staging_leftovers(populated.root)
    assert populated.outside_state() == outside


def _flip_in(builder: TarBuilder, path: str) -> bytes:
    """The archive with one byte of ``path``'s content flipped."""
    data = bytearray(builder.end().build())
    data[builder.marks[path][1] + 7] ^= 0xFF
    return bytes(data)


def _cut_in(builder: TarBuilder, path: str) -> bytes:
    """The archive cut off ten bytes into ``path``'s content."""
    return builder.end().build()[: builder.marks[path][1] + 10]


POPULATED_CASES: list[Any] = [
    case(
        "flipped-byte-in-shared-blob",
        lambda: _flip_in(valid(FILES_B, commit=COMMIT_B), "model.safetensors"),
        IntegrityError,
    ),
    case(
        "flipped-byte-in-last-member",
        lambda: _flip_in(valid(FILES_B, commit=COMMIT_B), "sub/tokenizer.json"),
        IntegrityError,
    ),
    case(
        "flipped-byte-same-commit",
        lambda: _flip_in(valid(CONTENT), "config.json"),
        IntegrityError,
    ),
    case(
        "truncated-in-last-member",
        lambda: _cut_in(valid(FILES_B, commit=COMMIT_B), "sub/tokenizer.json"),
        IntegrityError,
    ),
    case(
        "symlink-at-the-end",
        lambda: (
            valid(FILES_B, commit=COMMIT_B)
            .member("model.safetensors.bak", kind=SYM, linkname="../outside")
            .end()
            .build()
        ),
    ),
    case(
        "traversal-name-at-the-end",
        lambda: (
            valid(FILES_B, commit=COMMIT_B)
            .member(f"../../{REPO_FOLDER}/blobs/{git_sha1(CONTENT['config.json'])}", b"x")
            .end()
            .build()
        ),
    ),
    case(
        "unlisted-member-at-the-end",
        lambda: valid(FILES_B, commit=COMMIT_B).member("extra", b"x").end().build(),
    ),
    case(
        "file-and-folder-of-the-same-name",
        lambda: valid({**FILES_B, "a": b"file", "a/b": b"nested"}, commit=COMMIT_B).end().build(),
    ),
    case(
        "revision-overwrites-an-existing-blob",
        lambda: (
            valid(FILES_B, commit=COMMIT_B, revision=f"../blobs/{git_sha1(CONTENT['config.json'])}")
            .end()
            .build()
        ),
    ),
]


@pytest.mark.parametrize(("build", "error"), POPULATED_CASES)
def test_hostile_archive_leaves_populated_cache_byte_for_byte_unchanged(
    populated: Sandbox, build: Build, error: Any
) -> None:
    assert_rejected(populated, build(), error)
    assert_published(populated.cache, CONTENT, COMMIT_A)


def test_planted_symlink_in_cache_is_not_followed(sandbox: Sandbox) -> None:
    """A ``blobs`` link planted in the cache never redirects a write outside."""
    repo = sandbox.cache / REPO_FOLDER
    repo.mkdir(parents=True)
    landing = sandbox.root / "landing"
    landing.mkdir()
    (repo / "blobs").symlink_to(landing)
    assert_rejected(sandbox, valid().end().build(), UnsafeInputError)
    assert list(landing.iterdir()) == []


# --------------------------------------------------------------------------- local dir mode


@pytest.fixture
def local(sandbox: Sandbox) -> Path:
    return sandbox.root / "local"


def test_control_local_dir_unpacks(sandbox: Sandbox, local: Path) -> None:
    outside = sandbox.outside_state(local)
    result = sandbox.unpack(valid().end().build("gzip"), local)
    assert result.path == str(local)
    for path, data in CONTENT.items():
        assert not (local / path).is_symlink() and (local / path).read_bytes() == data
    assert tree_state(sandbox.cache) == {}
    assert not staging_leftovers(sandbox.root)
    assert sandbox.outside_state(local) == outside


LOCAL_CASES: list[Any] = [
    case("name-dotdot", extra_member("../outside/x")),
    case(
        "name-reserved-metadata", extra_member(".cache/huggingface/download/config.json.metadata")
    ),
    case("symlink-then-file-through-it", through_links({"sub": "../outside"}, "sub/x.txt")),
    case("flipped-byte", lambda: _flip_in(valid(), "sub/tokenizer.json"), IntegrityError),
    case("truncated", lambda: _cut_in(valid(), "sub/tokenizer.json"), IntegrityError),
]


@pytest.mark.parametrize(("build", "error"), LOCAL_CASES)
def test_hostile_archive_into_local_dir(
    sandbox: Sandbox, local: Path, build: Build, error: Any
) -> None:
    local.mkdir()
    (local / "keep.txt").write_bytes(b"user file\n")
    assert_rejected(sandbox, build(), error, local_dir=local)


def _plant(local: Path, name: str, landing: Path) -> None:
    landing.mkdir()
    target = local / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(landing)


def test_local_dir_planted_symlink_to_outside_is_refused(sandbox: Sandbox, local: Path) -> None:
    """``local/sub -> landing``: the archive's ``sub/tokenizer.json`` must not land there."""
    landing = sandbox.root / "landing"
    _plant(local, "sub", landing)
    outside = sandbox.outside_state(local)
    with pytest.raises(UnsafeInputError):
        sandbox.unpack(valid().end().build(), local)
    assert list(landing.iterdir()) == []
    assert (local / "sub").is_symlink()
    assert not staging_leftovers(sandbox.root)
    assert sandbox.outside_state(local) == outside


def test_local_dir_planted_symlink_refused_before_anything_is_published(
    sandbox: Sandbox, local: Path
) -> None:
    _plant(local, "sub", sandbox.root / "landing")
    assert_rejected(sandbox, valid().end().build(), UnsafeInputError, local_dir=local)


def test_local_dir_planted_metadata_symlink_writes_nothing_outside(
    sandbox: Sandbox, local: Path
) -> None:
    landing = sandbox.root / "landing"
    _plant(local, ".cache", landing)
    outside = sandbox.outside_state(local)
    try:
        sandbox.unpack(valid().end().build(), local)
    except HfpullError:
        pass
    assert list(landing.iterdir()) == []
    assert sandbox.outside_state(local) == outside


def test_local_dir_planted_file_symlink_is_replaced_not_followed(
    sandbox: Sandbox, local: Path
) -> None:
    local.mkdir()
    (local / "config.json").symlink_to(sandbox.outside / "victim.txt")
    outside = sandbox.outside_state(local)
    sandbox.unpack(valid().end().build(), local)
    assert not (local / "config.json").is_symlink()
    assert (local / "config.json").read_bytes() == CONTENT["config.json"]
    assert sandbox.outside_state(local) == outside
