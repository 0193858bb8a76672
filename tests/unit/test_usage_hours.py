"""Usage per UTC hour, without Redis: the hours of the last day, their keys, today's sum
across midnight, the tokens still inside the minute, and only counted figures shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

from gateway.quotas.admission import Limits, usage_key
from gateway.quotas.usage import (
    CurrentUsage,
    HourUsage,
    counted_only,
    hours_of,
    last_hours,
    tokens_in_window,
    usage_today,
)

NOW = datetime(2026, 5, 2, 0, 40, 12, tzinfo=UTC)  # 40 minutes into a new day


def test_the_last_day_is_24_whole_utc_hours_ending_with_the_current_one() -> None:
    hours = last_hours(NOW)
    assert len(hours) == 24
    assert hours[-1] == datetime(2026, 5, 2, 0, tzinfo=UTC)
    assert hours[0] == datetime(2026, 5, 1, 1, tzinfo=UTC)  # yesterday's 01:00
    assert all(later - earlier == timedelta(hours=1) for earlier, later in pairwise(hours))


def test_hours_are_utc_whatever_the_clock_given() -> None:
    paris = NOW.astimezone(timezone(timedelta(hours=2)))
    assert last_hours(paris) == last_hours(NOW)
    assert usage_key("t1", paris) == "enclave:quota:tenant:t1:hour:2026-05-02T00"
    assert usage_key("t1", NOW - timedelta(minutes=41)) == (
        "enclave:quota:tenant:t1:hour:2026-05-01T23"
    )


def test_hours_without_a_hash_count_zero() -> None:
    hours = last_hours(NOW, 3)
    usage = hours_of(hours, [[None, None], [b"120", b"2"], [b"7", None]])
    assert usage == [
        HourUsage(hours[0], 0, 0),
        HourUsage(hours[1], 120, 2),
        HourUsage(hours[2], 7, 0),
    ]


def test_today_starts_at_midnight_utc() -> None:
    hours = last_hours(NOW)
    history = [HourUsage(hour, 100, 1) for hour in hours]
    today = usage_today(history, NOW)
    assert today == HourUsage(datetime(2026, 5, 2, tzinfo=UTC), 100, 1)  # 00:00 only
    evening = NOW.replace(hour=23)
    late = [HourUsage(hour, 10, 2) for hour in last_hours(evening)]
    assert usage_today(late, evening) == HourUsage(datetime(2026, 5, 2, tzinfo=UTC), 240, 48)


def test_only_requests_still_inside_the_minute_count_their_tokens() -> None:
    amounts = {b"a": b"50", b"b": b"70", b"_sum": b"170", b"old": b"50"}
    assert tokens_in_window([b"a", b"b"], amounts) == 120
    assert tokens_in_window([], amounts) == 0
    assert tokens_in_window([b"gone"], amounts) == 0  # settled away meanwhile


def test_figures_without_a_limit_are_not_counted() -> None:
    usage = CurrentUsage(3, 400, 1, 5000, 90000)
    shown = counted_only(Limits(requests_per_minute=10, tokens_per_day=10_000), usage)
    assert shown == CurrentUsage(requests_per_minute=3, tokens_per_day=5000)
    assert counted_only(Limits(), usage) == CurrentUsage()
