"""Logging: one format for every line the service writes (ours and uvicorn's), JSON or text
(LEDGER_LOG_FORMAT), with a record's `extra={"fields": {...}}` as keys of the JSON object or
`key=value` after the text.

Every string that reaches a line goes through `redact`: webhook secrets, bearer tokens and API
keys are replaced, and anything shaped like a phone number is masked down to its last 4
digits. That is a net under the code, not a licence to log identities."""

from __future__ import annotations

import logging
import logging.config
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from service.settings import ConfigError, listed

FORMATS = ("json", "text")
# `serve --log-level` takes uvicorn's names; "trace" is uvicorn's level below debug.
LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10, "trace": 5}

# A run of 8 or more digits not glued to a word or an id (E.164 numbers have 8-15 digits;
# a ULID's or a UUID's digits are preceded by a letter or a dash), with an optional leading +
# or its URL-encoded %2B; or a + followed by digits with single separators ("+46 70-000 0001").
_PHONE = re.compile(r"(?:(?<![\w-])(?:\+|%2[Bb])?\d{8,}(?!\w))|(?:\+\d(?:[ ()\-.]?\d){6,16})")
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)[^\s\"',;]+")
_API_KEY = re.compile(r"\bclk_[A-Za-z0-9_\-]+")


def mask_identity(value: str) -> str:
    """An identity (a phone number in any format, or any other channel identity) with every
    letter and digit but the last four replaced by `*`: `+46 70-000 0001` -> `+** **-*** 0001`."""
    keep = 4
    out = list(value)
    for i in range(len(out) - 1, -1, -1):
        if out[i].isalnum():
            if keep > 0:
                keep -= 1
            else:
                out[i] = "*"
    return "".join(out)


class Redactor:
    # Short texts come back again and again (a route, a trigger, "request"): remembered.
    CACHED_CHARS = 64
    CACHE_SIZE = 4096

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Short values would mangle ordinary words; a real secret is long.
        self.secrets = tuple(sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True))
        self._cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        if len(text) > self.CACHED_CHARS:
            return self._redact(text)
        found = self._cache.get(text)
        if found is None:
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            found = self._cache[text] = self._redact(text)
        return found

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "[secret]")
        if "earer" in text or "EARER" in text:
            text = _BEARER.sub(r"\1 [redacted]", text)
        if "clk_" in text:
            text = _API_KEY.sub("clk_[redacted]", text)
        return _PHONE.sub(_masked, text)


def _masked(match: re.Match[str]) -> str:
    found = match.group(0)
    if found[:3] in ("%2B", "%2b"):  # a URL-encoded +
        return found[:3] + mask_identity(found[3:])
    return mask_identity(found)


redact = Redactor(listed(os.environ, "SINCH_WEBHOOK_SECRET"))


_second: tuple[int, str] = (-1, "")


def _utc(created: float) -> str:
    """`2024-06-15T14:25:09.123Z`; the part up to the second made once a second."""
    global _second
    seconds = int(created)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"


# The one exception to redaction: the admin key `serve` creates on a store with no key, shown
# once, passed as this record attribute.
SHOWN_ONCE = "shown_once"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": redact(record.getMessage()),
        }
        fields: Mapping[str, Any] | None = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = redact(record.exc_text)
        shown = getattr(record, SHOWN_ONCE, None)
        if shown is not None:
            entry["api_key"] = shown
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`2024-06-15T14:25:09.123Z INFO callback_ledger: message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        fields: Mapping[str, Any] | None = getattr(record, "fields", None)
        if fields:
            line += "".join(f" {key}={value}" for key, value in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        shown = getattr(record, SHOWN_ONCE, None)
        return redact(line) + (f"\n    Authorization: Bearer {shown}" if shown else "")


def log_format(env: Mapping[str, str] | None = None, stream: Any = None) -> str:
    """LEDGER_LOG_FORMAT, or JSON when `stream` (stderr) is not a terminal, text when it is."""
    env = os.environ if env is None else env
    value = env.get("LEDGER_LOG_FORMAT", "").strip().lower()
    if not value:
        stream = sys.stderr if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    if value not in FORMATS:
        raise ConfigError(f"LEDGER_LOG_FORMAT must be json or text, got {value!r}")
    return value


def config(level: str | int = "INFO", fmt: str | None = None) -> dict[str, Any]:
    """A `logging.config.dictConfig` for the root logger and uvicorn's (applied in each server
    process): every line on stderr in one format."""
    fmt = fmt or log_format()
    if isinstance(level, str):
        level = LEVELS.get(level.lower(), logging.INFO)
    formatter = f"{__name__}.{'JsonFormatter' if fmt == 'json' else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ledger": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "ledger",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's own: through the root's handler, in the same format.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            # Replaced by our request line (api/observe.py), which has the request id and the
            # route template rather than the raw path and its query (where numbers travel).
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def setup(level: str | int = "INFO") -> None:
    global redact
    redact = Redactor(listed(os.environ, "SINCH_WEBHOOK_SECRET"))
    logging.config.dictConfig(config(level))
