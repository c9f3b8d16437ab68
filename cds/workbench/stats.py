"""The committee report (cds/store/report.py) as an inline SVG bar chart: one bar per rule that
issued cards, split into accepted / overridden / no feedback. Geometry only; the template draws it."""
from __future__ import annotations

from dataclasses import dataclass

BAR_HEIGHT = 22
BAR_GAP = 8
LABEL_WIDTH = 230
BAR_WIDTH = 520
OUTCOMES = (("accepted", "Accepted"), ("overridden", "Overridden"), ("no_feedback", "No feedback"))


@dataclass
class Segment:
    outcome: str
    label: str
    count: int
    x: float
    width: float


@dataclass
class Bar:
    rule_id: str
    alerts: int
    y: float
    segments: list[Segment]
    acceptance_rate: float | None
    override_rate: float | None


@dataclass
class Chart:
    bars: list[Bar]
    height: int
    width: int
    scale_max: int


def rule_chart(report: dict) -> Chart:
    rules = [r for r in report["rules"] if r["alerts"]]
    scale_max = max((r["alerts"] for r in rules), default=0)
    bars = []
    for i, rule in enumerate(rules):
        x = float(LABEL_WIDTH)
        segments = []
        for key, label in OUTCOMES:
            width = BAR_WIDTH * rule[key] / scale_max if scale_max else 0.0
            segments.append(Segment(key, label, rule[key], x, width))
            x += width
        bars.append(Bar(rule["rule_id"], rule["alerts"], i * (BAR_HEIGHT + BAR_GAP), segments,
                        rule["acceptance_rate"], rule["override_rate"]))
    height = len(bars) * (BAR_HEIGHT + BAR_GAP)
    return Chart(bars, height, LABEL_WIDTH + BAR_WIDTH + 60, scale_max)
