"""Embedding vectors as clients read them. Workers send each vector as float32 little-endian
bytes; OpenAI's ``encoding_format: base64`` is exactly those bytes in base64, and ``float``
(and Ollama) a JSON array of numbers."""

from __future__ import annotations

import array
import base64
import sys


def floats(vector: bytes) -> list[float]:
    values = array.array("f")
    values.frombytes(vector)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def base64_text(vector: bytes) -> str:
    return base64.b64encode(vector).decode("ascii")
