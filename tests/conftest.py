"""Service fixtures: PostgreSQL, Redis and SQLite for integration tests.

PostgreSQL and Redis come from ``ENCLAVE_TEST_DATABASE_URL`` / ``ENCLAVE_TEST_REDIS_URL``
when set; otherwise the session starts private servers from the binaries on this machine
(on PATH or in /usr/lib/postgresql/*/bin) in a temporary directory, on free ports, and
stops them at the end. Nothing here touches a server the machine already runs.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import redis.asyncio
from sqlalchemy import make_url

from tests.oidc_provider import oidc_provider  # noqa: F401  (one provider for the session)
from tests.processes import free_port

START_TIMEOUT_S = 30.0


# --- PostgreSQL -------------------------------------------------------------------------


def find_pg_bin() -> Path | None:
    """The bin directory of the newest PostgreSQL server install (pg_ctl and initdb)."""
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).resolve().parent / "initdb").exists():
        return Path(on_path).resolve().parent
    candidates = Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
    newest = max(
        candidates, key=lambda p: int(re.sub(r"\D", "", p.parent.parent.name) or 0), default=None
    )
    return newest.parent if newest else None


def server_account() -> dict[str, Any]:
    """subprocess arguments that drop root: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return {}
    for name in ("postgres", "nobody"):
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    pytest.fail("running as root, and no 'postgres' or 'nobody' account to run PostgreSQL as")


class PrivatePostgres:
    """A throwaway cluster: initdb into a temp dir, trust auth, fsync off, TCP on 127.0.0.1."""

    def __init__(self, pg_bin: Path) -> None:
        self.pg_bin = pg_bin
        self.account = server_account()
        self.root = Path(tempfile.mkdtemp(prefix="enclave-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if "user" in self.account:
            os.chown(self.root, self.account["user"], self.account["group"])

    def run(self, *args: str) -> None:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        done = subprocess.run(args, cwd=self.root, env=env, capture_output=True, **self.account)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {output}{log}")

    def start(self) -> str:
        self.run(
            str(self.pg_bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        self.start_server()
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def start_server(self) -> None:
        """Start the server on the cluster ``start`` created (again, after a stop)."""
        options = (
            f"-p {self.port} -h 127.0.0.1 -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self.run(
            str(self.pg_bin / "pg_ctl"), "start", "-w", "-t", str(int(START_TIMEOUT_S)),
            "-D", str(self.data), "-l", str(self.log), "-o", options,
        )  # fmt: skip

    def stop(self) -> None:
        try:
            if self.data.joinpath("postmaster.pid").exists():
                self.run(
                    str(self.pg_bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate"
                )
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def libpq_url(url: str) -> str:
    """``postgresql+asyncpg://...`` as a plain libpq URI for psycopg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def admin_connection(server_url: str) -> psycopg.Connection[Any]:
    """Autocommit connection for CREATE/DROP DATABASE: the URL's database, else 'postgres'."""
    try:
        return psycopg.connect(libpq_url(server_url), autocommit=True)
    except psycopg.OperationalError:
        fallback = make_url(server_url).set(database="postgres")
        return psycopg.connect(
            libpq_url(fallback.render_as_string(hide_password=False)), autocommit=True
        )


def create_database(server_url: str, prefix: str) -> str:
    """A new, empty database ``<prefix>_<uuid>`` on the server; its async URL."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    with admin_connection(server_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, database_url: str) -> None:
    """Drop the database of ``database_url``, closing whatever is still connected to it."""
    name = make_url(database_url).database
    with admin_connection(server_url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The PostgreSQL *server* (async URL); tests take a database from make_postgres_url."""
    configured = os.environ.get("ENCLAVE_TEST_DATABASE_URL")
    if configured:
        yield (
            make_url(configured)
            .set(drivername="postgresql+asyncpg")
            .render_as_string(hide_password=False)
        )
        return
    pg_bin = find_pg_bin()
    if pg_bin is None:
        pytest.fail(
            "no PostgreSQL server binaries: install postgresql or set ENCLAVE_TEST_DATABASE_URL"
        )
    server = PrivatePostgres(pg_bin)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def make_postgres_url(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Factory: each call creates an empty database ``test_<uuid>``; all dropped afterwards."""
    created: list[str] = []

    def make() -> str:
        created.append(create_database(postgres_url, "test"))
        return created[-1]

    yield make
    for url in created:
        drop_database(postgres_url, url)


# --- SQLite -----------------------------------------------------------------------------


@pytest.fixture
def make_sqlite_url(tmp_path: Path) -> Callable[[], str]:
    """Factory: each call returns the URL of a new SQLite file (not yet created) in tmp_path."""
    counter = iter(range(1, 1_000_000))

    def make() -> str:
        return f"sqlite+aiosqlite:///{tmp_path / f'db-{next(counter)}' / 'enclave.db'}"

    return make


@pytest.fixture
def sqlite_url(make_sqlite_url: Callable[[], str]) -> str:
    """A fresh SQLite file URL."""
    return make_sqlite_url()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest,
    make_sqlite_url: Callable[[], str],
) -> str:
    """A fresh, empty database on each backend in turn (the test runs once per backend)."""
    if request.param == "sqlite":
        return make_sqlite_url()
    make_postgres: Callable[[], str] = request.getfixturevalue("make_postgres_url")
    return make_postgres()


# --- Redis ------------------------------------------------------------------------------


def start_private_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("no redis-server binary: install redis-server or set ENCLAVE_TEST_REDIS_URL")
    port = free_port()
    process = subprocess.Popen(
        [
            executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with redis.Redis.from_url(url) as client:
                client.ping()
            return process, url
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis server URL: ENCLAVE_TEST_REDIS_URL, else a private redis-server."""
    configured = os.environ.get("ENCLAVE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    process, url = start_private_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """An async client on an emptied database (FLUSHDB before the test)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
