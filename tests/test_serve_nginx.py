"""The documented nginx front (docs/examples/nginx-hfpull.conf) works as documented: TLS,
streaming a cold blob while it fills, ranges, and pagination links that come back over https.

Slow-marked: it needs Debian's nginx (`apt-get install nginx-light`) and openssl; without
them it fails with a message saying so, it never skips.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, cli_env
from tests.fakehub import FakeHub
from tests.helpers import MiB
from tests.serve_helpers import free_port, running_mirror
from tests.test_interop import run_python

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "docs" / "examples" / "nginx-hfpull.conf"


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    assert found, f"this test needs {name} (apt-get install {package})"
    return found


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "mirror.pem", tmp_path / "mirror.key"
    subprocess.run(
        [_tool("openssl", "openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@contextmanager
def nginx_front(tmp_path: Path, mirror_url: str) -> Iterator[tuple[str, Path]]:
    """nginx with the documented site config, pointed at the mirror, on a free port."""
    nginx = _tool("nginx", "nginx-light")
    cert, key = _certificate(tmp_path)
    port = free_port()
    site = EXAMPLE.read_text()
    site = site.replace("127.0.0.1:8090", mirror_url.removeprefix("http://"))
    site = re.sub(r"listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;", site)
    site = site.replace("/etc/ssl/certs/mirror.pem", str(cert))
    site = site.replace("/etc/ssl/private/mirror.key", str(key))
    assert str(cert) in site and f":{port} ssl" in site, "the example config changed shape"
    temp = tmp_path / "nginx"
    temp.mkdir()
    (temp / "site.conf").write_text(site)
    (temp / "nginx.conf").write_text(
        f"daemon off;\npid {temp}/nginx.pid;\nerror_log {temp}/error.log info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n access_log {temp}/access.log;\n client_body_temp_path {temp}/body;\n"
        f" proxy_temp_path {temp}/proxy;\n include {temp}/site.conf;\n}}\n"
    )
    proc = subprocess.Popen(
        [nginx, "-p", str(temp), "-c", str(temp / "nginx.conf")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"nginx exited: {proc.stdout.read() if proc.stdout else ''}"
            try:
                if requests.get(url + "/healthz", verify=str(cert), timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "nginx did not answer within 20 s"
            time.sleep(0.1)
        yield url, cert
    finally:
        proc.terminate()
        proc.wait(10)


def test_nginx_front_streams_ranges_and_paginates(tmp_path: Path, fake_hub: FakeHub) -> None:
    blob = os.urandom(12 * MiB)
    files = {"config.json": b'{"a": 1}', "model.safetensors": blob}
    files.update({f"many/f{i:02d}.txt": f"{i}".encode() for i in range(7)})
    commit = fake_hub.add_repo("org/model", files)
    fake_hub.page_size = 3  # the tree is paginated: its Links must come back over https
    fake_hub.throttle_rate = 4 * MiB  # the fill takes ~3 s: streaming must not wait for it

    with (
        running_mirror(tmp_path, fake_hub.url, "--trust-proxy", "127.0.0.1/32") as mirror,
        nginx_front(tmp_path, mirror) as (front, cert),
    ):
        started = time.monotonic()
        with requests.get(
            f"{front}/org/model/resolve/main/model.safetensors", verify=str(cert),
            stream=True, timeout=30,
        ) as r:  # fmt: skip
            assert r.status_code == 200, r.text
            first = next(r.iter_content(64 << 10))
            first_at = time.monotonic() - started
            body = first + b"".join(r.iter_content(1 << 20))
            total = time.monotonic() - started
        assert hashlib.sha256(body).digest() == hashlib.sha256(blob).digest()
        assert first_at < total / 2, (
            f"nginx buffered the fill: first byte {first_at:.2f} s of {total:.2f} s"
        )

        r = requests.get(
            f"{front}/org/model/resolve/{commit}/model.safetensors", verify=str(cert),
            headers={"Range": "bytes=100-199"}, timeout=30,
        )  # fmt: skip
        assert r.status_code == 206 and r.content == blob[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(blob)}"

        page = requests.get(
            f"{front}/api/models/org/model/tree/main/many", verify=str(cert), timeout=30
        )
        assert page.status_code == 200 and len(page.json()) == 3
        assert page.links["next"]["url"].startswith(front + "/"), page.headers["Link"]

        env = cli_env(
            tmp_path, HF_ENDPOINT=front, HF_HUB_CACHE=str(tmp_path / "client"),
            SSL_CERT_FILE=str(cert), REQUESTS_CA_BUNDLE=str(cert), HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
        )  # fmt: skip
        out = run_python(
            """
            import hashlib, pathlib
            from huggingface_hub import snapshot_download
            root = pathlib.Path(snapshot_download("org/model"))
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    print(p.relative_to(root), hashlib.sha256(p.read_bytes()).hexdigest())
            """,
            env,
        )
    want = sorted(f"{p} {hashlib.sha256(b).hexdigest()}" for p, b in files.items())
    assert sorted(out.splitlines()) == want
