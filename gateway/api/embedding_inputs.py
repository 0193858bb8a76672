"""The ``input`` of an embeddings request, checked and put in the queue's shape.

OpenAI's ``/v1/embeddings`` takes a string, an array of strings, an array of token ids or
an array of token-id arrays (at most 2048 inputs, none empty). Ollama's ``/api/embed``
takes a string or an array of strings; nothing to embed is Ollama's way to load a model.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest

MAX_INPUTS = 2048  # OpenAI's limit per request
_SHAPES = "a string, an array of strings, an array of token ids or an array of token-id arrays"

Input = str | tuple[int, ...]


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _token_ids(value: list[Any], where: str) -> tuple[int, ...]:
    if not value:
        raise InvalidRequest(f"{where} must not be an empty array.", param="input")
    if not all(_is_token(token) for token in value):
        raise InvalidRequest(f"{where} must hold token ids (integers of 0 or more).", param="input")
    return tuple(value)


def _texts_or_token_arrays(value: list[Any]) -> tuple[Input, ...]:
    if all(isinstance(item, str) for item in value):
        for index, text in enumerate(value):
            if not text:
                raise InvalidRequest(f"input[{index}] must not be an empty string.", param="input")
        return tuple(value)
    if all(_is_token(item) for item in value):
        return (tuple(value),)
    if all(isinstance(item, list) for item in value):
        return tuple(_token_ids(item, f"input[{i}]") for i, item in enumerate(value))
    raise InvalidRequest(f"input must be {_SHAPES}, not a mix of them.", param="input")


def openai_inputs(value: Any) -> tuple[Input, ...]:
    """OpenAI's ``input``: one of the four shapes, non-empty, at most MAX_INPUTS inputs."""
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("input must not be an empty string.", param="input")
        return (value,)
    if not isinstance(value, list):
        raise InvalidRequest(f"input must be {_SHAPES}.", param="input")
    if not value:
        raise InvalidRequest("input must not be an empty array.", param="input")
    inputs = _texts_or_token_arrays(value)
    if len(inputs) > MAX_INPUTS:
        raise InvalidRequest(
            f"input holds {len(inputs)} inputs; at most {MAX_INPUTS} are allowed per request.",
            param="input",
        )
    return inputs


def ollama_inputs(value: Any) -> tuple[str, ...]:
    """Ollama's ``input``: a string or an array of strings; empty means nothing to embed."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        if len(value) > MAX_INPUTS:
            raise InvalidRequest(f"at most {MAX_INPUTS} inputs are allowed per request")
        return tuple(value)
    raise InvalidRequest("invalid input type: input must be a string or an array of strings")
