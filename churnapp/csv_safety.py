"""Spreadsheet-safe CSV text (OWASP "CSV injection").

A spreadsheet reads a cell starting with one of FORMULA_TRIGGERS as a formula; text that
came from leads, CRMs or providers must stay text. It lives here, in the lowest app, so
every CSV the project writes for people (tracking's exports, churnapp's `churn_score`
report) uses one rule.
"""

from __future__ import annotations

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def csv_text_safe(text: str) -> str:
    """`text` with a leading apostrophe if a spreadsheet would run it as a formula."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text
