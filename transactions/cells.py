"""CSV cells a spreadsheet would run as formulas: quoted in the export, and
unquoted where the export is read back (`manage.py backtest`)."""

from __future__ import annotations

# What a spreadsheet evaluates as a formula (CSV injection), and the quote
# itself: a value that starts with one gets another, so quoting is undone
# exactly (a spreadsheet, too, shows "''x" as "'x").
_QUOTED_START = ("=", "+", "-", "@", "\t", "\r", "'")


def cell_quote(value: str) -> str:
    """Return `value` with a leading apostrophe if a spreadsheet would run it
    (=, +, -, @, tab, carriage return) or it starts with one."""
    return "'" + value if value.startswith(_QUOTED_START) else value


def cell_unquote(value: str) -> str:
    """Return the value `cell_quote` quoted: its leading apostrophe removed."""
    return value[1:] if value.startswith("'") else value
