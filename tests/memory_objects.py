"""An in-memory ObjectStore with S3's conditional-write rules, for fast unit tests.

It follows what S3 (and SeaweedFS, MinIO) do, not what would be convenient: ETags are quoted
MD5 hex digests (a multipart object's is ``"<md5 of the part md5s>-<parts>"``), a conditional
write that loses raises PreconditionFailed, every part but the last must be at least 5 MiB
(``min_part`` lowers that for tests), and an upload is visible only once completed.
``down`` makes every call raise StoreUnavailable, as a stopped store would.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from hfpull.blobstore.objects import ObjectInfo, PreconditionFailed, StoreUnavailable
from hfpull.errors import NotFoundError

MIN_PART = 5 << 20
CHUNK = 1 << 20


@dataclass
class _Object:
    body: bytes
    etag: str
    modified: float


@dataclass
class _Upload:
    name: str
    parts: dict[int, tuple[bytes, str]] = field(default_factory=dict)


class MemoryObjectStore:
    def __init__(self, min_part: int = MIN_PART) -> None:
        self.min_part = min_part
        self.down = False
        self.calls: list[str] = []  # the operation names, in order (for assertions)
        self._objects: dict[str, _Object] = {}
        self._uploads: dict[str, _Upload] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- helpers --------------------------------------------------------------------------

    def _enter(self, operation: str) -> None:
        self.calls.append(operation)
        if self.down:
            raise StoreUnavailable(f"object store: {operation}: connection refused (test)")

    def _check(self, name: str, if_none_match: bool, if_match: str | None) -> None:
        current = self._objects.get(name)
        if if_none_match and current is not None:
            raise PreconditionFailed(f"{name} exists")
        if if_match is not None and (current is None or current.etag != if_match):
            raise PreconditionFailed(f"{name}: ETag is not {if_match}")

    def _store(self, name: str, body: bytes, etag: str) -> str:
        self._objects[name] = _Object(body, etag, time.time())
        return etag

    # -- ObjectStore ----------------------------------------------------------------------

    def head(self, name: str) -> ObjectInfo | None:
        self._enter("head")
        with self._lock:
            obj = self._objects.get(name)
            return None if obj is None else ObjectInfo(name, len(obj.body), obj.etag, obj.modified)

    def get(self, name: str) -> tuple[bytes, str] | None:
        self._enter("get")
        with self._lock:
            obj = self._objects.get(name)
            return None if obj is None else (obj.body, obj.etag)

    def get_range(self, name: str, start: int, end: int) -> Iterator[bytes]:
        self._enter("get_range")
        with self._lock:
            obj = self._objects.get(name)
        if obj is None:
            raise NotFoundError(f"object store: no object {name}")
        body = obj.body[start:end]
        for offset in range(0, len(body), CHUNK):
            yield body[offset : offset + CHUNK]

    def put(
        self, name: str, body: bytes, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        self._enter("put")
        with self._lock:
            self._check(name, if_none_match, if_match)
            return self._store(name, bytes(body), _etag(body))

    def upload_file(self, name: str, path: str, *, if_none_match: bool = False) -> str:
        self._enter("upload_file")
        with open(path, "rb") as handle:
            body = handle.read()
        with self._lock:
            self._check(name, if_none_match, None)
            return self._store(name, body, _etag(body))

    def delete(self, name: str) -> None:
        self._enter("delete")
        with self._lock:
            self._objects.pop(name, None)

    def scan(self, prefix: str) -> Iterator[ObjectInfo]:
        self._enter("scan")
        with self._lock:
            found = sorted((n, o) for n, o in self._objects.items() if n.startswith(prefix))
        for name, obj in found:
            yield ObjectInfo(name, len(obj.body), obj.etag, obj.modified)

    def create_multipart(self, name: str) -> str:
        self._enter("create_multipart")
        with self._lock:
            upload_id = f"upload-{next(self._ids)}"
            self._uploads[upload_id] = _Upload(name)
            return upload_id

    def _upload(self, name: str, upload_id: str) -> _Upload:
        upload = self._uploads.get(upload_id)
        if upload is None or upload.name != name:
            raise NotFoundError(f"object store: no upload {upload_id} for {name}")
        return upload

    def upload_part(self, name: str, upload_id: str, number: int, body: bytes) -> str:
        self._enter("upload_part")
        with self._lock:
            etag = _etag(body)
            self._upload(name, upload_id).parts[number] = (bytes(body), etag)
            return etag

    def upload_part_copy(
        self, name: str, upload_id: str, number: int, source: str, start: int, end: int
    ) -> str:
        self._enter("upload_part_copy")
        with self._lock:
            obj = self._objects.get(source)
            if obj is None:
                raise NotFoundError(f"object store: no object {source}")
            body = obj.body[start:end]
            etag = _etag(body)
            self._upload(name, upload_id).parts[number] = (body, etag)
            return etag

    def complete_multipart(
        self,
        name: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        if_none_match: bool = False,
    ) -> str:
        self._enter("complete_multipart")
        with self._lock:
            upload = self._upload(name, upload_id)
            numbers = [number for number, _ in parts]
            if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
                raise ValueError("parts must be in ascending order, each once")
            bodies = []
            for index, (number, etag) in enumerate(parts):
                if number not in upload.parts or upload.parts[number][1] != etag:
                    raise ValueError(f"part {number}: no such part or wrong ETag")
                body = upload.parts[number][0]
                if index < len(parts) - 1 and len(body) < self.min_part:
                    raise ValueError(f"part {number} is smaller than {self.min_part} bytes")
                bodies.append(body)
            self._check(name, if_none_match, None)
            digest = hashlib.md5(b"".join(bytes.fromhex(e.strip('"')) for _, e in parts))
            del self._uploads[upload_id]
            return self._store(name, b"".join(bodies), f'"{digest.hexdigest()}-{len(parts)}"')

    def abort_multipart(self, name: str, upload_id: str) -> None:
        self._enter("abort_multipart")
        with self._lock:
            upload = self._uploads.get(upload_id)
            if upload is not None and upload.name == name:
                del self._uploads[upload_id]

    def list_multipart(self, prefix: str) -> Iterator[tuple[str, str]]:
        self._enter("list_multipart")
        with self._lock:
            found = sorted(
                (u.name, i) for i, u in self._uploads.items() if u.name.startswith(prefix)
            )
        yield from found


def _etag(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'
