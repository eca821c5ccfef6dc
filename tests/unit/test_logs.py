"""Logs: one JSON line per request with its id, route, status and time (and a callback's
trigger and outcome), debug lines per group commit and projection page, and never a full
phone number, a bearer token, an API key or the webhook secret."""

from __future__ import annotations

import io
import logging
import re

import orjson
import pytest

from service import logs
from service.settings import ConfigError

NUMBER = "46732001122"


@pytest.mark.parametrize(
    ("identity", "masked"),
    [
        ("+46732001122", "+*******1122"),
        ("46732001122", "*******1122"),
        ("+46 70-000 0001", "+** **-*** 0001"),
        ("123", "123"),
        ("someone@example.com", "*******@******e.com"),
    ],
)
def test_mask_identity_keeps_the_last_four(identity: str, masked: str) -> None:
    assert logs.mask_identity(identity) == masked


@pytest.mark.parametrize(
    ("line", "redacted"),
    [
        ("identity=46732001122 refused", "identity=*******1122 refused"),
        ("to +46732001122.", "to +*******1122."),
        ("to %2B46732001122&x", "to %2B*******1122&x"),
        ("call +46 70-123 4567 now", "call +** **-*** 4567 now"),
        ("Key (identity)=(46732001122) exists", "Key (identity)=(*******1122) exists"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer [redacted]"),
        ("key clk_Zm9vYmFyYmF6 used", "key clk_[redacted] used"),
        ("secret is sekrit-value-1 ok", "secret is [secret] ok"),
        # Not numbers: ids, dates, counts and durations stay readable.
        ("message 01H98765432101234 on 2024-06-15T14:25:09Z", None),
        ("stream 123e4567-e89b-12d3-a456-426614174000, 1234567 events, 12.5 ms", None),
    ],
)
def test_redact(line: str, redacted: str | None) -> None:
    redact = logs.Redactor(["sekrit-value-1"])
    assert redact(line) == (line if redacted is None else redacted)


def test_json_lines_are_redacted_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "redact", logs.Redactor(["sekrit-value-1"]))
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test_logs.json")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ValueError(f"DETAIL: Key (identity)=({NUMBER}) already exists")
    except ValueError:
        logger.exception(
            "failed for +%s with sekrit-value-1",
            NUMBER,
            extra={"fields": {"detail": f"Bearer abc {NUMBER}", "events": 12345678}},
        )
    finally:
        logger.removeHandler(handler)
    line = orjson.loads(stream.getvalue())
    assert NUMBER not in stream.getvalue()
    assert "sekrit" not in stream.getvalue()
    assert line["msg"] == "failed for +*******1122 with [secret]"
    assert line["detail"] == "Bearer [redacted] *******1122"
    assert line["events"] == 12345678  # numbers stay numbers: only text is redacted
    assert "*******1122" in line["exc"]
    assert {"ts", "level", "logger", "pid"} <= line.keys()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_format_defaults_to_json_off_a_terminal() -> None:
    assert logs.log_format({}, io.StringIO()) == "json"
    assert logs.log_format({}, Terminal()) == "text"
    assert logs.log_format({"LEDGER_LOG_FORMAT": "TEXT"}, io.StringIO()) == "text"
    assert logs.log_format({"LEDGER_LOG_FORMAT": "json"}, Terminal()) == "json"
    with pytest.raises(ConfigError, match="json or text"):
        logs.log_format({"LEDGER_LOG_FORMAT": "xml"})


def test_text_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "redact", logs.Redactor([]))
    record = logging.LogRecord("callback_ledger.access", logging.INFO, "", 0, "request", (), None)
    record.fields = {"request_id": "r-1", "route": "/consent/check", "note": f"+{NUMBER}"}
    line = logs.TextFormatter().format(record)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO callback_ledger.access: request "
        r"request_id=r-1 route=/consent/check note=\+\*{7}1122",
        line,
    ), line
