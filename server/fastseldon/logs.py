"""Logging set-up for the server, and how user exceptions are logged.

``--log-format text`` (the default) writes ``time level [pid] logger: message``; ``json``
writes one object per line with ``time``, ``level``, ``logger``, ``message``, ``pid`` and,
where the record has them, ``puid``, ``client``, ``method``, ``route``, ``status``,
``latency_ms``, ``worker`` and ``traceback`` (log shippers read these without parsing).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
import traceback
from typing import Any

# Record attributes (set through ``extra=``) that JSON lines carry as fields of their own.
FIELDS = ("puid", "client", "method", "route", "status", "latency_ms", "worker", "reason")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["traceback"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def setup(level: str, fmt: str = "text") -> None:
    """Configure the root logger once, in the supervisor (workers inherit it over fork)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))


class UserErrors:
    """Logs exceptions raised by user code: with the traceback (user frames included) the first
    time each distinct error is seen, one line after that; at DEBUG the traceback every time."""

    LIMIT = 1000  # distinct errors remembered; past it every error is "new" again (bounded memory)

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._seen: set[tuple[str, str, str, int]] = set()
        self._lock = threading.Lock()

    @staticmethod
    def key(exc: BaseException) -> tuple[str, str, str, int]:
        frames = traceback.extract_tb(exc.__traceback__)
        where = frames[-1] if frames else None
        return (type(exc).__qualname__, str(exc)[:200], where.filename if where else "", where.lineno or 0 if where else 0)

    def log(self, exc: BaseException) -> None:
        debug = self.logger.isEnabledFor(logging.DEBUG)
        key = self.key(exc)
        with self._lock:
            first = key not in self._seen
            if first:
                if len(self._seen) >= self.LIMIT:
                    self._seen.clear()
                self._seen.add(key)
        name = type(exc).__name__
        if first or debug:
            self.logger.error("user model error: %s: %s", name, exc, exc_info=(type(exc), exc, exc.__traceback__))
        else:
            self.logger.error("user model error: %s: %s (traceback logged the first time)", name, exc)
