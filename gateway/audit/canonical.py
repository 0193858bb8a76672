"""RFC 8785 JSON Canonicalization Scheme (JCS): the exact bytes an audit record is hashed as.

Serialisation is Trail of Bits' ``rfc8785`` (pure Python, checked upstream against the
reference implementation's 100 million number samples). This module fixes what the audit log
accepts and turns every refusal into one error: NaN and infinities, integers outside the
I-JSON safe range ±(2^53 - 1) (refused rather than rounded), non-string object keys, lone
surrogates, and anything that is not None, bool, int, float, str, list, tuple or dict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

import rfc8785

from gateway.errors import EnclaveError

JsonValue: TypeAlias = (
    bool | int | float | str | Sequence["JsonValue"] | Mapping[str, "JsonValue"] | None
)


class CanonicalJsonError(EnclaveError, ValueError):
    """A value that has no RFC 8785 serialisation (a ValueError, as json's refusals are)."""

    default_code = "not_canonical_json"


def canonical_json(value: JsonValue) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of value."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError) as exc:
        # UnicodeEncodeError: a lone surrogate in an object key, met while sorting keys.
        raise CanonicalJsonError(f"value has no canonical JSON form: {exc}") from exc
    except RecursionError as exc:
        raise CanonicalJsonError("value is nested too deeply (or contains itself)") from exc
