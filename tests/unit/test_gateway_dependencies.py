"""The gateway's own install (the gateway image: no vLLM) runs uvicorn on the C event loop
and HTTP parser that the benchmarks measured, not on asyncio's loop and h11."""

from __future__ import annotations

import importlib.metadata

from packaging.requirements import Requirement


def test_the_gateway_requires_uvicorns_c_loop_and_parser_without_any_extra() -> None:
    required = {
        Requirement(line).name
        for line in importlib.metadata.requires("enclave") or []
        if "extra ==" not in line
    }
    assert {"uvicorn", "uvloop", "httptools"} <= required
