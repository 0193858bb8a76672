"""Fill-in-the-middle: a prefix and a suffix in the prompt shape the model was trained on.

The operator names the shape (``ENCLAVE_WORKER__FIM_TEMPLATE``), e.g. StarCoder's and
Qwen2.5-Coder's ``<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>``; a model without
one answers a request with a ``suffix`` with a 400, as Ollama does. The settings check
that the template holds each placeholder once.
"""

from __future__ import annotations

import re

from workers.engine import EngineInfo, EngineRequestError, TextPrompt

PREFIX = "{prefix}"
SUFFIX = "{suffix}"
_PLACEHOLDER = re.compile(r"(\{prefix\}|\{suffix\})")


def render(template: str, prefix: str, suffix: str) -> str:
    """The template with the texts in place; braces in the texts (code!) stay as they are."""
    values = {PREFIX: prefix, SUFFIX: suffix}
    return "".join(values.get(part, part) for part in _PLACEHOLDER.split(template))


def prompt_text(prompt: TextPrompt, info: EngineInfo) -> str:
    """The text to complete: the prompt, or prefix and suffix in the model's FIM template."""
    if prompt.suffix is None:
        return prompt.text
    if not info.fim_template:
        raise EngineRequestError(
            f'"{info.model}" does not support insert: no fill-in-the-middle template is '
            "configured for it (ENCLAVE_WORKER__FIM_TEMPLATE)",
            code="invalid_value",
            param="suffix",
        )
    return render(info.fim_template, prompt.text, prompt.suffix)
