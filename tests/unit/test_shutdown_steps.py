"""The gateway's stop names the step that was slow, so a stop past its deadline says where."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway import app


async def test_a_slow_step_is_logged_by_name(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app, "SLOW_SHUTDOWN_STEP_S", 0.0)
    with caplog.at_level(logging.WARNING, logger="enclave.gateway"):
        await app.shutdown_step("custody sweep", asyncio.sleep(0))
    assert [r.getMessage().split(" took ")[0] for r in caplog.records] == [
        "stopping: custody sweep"
    ]


async def test_a_quick_step_is_not_logged_and_a_failing_one_still_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise RuntimeError("the step's own error")

    with caplog.at_level(logging.WARNING, logger="enclave.gateway"):
        await app.shutdown_step("queue", asyncio.sleep(0))
        with pytest.raises(RuntimeError, match="own error"):
            await app.shutdown_step("queue", fail())
    assert caplog.records == []
