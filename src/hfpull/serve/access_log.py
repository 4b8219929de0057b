"""One JSON line per request: what was asked, what was answered, from where, how fast.

Only fields the mirror chose are written; no request header is ever copied, so a token or
an Authorization header cannot reach the log whatever a client sends.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from hfpull.serve.access import CLIENT_KEY, PRINCIPAL_KEY


class JsonAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time_: float) -> None:
        target: dict[str, Any] = request.get("hfpull_target") or {}
        principal = request.get(PRINCIPAL_KEY)
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
            "client": request.get(CLIENT_KEY) or request.remote,  # after trusted proxies
            "user": getattr(principal, "name", None),  # the token's NAME, never the token
            "method": request.method,
            "url": request.raw_path.split("?", 1)[0][:2048],
            "repo": target.get("repo"),
            "revision": target.get("revision"),
            "path": target.get("path"),
            "range": request.headers.get("Range"),
            "status": response.status,
            "bytes_sent": response.body_length,  # headers included, like nginx $bytes_sent
            "cache": response.headers.get("X-Cache"),
            "duration_ms": round(time_ * 1000, 2),
        }
        self.logger.info(json.dumps(record, ensure_ascii=False))


def file_logger(path: Path) -> logging.Logger:
    logger = logging.getLogger("hfpull.serve.access")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger
