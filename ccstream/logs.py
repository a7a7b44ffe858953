"""Structured logs with a stable vocabulary, bound per stream, secrets redacted at the source.

Every log line is an *event name* from a fixed vocabulary (``ws.connected``, ``ws.closed``,
``ws.reconnect_scheduled``, ``token.refreshed``, ``cursor.committed``, ``dedup.duplicate``, ...)
plus fields. Loggers are bound to context (``log.bind(stream="genesys-main")``) so that every
line of a stream says which stream it is. Rendering is JSON (one object per line, for machines)
or console (for people), over the standard ``logging`` module so that library logs mix in.

Redaction happens here, before anything is formatted: values of sensitive keys are replaced, and
URLs lose their ``access_token`` query parameter (``redact_url``). Tokens never reach a handler.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

REDACTED = "[redacted]"
SENSITIVE_KEYS = frozenset({
    "access_token", "refresh_token", "token", "client_secret", "secret", "password",
    "authorization", "jwt", "proxy_authorization", "proxy-authorization",
})
_SENSITIVE_QUERY = frozenset({"access_token", "refresh_token", "token", "client_secret"})
_PASSWORD_IN_URL = re.compile(r"(://[^/\s:@]*):[^@\s/]*@")
_FIELDS = "ccstream_fields"


def redact_password(text: str) -> str:
    """``text`` with the password of every URL in it cut out (``http://user:[redacted]@proxy``:
    a proxy's credentials are secrets)."""
    return _PASSWORD_IN_URL.sub(rf"\1:{REDACTED}@", text)


def redact_url(url: str) -> str:
    """The URL without the values of secret-bearing query parameters, nor a password."""
    url = redact_password(url)
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL after all (or one urllib refuses): the text as redacted
        return url
    if not parts.query:
        return url
    query = [
        (k, REDACTED if k.lower() in _SENSITIVE_QUERY else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="[]:,")))


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``fields`` with sensitive values replaced and URLs cleaned."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key.lower() in SENSITIVE_KEYS:
            out[key] = REDACTED
        elif isinstance(value, str) and "://" in value and ("?" in value or "@" in value):
            out[key] = redact_url(value)
        else:
            out[key] = value
    return out


class BoundLogger:
    """A logger that carries context fields into every line it writes."""

    __slots__ = ("_context", "_logger")

    def __init__(self, logger: logging.Logger, context: dict[str, Any] | None = None) -> None:
        self._logger = logger
        self._context = context or {}

    def bind(self, **fields: Any) -> BoundLogger:
        return BoundLogger(self._logger, {**self._context, **redact(fields)})

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            merged = {**self._context, **redact(fields)}
            self._logger.log(level, event, extra={_FIELDS: merged}, stacklevel=3)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)


def get_logger(name: str, **context: Any) -> BoundLogger:
    return BoundLogger(logging.getLogger(name), redact(context))


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record (empty for plain library log lines)."""
    fields = getattr(record, _FIELDS, None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **fields_of(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
        extra = " ".join(f"{k}={v}" for k, v in fields_of(record).items())
        line = f"{ts} {record.levelname.lower():7} {record.getMessage()} {extra}".rstrip()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "INFO", fmt: str = "json", stream: IO[str] | None = None) -> None:
    """Install one handler on the root logger (idempotent: replaces ccstream's own handler).

    Logs go to standard output: standard error is kept for the one line a command prints when
    it exits non-zero (CLI contract), so that line is never buried in log output.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "ccstream", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.ccstream = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # libraries are chatty at INFO; their warnings still show
    for noisy in ("aiokafka", "faust", "mode", "websockets", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
