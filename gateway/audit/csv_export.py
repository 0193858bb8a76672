"""Audit records as CSV for spreadsheets, with formula injection neutralised.

A cell a spreadsheet would run as a formula (text starting with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return, as OWASP lists them) gets a leading apostrophe. Numbers stay
numbers. The CSV carries no proofs: the JSONL export is the one to verify.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from typing import Any

COLUMNS = (
    "seq", "time", "event", "request_id", "tenant_id", "user", "key", "endpoint", "model",
    "status", "error_code", "finish_reason", "prompt_tokens", "completion_tokens",
    "latency_ms", "prompt_sha256", "answer_sha256", "worker_id", "weights_digest", "target",
    "change", "leaf",
)  # fmt: skip
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralised(value: Any) -> str | int:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _line(values: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def csv_header() -> str:
    return _line(list(COLUMNS))


def csv_line(seq: int, fields: Mapping[str, Any], leaf: bytes) -> str:
    row = {**fields, "seq": seq, "leaf": leaf.hex()}
    return _line([neutralised(row.get(column)) for column in COLUMNS])
