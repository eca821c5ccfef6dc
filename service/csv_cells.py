"""CSV cells a spreadsheet will not run as formulas: the values come from callbacks, and a
cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read as a formula by
Excel, LibreOffice and Google Sheets. Such a cell is written with a leading `'` (OWASP's CSV
injection advice), so a number such as +46700000001 reads as '+46700000001: the text, whole.
Used by every CSV the service writes (the console's compliance CSV and the CLI's output)."""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: Any) -> str:
    """The text of a CSV cell for `value` (None is empty)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
