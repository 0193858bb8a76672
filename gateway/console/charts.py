"""Bar charts the console draws as inline SVG on the server: no script, no library, nothing
the Content-Security-Policy blocks. This module holds the geometry (pure, in the SVG's own
units); the template draws it and a table of the same numbers for those who do not see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.quotas.usage import HourUsage, hour_start

WIDTH = 720.0
HEIGHT = 240.0
LEFT = 64.0
"""Room for the value axis' labels."""
BOTTOM = 40.0
"""Room for the hours and dates."""
TOP = 12.0
RIGHT = 8.0
TICKS = 4
BAR_FILL = 0.7
"""The share of its slot a bar takes."""
LABEL_EVERY_HOURS = 3


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class Scale:
    """Bars for ``values`` in the plot area, on a value axis from 0 to ``top``."""

    bars: list[Bar]
    ticks: list[Tick]
    top: int
    baseline: float


def tick_step(maximum: int, ticks: int = TICKS) -> int:
    """The smallest 1, 2 or 5 times a power of ten with ``ticks`` steps reaching maximum."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor * ticks >= maximum:
                return step * factor
        step *= 10


def scale(
    values: Sequence[int],
    *,
    left: float = LEFT,
    top: float = TOP,
    width: float = WIDTH - LEFT - RIGHT,
    height: float = HEIGHT - TOP - BOTTOM,
) -> Scale:
    """Bars side by side in the box (left, top, width, height), value 0 on its bottom edge;
    a value above 0 is never drawn thinner than one unit."""
    step = tick_step(max(values, default=0))
    axis_top = step * TICKS
    baseline = top + height
    slot = width / max(len(values), 1)
    bars = []
    for index, value in enumerate(values):
        tall = height * value / axis_top
        if value > 0:
            tall = max(tall, 1.0)
        x = left + index * slot + slot * (1 - BAR_FILL) / 2
        bars.append(
            Bar(
                x=round(x, 2),
                y=round(baseline - tall, 2),
                width=round(slot * BAR_FILL, 2),
                height=round(tall, 2),
                value=value,
            )
        )
    ticks = [Tick(round(baseline - height * i / TICKS, 2), step * i) for i in range(TICKS + 1)]
    return Scale(bars, ticks, axis_top, baseline)


@dataclass(frozen=True)
class HourBar:
    bar: Bar
    usage: HourUsage
    is_current: bool
    hour_label: str
    """``HH:00`` every few hours, else empty."""
    date_label: str
    """The date under each midnight, else empty."""

    @property
    def key(self) -> str:
        return f"{self.usage.hour:%Y-%m-%dT%H}"

    @property
    def title(self) -> str:
        start = self.usage.hour
        return (
            f"{start:%Y-%m-%d %H}:00 to {(start.hour + 1) % 24:02d}:00 UTC: "
            f"{self.usage.tokens:,} tokens, {self.usage.requests:,} requests"
        )


@dataclass(frozen=True)
class HourlyChart:
    bars: list[HourBar]
    """One per hour shown, oldest first."""
    ticks: list[Tick]
    baseline: float
    width: float = WIDTH
    height: float = HEIGHT
    left: float = LEFT

    @property
    def right(self) -> float:
        return self.width - RIGHT


def hourly_chart(history: Sequence[HourUsage], now: datetime) -> HourlyChart:
    """Tokens per hour, the hour holding ``now`` marked current; hours labelled in UTC."""
    geometry = scale([usage.tokens for usage in history])
    current = hour_start(now)
    bars = [
        HourBar(
            bar=bar,
            usage=usage,
            is_current=usage.hour == current,
            hour_label=f"{usage.hour:%H}:00" if usage.hour.hour % LABEL_EVERY_HOURS == 0 else "",
            date_label=f"{usage.hour:%d %b}" if usage.hour.hour == 0 else "",
        )
        for bar, usage in zip(geometry.bars, history, strict=True)
    ]
    return HourlyChart(bars, geometry.ticks, geometry.baseline)
