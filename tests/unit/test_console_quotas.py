"""The quotas pages' pure parts: the bar chart's geometry (the value axis, bar heights, the
current hour, UTC labels across midnight), the limits form read as the admin API's body,
and each usage figure against its limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.api.admin.limits import LimitsBody
from gateway.console.charts import hourly_chart, scale, tick_step
from gateway.console.quota_views import limits_from_form, usage_rows
from gateway.errors import InvalidRequest
from gateway.quotas.admission import Limits
from gateway.quotas.usage import CurrentUsage, HourUsage, last_hours

NOW = datetime(2026, 5, 2, 1, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("maximum", "step"), [(0, 1), (4, 1), (5, 2), (8, 2), (9, 5), (20, 5), (21, 10), (1234, 500)]
)
def test_the_value_axis_ends_on_a_round_number_at_or_above_the_maximum(
    maximum: int, step: int
) -> None:
    assert tick_step(maximum) == step


def test_bars_scale_to_the_axis_and_stand_on_the_baseline() -> None:
    drawn = scale([0, 50, 200, 1], left=0, top=0, width=400, height=100)
    assert drawn.top == 200  # 4 steps of 50
    assert [t.value for t in drawn.ticks] == [0, 50, 100, 150, 200]
    assert [t.y for t in drawn.ticks] == [100, 75, 50, 25, 0]
    heights = [bar.height for bar in drawn.bars]
    assert heights[:3] == [0, 25, 100]
    assert heights[3] == 1.0  # one token is still a visible bar
    assert all(bar.y + bar.height == pytest.approx(100) for bar in drawn.bars)
    assert [bar.x for bar in drawn.bars] == [15, 115, 215, 315]  # centred in 100-wide slots
    assert {bar.width for bar in drawn.bars} == {70}


def test_a_day_without_usage_draws_flat_bars_on_a_small_axis() -> None:
    drawn = scale([0] * 24)
    assert {bar.height for bar in drawn.bars} == {0}
    assert drawn.top == 4


def test_the_hourly_chart_marks_the_current_hour_and_labels_utc_hours_and_midnight() -> None:
    history = [HourUsage(hour, index * 10, index) for index, hour in enumerate(last_hours(NOW))]
    chart = hourly_chart(history, NOW)
    assert len(chart.bars) == 24
    current = [bar for bar in chart.bars if bar.is_current]
    assert [bar.key for bar in current] == ["2026-05-02T01"]
    assert chart.bars[-1].is_current
    assert chart.bars[-1].title == "2026-05-02 01:00 to 02:00 UTC: 230 tokens, 23 requests"
    labelled = {bar.key: (bar.hour_label, bar.date_label) for bar in chart.bars if bar.hour_label}
    assert labelled["2026-05-02T00"] == ("00:00", "02 May")  # the date under midnight
    assert labelled["2026-05-01T03"] == ("03:00", "")
    assert "2026-05-01T04" not in labelled  # every third hour only
    assert chart.ticks[-1].value == 400  # 230 tokens at most: steps of 100
    plot_height = chart.baseline - chart.ticks[-1].y
    assert chart.bars[-1].bar.height == pytest.approx(plot_height * 230 / 400, abs=0.01)
    assert chart.bars[0].bar.height == 0


def test_the_limits_form_becomes_the_admin_apis_body() -> None:
    form = {
        "csrf_token": "t",
        "requests_per_minute": " 60 ",
        "tokens_per_minute": "",
        "tokens_per_day": "200000",
    }
    assert limits_from_form(form) == LimitsBody(requests_per_minute=60, tokens_per_day=200_000)
    assert limits_from_form({}) == LimitsBody()


@pytest.mark.parametrize("value", ["-1", "1.5", "ten", "1e3", "٣", "9" * 11, "9" * 5000])
def test_anything_but_a_whole_number_is_a_400_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        limits_from_form({"concurrent_requests": value})
    assert refused.value.param == "concurrent_requests"
    assert refused.value.status == 400


def test_usage_is_shown_against_each_limit_and_today_falls_back_to_the_hours() -> None:
    limits = Limits(requests_per_minute=10, tokens_per_month=1_000_000)
    current = CurrentUsage(requests_per_minute=4, tokens_per_month=5_000)
    rows = {row.name: row for row in usage_rows(limits, current, today_tokens=321)}
    assert (rows["requests_per_minute"].used, rows["requests_per_minute"].limit) == (4, 10)
    assert rows["requests_per_minute"].source == "limit"
    assert (rows["tokens_per_day"].used, rows["tokens_per_day"].source) == (321, "hours")
    assert (rows["tokens_per_minute"].used, rows["tokens_per_minute"].source) == (None, "none")
    assert rows["tokens_per_month"].used == 5_000
    budget = usage_rows(Limits(tokens_per_day=900), CurrentUsage(tokens_per_day=800), 321)
    assert [(r.used, r.source) for r in budget if r.name == "tokens_per_day"] == [(800, "limit")]
