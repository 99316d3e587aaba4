"""When did it happen? Step-level landmarks of a run's loss and copy curves.

`loss_fall_step`: the first step by which the (moving-average) training loss has made a given
share of its total fall, from the first logged value to the mean of the last few.
`first_step_reaching`: the first step at which a curve reaches a threshold.
"""

from __future__ import annotations


def smooth(values: list[float], window: int = 5) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_fall_step(points: list[tuple[int, float]], share: float = 0.8, window: int = 5) -> int | None:
    """First step where the smoothed loss is below start - share * (start - final)."""
    if len(points) < 2:
        return None
    steps = [s for s, _ in points]
    values = smooth([v for _, v in points], window)
    start, final = points[0][1], sum(v for _, v in points[-window:]) / len(points[-window:])
    target = start - share * (start - final)
    return next((s for s, v in zip(steps, values) if v <= target), None)


def first_step_reaching(points: list[tuple[int, float]], threshold: float) -> int | None:
    return next((s for s, v in points if v >= threshold), None)
