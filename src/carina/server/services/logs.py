"""Structured (JSON lines) logs: one file per replica, ``W/logs/<hostname>.log``, and stderr.

Records carry the message and chosen fields (request id, route, status, model, timings); never a
patient identifier, a DICOM tag value or an uploaded file name: the server never passes those to a
logger.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from collections import deque
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path

#: Attributes every LogRecord has; anything else was passed with ``extra=`` and is logged.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key != "color_message":
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
            kind = record.exc_info[0]
            data["exception_type"] = kind.__name__ if kind is not None else "unknown"
        return json.dumps(data, default=str)


def log_path(workspace: Path) -> Path:
    """This replica's log file."""
    return workspace / "logs" / f"{socket.gethostname()}.log"


def setup_logging(workspace: Path, *, level: int = logging.INFO) -> Path:
    """Send Carina's and uvicorn's error logs as JSON to this replica's file and to stderr."""
    path = log_path(workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    formatter = JsonFormatter()
    handlers: list[logging.Handler] = [
        RotatingFileHandler(path, maxBytes=20 * 1024**2, backupCount=3, encoding="utf-8"),
        logging.StreamHandler(sys.stderr),
    ]
    for name in ("carina", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_carina", False)]:
            logger.removeHandler(old)
            old.close()
        for handler in handlers:
            handler.setFormatter(formatter)
            handler._carina = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    return path


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log file ("" when there is none yet), as an answer may
    show them: tracebacks (with the server's source paths) stay in the file, each record keeps
    only its exception's type."""
    try:
        with path.open(encoding="utf-8", errors="replace") as source:
            kept = deque(source, maxlen=max(lines, 0))
    except FileNotFoundError:
        return ""
    return "".join(_without_traceback(line) for line in kept)


def _without_traceback(line: str) -> str:
    if '"exception"' not in line:
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    record.pop("exception", None)
    return json.dumps(record) + "\n"
