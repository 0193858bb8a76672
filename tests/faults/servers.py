"""Servers a fault test owns and may stop and start again at the same address, keeping
their data: Redis with an append-only file, a PostgreSQL cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import redis

from tests.conftest import START_TIMEOUT_S, PrivatePostgres, find_pg_bin, libpq_url
from tests.processes import free_port


class RestartableRedis:
    """redis-server on a fixed port with ``--appendonly yes --appendfsync always``: every
    write is on disk before Redis answers it, so a stop and start loses nothing accepted."""

    def __init__(self, workdir: Path) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("no redis-server binary on PATH")
        self.executable = executable
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
                "--appendfsync", "always", "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.is_answering():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)  # polling the server until it answers

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (Redis closes every connection and exits) or SIGKILL (as a crash); either
        way its append-only file already holds every write it answered."""
        if self.process is not None and self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers (a hung server)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def is_answering(self) -> bool:
        try:
            with redis.Redis.from_url(self.url, socket_connect_timeout=0.5) as client:
                return bool(client.ping())
        except redis.ConnectionError:
            return False


class RestartablePostgres(PrivatePostgres):
    """A private cluster (tests/conftest.py) that can be stopped and started again on the same
    port with its data; ``remove`` deletes it."""

    def __init__(self) -> None:
        pg_bin = find_pg_bin()
        if pg_bin is None:
            raise RuntimeError("no PostgreSQL server binaries")
        super().__init__(pg_bin)
        self.url = ""

    def start(self) -> str:
        if not self.url:
            self.url = super().start()
        else:
            self.start_server()
        return self.url

    def stop(self) -> None:
        """Fast shutdown: every session is ended, the data stays."""
        self.run(str(self.pg_bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast")

    def remove(self) -> None:
        super().stop()

    def create_database(self, name: str) -> str:
        with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def pids(self) -> list[int]:
        """The cluster's processes: the postmaster (first line of postmaster.pid) and its
        children."""
        postmaster = int(self.data.joinpath("postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *(int(pid) for pid in children)]

    def freeze(self) -> None:
        """SIGSTOP every process of the cluster: connections stay open, nothing answers (a
        hung server, or a network that drops packets)."""
        for pid in self.pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.pids():
            os.kill(pid, signal.SIGCONT)
