"""RFC 8785 canonical JSON: the RFC's own examples, the reference test data, and refusals."""

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from gateway.audit.canonical import CanonicalJsonError, JsonValue, canonical_json

# RFC 8785 section 3.2.2: the sample input and its canonical form.
RFC_3_2_2_INPUT = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
RFC_3_2_2_OUTPUT = (
    r'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    r'"string":"€$\u000f\nA' + "'" + r'B\"\\\\\"/"}'
)

# RFC 8785 section 3.2.3: sorting by UTF-16 code units.
RFC_3_2_3_INPUT = r"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
RFC_3_2_3_ORDER = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]

# RFC 8785 Appendix B: IEEE 754 bit patterns and their ECMAScript serialisations.
RFC_APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]
RFC_APPENDIX_B_REFUSED = ["7fffffffffffffff", "7ff0000000000000"]  # NaN, Infinity

# cyberphone/json-canonicalization testdata/input and testdata/output (the reference
# implementation's test data, by the RFC's first author).
CYBERPHONE = {
    "structures": (
        '{\n  "1": {"f": {"f": "hi","F": 5} ,"\\n": 56.0},\n  "10": { },\n  "": "empty",\n'
        '  "a": { },\n  "111": [ { } ],\n  "A": { }\n}',
        '{"":"empty","1":{"\\n":56,"f":{"F":5,"f":"hi"}},"10":{},"111":[{}],"A":{},"a":{}}',
    ),
    "values": (
        '{\n  "numbers": [1E30, 4.50, 333333333.33333329, 2e-3, 0.000000000000000000000000001],\n'
        '  "escaping": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
        '  "literals": [null, true, false]\n}',
        '{"escaping":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/","literals":[null,true,false],'
        '"numbers":[1e+30,4.5,333333333.3333333,0.002,1e-27]}',
    ),
    "weird": (
        '{\n  "\\u20ac": "Euro Sign",\n  "1": "One",\n  "\\u0080": "Control\\u007f",\n'
        '  "\\ud83d\\ude02": "Smiley",\n  "\\u00f6": "Latin Small Letter O With Diaeresis",\n'
        '  "\\ufb33": "Hebrew Letter Dalet With Dagesh",\n  "</script>": "Browser Challenge"\n}\n',
        '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f602":"Smiley","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
    ),
    "unicode": (
        '{\n  "Unnormalized Unicode":"\\u1e0d\\u0307"\n}\n',
        '{"Unnormalized Unicode":"\u1e0d\u0307"}',
    ),
    "french": (
        '{\n  "peach": "This sorting order",\n'
        '  "p\u00e9ch\u00e9": "is wrong according to French",\n'
        '  "p\u00eache": "but canonicalization MUST",\n  "sin":   "ingnore locale"\n}\n',
        '{"peach":"This sorting order","p\u00e9ch\u00e9":"is wrong according to French",'
        '"p\u00eache":"but canonicalization MUST","sin":"ingnore locale"}',
    ),
}


def _float(hex_ieee: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(hex_ieee))[0]
    return value


def test_rfc_3_2_2_sample_canonicalises_as_published() -> None:
    assert canonical_json(json.loads(RFC_3_2_2_INPUT)) == RFC_3_2_2_OUTPUT.encode()


def test_rfc_3_2_3_members_sort_by_utf16_code_units() -> None:
    value = json.loads(RFC_3_2_3_INPUT)
    canonical = canonical_json(value).decode()
    assert list(json.loads(canonical)) == RFC_3_2_3_ORDER
    assert canonical.startswith('{"\\r":"Carriage Return","1":"One","\u0080":"Control",')
    # Sorting by code point would put the emoji after U+FB33: the example tells them apart.
    assert sorted(value) != RFC_3_2_3_ORDER


@pytest.mark.parametrize(("hex_ieee", "expected"), RFC_APPENDIX_B)
def test_rfc_appendix_b_numbers(hex_ieee: str, expected: str) -> None:
    assert canonical_json(_float(hex_ieee)) == expected.encode()
    assert canonical_json({"n": _float(hex_ieee)}) == b'{"n":' + expected.encode() + b"}"


@pytest.mark.parametrize("hex_ieee", RFC_APPENDIX_B_REFUSED)
def test_rfc_appendix_b_nan_and_infinity_are_refused(hex_ieee: str) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json(_float(hex_ieee))


@pytest.mark.parametrize("name", sorted(CYBERPHONE))
def test_reference_test_data(name: str) -> None:
    source, expected = CYBERPHONE[name]
    assert canonical_json(json.loads(source)) == expected.encode()


@pytest.mark.parametrize(
    "canonical",
    [RFC_3_2_2_OUTPUT, *(expected for _, expected in CYBERPHONE.values())],
)
def test_canonical_text_round_trips_to_the_same_bytes(canonical: str) -> None:
    encoded = canonical.encode()
    assert canonical_json(json.loads(encoded)) == encoded


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("\x00\x08\t\n\x0c\r\x1f", r'"\u0000\b\t\n\f\r\u001f"'),
        ("\x7f/<>&'", '"\x7f/<>&\'"'),  # DEL, slash and HTML characters stay as they are
        ("\u2028\u00e9\U0001f600", '"\u2028\u00e9\U0001f600"'),  # non-ASCII is not escaped
        ('"\\', r'"\"\\"'),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (1e-7, "1e-7"),
        (1e-6, "0.000001"),
        (1.0, "1"),
        (-1.5, "-1.5"),
        (2**53 - 1, "9007199254740991"),
        (-(2**53) + 1, "-9007199254740991"),
        (True, "true"),
        (None, "null"),
        ((1, [2, {}]), "[1,[2,{}]]"),
        ({"b": {"d": 1, "c": [True, None]}, "a": ""}, '{"a":"","b":{"c":[true,null],"d":1}}'),
    ],
)
def test_scalars_and_structures(value: JsonValue, expected: str) -> None:
    assert canonical_json(value) == expected.encode()


def _self_containing() -> list[object]:
    loop: list[object] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        -math.inf,
        2**53,
        -(2**53),
        10**30,
        {1: "int key"},
        {None: "null key"},
        {("a",): "tuple key"},
        "lone surrogate \ud800",
        {"lone surrogate \udfff": 1},
        b"bytes",
        {1, 2},
        Decimal("1.5"),
        datetime(2024, 1, 1, tzinfo=UTC),
        object(),
        _self_containing(),
    ],
    ids=lambda value: type(value).__name__,
)
def test_values_without_a_canonical_form_are_refused(value: object) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json(value)  # type: ignore[arg-type]


def test_refusals_are_value_errors_for_callers_that_parse_stored_bytes() -> None:
    stored = b'{"n":NaN,"seq":1}'  # what json.loads would hand back from an edited record
    with pytest.raises(ValueError, match="no canonical JSON form"):
        canonical_json(json.loads(stored))
