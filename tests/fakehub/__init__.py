"""A fake Hugging Face Hub (and a separate-origin CDN) on 127.0.0.1, for download tests.

Typical use::

    with FakeHub() as hub:
        sha = hub.add_repo("org/model", {"config.json": b"{}", "model.safetensors": path})
        hub.faults.append(Fault("reset", match="/cdn/", after_bytes=1 << 20, times=1))
        ...  # point the client at hub.url, then inspect hub.requests / hub.bytes_sent()
"""

from .faults import Fault
from .log import RequestRecord
from .server import FakeHub

__all__ = ["FakeHub", "Fault", "RequestRecord"]
