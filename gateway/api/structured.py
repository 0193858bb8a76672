"""Structured output: OpenAI's ``response_format`` and Ollama's ``format`` as the worker's
JSON constraints, with the schema checked here (a bad schema is the caller's 400)."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from gateway.errors import InvalidRequest

MAX_SCHEMA_BYTES = 64 * 1024


def checked_schema(schema: Any, param: str) -> str:
    """The schema's JSON text, if it is a valid JSON Schema object."""
    if not isinstance(schema, dict):
        raise InvalidRequest("The JSON schema must be an object.", param=param)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(f"Invalid JSON schema: {exc.message}", param=param) from None
    text = json.dumps(schema, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_BYTES:
        raise InvalidRequest(f"The JSON schema exceeds {MAX_SCHEMA_BYTES} bytes.", param=param)
    return text


def response_format(value: Any) -> dict[str, Any]:
    """OpenAI's ``response_format`` as SamplingOptions fields."""
    if value is None:
        return {}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidRequest(
                "response_format.json_schema must be an object with a `schema`.",
                param="response_format.json_schema",
            )
        return {"json_schema": checked_schema(spec["schema"], "response_format.json_schema")}
    raise InvalidRequest(
        "response_format.type must be `text`, `json_object` or `json_schema`.",
        param="response_format",
    )


def ollama_format(value: Any) -> dict[str, Any]:
    """Ollama's ``format``: ``"json"`` or a JSON schema."""
    if value in (None, ""):
        return {}
    if value == "json":
        return {"json_object": True}
    if isinstance(value, dict):
        return {"json_schema": checked_schema(value, "format")}
    raise InvalidRequest('format must be "json" or a JSON schema', param="format")
