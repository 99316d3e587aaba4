"""When did it happen? Landmarks of a run's loss, copy and induction curves, with fixed definitions.

The landmarks `grokcopy report` compares across runs are absolute, so that they mean the same in
every run whatever its length or evaluation spacing:

- `jump_step`: the first (linearly interpolated) step at which copy exact match reaches a fixed
  threshold (0.5: half the copy queries exactly right);
- `loss_target_step`: the first logged step at which the smoothed training loss reaches one
  absolute target shared by all compared runs (steps and tokens to it then compare across runs);
- `formation_step` per layer: the first analysed step at which the layer's best head has I >= 0.3;
- `jump_width`: the steps copy exact match takes from 10% to 90% of its rise (from its first copy
  test to its final level), beside `plateau_steps`, from the loss's 80% fall to that 10% point.

Each landmark read from measurements some steps apart also carries `*_bounds`: the measured steps
around it (the last before, the first at or after), between which it happened. The statistics over
seeds treat it so (interval-censored), so no interval is narrower than the measurement grid.

A run that never reaches a threshold is right-censored at its last measured step
(`*_censored_at`): kept and shown, never dropped, and counted as such by the statistics over
seeds (grokcopy.analysis.survival). `loss_fall_step` (share of a run's own fall) stays for the
demo's one-run verdict only.
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


def step_before(steps, step) -> float:
    """The last of `steps` before `step` (0 when there is none): where an interval-censored landmark
    measured at `step` may have happened at the earliest."""
    return float(max((s for s in steps if s < step), default=0))


def bounds(steps, step) -> list[float] | None:
    """[last measured step before `step`, first measured step at or after it]: where a landmark read
    (or interpolated) at `step` from measurements at `steps` can lie. None for None."""
    if step is None:
        return None
    return [step_before(steps, step), float(min((s for s in steps if s >= step), default=step))]


def formation_table(rows: list[dict], threshold: float) -> str:
    """The formation chart (rows of `formation_steps`) as text, for the terminal and reports."""
    lines = [f"induction-head formation (first step with max_head I >= {threshold}):",
             "layer  formation_step  tokens        head  max I"]
    for r in rows:
        step = "never" if r["formation_step"] is None else str(r["formation_step"])
        tokens = "-" if r["formation_tokens"] is None else f"{r['formation_tokens']:,}"
        lines.append(f"{r['layer']:>5}  {step:>14}  {tokens:>12}  {r['head']:>4}  {r['max_induction']:.3f}")
    return "\n".join(lines)


# --- Landmarks of one run, right-censored -----------------------------------------------------


def crossing_step(points: list[tuple[float, float]], threshold: float) -> float | None:
    """First step at which a curve reaches `threshold`, linearly interpolated between its two
    measurements around the crossing (a curve measured every 50 steps is not quantised to 50)."""
    for i, (step, value) in enumerate(points):
        if value >= threshold:
            if i == 0:
                return float(step)
            prev_step, prev_value = points[i - 1]
            return prev_step + (threshold - prev_value) / (value - prev_value) * (step - prev_step)
    return None


def jump_step(copy_history: list[dict], threshold: float = 0.5) -> tuple[float | None, int | None]:
    """(step at which copy exact match first reaches `threshold`, None) or (None, censored_at): the
    last step measured, when it never did."""
    points = sorted((r["step"], r["exact_match"]) for r in copy_history)
    if not points:
        return None, None
    step = crossing_step(points, threshold)
    return (step, None) if step is not None else (None, points[-1][0])


def loss_target_step(losses: list[tuple[int, float]], target: float | None,
                     window: int = 5) -> tuple[int | None, int | None]:
    """(first logged step whose trailing `window`-point mean loss is <= `target`, None), or
    (None, censored_at) when the run never got there (or there is no target / no loss)."""
    if target is None or not losses:
        return None, (losses[-1][0] if losses else None)
    values = smooth([v for _, v in losses], window)
    step = next((s for (s, _), v in zip(losses, values) if v <= target), None)
    return (step, None) if step is not None else (None, losses[-1][0])


def shared_loss_target(runs_losses: list[list[tuple[int, float]]], window: int = 5, margin: float = 0.05) -> float | None:
    """One absolute loss target for runs compared together: the highest of their lowest smoothed
    losses, plus `margin` x the median fall from the first logged loss to it. Every run reaches it,
    and none has to be near its own floor, so steps (and tokens) to it compare across runs."""
    floors, starts = [], []
    for losses in runs_losses:
        if losses:
            floors.append(min(smooth([v for _, v in losses], window)))
            starts.append(losses[0][1])
    if not floors:
        return None
    worst = max(floors)
    falls = sorted(max(0.0, s - worst) for s in starts)
    return worst + margin * falls[len(falls) // 2]


def formation_steps(induction_history: list[dict], threshold: float = 0.3) -> list[dict]:
    """Per layer, the first analysed step at which its best head's I reaches `threshold`: "shallow to deep"
    (the paper's Fig. 6) reads as steps that grow with depth. Each row: `formation_step` (None when never) with
    its `formation_tokens` and `formation_bounds` (the analyses around it), else `censored_at` (the last
    analysed step); `head` (the one that crossed, or the best) and `max_induction` (its best I over the run);
    `copying_at_end`: the layer's best depth-aware copying score (analysis.ov_circuit.residual_copying_score)
    at the last analysis, None where the history does not record it."""
    history = sorted(induction_history, key=lambda r: r["step"])
    if not history:
        return []
    steps = [r["step"] for r in history]
    rows = []
    for layer in range(history[0]["num_layers"]):
        best = max(((max(r["induction"][layer]), r) for r in history), key=lambda x: x[0])
        crossed = next((r for r in history if max(r["induction"][layer]) >= threshold), None)
        head_values = (crossed or best[1])["induction"][layer]
        rows.append({"layer": layer, "formation_step": crossed["step"] if crossed else None,
                     "formation_tokens": crossed.get("tokens") if crossed else None,
                     "formation_bounds": bounds(steps, crossed["step"] if crossed else None),
                     "censored_at": None if crossed else steps[-1],
                     "head": max(range(len(head_values)), key=head_values.__getitem__), "max_induction": best[0],
                     "copying_at_end": (max(history[-1]["copying"][layer]) if history[-1].get("copying") is not None
                                        else None)})
    return rows


def jump_width(copy_history: list[dict], low: float = 0.1, high: float = 0.9, tail: int = 3) -> dict:
    """How abrupt the jump is: `jump_width` = steps from `low` to `high` of the exact match's rise, the
    rise running from the first copy test to the mean of the last `tail` (linear interpolation), and its
    bounds from the copy tests around each crossing (`jump_width_bounds`: [shortest, longest] the
    measurements allow); `jump_start` is the `low` crossing. All None for a run whose exact match rose by
    less than 0.5 (no jump to measure)."""
    points = sorted((r["step"], r["exact_match"]) for r in copy_history)
    none = {"jump_width": None, "jump_width_bounds": None, "jump_start": None, "jump_start_bounds": None}
    if len(points) < 2:
        return none
    start, end = points[0][1], sum(v for _, v in points[-tail:]) / len(points[-tail:])
    if end - start < 0.5:
        return none
    a, b = (crossing_step(points, start + share * (end - start)) for share in (low, high))
    if a is None or b is None:
        return none
    steps = [s for s, _ in points]
    (a0, a1), (b0, b1) = bounds(steps, a), bounds(steps, b)
    return {"jump_width": b - a, "jump_width_bounds": [max(0.0, b0 - a1), b1 - a0], "jump_start": a,
            "jump_start_bounds": [a0, a1]}


def grokking_stats(source, *, jump_threshold: float = 0.5, loss_target: float | None = None,
                   formation_threshold: float = 0.3, loss_window: int = 5) -> dict:
    """Every landmark of one run, from a run folder or a dict with `losses` [(step, loss)],
    `copy_history`, optionally `induction_history` and `tokens_per_step`.

    `jump_step` / `jump_tokens` / `jump_censored_at`; `loss_target_step` / `loss_target_tokens` /
    `loss_censored_at` (for `loss_target`, shared by the runs compared; None: no loss landmark);
    `lag_steps` = jump - loss target step (positive: copying jumped after the loss got there, the
    paper's picture); `formation` per layer; `finished` is False for a run that stopped before
    its configured max_steps (and not by its copy_stop_exact_match rule) (shown as such, its landmarks censored where it stopped).
    """
    data = source if isinstance(source, dict) else load_histories(source)
    losses = sorted(data.get("losses") or [])
    copy = sorted(data.get("copy_history") or [], key=lambda r: r["step"])
    per_step = data.get("tokens_per_step") or history_tokens_per_step(copy)
    jump, jump_censored = jump_step(copy, jump_threshold)
    target, target_censored = loss_target_step(losses, loss_target, loss_window)
    width = jump_width(copy)

    def tokens(step):
        return None if step is None or not per_step else step * per_step

    formation = formation_steps(data.get("induction_history") or [], formation_threshold)
    fall80 = loss_fall_step(losses, 0.8, loss_window)
    loss_first = jump is not None and fall80 is not None and jump > fall80
    best_head = max((r["max_induction"] for r in formation), default=None)
    final_em = copy[-1]["exact_match"] if copy else None
    tail = [v for _, v in losses[-loss_window:]]
    steps = max([s for s, _ in losses] + [r["step"] for r in copy], default=None)
    training = (data.get("run_config") or {}).get("training") or {}
    max_steps, stop_at = training.get("max_steps"), training.get("copy_stop_exact_match")
    stopped = stop_at is not None and bool(copy) and copy[-1]["exact_match"] >= float(stop_at)  # the stop rule
    return {
        "steps": steps, "tokens_per_step": per_step,
        "stopped_by_rule": stopped,
        "finished": True if stopped else None if not max_steps or max_steps < 0 or steps is None else steps >= max_steps,
        "final_loss": sum(tail) / len(tail) if tail else None,
        "final_exact_match": final_em,
        "max_exact_match": max((r["exact_match"] for r in copy), default=None),
        "final_token_accuracy": copy[-1].get("token_accuracy") if copy else None,
        "jump_step": jump, "jump_tokens": tokens(jump), "jump_censored_at": jump_censored,
        "jump_bounds": bounds([r["step"] for r in copy], jump),
        **width, "plateau_steps": None if width["jump_start"] is None or fall80 is None else width["jump_start"] - fall80,
        "plateau_steps_bounds": (None if width["jump_start"] is None or fall80 is None
                                 else [b - fall80 for b in width["jump_start_bounds"]]),
        "loss_target": loss_target, "loss_target_step": target, "loss_target_tokens": tokens(target),
        "loss_censored_at": target_censored,
        "loss_target_bounds": bounds([s for s, _ in losses], target),
        "lag_steps": None if jump is None or target is None else jump - target,
        "formation": formation,
        # the demo's criteria: the loss made 80% of its fall before the jump, copying ends >= 0.9,
        # and a canonical induction head (some head's I >= the formation threshold) formed
        "loss_80pct_fall_step": fall80, "loss_first": loss_first, "max_induction": best_head,
        # which solution the final model copies with, when it was ablated (grokcopy.analysis.ablation's rule)
        "copies_by_induction": (data.get("ablation") or {}).get("copies_by_induction"),
        "induction_heads_ablated_exact_match": (data.get("ablation") or {}).get("induction_heads_ablated_exact_match"),
        "layer_ablated_exact_match": (data.get("ablation") or {}).get("layer_ablated_exact_match"),
        "groks": bool(loss_first and final_em is not None and final_em >= 0.9 and best_head is not None
                      and best_head >= formation_threshold),
    }
