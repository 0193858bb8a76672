"""What the images, compose.yaml and the systemd units run exists: each `enclave` command
line's subcommand and options (from `--help`), and each image's HEALTHCHECK, run against a
local server that answers 200, then 503."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.deploy.deploy_files import (
    DOCKERFILES,
    enclave_invocations,
    healthcheck_command,
    read_stages,
)

INVOCATIONS = enclave_invocations()
ENCLAVE = Path(sys.executable).with_name("enclave")


def test_every_place_that_runs_enclave_was_found() -> None:
    subcommands = {argv[0] for argv in INVOCATIONS.values()}
    assert subcommands == {"serve", "worker", "migrate"}
    assert len(INVOCATIONS) == 9  # 3 images, 3 compose services, 3 unit lines


def _options_by_subcommand() -> dict[str, set[str]]:
    options: dict[str, set[str]] = {}
    for argv in INVOCATIONS.values():
        options.setdefault(argv[0], set()).update(w for w in argv[1:] if w.startswith("--"))
    return options


OPTIONS = _options_by_subcommand()


@pytest.mark.parametrize("subcommand", sorted(OPTIONS))
def test_the_subcommand_and_its_options_exist(subcommand: str) -> None:
    """`migrate --wait` needs the lead's change on main: this fails until it is merged."""
    assert ENCLAVE.is_file(), f"no enclave script beside {sys.executable}"
    result = subprocess.run(
        [str(ENCLAVE), subcommand, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert f"usage: enclave {subcommand}" in result.stdout
    missing = sorted(option for option in OPTIONS[subcommand] if option not in result.stdout)
    assert not missing, f"`enclave {subcommand}` has no {', '.join(missing)}"


class _Answers(BaseHTTPRequestHandler):
    """Answers each GET with the next status in ``server.statuses``; records the path."""

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, _HealthServer)
        server.paths.append(self.path)
        self.send_response(server.statuses.pop(0))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _HealthServer(ThreadingHTTPServer):
    def __init__(self, statuses: list[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Answers)  # bound and listening on return
        self.statuses = statuses
        self.paths: list[str] = []


@pytest.fixture
def health_server() -> Iterator[_HealthServer]:
    server = _HealthServer([200, 503])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_healthcheck_passes_on_200_and_fails_on_503(
    dockerfile: Path, health_server: _HealthServer
) -> None:
    command = healthcheck_command(read_stages(dockerfile)[-1])
    interpreter, flag, code = command
    assert Path(interpreter).name in {"python", "python3"}  # slim images have no curl
    assert flag == "-c"
    assert "http://127.0.0.1:" in code
    port = str(health_server.server_address[1])
    env = {**os.environ, "ENCLAVE_HTTP__MANAGEMENT_PORT": port}
    run = [sys.executable, "-c", code]
    ready = subprocess.run(run, env=env, capture_output=True, text=True, timeout=30)
    assert ready.returncode == 0, ready.stderr
    not_ready = subprocess.run(run, env=env, capture_output=True, text=True, timeout=30)
    assert not_ready.returncode == 1
    assert health_server.paths == ["/readyz", "/readyz"]


def test_the_healthcheck_fails_when_nothing_listens() -> None:
    server = _HealthServer([])
    port = str(server.server_address[1])
    server.server_close()  # the port is now closed: connection refused
    code = healthcheck_command(read_stages(DOCKERFILES[0])[-1])[2]
    env = {**os.environ, "ENCLAVE_HTTP__MANAGEMENT_PORT": port}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=30)
    assert result.returncode == 1
