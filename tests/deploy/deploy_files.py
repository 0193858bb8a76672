"""The files in deploy/, read as data: Dockerfile stages, compose services, systemd units,
and every `enclave …` command line they run."""

from __future__ import annotations

import configparser
import io
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
DOCKERFILES = sorted(DEPLOY_DIR.glob("*.Dockerfile"))
COMPOSE_FILE = DEPLOY_DIR / "compose.yaml"
COMPOSE_ENV_EXAMPLE = DEPLOY_DIR / "compose.env.example"
SYSTEMD_UNITS = sorted((DEPLOY_DIR / "systemd").glob("*.service"))
INSTALLED_ENCLAVE = "/opt/enclave/.venv/bin/enclave"


@dataclass(frozen=True)
class Instruction:
    name: str  # upper case: FROM, RUN, …
    value: str


@dataclass(frozen=True)
class Stage:
    image: str
    alias: str | None
    instructions: tuple[Instruction, ...]

    def values(self, name: str) -> list[str]:
        return [i.value for i in self.instructions if i.name == name]


def read_stages(dockerfile: Path) -> list[Stage]:
    """The build stages in order; the last one is the image."""
    parser = DockerfileParser(fileobj=io.BytesIO(dockerfile.read_bytes()))
    stages: list[Stage] = []
    current: list[Instruction] = []
    image, alias = "", None
    for entry in parser.structure:
        name = entry["instruction"].upper()
        if name == "COMMENT":
            continue
        if name == "FROM":
            if image:
                stages.append(Stage(image, alias, tuple(current)))
            words = entry["value"].split()
            words = [w for w in words if not w.startswith("--platform=")]
            image = words[0]
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            current = []
        else:
            current.append(Instruction(name, entry["value"]))
    stages.append(Stage(image, alias, tuple(current)))
    return stages


def final_env(dockerfile: Path) -> dict[str, str]:
    return dict(DockerfileParser(fileobj=io.BytesIO(dockerfile.read_bytes())).envs)


def final_labels(dockerfile: Path) -> dict[str, str]:
    return dict(DockerfileParser(fileobj=io.BytesIO(dockerfile.read_bytes())).labels)


def exec_form(value: str) -> list[str]:
    """A JSON-array instruction value; ValueError for the shell form."""
    try:
        words = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not exec form: {value}") from exc
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"not exec form: {value}")
    return words


def healthcheck_command(stage: Stage) -> list[str]:
    """The exec-form command of the stage's one HEALTHCHECK."""
    (value,) = stage.values("HEALTHCHECK")
    _options, marker, command = value.partition("CMD ")
    if not marker:
        raise ValueError(f"HEALTHCHECK without CMD: {value}")
    return exec_form(command.strip())


def read_compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return compose


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit, each key with all its values (systemd keys may repeat)."""
    parser = configparser.RawConfigParser(strict=False, dict_type=_MultiDict, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep CamelCase keys
    parser.read_string(path.read_text(encoding="utf-8"))
    return {
        section: {key: value.split("\n") for key, value in parser.items(section)}
        for section in parser.sections()
    }


class _MultiDict(dict[str, Any]):
    """configparser storage that joins repeated keys (systemd allows them) with newlines."""

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, list) and key in self and isinstance(self[key], list):
            self[key].extend(value)
        else:
            super().__setitem__(key, value)


def enclave_invocations() -> dict[str, list[str]]:
    """Every `enclave` command line deploy/ runs, as argv after `enclave`, by where it is."""
    found: dict[str, list[str]] = {}
    for dockerfile in DOCKERFILES:
        final = read_stages(dockerfile)[-1]
        (entrypoint,) = final.values("ENTRYPOINT")
        (cmd,) = final.values("CMD")
        if exec_form(entrypoint) == ["enclave"]:
            found[f"{dockerfile.name} CMD"] = exec_form(cmd)
    for name, service in read_compose()["services"].items():
        image = str(service.get("image", ""))
        if "enclave" in image and "command" in service:
            found[f"compose.yaml {name}"] = list(service["command"])
    for unit in SYSTEMD_UNITS:
        service = read_unit(unit)["Service"]
        for key in ("ExecStartPre", "ExecStart"):
            for line in service.get(key, []):
                argv = shlex.split(line.lstrip("-@:+!"))
                if argv and argv[0] == INSTALLED_ENCLAVE:
                    found[f"{unit.name} {key}"] = argv[1:]
    return found
