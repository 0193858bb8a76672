"""Figures of the engines benchmark (bench_engines.py): from one sample per streamed request
to a row per target and load, its ratio to the reference, printed tables and the verdicts on
issue 8's targets. Pure: no I/O, no clock; tests/unit/test_engines_report.py checks it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

REFERENCE = "vllm"
"""The target every other is compared with: vLLM's own OpenAI server on the same engine."""
QUANTILES = (0.50, 0.90, 0.99)


@dataclass(frozen=True)
class Sample:
    """One streamed request; times in seconds, on the clock of the round it ran in."""

    ok: bool
    started_s: float
    """When it was sent."""
    ttft_s: float = math.nan
    e2e_s: float = math.nan
    output_tokens: int = 0
    chunks_s: tuple[float, ...] = ()
    """When each chunk carrying text arrived."""


@dataclass(frozen=True)
class Round:
    """The samples of one round and the window over which the load was held steady."""

    samples: list[Sample]
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Row:
    target: str
    load: str
    """``c8``: closed loop with 8 clients; ``r2.5``: Poisson arrivals at 2.5 requests/s."""
    requests: int
    errors: int
    requests_per_s: float
    output_tokens_per_s: float
    ttft_ms: tuple[float, float, float]
    itl_ms: tuple[float, float, float]
    e2e_ms: tuple[float, float, float]
    other_cpu_share: float = 0.0
    """Share of the machine's CPU time taken by processes outside the benchmark meanwhile."""
    cpu_ms_per_token: dict[str, float] = field(default_factory=dict)
    """CPU milliseconds per output token of each process of the benchmark, by role."""
    ratios: dict[str, float] = field(default_factory=dict)
    """To the reference row of the same load: tokens/s, requests/s, p50 and p99 TTFT."""


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def tokens_within(sample: Sample, start_s: float, end_s: float) -> float:
    """The sample's output tokens that arrived within the window, pro rata of its chunks (a
    chunk may carry several tokens)."""
    if not sample.chunks_s:
        return 0.0
    inside = sum(1 for t in sample.chunks_s if start_s <= t <= end_s)
    return sample.output_tokens * inside / len(sample.chunks_s)


def _ms(values: Sequence[float]) -> tuple[float, float, float]:
    p50, p90, p99 = (percentile(values, q) * 1000 for q in QUANTILES)
    return (p50, p90, p99)


def summarize(target: str, load: str, rounds: Sequence[Round]) -> Row:
    """A row from the rounds of one target under one load. Throughput counts what arrived
    within each round's window, requests sent before it (warm-up) included and the tails
    after it left out; latencies are those of the requests sent within the window."""
    measured = [s for r in rounds for s in r.samples if r.start_s <= s.started_s <= r.end_s]
    done = [s for s in measured if s.ok]
    window = sum(r.end_s - r.start_s for r in rounds)
    tokens = sum(tokens_within(s, r.start_s, r.end_s) for r in rounds for s in r.samples if s.ok)
    finished = sum(
        1
        for r in rounds
        for s in r.samples
        if s.ok and r.start_s <= s.started_s + s.e2e_s <= r.end_s
    )
    gaps = [b - a for s in done for a, b in itertools.pairwise(s.chunks_s)]
    return Row(
        target=target,
        load=load,
        requests=len(measured),
        errors=len(measured) - len(done),
        requests_per_s=finished / window if window > 0 else math.nan,
        output_tokens_per_s=tokens / window if window > 0 else math.nan,
        ttft_ms=_ms([s.ttft_s for s in done]),
        itl_ms=_ms(gaps),
        e2e_ms=_ms([s.e2e_s for s in done]),
    )


def _ratio(value: float, reference: float) -> float:
    return value / reference if reference and not math.isnan(reference) else math.nan


def with_ratios(rows: Sequence[Row]) -> list[Row]:
    """Each row with its ratios to the reference row of the same load (1.0 for the reference)."""
    reference = {r.load: r for r in rows if r.target == REFERENCE}
    out = []
    for row in rows:
        ref = reference.get(row.load)
        ratios = {}
        if ref is not None:
            ratios = {
                "output_tokens_per_s": _ratio(row.output_tokens_per_s, ref.output_tokens_per_s),
                "requests_per_s": _ratio(row.requests_per_s, ref.requests_per_s),
                "ttft_p50": _ratio(row.ttft_ms[0], ref.ttft_ms[0]),
                "ttft_p99": _ratio(row.ttft_ms[2], ref.ttft_ms[2]),
            }
        out.append(Row(**{**row.__dict__, "ratios": ratios}))
    return out


HEADER = (
    f"{'target':<8} {'load':>6} {'reqs':>5} {'err':>4} {'req/s':>6} {'tok/s':>7} {'x ref':>6}"
    f" {'TTFT ms p50/p90/p99':>21} {'ITL ms p50/p90/p99':>20} {'E2E ms p50/p90/p99':>21}"
    f" {'other':>5}"
)
BUSY_SHARE = 0.10
"""Rows where other processes took more of the machine's CPU than this are marked."""


def _triple(values: tuple[float, float, float], width: int) -> str:
    return f"{'/'.join(f'{v:.0f}' if v >= 100 else f'{v:.1f}' for v in values):>{width}}"


def format_row(row: Row) -> str:
    ratio = row.ratios.get("output_tokens_per_s", math.nan)
    busy = "*" if row.other_cpu_share > BUSY_SHARE else ""
    return (
        f"{row.target:<8} {row.load:>6} {row.requests:>5} {row.errors:>4}"
        f" {row.requests_per_s:>6.2f} {row.output_tokens_per_s:>7.1f} {ratio:>6.2f}"
        f" {_triple(row.ttft_ms, 21)} {_triple(row.itl_ms, 20)} {_triple(row.e2e_ms, 21)}"
        f" {row.other_cpu_share:>4.0%}{busy}"
    )


def format_table(title: str, rows: Sequence[Row]) -> str:
    lines = [title, HEADER, *(format_row(r) for r in rows)]
    lines.append(
        "other: share of the machine's CPU that processes outside the benchmark took meanwhile"
        f" (* above {BUSY_SHARE:.0%}: compare those rows with care)"
    )
    return "\n".join(lines)


def format_cpu_table(rows: Sequence[Row]) -> str:
    """CPU milliseconds per output token, by process, for each row (the roles seen in any
    row); idle processes count too, e.g. Enclave's gateway while vLLM is measured."""
    roles = sorted({role for r in rows for role, ms in r.cpu_ms_per_token.items() if ms >= 0.05})
    lines = [
        "CPU ms per output token, by process (all of them: the idle ones too)",
        f"{'target':<8} {'load':>6} " + " ".join(f"{role:>{max(8, len(role))}}" for role in roles),
    ]
    for row in rows:
        cells = " ".join(
            f"{row.cpu_ms_per_token.get(role, 0.0):>{max(8, len(role))}.2f}" for role in roles
        )
        lines.append(f"{row.target:<8} {row.load:>6} {cells}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Verdict:
    target: str
    """The issue's wording of the target."""
    is_met: bool
    detail: str


def _rows_by_load(rows: Sequence[Row], target: str) -> dict[str, Row]:
    return {r.load: r for r in rows if r.target == target}


def verdicts(
    rows: Sequence[Row], enclave: str = "enclave", litellm: str = "litellm"
) -> list[Verdict]:
    """Issue 8's targets for this benchmark, judged on rows that carry their ratios."""
    ours, ref, theirs = (_rows_by_load(rows, t) for t in (enclave, REFERENCE, litellm))
    closed = [load for load in ours if load.startswith("c") and load in ref]
    out = []
    shares = {load: ours[load].ratios.get("output_tokens_per_s", math.nan) for load in closed}
    out.append(
        Verdict(
            "Enclave output tokens/s >= 95% of direct vLLM at every concurrency",
            bool(shares) and all(share >= 0.95 for share in shares.values()),
            ", ".join(f"{load}: {share:.0%}" for load, share in shares.items()),
        )
    )
    if "c1" in ours and "c1" in ref:
        added_ms = ours["c1"].ttft_ms[0] - ref["c1"].ttft_ms[0]
        out.append(
            Verdict(
                "Enclave p50 TTFT at most 5 ms above direct vLLM at concurrency 1",
                added_ms <= 5.0,
                f"{added_ms:+.1f} ms",
            )
        )
    both = [load for load in ours if load in theirs]
    ahead = {
        load: ours[load].output_tokens_per_s > theirs[load].output_tokens_per_s
        and ours[load].ttft_ms[2] < theirs[load].ttft_ms[2]
        for load in both
    }
    out.append(
        Verdict(
            "Enclave ahead of LiteLLM on tokens/s and p99 TTFT at every load",
            bool(ahead) and all(ahead.values()),
            ", ".join(
                f"{load}: {'ahead' if is_ahead else 'not'}" for load, is_ahead in ahead.items()
            ),
        )
    )
    return out


def format_verdicts(found: Sequence[Verdict]) -> str:
    return "\n".join(
        f"  [{'met' if v.is_met else 'NOT met'}] {v.target} ({v.detail})" for v in found
    )
