"""Chart tests: the helm binary is fetched (and verified) once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.helm_binary import ensure_helm


@pytest.fixture(scope="session", autouse=True)
def helm() -> Path:
    return ensure_helm()
