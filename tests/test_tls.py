"""TLS failures are not retried and never downgraded; the next source is tried."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hfpull.errors import NetworkError
from hfpull.pull import download
from tests.conftest import fast_settings
from tests.fakehub import FakeHub


class UntrustedTLSServer:
    """Accepts TCP connections on 127.0.0.1 and offers a self-signed certificate."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.handshake_errors: list[str] = []  # why each TLS handshake failed, server side
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            try:
                with self.context.wrap_socket(conn, server_side=True):
                    pass
            except ssl.SSLError as exc:
                self.handshake_errors.append(exc.reason or type(exc).__name__)
                conn.close()
            except OSError:
                conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def untrusted(tmp_path: Path) -> Iterator[UntrustedTLSServer]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available to make a throwaway certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = UntrustedTLSServer(cert, key)
    yield server
    server.close()


def test_certificate_error_is_not_retried(untrusted: UntrustedTLSServer, tmp_path: Path) -> None:
    settings = fast_settings(f"https://127.0.0.1:{untrusted.port}", tmp_path / "c", max_retries=5)
    with pytest.raises(NetworkError) as info:
        download("org/model", settings=settings)
    assert "TLS certificate" in str(info.value) and "clock" in (info.value.hint or "")
    assert untrusted.connections == 1  # one handshake, refused, no retries


def test_untrusted_mirror_falls_back_to_the_origin(
    untrusted: UntrustedTLSServer, fake_hub: FakeHub, tmp_path: Path
) -> None:
    fake_hub.add_repo("org/model", {"config.json": b"{}"})
    mirror = f"https://127.0.0.1:{untrusted.port}"
    settings = fast_settings(fake_hub.url, tmp_path / "c", mirrors=(mirror,))
    result = download("org/model", settings=settings)
    assert (Path(result.path) / "config.json").read_bytes() == b"{}"
    untrusted.close()  # joins the server thread: its counts are final
    # The mirror was tried first (the revision request, then config.json) and each time the
    # client itself refused its certificate mid-handshake; it was not retried within a request.
    errors = untrusted.handshake_errors
    assert 1 <= len(errors) == untrusted.connections <= 2, (untrusted.connections, errors)
    assert all("ALERT" in e for e in errors), errors  # the client sent the alert: it refused
    # ... and the origin supplied everything.
    origin = fake_hub.url.removeprefix("http://")
    assert [(f.path, f.source) for f in result.files] == [("config.json", origin)]
    hub_paths = [r.path for r in fake_hub.requests]
    assert any("/revision/main" in p for p in hub_paths)
    assert any("/resolve/" in p and p.endswith("/config.json") for p in hub_paths)
