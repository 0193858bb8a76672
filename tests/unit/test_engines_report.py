"""The engines benchmark's figures from given samples: percentiles, rows, ratios to direct
vLLM, the printed table and the verdicts on issue 8's targets."""

from __future__ import annotations

import math

import pytest

from tests.bench.engines_report import (
    Round,
    Row,
    Sample,
    format_cpu_table,
    format_table,
    format_verdicts,
    percentile,
    summarize,
    tokens_within,
    verdicts,
    with_ratios,
)


def row(target: str, load: str, tokens_per_s: float, ttft_p50: float, ttft_p99: float) -> Row:
    return Row(
        target=target,
        load=load,
        requests=10,
        errors=0,
        requests_per_s=tokens_per_s / 64,
        output_tokens_per_s=tokens_per_s,
        ttft_ms=(ttft_p50, ttft_p50, ttft_p99),
        itl_ms=(1.0, 2.0, 3.0),
        e2e_ms=(100.0, 200.0, 300.0),
    )


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 0.9) == pytest.approx(4.6)
    assert percentile(values, 0.0) == 1.0
    assert percentile(values, 1.0) == 5.0
    assert math.isnan(percentile([], 0.5))


def sample(started: float, chunks: tuple[float, ...], e2e: float, ok: bool = True) -> Sample:
    ttft = chunks[0] - started if chunks else math.nan
    return Sample(ok, started, ttft, e2e, len(chunks), chunks)


def test_throughput_counts_what_arrived_within_the_window() -> None:
    rounds = [
        Round(
            [
                sample(0.0, (0.5, 0.9, 1.1, 1.5), 1.6),  # warm-up: half its tokens inside
                sample(1.5, (1.6, 2.0, 2.4, 2.5), 1.0),
                sample(2.5, (2.7, 2.9, 3.2, 3.4), 1.0),  # its tail after the window
                sample(2.8, (), 0.1, ok=False),
                sample(3.5, (3.6,), 0.2),  # sent after the window
            ],
            start_s=1.0,
            end_s=3.0,
        )
    ]
    summary = summarize("enclave", "c1", rounds)
    assert (summary.requests, summary.errors) == (3, 1)
    assert summary.output_tokens_per_s == pytest.approx(4.0)  # 2 + 4 + 2 tokens in 2 s
    assert summary.requests_per_s == pytest.approx(1.0)  # two finished inside
    assert summary.ttft_ms[0] == pytest.approx(150.0)
    assert summary.itl_ms[0] == pytest.approx(250.0)


def test_rounds_add_up_and_chunks_share_their_tokens() -> None:
    chunky = Sample(True, 0.0, 0.1, 2.0, 64, (0.1, 1.9))  # 64 tokens in two chunks
    assert tokens_within(chunky, 0.0, 1.0) == 32.0
    rounds = [Round([chunky], 0.0, 1.0), Round([chunky], 0.0, 2.0)]
    assert summarize("vllm", "c1", rounds).output_tokens_per_s == pytest.approx(96 / 3)


def test_ratios_are_to_direct_vllm_at_the_same_load() -> None:
    rows = with_ratios(
        [
            row("vllm", "c1", 100.0, 10.0, 20.0),
            row("enclave", "c1", 90.0, 12.0, 40.0),
            row("vllm", "c8", 400.0, 10.0, 20.0),
            row("enclave", "c8", 400.0, 10.0, 20.0),
        ]
    )
    assert rows[1].ratios["output_tokens_per_s"] == pytest.approx(0.9)
    assert rows[1].ratios["ttft_p99"] == pytest.approx(2.0)
    assert rows[3].ratios["output_tokens_per_s"] == pytest.approx(1.0)
    table = format_table("title", rows)
    assert "enclave" in table.splitlines()[3]
    assert "0.90" in table.splitlines()[3]
    assert not table.splitlines()[3].endswith("*")


def test_busy_machine_rows_are_marked() -> None:
    busy = Row(**{**row("vllm", "c1", 100.0, 10.0, 20.0).__dict__, "other_cpu_share": 0.3})
    line = format_table("title", [busy]).splitlines()[2]
    assert line.endswith(" 30%*")


def test_verdicts_on_the_issue_targets() -> None:
    rows = with_ratios(
        [
            row("vllm", "c1", 100.0, 10.0, 20.0),
            row("enclave", "c1", 96.0, 14.0, 25.0),
            row("litellm", "c1", 90.0, 30.0, 60.0),
            row("vllm", "c8", 400.0, 10.0, 20.0),
            row("enclave", "c8", 360.0, 12.0, 30.0),
            row("litellm", "c8", 380.0, 20.0, 40.0),
        ]
    )
    found = {v.target.split()[1]: v for v in verdicts(rows)}
    assert not found["output"].is_met  # c8: 90%
    assert "c8: 90%" in found["output"].detail
    assert found["p50"].is_met  # +4 ms
    assert not found["ahead"].is_met  # c8: fewer tokens/s than LiteLLM
    assert "c1: ahead" in found["ahead"].detail
    assert "c8: not" in found["ahead"].detail
    assert "NOT met" in format_verdicts(list(found.values()))


def test_ttft_five_ms_over_direct_is_not_met() -> None:
    rows = with_ratios([row("vllm", "c1", 100.0, 10.0, 20.0), row("enclave", "c1", 99, 15.5, 20)])
    ttft = next(v for v in verdicts(rows) if "TTFT at most" in v.target)
    assert not ttft.is_met
    assert ttft.detail == "+5.5 ms"


def test_cpu_table_has_a_column_per_process_seen() -> None:
    quiet = Row(**{**row("vllm", "c1", 100.0, 10.0, 20.0).__dict__, "cpu_ms_per_token": {}})
    busy = Row(
        **{
            **row("enclave", "c1", 90.0, 12.0, 20.0).__dict__,
            "cpu_ms_per_token": {"gateway": 1.25, "worker engine": 9.5, "redis": 0.01},
        }
    )
    lines = format_cpu_table([quiet, busy]).splitlines()
    assert lines[1].split() == [
        "target",
        "load",
        "gateway",
        "worker",
        "engine",
    ]  # redis: below 0.05
    assert lines[2].split() == ["vllm", "c1", "0.00", "0.00"]
    assert lines[3].split() == ["enclave", "c1", "1.25", "9.50"]
