"""CSV cells a spreadsheet will not run as formulas (the values come from callbacks): one that
starts as a formula is written with a leading `'` (OWASP's CSV injection advice)."""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
