"""Reading the console's HTML forms: every field is text, a box left unticked is absent,
and a value no console form sends is a 400 naming the field (never a 500, never a guess)."""

from __future__ import annotations

from litestar.datastructures import FormMultiDict

from gateway.errors import InvalidRequest


def text_field(form: FormMultiDict, name: str) -> str:
    """The field's text, stripped; empty when it is missing."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def ticked(form: FormMultiDict, name: str) -> list[str]:
    """The values of the ticked boxes named ``name``."""
    return [value for value in form.getall(name, []) if isinstance(value, str)]


def choice(form: FormMultiDict, name: str, choices: tuple[str, ...]) -> str:
    """The one value chosen of ``choices`` (radio buttons, a button's value)."""
    value = text_field(form, name)
    if value not in choices:
        raise InvalidRequest(f"Choose one of {', '.join(choices)} for {name}.", param=name)
    return value


def yes_or_no(form: FormMultiDict, name: str) -> bool:
    return choice(form, name, ("true", "false")) == "true"
