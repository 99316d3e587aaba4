"""When did it happen? Step-level landmarks of a run's loss and copy curves.

`loss_fall_step`: the first step by which the (moving-average) training loss has made a given
share of its total fall, from the first logged value to the mean of the last few.
`first_step_reaching`: the first step at which a curve reaches a threshold.
`loss_plateau_step`, `copy_jump_step`, `copy_half_step` and `grokking_stats`: the landmarks that
`grokcopy report` compares across runs to test the paper's claims (definitions in their docstrings).
"""

from __future__ import annotations

from grokcopy.run_dir import history_tokens_per_step, load_histories


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


# --- Grokking statistics of one run (issue #5) -------------------------------------------------
#
# The paper's claims compare *when* two things happen: the loss settles, and copying jumps. These
# landmarks are defined so that they can be compared across runs with different logging and
# evaluation spacing (steps are interpolated where the curve is sampled sparsely).


def loss_plateau_step(points: list[tuple[int, float]], tolerance: float = 0.05, relative: bool = True,
                      window: int = 5) -> int | None:
    """First logged step from which the smoothed training loss stays within a band of its final value.

    Smoothing: trailing moving average over `window` logged losses (`smooth`). The final value is the
    mean of the last `window` logged losses (= the last smoothed value). The band is
    `tolerance x (first logged loss - final)` when `relative` (default: within 5% of the total fall),
    else `tolerance` nats. "Stays" means every later smoothed value is inside the band, so a loss
    that rises again later moves the plateau after the rise. None with fewer than two points, or,
    when relative, if the loss did not fall.
    """
    if len(points) < 2:
        return None
    steps = [s for s, _ in points]
    values = smooth([v for _, v in points], window)
    final = values[-1]
    band = tolerance * (points[0][1] - final) if relative else tolerance
    if band <= 0:
        return None
    outside = [i for i, v in enumerate(values) if abs(v - final) > band]
    return steps[outside[-1] + 1] if outside else steps[0]


def _interp(steps: list[float], values: list[float], x: float) -> float:
    import numpy as np

    return float(np.interp(x, steps, values))


def copy_jump_step(points: list[tuple[int, float]], window: float | None = None,
                   min_rise: float = 0.01) -> float | None:
    """Step of the steepest rise of exact match: the centre of the `window`-step span over which the
    (linearly interpolated) curve rises the most.

    This is the steepest slope of the curve smoothed by a centred moving average of `window` steps,
    so single noisy evaluations at densely sampled early steps cannot win. `window` defaults to the
    widest gap between two evaluations (the coarsest resolution the history has everywhere). When the
    best span is a flat range of equal rises (a symmetric jump), its middle is returned. None when no
    span rises by more than `min_rise` (no jump), or with fewer than two evaluations.
    """
    if len(points) < 2:
        return None
    steps = [float(s) for s, _ in points]
    values = [float(v) for _, v in points]
    half = (window if window else max(b - a for a, b in zip(steps, steps[1:]))) / 2
    low, high = steps[0] + half, steps[-1] - half
    if low > high:  # the window is longer than the history: one span, the whole of it
        low = high = (steps[0] + steps[-1]) / 2
        half = (steps[-1] - steps[0]) / 2
    # The rise is piecewise linear in the centre: its maximum is at a centre where an edge meets a step.
    centres = sorted({c for s in steps for c in (s - half, s + half) if low <= c <= high} | {low, high})
    rises = [_interp(steps, values, c + half) - _interp(steps, values, c - half) for c in centres]
    best = max(rises)
    if best <= min_rise:
        return None
    first = rises.index(best)
    last = first
    while last + 1 < len(rises) and rises[last + 1] >= best - 1e-9:
        last += 1
    return (centres[first] + centres[last]) / 2


def copy_half_step(points: list[tuple[int, float]], fraction: float = 0.5, min_final: float = 0.01) -> float | None:
    """First step where exact match reaches `fraction` of its final (last) value, linearly
    interpolated between evaluations. None when the final value is below `min_final` (half of
    nothing is reached at step 0)."""
    if not points or points[-1][1] < min_final:
        return None
    target = fraction * points[-1][1]
    for i, (step, value) in enumerate(points):
        if value >= target:
            if i == 0:
                return float(step)
            prev_step, prev_value = points[i - 1]
            return prev_step + (target - prev_value) / (value - prev_value) * (step - prev_step)
    return None


def grokking_stats(source, *, loss_tolerance: float = 0.05, relative: bool = True, loss_window: int = 5,
                   jump_window: float | None = None, min_rise: float = 0.01, half_fraction: float = 0.5) -> dict:
    """Every landmark of one run, from a run folder or a dict with `losses` [(step, loss)],
    `copy_history` (records with step, exact_match, ...) and optionally `tokens_per_step`.

    Landmarks in steps and in tokens (step x tokens_per_step, from run_config.json or the copy
    history): `loss_plateau_step`, `copy_jump_step`, `copy_half_step`; `lag_steps` / `lag_tokens` =
    copy jump - loss plateau (positive: copying jumped after the loss settled, the paper's picture).
    """
    data = source if isinstance(source, dict) else load_histories(source)
    losses = sorted(data.get("losses") or [])
    copy = sorted(data.get("copy_history") or [], key=lambda r: r["step"])
    per_step = data.get("tokens_per_step")
    per_step = per_step or history_tokens_per_step(copy)
    em = [(r["step"], r["exact_match"]) for r in copy]
    plateau = loss_plateau_step(losses, loss_tolerance, relative, loss_window)
    jump = copy_jump_step(em, jump_window, min_rise)
    half = copy_half_step(em, half_fraction, min_rise)

    def tokens(step):
        return None if step is None or not per_step else step * per_step

    tail = [v for _, v in losses[-loss_window:]]
    lag = None if plateau is None or jump is None else jump - plateau
    return {
        "steps": max([s for s, _ in losses] + [s for s, _ in em], default=None),
        "tokens_per_step": per_step,
        "final_loss": sum(tail) / len(tail) if tail else None,
        "final_exact_match": em[-1][1] if em else None,
        "max_exact_match": max((v for _, v in em), default=None),
        "final_token_accuracy": copy[-1].get("token_accuracy") if copy else None,
        "loss_plateau_step": plateau, "loss_plateau_tokens": tokens(plateau),
        "copy_jump_step": jump, "copy_jump_tokens": tokens(jump),
        "copy_half_step": half, "copy_half_tokens": tokens(half),
        "lag_steps": lag, "lag_tokens": tokens(lag),
    }
