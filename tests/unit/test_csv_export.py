"""CSV export cells: formulas neutralised, numbers kept, one row per record."""

from __future__ import annotations

import csv
import io

import pytest

from gateway.audit.csv_export import COLUMNS, csv_header, csv_line, neutralised


@pytest.mark.parametrize(
    "dangerous", ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("x")']
)
def test_text_a_spreadsheet_would_run_gets_an_apostrophe(dangerous: str) -> None:
    assert neutralised(dangerous) == "'" + dangerous


@pytest.mark.parametrize("safe", ["gpt", "a=b", "2026-01-01T00:00:00+00:00", ""])
def test_other_text_is_unchanged(safe: str) -> None:
    assert neutralised(safe) == safe


def test_numbers_stay_numbers_and_none_is_empty() -> None:
    assert (neutralised(-5), neutralised(200), neutralised(None)) == (-5, 200, "")
    assert neutralised(True) == "true"


def test_a_nested_value_is_json_and_neutralised_as_text() -> None:
    assert neutralised({"b": 1, "a": "=x"}) == '{"a": "=x", "b": 1}'
    assert neutralised(["=x"]) == '["=x"]'


def test_a_row_parses_back_under_the_header() -> None:
    fields = {"event": "admin", "target": "=evil()", "status": 200, "change": {"n": "a,b\n"}}
    text = csv_header() + csv_line(7, fields, bytes(32))
    (row,) = list(csv.DictReader(io.StringIO(text)))
    assert list(row) == list(COLUMNS)
    assert (row["seq"], row["event"], row["status"]) == ("7", "admin", "200")
    assert row["target"] == "'=evil()"
    assert row["change"] == '{"n": "a,b\\n"}'
    assert row["leaf"] == "00" * 32
    assert row["model"] == ""
