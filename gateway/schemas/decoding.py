"""Decode request bodies into wire structs, turning every decoding error into a clear 400."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from gateway.errors import InvalidRequest

T = TypeVar("T")

_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def decode_body(body: bytes, type_: type[T]) -> T:
    """Parse JSON into ``type_``; the error names the offending field as OpenAI's ``param``."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _PATH.search(message)
        param = match.group(1) if match and match.group(1) else None
        if "unknown field" in message:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {message}", param=param
            ) from None
        raise InvalidRequest(f"Invalid request: {message}", param=param) from None
    except RecursionError:  # msgspec decodes arbitrary JSON (Any fields) recursively
        raise InvalidRequest("The JSON body of your request is nested too deeply.") from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc}). "
            "The OpenAI API expects a JSON payload."
        ) from None
