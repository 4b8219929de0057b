"""Stress: six `hfpull get` processes share one empty cache at the same time (issue 6).

Every round starts six CLI processes on one fresh cache, all fetching the same dataset repo
(300 small plain-git files in nested folders, two of them with the same content, plus three
4-8 MiB LFS files split into 1 MiB Range segments). It then checks what any correct claim
protocol guarantees, whatever its internals:

- every process exits 0 and prints the snapshot path; refs/main names the commit;
- every file in ``blobs/`` hashes to its name (sha256 for LFS, git blob sha1 otherwise), every
  expected blob is there, and the snapshot holds exactly the repo's files, byte for byte;
- nothing is left behind (partials, journals, temp files, lock/owner/adopting files);
- the fake Hub served at most 1.25x the repo's bytes: a process must wait for a blob another
  process is fetching (or has fetched meanwhile), not fetch it again;
- a sampler thread watching ``blobs/*.incomplete`` never sees two partial names for one inode
  at the same moment, nor one partial open for writing by two processes at once, which is
  what renaming a live partial away from its running owner produces (two writers in one
  file); see PartialSampler for why ownership is read from /proc.

Kinds of round:

- ``plain``: an empty cache.
- ``seeded``: first, one run is SIGKILLed mid-download of the LFS files (the CDN is throttled
  for it), leaving abandoned partials; in every other seeded round they are also backdated by
  an hour, like the leftovers of yesterday's crash. The six must take them over: besides the
  checks above, each abandoned file is fetched at most (size - bytes its journal records) + one
  segment, i.e. resumed once, not restarted or fetched twice. The SIGKILL sometimes lands in
  the middle of a journal write and leaves that journal's temp file: taking the partial over
  includes clearing that too (the leftovers check counts it).
- ``pidns``: every process in its own pid namespace (``unshare --pid --fork --mount-proc``),
  like containers sharing a volume: pids recorded by another process mean nothing here (every
  hfpull is pid 1). Fails, never skips, on Linux when ``unshare`` is missing or refused.
- ``sequential`` (control): two runs one after the other must pass the same checks. A failure
  here is not about sharing at all (the old code fails it about half the time: its heartbeat
  thread rewrites a journal just after the partial was published, leaving a stray
  ``*.incomplete.journal``), which tells such bugs apart from the concurrency ones.
- ``small``: the defaults, where blobs up to 1 MiB skip the claim (engine/small.py): each
  process may fetch a small file once, and all the checks above hold for the rest. The other
  rounds set ``HFPULL_SMALL_BLOB=0`` so that all 300 small files race through the claim.

All rounds of a test run even when one fails; the failure message lists every round (time,
bytes served / repo size, sampler statistics) and the problems of the failing ones.

Default run: ``HFPULL_STRESS_ROUNDS`` (default 3) plain rounds, 1 seeded, 1 pidns, 1 control.
``pytest -m slow tests/test_concurrency.py``: ``HFPULL_STRESS_ROUNDS`` (default 20) plain rounds
plus a fifth as many (at least 2) seeded and pidns rounds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import ROOT, cli_env
from tests.fakehub import FakeHub, Fault
from tests.helpers import LEFTOVER_SUFFIXES, MiB, leftovers, repo_dir

REPO = "org/stress"
REPO_TYPE = "dataset"
PROCS = 6
SMALL_FILES = 300
BIG_SIZES = (4 * MiB + 17, 6 * MiB + 123, 8 * MiB - 77)
SEGMENT = MiB
BUDGET = 1.25  # served file bytes / repo bytes
ROUND_TIMEOUT = 60.0  # for all six processes of one round together
SEED_TIMEOUT = 30.0
SEED_RATE = 256 * 1024  # bytes/s per CDN response while seeding: slow enough to kill mid-file
SEED_BYTES = 2 * MiB  # kill the seeding run once the CDN has sent this much
BACKDATE = 3600.0
SAMPLE_INTERVAL = 0.003
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
ENV = {
    "HFPULL_SEGMENT_SIZE": str(SEGMENT),
    "HFPULL_LEASE_SECONDS": "5",  # for the new claim protocol; ignored by older code
    "HFPULL_BACKOFF_BASE": "0.05",
    "HFPULL_READ_TIMEOUT": "10",
    # Every blob through the claim protocol, small ones too (they skip it by default, see
    # engine/small.py): that is what these rounds stress. The "small" round runs the default.
    "HFPULL_SMALL_BLOB": "0",
}
SMALL_BLOB_DEFAULT = 1 << 20
MAX_PROBLEMS = 12  # per round and kind of problem, to keep messages readable


def stress_rounds(default: int) -> int:
    value = os.environ.get("HFPULL_STRESS_ROUNDS", "")
    return int(value) if value.strip() else default


# -- the repo --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StressRepo:
    commit: str
    files: dict[str, bytes]  # repo path -> content
    etags: dict[str, str]  # repo path -> blob name in the cache

    @property
    def blobs(self) -> dict[str, int]:
        """Blob name -> size, each distinct blob once."""
        return {self.etags[p]: len(data) for p, data in self.files.items()}

    @property
    def total(self) -> int:
        return sum(self.blobs.values())

    @property
    def big(self) -> dict[str, str]:
        """Blob name -> repo path, for the LFS files."""
        return {self.etags[p]: p for p in self.files if p.endswith(".safetensors")}

    def path_of(self, etag: str) -> str:
        return next(p for p, e in self.etags.items() if e == etag)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def stress_files() -> dict[str, bytes]:
    rng = random.Random(6)
    files = {
        "README.md": b"# stress\n\nSix processes, one cache.\n",
        "config.json": json.dumps({"splits": ["train", "validation", "test"]}).encode(),
    }
    splits = ("train", "validation", "test")
    i = 0
    while len(files) < SMALL_FILES - 1:
        split, shard = splits[i % 3], (i // 3) % 8
        deeper = "meta/" if i % 5 == 0 else ""
        files[f"data/{split}/shard-{shard:02d}/{deeper}part-{i:04d}.jsonl"] = rng.randbytes(
            rng.randint(200, 6 * 1024)
        )
        i += 1
    # Same content under a second path: one blob, two snapshot links.
    files["data/train/shard-00/copy-of-part-0000.jsonl"] = files[
        "data/train/shard-00/meta/part-0000.jsonl"
    ]
    for n, size in enumerate(BIG_SIZES, 1):
        files[f"model-{n:05d}-of-{len(BIG_SIZES):05d}.safetensors"] = rng.randbytes(size)
    return files


@pytest.fixture
def stress_repo(fake_hub: FakeHub) -> StressRepo:
    files = stress_files()
    # Small files stay plain git files; *.safetensors are LFS whatever their size.
    commit = fake_hub.add_repo(REPO, dict(files), repo_type=REPO_TYPE, lfs_threshold=MiB)
    etags = {
        path: hashlib.sha256(data).hexdigest()
        if path.endswith(".safetensors")
        else git_blob_sha1(data)
        for path, data in files.items()
    }
    return StressRepo(commit, files, etags)


# -- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    def stderr_tail(self, limit: int = 1500) -> str:
        try:
            text = self.err.read_text(errors="replace")
        except OSError:
            return "(no stderr file)"
        return text if len(text) <= limit else "..." + text[-limit:]

    def stdout(self) -> str:
        try:
            return self.out.read_text(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the whole process group (unshare and its child included) and reap it."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def start_get(
    name: str, logs: Path, env: dict[str, str], cache: Path, *args: str, prefix: list[str]
) -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / f"{name}.out", logs / f"{name}.err"
    cmd = [*prefix, sys.executable, "-m", "hfpull", "get", REPO, "--repo-type", REPO_TYPE]
    cmd += ["--cache-dir", str(cache), "--quiet", *args]
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        popen = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True
        )
    return Proc(name, popen, out, err)


def wait_all(procs: list[Proc], timeout: float) -> list[str]:
    """Wait for every process until a shared deadline; names of the ones still running."""
    deadline = time.monotonic() + timeout
    late = []
    for proc in procs:
        try:
            proc.popen.wait(timeout=max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            late.append(proc.name)
    return late


def require_unshare() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("pid namespaces are Linux-only")
    if shutil.which("unshare") is None:
        pytest.fail(
            "the pid-namespace round needs `unshare` (util-linux), which is not installed; "
            "install util-linux (it is not optional on Linux)",
            pytrace=False,
        )
    probe = subprocess.run(
        [*UNSHARE, sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        pytest.fail(
            f"`{' '.join(UNSHARE)} python` does not work here (exit {probe.returncode}, "
            f"pid {probe.stdout.strip() or '?'}; needs root or unprivileged user namespaces): "
            f"{probe.stderr.strip()}",
            pytrace=False,
        )


# -- the inode sampler -----------------------------------------------------------------------


def _descendants(roots: dict[int, str]) -> dict[int, str]:
    """pid -> the name of the runner it belongs to, for the roots and all their descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    owner = dict(roots)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if pid not in owner and ppid in owner:
                owner[pid] = owner[ppid]
                changed = True
    return owner


def _open_for_writing(pid: int, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as info:
            for line in info:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & 0o3 != 0  # O_WRONLY or O_RDWR
    except (OSError, ValueError, IndexError):
        pass
    return False


class PartialSampler(threading.Thread):
    """Watches ``blobs/*.incomplete`` while a round runs; records inode sharing and owners.

    1. Names: two partial names for one (st_dev, st_ino) in one sample, still so when both
       are stat'ed again, are two names for one file at the same moment.
    2. Owners: a partial is owned by the runner that has it open for writing, read from
       /proc/<pid>/fd (the link follows renames; a deleted file reads "... (deleted)") and
       /proc/<pid>/fdinfo (access mode), for each runner and its descendants (the hfpull under
       ``unshare``). Every OWNER_SCAN seconds, and whenever an inode shows up under a new name,
       the sampler checks that no partial is open for writing by two runners; a hit must
       repeat in an immediate second scan. A live partial taken over by rename (its owner still
       running and writing) is exactly such a hit, with the name change as the smoking gun.
       Why not plain inode bookkeeping ("seen under A, later under B while A's owner lives"):
       inode numbers are reused within milliseconds (hundreds of A-gone-B-appears pairs per
       round are reuse, not renames), and the journal's pid names nobody across pid
       namespaces. The owner check never misfires on reuse, on a process renaming its own
       partial or on read-only peeks; it can miss a steal whose victim closed its file between
       two scans.
    """

    OWNER_SCAN = 0.02
    TREE_REFRESH = 0.2

    def __init__(self, blobs: Path, procs: list[Proc]) -> None:
        super().__init__(name="partial-sampler", daemon=True)
        self.blobs = blobs
        self.procs = procs  # filled while the sampler runs; only read here
        self.halt = threading.Event()
        self.problems: list[str] = []
        self.dropped = 0
        self.samples = 0
        self.scans = 0
        self.names: set[str] = set()
        self.moves = 0
        self._last_name: dict[tuple[int, int], str] = {}
        self._renamed_from: dict[str, str] = {}
        self._reported: set[str] = set()
        self._tree: dict[int, str] = {}
        self._tree_at = 0.0
        self._scan_at = 0.0

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                moved = self._sample()
                now = time.monotonic()
                if moved or now - self._scan_at >= self.OWNER_SCAN:
                    self._check_owners()
                    self._scan_at = now
                self.halt.wait(SAMPLE_INTERVAL)
        except Exception:
            self.problems.append("the sampler crashed:\n" + traceback.format_exc())

    def stop(self) -> None:
        self.halt.set()
        self.join(10)

    def summary(self) -> str:
        return (
            f"sampler: {self.samples} samples, {self.scans} owner scans, "
            f"{len(self.names)} partial names, {self.moves} inode moves (renames or reuse)"
        )

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.dropped += 1

    def _stat(self, name: str) -> tuple[int, int] | None:
        try:
            st = os.stat(self.blobs / name, follow_symlinks=False)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _sample(self) -> bool:
        """One listing of the partials; True if an inode showed up under a new name."""
        try:
            names = [n for n in os.listdir(self.blobs) if n.endswith(".incomplete")]
        except FileNotFoundError:
            return False
        current: dict[str, tuple[int, int]] = {}
        for name in names:
            key = self._stat(name)
            if key is not None:
                current[name] = key
        self.samples += 1
        self.names.update(current)
        by_inode: dict[tuple[int, int], list[str]] = defaultdict(list)
        for name, key in current.items():
            by_inode[key].append(name)
        for key, shared in by_inode.items():
            if len(shared) > 1 and all(self._stat(n) == key for n in shared):
                self._problem(f"partials {sorted(shared)} are one inode {key} at the same time")
        moved = False
        for name, key in current.items():
            before = self._last_name.get(key)
            if before is not None and before != name and current.get(before) != key:
                self.moves += 1
                self._renamed_from[name] = before
                moved = True
            self._last_name[key] = name
        return moved

    def _writers(self) -> dict[str, set[str]]:
        """Partial name -> the runners that have it open for writing right now."""
        now = time.monotonic()
        roots = {p.popen.pid: p.name for p in list(self.procs) if p.popen.poll() is None}
        if set(roots) - set(self._tree) or now - self._tree_at >= self.TREE_REFRESH:
            self._tree, self._tree_at = _descendants(roots), now
        prefix = os.path.realpath(self.blobs) + "/"
        writers: dict[str, set[str]] = defaultdict(set)
        for pid, runner in self._tree.items():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(prefix) and target.endswith(".incomplete"):
                    if _open_for_writing(pid, fd):
                        writers[target[len(prefix) :]].add(runner)
        self.scans += 1
        return writers

    def _check_owners(self) -> None:
        shared = {n: r for n, r in self._writers().items() if len(r) > 1}
        if not shared:
            return
        again = self._writers()
        for name, runners in shared.items():
            both = sorted(runners & again.get(name, set()))
            if len(both) > 1 and name not in self._reported:
                self._reported.add(name)
                was = self._renamed_from.get(name)
                how = f" (its inode number was seen as {was} before)" if was else ""
                self._problem(
                    f"partial {name} is open for writing by {both} at once{how}: "
                    "two owners of one partial, a live partial was taken over"
                )


# -- checks ----------------------------------------------------------------------------------


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # e.g. a link to a blob that is not there
        return None


def blob_digest(path: Path) -> str:
    """The hash a blob named like ``path`` must have: sha256 (64 hex) or git blob sha1."""
    data = path.read_bytes()
    if len(path.name) == 64:
        return hashlib.sha256(data).hexdigest()
    return git_blob_sha1(data)


def served_by_blob(hub: FakeHub, repo: StressRepo) -> dict[str, int]:
    """File-content body bytes (2xx responses, both listeners) per blob name."""
    served: dict[str, int] = defaultdict(int)
    resolve = f"/resolve/{repo.commit}/"
    for record in hub.requests:
        if not 200 <= record.status < 300:
            continue
        raw = record.path.split("?", 1)[0]
        if record.server == "cdn" and raw.startswith("/cdn/"):
            served[raw.rsplit("/", 1)[-1]] += record.body_bytes
        elif record.server == "hub" and resolve in raw:
            path = unquote(raw.split(resolve, 1)[1])
            served[repo.etags.get(path, f"?{path}")] += record.body_bytes
    return dict(served)


def check_round(
    procs: list[Proc],
    late: list[str],
    cache: Path,
    hub: FakeHub,
    repo: StressRepo,
    seeded: dict[str, int],
    small_blob: int = 0,
) -> tuple[list[str], float]:
    """Every problem of one finished round, and the served/total byte ratio.

    ``small_blob``: blobs up to this size skip the claim, so each process may fetch them once
    (at most PROCS times each); the byte budget then covers the other blobs only."""
    problems = []
    if late:
        problems.append(f"still running after {ROUND_TIMEOUT:.0f} s (killed): {late}")
    root = repo_dir(cache, REPO, REPO_TYPE)
    snapshot = root / "snapshots" / repo.commit
    for proc in procs:
        code = proc.popen.returncode
        if code != 0:
            problems.append(f"{proc.name} exited {code}; stderr:\n{proc.stderr_tail()}")
        elif proc.stdout().strip() != str(snapshot):
            problems.append(f"{proc.name} printed {proc.stdout()!r}, not {snapshot}")

    ref = read_or_none(root / "refs" / "main")
    if ref != repo.commit.encode():
        problems.append(f"refs/main holds {ref!r}, not {repo.commit}")

    blobs = root / "blobs"
    present = set()
    bad = []
    for blob in sorted(blobs.iterdir()) if blobs.is_dir() else []:
        if blob.name.endswith(LEFTOVER_SUFFIXES) or not blob.is_file():
            continue  # leftovers are reported below
        present.add(blob.name)
        digest = blob_digest(blob)
        if digest != blob.name:
            bad.append(f"{blob.name} (hashes to {digest}, {blob.stat().st_size} bytes)")
    if bad:
        problems.append(f"{len(bad)} blob(s) do not hash to their name: {bad[:MAX_PROBLEMS]}")
    expected = set(repo.blobs)
    if present != expected:
        problems.append(
            f"blobs missing: {sorted(expected - present)[:MAX_PROBLEMS]}, "
            f"unexpected: {sorted(present - expected)[:MAX_PROBLEMS]}"
        )

    found = {str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if not p.is_dir()}
    if found != set(repo.files):
        problems.append(
            f"snapshot files missing: {sorted(set(repo.files) - found)[:MAX_PROBLEMS]}, "
            f"unexpected: {sorted(found - set(repo.files))[:MAX_PROBLEMS]}"
        )
    differ = [
        path
        for path, data in repo.files.items()
        if path in found and read_or_none(snapshot / path) != data
    ]
    if differ:
        problems.append(f"{len(differ)} snapshot file(s) differ from the Hub: {differ[:12]}")

    left = leftovers(cache)
    if left:
        names = sorted(str(p.relative_to(cache)) for p in left)
        problems.append(f"{len(left)} leftover(s): {names[:MAX_PROBLEMS]}")

    served = served_by_blob(hub, repo)
    if small_blob:
        sizes = repo.blobs
        small = {e for e, n in sizes.items() if n <= small_blob}
        over = [e for e in small if served.get(e, 0) > PROCS * sizes[e]]
        if over:
            problems.append(f"{len(over)} small blob(s) fetched more than once per process")
        served = {e: n for e, n in served.items() if e not in small}
        claimed_total = sum(n for e, n in sizes.items() if e not in small)
    else:
        claimed_total = repo.total
    total_served = sum(served.values())
    ratio = total_served / claimed_total
    if ratio > BUDGET:
        sizes = repo.blobs
        again = sorted(
            ((n / sizes.get(e, 1), e) for e, n in served.items() if n > sizes.get(e, 0)),
            reverse=True,
        )
        worst = ", ".join(f"{repo.path_of(e) if e in sizes else e} {x:.1f}x" for x, e in again[:5])
        problems.append(
            f"the Hub served {total_served} file bytes for {claimed_total} repo bytes "
            f"({ratio:.2f}x > {BUDGET}x): {len(again)} blob(s) fetched more than once "
            f"(worst: {worst})"
        )
    for etag, held in seeded.items():
        size, got = repo.blobs[etag], served.get(etag, 0)
        allowed = size - held + SEGMENT
        if got > allowed:
            problems.append(
                f"{repo.big[etag]}: its abandoned partial held {held} of {size} bytes, yet "
                f"{got} were fetched (> {size - held} missing + 1 segment): not taken over"
            )
    if hub.errors:
        problems.append(f"fake Hub errors: {hub.errors[:3]}")
    return problems, ratio


# -- rounds ----------------------------------------------------------------------------------


class SeedingFailed(Exception):
    pass


def journal_bytes(partial: Path) -> int:
    """Bytes the partial's journal records as on disk (0 when there is no readable journal)."""
    try:
        record = json.loads(partial.with_name(partial.name + ".journal").read_text())
        return sum(int(e) - int(s) for s, e in record["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def seed_abandoned_partials(
    hub: FakeHub, repo: StressRepo, env: dict[str, str], cache: Path, logs: Path, backdate: bool
) -> dict[str, int]:
    """SIGKILL one run mid-download of the LFS files; blob name -> bytes its journal holds."""
    hub.faults.append(Fault("throttle", server="cdn", rate=SEED_RATE))
    proc = start_get("seeder", logs, env, cache, "--include", "*.safetensors", prefix=[])
    try:
        deadline = time.monotonic() + SEED_TIMEOUT
        while hub.bytes_sent("/cdn/") < SEED_BYTES:
            if proc.popen.poll() is not None:
                raise SeedingFailed(
                    f"the seeding run ended (exit {proc.popen.returncode}) before it was "
                    f"killed:\n{proc.stderr_tail()}"
                )
            if time.monotonic() > deadline:
                raise SeedingFailed(f"the seeding run got no {SEED_BYTES} CDN bytes in time")
            time.sleep(0.01)
    finally:
        proc.kill()
        hub.faults.clear()
    blobs = repo_dir(cache, REPO, REPO_TYPE) / "blobs"
    partials = {
        p: etag
        for p in blobs.glob("*.incomplete")
        for etag in repo.big
        if etag in p.name and p.stat().st_size > 0
    }
    if not partials:
        raise SeedingFailed(f"SIGKILL left no partial of an LFS file in {blobs}")
    if backdate:
        old = time.time() - BACKDATE
        for path in blobs.iterdir():
            os.utime(path, (old, old), follow_symlinks=False)
    held: dict[str, int] = defaultdict(int)
    for partial, etag in partials.items():
        held[etag] = max(held[etag], journal_bytes(partial))
    return dict(held)


@dataclass
class RoundResult:
    label: str
    seconds: float = 0.0
    ratio: float = 0.0
    sampler: str = ""
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        state = "ok  " if not self.problems else "FAIL"
        return (
            f"{state} {self.label:<10} {self.seconds:5.1f} s  {self.ratio:4.2f}x bytes  "
            f"{self.sampler}"
        )


def run_round(
    kind: str, number: int, hub: FakeHub, repo: StressRepo, tmp_path: Path
) -> RoundResult:
    result = RoundResult(f"{kind}-{number}")
    base = tmp_path / result.label
    cache, logs = base / "cache", base / "logs"
    knobs = dict(ENV)
    if kind == "small":
        del knobs["HFPULL_SMALL_BLOB"]
    env = cli_env(base, HF_ENDPOINT=hub.url, **knobs)
    hub.faults.clear()
    hub.errors.clear()
    hub.reset_log()
    seeded: dict[str, int] = {}
    started = time.monotonic()
    if kind == "seeded":
        try:
            seeded = seed_abandoned_partials(hub, repo, env, cache, logs, number % 2 == 1)
        except SeedingFailed as exc:
            result.problems.append(f"seeding failed: {exc}")
            return result
        hub.reset_log()
    prefix = UNSHARE if kind == "pidns" else []
    procs: list[Proc] = []
    sampler = PartialSampler(repo_dir(cache, REPO, REPO_TYPE) / "blobs", procs)
    sampler.start()
    late: list[str] = []
    try:
        if kind == "sequential":
            for i in range(2):
                procs.append(start_get(f"get-{i}", logs, env, cache, prefix=prefix))
                late += wait_all(procs[-1:], ROUND_TIMEOUT)
        else:
            for i in range(PROCS):
                procs.append(start_get(f"get-{i}", logs, env, cache, prefix=prefix))
            late = wait_all(procs, ROUND_TIMEOUT)
    finally:
        sampler.stop()
        for proc in procs:
            proc.kill()
    result.seconds = time.monotonic() - started
    small_blob = SMALL_BLOB_DEFAULT if kind == "small" else 0
    result.problems, result.ratio = check_round(procs, late, cache, hub, repo, seeded, small_blob)
    result.problems += sampler.problems
    if sampler.dropped:
        result.problems.append(f"... and {sampler.dropped} more sampler problem(s)")
    result.sampler = sampler.summary()
    return result


def run_rounds(kinds: list[tuple[str, int]], hub: FakeHub, repo: StressRepo, tmp: Path) -> None:
    results = []
    for kind, count in kinds:
        for number in range(1, count + 1):
            results.append(run_round(kind, number, hub, repo, tmp))
            print(results[-1].line(), flush=True)
    failed = [r for r in results if r.problems]
    if failed:
        table = "\n".join(r.line() for r in results)
        details = "\n\n".join(
            f"== {r.label}:\n" + "\n".join(f"- {p}" for p in r.problems) for r in failed
        )
        pytest.fail(
            f"{len(failed)} of {len(results)} rounds failed "
            f"({PROCS} processes each, repo {repo.total} bytes)\n{table}\n\n{details}",
            pytrace=False,
        )


# -- tests -----------------------------------------------------------------------------------


def test_plain_rounds(fake_hub: FakeHub, stress_repo: StressRepo, tmp_path: Path) -> None:
    run_rounds([("plain", stress_rounds(3))], fake_hub, stress_repo, tmp_path)


def test_small_blobs_skip_the_claim(
    fake_hub: FakeHub, stress_repo: StressRepo, tmp_path: Path
) -> None:
    """The default: files up to 1 MiB are fetched without a claim, by each process at most
    once, and land verified with nothing left behind; the LFS files still go through it."""
    run_rounds([("small", 1)], fake_hub, stress_repo, tmp_path)


def test_abandoned_partial_is_taken_over(
    fake_hub: FakeHub, stress_repo: StressRepo, tmp_path: Path
) -> None:
    run_rounds([("seeded", 1)], fake_hub, stress_repo, tmp_path)


def test_separate_pid_namespaces(
    fake_hub: FakeHub, stress_repo: StressRepo, tmp_path: Path
) -> None:
    require_unshare()
    run_rounds([("pidns", 1)], fake_hub, stress_repo, tmp_path)


@pytest.mark.slow
def test_many_rounds(fake_hub: FakeHub, stress_repo: StressRepo, tmp_path: Path) -> None:
    rounds = stress_rounds(20)
    extra = max(2, rounds // 5)
    require_unshare()
    kinds = [("plain", rounds), ("seeded", extra), ("pidns", extra)]
    run_rounds(kinds, fake_hub, stress_repo, tmp_path)


def test_sequential_control(fake_hub: FakeHub, stress_repo: StressRepo, tmp_path: Path) -> None:
    """Two runs one after the other pass every check: what fails here is not about sharing."""
    run_rounds([("sequential", 1)], fake_hub, stress_repo, tmp_path)


def test_six_processes_share_one_local_dir(
    fake_hub: FakeHub, stress_repo: StressRepo, tmp_path: Path
) -> None:
    """The same protocol guards a plain --local-dir (partials in .cache/huggingface/)."""
    target, logs = tmp_path / "local", tmp_path / "logs"
    logs.mkdir()
    env = cli_env(tmp_path, HF_ENDPOINT=fake_hub.url, **ENV)
    fake_hub.reset_log()
    procs = []
    for i in range(PROCS):
        out, err = logs / f"get-{i}.out", logs / f"get-{i}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            popen = subprocess.Popen(
                [sys.executable, "-m", "hfpull", "get", REPO, "--repo-type", REPO_TYPE,
                 "--local-dir", str(target), "--quiet"],
                cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True,
            )  # fmt: skip
        procs.append(Proc(f"get-{i}", popen, out, err))
    try:
        late = wait_all(procs, ROUND_TIMEOUT)
    finally:
        for proc in procs:
            proc.kill()
    assert not late, f"still running after {ROUND_TIMEOUT}s: {late}"
    for proc in procs:
        assert proc.popen.returncode == 0, f"{proc.name}: {proc.stderr_tail()}"
    for path, data in stress_repo.files.items():
        assert (target / path).read_bytes() == data, path
    assert leftovers(target) == []
    served = sum(served_by_blob(fake_hub, stress_repo).values())
    assert served <= 1.25 * stress_repo.total, f"{served} bytes served for {stress_repo.total}"
