"""deploy/compose.yaml: hardened Enclave containers, nothing secret written in the file, the
start order that migrates first, and only the API published."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest

from tests.deploy.deploy_files import COMPOSE_ENV_EXAMPLE, COMPOSE_FILE, read_compose

ENCLAVE_SERVICES = ("migrate", "gateway", "worker")
INTERPOLATED = re.compile(r"^\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}$")
SECRET_NAME = re.compile(r"(PASSWORD|_SECRET|_TOKEN|_KEY|_AUTH)$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return read_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def test_one_server_runs_these_services(services: dict[str, Any]) -> None:
    assert set(services) == {"postgres", "redis", "migrate", "gateway", "worker"}


@pytest.mark.parametrize("name", ENCLAVE_SERVICES)
def test_enclave_containers_are_hardened(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert service["user"] == "10001:10001"
    assert service["read_only"] is True
    assert "/tmp" in service["tmpfs"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["cap_drop"] == ["ALL"]
    assert "cap_add" not in service


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_the_stores_run_unprivileged_too(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert service["user"] not in {"0", "root", "0:0"}
    assert service["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in service["security_opt"]
    assert service["read_only"] is True
    image = service["image"]
    assert re.match(rf"^{name}:\d+(\.\d+)+-\w+$", image), f"{image} is not pinned"


def test_only_the_api_is_published_and_on_loopback(services: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert list(published) == ["gateway"]
    (port,) = published["gateway"]
    address, host_port, container_port = port.rsplit(":", 2)
    assert (host_port, container_port) == ("8080", "8080")
    assert address == "${ENCLAVE_PUBLISH_ADDRESS:-127.0.0.1}"
    assert all("9000" not in str(p) for ports in published.values() for p in ports)
    assert "expose" not in services["gateway"]


def test_the_gateway_starts_after_the_migration(services: dict[str, Any]) -> None:
    assert services["migrate"]["command"] == ["migrate", "--wait", "120"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["gateway"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "redis": {"condition": "service_healthy"},
    }
    assert services["worker"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert "--appendonly" in services["redis"]["command"]


def test_the_worker_reads_its_model_read_only(services: dict[str, Any]) -> None:
    worker = services["worker"]
    (models,) = [v for v in worker["volumes"] if ":/models" in v]
    assert models.endswith(":/models:ro")
    assert worker["environment"]["ENCLAVE_WORKER__MODEL_PATH"].startswith("/models/")
    assert "worker-cpu" in worker["build"]["dockerfile"]
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "#         - driver: nvidia" in text  # the GPU variant, commented


def test_the_audit_keys_are_secret_files(services: dict[str, Any], compose: dict[str, Any]) -> None:
    gateway = services["gateway"]
    key_files = {
        key: value for key, value in gateway["environment"].items() if key.endswith("_KEY_FILE")
    }
    assert set(key_files) == {
        "ENCLAVE_AUDIT__SIGNING_KEY_FILE",
        "ENCLAVE_AUDIT__CONTENT_KEY_FILE",
        "ENCLAVE_AUDIT__PSEUDONYM_KEY_FILE",
    }
    for path in key_files.values():
        name = path.removeprefix("/run/secrets/")
        assert name in gateway["secrets"], path
        assert compose["secrets"][name]["file"].startswith("${ENCLAVE_SECRETS_DIR")


def _strings(node: Any) -> list[tuple[str, str]]:
    """(key, value) for every string in the file, the key being the nearest mapping key."""
    found: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [("", node)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((key, v) for v in value)
        elif isinstance(value, str):
            found.append((key, value))
    return found


def test_no_credential_is_written_in_the_file(compose: dict[str, Any]) -> None:
    checked = 0
    for key, value in _strings(compose):
        for userinfo in re.findall(r"://(.*)@[\w.-]+(?::\d+)?/", value):
            password = userinfo.partition(":")[2]
            assert INTERPOLATED.match(password), f"{key}: a literal password in {value}"
            checked += 1
        if SECRET_NAME.search(key) and not key.endswith("_FILE"):
            assert INTERPOLATED.match(value), f"{key} is written in the file"
            checked += 1
    redis_command = compose["services"]["redis"]["command"]
    requirepass = redis_command[redis_command.index("--requirepass") + 1]
    assert INTERPOLATED.match(requirepass)
    assert checked >= 6  # the URLs and the password variables were all seen


def test_the_env_example_holds_placeholders_only() -> None:
    values = dict(
        line.split("=", 1)
        for line in COMPOSE_ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    )
    referenced = {
        name for _, text in _strings(read_compose()) for name in re.findall(r"\$\{(\w+)", text)
    }
    assert referenced <= set(values), f"not in the example: {referenced - set(values)}"
    for key, value in values.items():
        if SECRET_NAME.search(key):
            assert value.startswith("replace-with-"), f"{key} is not a placeholder"


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"the docker compose plugin is not installed ({reason})")
    files = ["-f", str(COMPOSE_FILE), "--env-file", str(COMPOSE_ENV_EXAMPLE)]
    result = subprocess.run(
        [docker, "compose", *files, "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
