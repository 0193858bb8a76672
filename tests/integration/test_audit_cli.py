"""``enclave audit keygen | checkpoint | verify`` as an operator and an auditor run them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from gateway.audit.sequencer import sequence_batch
from gateway.audit.writer import PendingWriter
from gateway.db.migrate import upgrade_to_head
from gateway.db.session import create_engine

pytestmark = pytest.mark.integration


def enclave(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def fill(url: str, count: int) -> None:
    engine = create_engine(url)
    writer = PendingWriter(engine)
    await writer.start()
    try:
        await asyncio.gather(*(writer.append({"event": "accepted", "n": n}) for n in range(count)))
    finally:
        await writer.stop()
    while await sequence_batch(engine) > 0:
        pass
    await engine.dispose()


async def test_keygen_checkpoint_and_verify(
    make_postgres_url: Callable[[], str], tmp_path: Path
) -> None:
    url = make_postgres_url()
    await asyncio.to_thread(upgrade_to_head, url)
    key = tmp_path / "audit.key"
    checkpoints = tmp_path / "checkpoints"
    env = {
        "ENCLAVE_DATABASE__URL": url,
        "ENCLAVE_AUDIT__ORIGIN": "hospital.example/enclave",
        "ENCLAVE_AUDIT__SIGNING_KEY_FILE": str(key),
        "ENCLAVE_AUDIT__CHECKPOINT_DIR": str(checkpoints),
    }

    made = enclave(env, "keygen", "--out", str(key))
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("hospital.example/enclave+")
    assert key.stat().st_mode & 0o777 == 0o600
    assert enclave(env, "keygen", "--out", str(key)).returncode == 1  # never overwritten

    await fill(url, 12)
    signed = enclave(env, "checkpoint")
    assert signed.returncode == 0, signed.stderr
    (note_file,) = checkpoints.iterdir()
    assert note_file.stat().st_mode & 0o222 == 0  # written once, read-only

    verifier_only = {**env, "ENCLAVE_AUDIT__VERIFIER_KEY": made.stdout.strip()}
    del verifier_only["ENCLAVE_AUDIT__SIGNING_KEY_FILE"]
    ok = enclave(verifier_only, "verify", "--checkpoint", str(note_file))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip() == "ok: 12 records, 1 signed checkpoints verified"

    engine = create_engine(url)
    async with engine.begin() as conn:  # a superuser, past the append-only triggers
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text("DELETE FROM audit_log WHERE seq = 4"))
    await engine.dispose()
    bad = enclave(verifier_only, "verify", "--checkpoint", str(note_file))
    assert bad.returncode == 1
    assert bad.stdout.strip() == "FAILED: record 4 is missing (found 5 next) (first bad record: 4)"
