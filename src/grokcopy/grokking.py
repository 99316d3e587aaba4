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


def induction_formation(history: list[dict], threshold: float = 0.3) -> list[dict]:
    """Per layer, the first analysed step at which its best head's I reaches `threshold`.

    "Shallow to deep" (the paper's Fig. 6) reads as first steps that grow with depth. A layer
    that never reaches the threshold has `first_step` None; `max_induction` is its best I over
    the whole history, and `head` the head that first crossed (or the overall best).
    """
    history = sorted(history, key=lambda r: r["step"])
    if not history:
        return []
    rows = []
    for layer in range(history[0]["num_layers"]):
        best = max(((max(r["induction"][layer]), r) for r in history), key=lambda x: x[0])
        crossed = next((r for r in history if max(r["induction"][layer]) >= threshold), None)
        source = crossed or best[1]
        head_values = source["induction"][layer]
        rows.append({
            "layer": layer,
            "first_step": crossed["step"] if crossed else None,
            "tokens": crossed.get("tokens") if crossed else None,
            "head": max(range(len(head_values)), key=head_values.__getitem__),
            "max_induction": best[0],
        })
    return rows


def formation_table(rows: list[dict], threshold: float) -> str:
    """The formation chart as text, for the terminal and reports."""
    lines = [f"induction-head formation (first step with max_head I >= {threshold}):",
             "layer  first_step  tokens        head  max I"]
    for r in rows:
        step = "never" if r["first_step"] is None else str(r["first_step"])
        tokens = "-" if r["tokens"] is None else f"{r['tokens']:,}"
        lines.append(f"{r['layer']:>5}  {step:>10}  {tokens:>12}  {r['head']:>4}  {r['max_induction']:.3f}")
    return "\n".join(lines)
