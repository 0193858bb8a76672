"""The admission policy on real Redis with a fake clock: sliding minutes for requests and
tokens, leases for concurrency, calendar budgets, the tightest scope, reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from gateway.quotas.admission import Admission, Limits, Scope

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def admission(redis_client: Redis) -> Admission:
    return Admission(redis_client, lease_ttl_s=10)


def tenant(**limits: int) -> Scope:
    return Scope("tenant:t1", Limits(**limits))


async def test_requests_per_minute_is_an_exact_sliding_minute(admission: Admission) -> None:
    scope = tenant(requests_per_minute=3)
    admitted = [
        (await admission.admit(f"r{n}", [scope], 0, now=at(n * 10)))[0].admitted for n in range(4)
    ]
    assert admitted == [True, True, True, False]  # 0 s, 10 s, 20 s in; 30 s out

    refused, _ = await admission.admit("r4", [scope], 0, now=at(59.9))
    assert refused.reason == "requests_per_minute"
    assert refused.retry_after_s == pytest.approx(0.1)  # the request of 0 s ages out at 60 s
    again, _ = await admission.admit("r5", [scope], 0, now=at(60))
    assert again.admitted
    assert again.requests is not None
    assert (again.requests.limit, again.requests.remaining) == (3, 0)
    assert again.requests.reset_s == pytest.approx(10)  # the one of 10 s goes at 70 s


async def test_tokens_per_minute_counts_reservations(admission: Admission) -> None:
    scope = tenant(tokens_per_minute=1000)
    first, _ = await admission.admit("a", [scope], 600, now=at(0))
    assert first.tokens is not None
    assert (first.tokens.limit, first.tokens.remaining) == (1000, 400)
    refused, _ = await admission.admit("b", [scope], 500, now=at(30))
    assert (refused.admitted, refused.reason) == (False, "tokens_per_minute")
    assert refused.retry_after_s == pytest.approx(30)
    fits, _ = await admission.admit("c", [scope], 400, now=at(31))
    assert fits.admitted

    too_big, _ = await admission.admit("d", [scope], 1001, now=at(200))
    assert (too_big.reason, too_big.retry_after_s) == ("request_exceeds_tokens_per_minute", None)


async def test_settling_corrects_the_reservation_both_ways(admission: Admission) -> None:
    scope = tenant(tokens_per_minute=1000, tokens_per_day=5000)
    _, over = await admission.admit("a", [scope], 800, now=at(0))
    assert over is not None
    await admission.settle(over, 200)  # used less than reserved: 600 come back
    decision, under = await admission.admit("b", [scope], 700, now=at(1))
    assert decision.admitted
    assert decision.tokens is not None
    assert decision.tokens.remaining == 1000 - 200 - 700
    assert under is not None
    await admission.settle(under, 790)  # used more than reserved: 90 more counted
    refused, _ = await admission.admit("c", [scope], 11, now=at(2))
    assert refused.reason == "tokens_per_minute"  # 200 + 790 = 990 used, 10 left
    ok, _ = await admission.admit("d", [scope], 10, now=at(2))
    assert ok.admitted


async def test_concurrency_leases_are_released_or_expire(admission: Admission) -> None:
    scope = tenant(concurrent_requests=2)
    _, first = await admission.admit("a", [scope], 0, now=at(0))
    await admission.admit("b", [scope], 0, now=at(0))
    full, _ = await admission.admit("c", [scope], 0, now=at(1))
    assert (full.admitted, full.reason) == (False, "concurrent_requests")
    assert first is not None
    await admission.settle(first, 0)
    assert (await admission.admit("c", [scope], 0, now=at(1)))[0].admitted
    # b's gateway died (no renewal): its slot frees when the 10 s lease runs out
    assert not (await admission.admit("d", [scope], 0, now=at(9.9)))[0].admitted
    assert (await admission.admit("d", [scope], 0, now=at(10.1)))[0].admitted


async def test_renewed_leases_outlive_their_first_expiry(admission: Admission) -> None:
    scope = tenant(concurrent_requests=1)
    _, running = await admission.admit("a", [scope], 0, now=at(0))
    assert running is not None
    await admission.renew([running], now_ms=int(at(8).timestamp() * 1000))
    assert not (await admission.admit("b", [scope], 0, now=at(15)))[0].admitted
    assert (await admission.admit("b", [scope], 0, now=at(18.1)))[0].admitted


async def test_budgets_follow_the_calendar(admission: Admission) -> None:
    scope = tenant(tokens_per_day=1000, tokens_per_month=1500)
    late = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)
    assert (await admission.admit("a", [scope], 900, now=late))[0].admitted
    day, _ = await admission.admit("b", [scope], 200, now=late + timedelta(minutes=5))
    assert (day.reason, day.is_budget) == ("daily_token_budget", True)
    assert day.retry_after_s == pytest.approx(55 * 60)  # midnight UTC
    next_day = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)  # a new day and a new month
    assert (await admission.admit("c", [scope], 1000, now=next_day))[0].admitted
    month, _ = await admission.admit("d", [scope], 600, now=datetime(2026, 12, 2, tzinfo=UTC))
    assert month.reason == "monthly_token_budget"
    assert month.retry_after_s == pytest.approx(30 * 86400)  # 1 January


async def test_the_tightest_scope_decides_and_a_refusal_changes_nothing(
    admission: Admission, redis_client: Redis
) -> None:
    generous = Scope("tenant:t1", Limits(requests_per_minute=100, tokens_per_minute=10_000))
    tight = Scope("key:k1", Limits(requests_per_minute=2, tokens_per_minute=500))
    first, _ = await admission.admit("a", [generous, tight], 100, now=at(0))
    assert first.requests is not None
    assert first.tokens is not None
    assert (first.requests.limit, first.requests.remaining) == (2, 1)
    assert (first.tokens.limit, first.tokens.remaining) == (500, 400)
    await admission.admit("b", [generous, tight], 100, now=at(1))
    before = await redis_client.zcard("enclave:quota:tenant:t1:requests")
    refused, _ = await admission.admit("c", [generous, tight], 100, now=at(2))
    assert refused.reason == "requests_per_minute"
    assert await redis_client.zcard("enclave:quota:tenant:t1:requests") == before == 2
    other_key = Scope("key:k2", Limits(requests_per_minute=2))
    assert (await admission.admit("d", [generous, other_key], 100, now=at(2)))[0].admitted


async def test_without_limits_everything_is_admitted_and_nothing_stored(
    admission: Admission, redis_client: Redis
) -> None:
    decision, reservation = await admission.admit("a", [tenant()], 10_000, now=at(0))
    assert decision.admitted
    assert (decision.requests, decision.tokens) == (None, None)
    assert reservation is not None
    await admission.settle(reservation, 12_000)
    assert await redis_client.keys("enclave:quota:*") == []


async def test_the_redis_clock_is_used_when_none_is_given(admission: Admission) -> None:
    scope = tenant(requests_per_minute=1)
    assert (await admission.admit("a", [scope], 0))[0].admitted
    refused, _ = await admission.admit("b", [scope], 0)
    assert refused.reason == "requests_per_minute"
    assert refused.retry_after_s is not None
    assert 59 < refused.retry_after_s <= 60


async def test_settling_adds_the_true_usage_to_the_tenants_hour(
    admission: Admission, redis_client: Redis
) -> None:
    _, limited = await admission.admit(
        "a", [tenant(tokens_per_minute=5000)], 1000, now=at(0), tenant_id="t1"
    )
    _, unlimited = await admission.admit("b", [], 0, now=at(3590), tenant_id="t1")
    assert limited is not None
    assert unlimited is not None
    await admission.settle(limited, 120, now=at(30))
    await admission.settle(unlimited, 45, now=at(3605))  # ends in the next hour

    noon = "enclave:quota:tenant:t1:hour:2026-11-30T12"
    one = "enclave:quota:tenant:t1:hour:2026-11-30T13"
    assert await redis_client.hgetall(noon) == {b"tokens": b"120", b"requests": b"1"}
    assert await redis_client.hgetall(one) == {b"tokens": b"45", b"requests": b"1"}
    assert 47 * 3600 < await redis_client.ttl(noon) <= 48 * 3600
