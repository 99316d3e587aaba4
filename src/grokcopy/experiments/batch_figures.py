"""The critical-batch experiment beyond the S*-vs-B fit: McCandlish's collapse plot, the
learning-rate x batch grid with the sign of the learning-rate effect per batch, and the gradient noise
scale measured during the plateau, set beside the fitted B_crit.

Why these three: the fit alone says where steps start to govern; the collapse shows whether the runs
follow the model's one curve (E/E_min - 1)(S/S_min - 1) = 1 at all; the grid tests the model's second
prediction (a larger learning rate delays the jump below B_crit and speeds it above); and the noise scale
is what a GPU user can measure in a few hundred steps of their own run, so if it agrees with B_crit
they can tell their regime without a sweep.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from grokcopy.analysis.plots import save_figure  # noqa: E402
from grokcopy.experiments.claims import BATCH_FIELDS  # noqa: E402
from grokcopy.experiments.conditions import family  # noqa: E402

NOISE_SCALE_KEY = "gradient_noise_scale_tokens"


def collapse_figure(by_label: dict, fit: dict, out: Path) -> Path:
    """(E/E_min - 1) against (S/S_min - 1), log-log, for every seed that jumped (medians bold), with the
    model's curve y = 1/x. Points at or below S_min or E_min cannot be drawn on log axes; they are counted."""
    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    s_min, e_min, hidden = fit["s_min"], fit["e_min"], 0
    for label, batch in zip(fit["conditions"], fit["tokens_per_step"]):
        c = by_label[label]
        seeds = [r["stats"]["jump_step"] for r in c["runs"] if r["stats"].get("jump_step") is not None]
        median = c["stats"].get("jump_step_median")
        for steps, style in [(s, dict(marker="o", alpha=0.35, ms=4)) for s in seeds] + \
                            ([(median, dict(marker="D", ms=8, mec="black"))] if median else []):
            x, y = steps * batch / e_min - 1, steps / s_min - 1
            if x <= 0 or y <= 0:
                hidden += 1
                continue
            ax.plot(x, y, ls="none", color=plt.get_cmap("viridis")(np.log(batch) / np.log(max(fit["tokens_per_step"])
                                                                                          * 1.01)), **style)
    grid = np.geomspace(1e-2, 1e2, 100)
    ax.plot(grid, 1 / grid, color="black", lw=1, label="(E/E_min - 1)(S/S_min - 1) = 1")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("E / E_min - 1 (tokens to the jump)")
    ax.set_ylabel("S / S_min - 1 (steps to the jump)")
    ax.set_title("McCandlish's collapse: dots seeds, diamonds medians (colour: batch)"
                 + (f"; {hidden} not drawable" if hidden else ""), fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, out)


def _slope_of_log_lr(lrs, steps) -> float | None:
    ok = [(np.log(lr), np.log(s)) for lr, s in zip(lrs, steps) if s is not None and np.isfinite(s) and s > 0]
    if len(ok) < 2:
        return None
    x, y = np.array(ok).T
    return float(np.polyfit(x, y, 1)[0])


# Below this an interval's end counts as zero: two cells with identical data draw identical resamples
# (data_rng), and their slope is floating-point noise of either sign.
SLOPE_TOLERANCE = 1e-9


def lr_effect(by_label: dict, row: list[str], level: float = 0.95) -> dict:
    """The learning-rate effect d ln S* / d ln LR over the conditions `row` (one batch, >= 2 learning rates)
    with a bootstrap interval: "larger LR earlier" (interval < 0), "larger LR later" (> 0) or not resolved.

    A cell whose median is undefined (most seeds never jumped) enters at its lower bound (the step by which
    more than half the seeds were seen without a jump). That makes the slope one-sided: a censored cell above
    the mean ln LR makes it a lower bound of the true slope (only "later" can be read), one below it an upper
    bound (only "earlier"); censored cells on both sides leave the effect not resolved. A resample in which
    a cell with a defined median loses it pushes the slope without limit in that cell's direction (+inf
    above the centre, -inf below), so the slowest resamples widen the interval instead of vanishing; a cell
    of fewer than 3 seeds gives no interval (a median of two resampled values takes only their two values)."""
    row_lrs = [by_label[l]["config"]["learning_rate"] for l in row]
    bound = np.array([float(by_label[l]["stats"].get("jump_step_lower_bound") or np.nan) for l in row])
    medians = [by_label[l]["stats"]["jump_step_median"] for l in row]
    censored = [label for label, m in zip(row, medians) if m is None]
    side = np.sign(np.log(row_lrs) - np.mean(np.log(row_lrs)))
    sides = {float(d) for d, m in zip(side, medians) if m is None} - {0.0}
    point = _slope_of_log_lr(row_lrs, [b if m is None else m for m, b in zip(medians, bound)])
    samples = np.vstack([by_label[l]["samples"]["jump_step"] for l in row])  # [lrs, n]; NaN: undefined
    lost = np.isnan(samples) & np.array([m is not None for m in medians])[:, None]
    samples = np.where(np.isnan(samples), bound[:, None], samples)
    slopes = []
    for k in range(samples.shape[1]):
        pushes = {float(d) for d in side[lost[:, k]]}
        slopes.append(_slope_of_log_lr(row_lrs, list(samples[:, k])) if not pushes else
                      np.inf * pushes.pop() if len(pushes) == 1 and 0.0 not in pushes else np.nan)
    slopes = np.array([np.nan if v is None else v for v in slopes], dtype=float)
    enough = min(by_label[l]["stats"]["n_runs"] for l in row) >= 3
    ci = None
    if enough and point is not None and slopes.size >= 20 and np.isnan(slopes).mean() <= 0.025:
        ordered = np.sort(slopes[~np.isnan(slopes)])
        tail = (1 - level) / 2
        low, high = ordered[int(np.floor(tail * ordered.size))], ordered[int(np.ceil((1 - tail) * ordered.size)) - 1]
        ci = [float(low) if np.isfinite(low) else None, float(high) if np.isfinite(high) else None]
    later_allowed, earlier_allowed = sides <= {1.0}, sides <= {-1.0}  # what a one-sided bound can show
    earlier = ci is not None and ci[1] is not None and ci[1] < -SLOPE_TOLERANCE and earlier_allowed
    later = ci is not None and ci[0] is not None and ci[0] > SLOPE_TOLERANCE and later_allowed
    verdict = ("not resolved (fewer than 3 seeds)" if not enough else "larger LR earlier" if earlier
               else "larger LR later" if later else "not resolved" if ci is None
               else "not resolved (censored)" if censored else "no clear effect")
    return {"learning_rates": row_lrs, "slope": point, "ci": ci, "ci_coverage": None,
            "ci_method": f"percentile bootstrap of the seeds' medians at level {level:.4g} (nominal, not guaranteed)",
            "level": level, "verdict": verdict, "censored_cells": censored}


FLIP_ALPHA = 0.05  # family-wise error of a reported sign flip


def _headless(condition: dict) -> bool:
    """At least half of the cell's seeds that jumped formed no induction head (the "other solution", exact
    match ~0.67): its median jump may be that solution's. A seed the stop rule ended before its next induction
    analysis is undetermined, not headless; a cell without induction scores is not called headless."""
    stats = [r["stats"] for r in condition.get("runs") or []]
    if not any(s.get("formation") for s in stats):
        return False
    jumped = [s for s in stats if s.get("jump_step") is not None]
    headless = [s for s in jumped if not s.get("stopped_by_rule")
                and not any(f.get("formation_step") is not None for f in s.get("formation") or [])]
    return bool(jumped) and 2 * len(headless) >= len(jumped)


def _flagged(by_label: dict, row: list[str]) -> dict:
    """The row's cells a direction may not rest on: {label: "censored" (median not reached) | "headless"}."""
    return {l: "censored" if by_label[l]["stats"]["jump_step_median"] is None else "headless" for l in row
            if by_label[l]["stats"]["jump_step_median"] is None or _headless(by_label[l])}


def _call_without_flagged(by_label: dict, row: list[str], level: float) -> dict:
    """`lr_effect` of `row` at `level`, and whether a direction it reads rests on flagged cells: it does unless
    the row's other cells (>= 2 of them) read the same direction at the same level."""
    both = {"larger LR earlier", "larger LR later"}
    effect, flagged = lr_effect(by_label, row, level=level), _flagged(by_label, row)
    clean = [l for l in row if l not in flagged]
    holds = effect["verdict"] not in both or not flagged or (
        len(clean) >= 2 and lr_effect(by_label, clean, level=level)["verdict"] == effect["verdict"])
    return {"learning_rates": effect["learning_rates"], "verdict": effect["verdict"], "ci": effect["ci"],
            "ci_coverage": effect["ci_coverage"], "ci_method": effect["ci_method"], "level": level, "flagged_cells": flagged, "rests_on_flagged": not holds}


def _pair_effect(by_label: dict, pair: list[str], level: float) -> dict:
    """`lr_effect` between two neighbouring learning rates; a direction there rests on a flagged cell whenever
    either cell is censored or headless (no other cell can carry it)."""
    effect = lr_effect(by_label, pair, level=level)
    return {**effect, "flagged_cells": (flagged := _flagged(by_label, pair)),
            "rests_on_flagged": bool(flagged) and effect["verdict"] in {"larger LR earlier", "larger LR later"}}


def sign_flip_test(by_label: dict, rows: list[list[str]], batches: list) -> dict:
    """Does the sign of the learning-rate effect flip with the batch? One test per batch row (the whole-row
    slope, `lr_effect`), m rows: each row's direction is read at the Bonferroni-adjusted level 1 - 0.05 / m
    (two-sided), so the chance that any of the m directions is a false call, and hence of a false flip, is
    <= 0.05. A direction counts only if it does not rest on censored or headless cells (`_flagged`): the
    row without them (>= 2 learning rates left) reads the same direction at that level. `verdict`: "flips"
    (an earlier and a later row that count), "not resolved (rests on headless or censored cells)" (a flip
    only with rows that rest on them), else "no flip shown"."""
    both = {"larger LR earlier", "larger LR later"}
    level = 1 - FLIP_ALPHA / max(1, len(rows))
    calls = [{"tokens_per_step": b, **_call_without_flagged(by_label, row, level)} for b, row in zip(batches, rows)]
    counted = {c["verdict"] for c in calls if not c["rests_on_flagged"]}
    verdict = ("flips" if counted >= both else "not resolved (rests on headless or censored cells)"
               if {c["verdict"] for c in calls} >= both else "no flip shown")
    return {"rule": f"Bonferroni over the {len(rows)} per-batch tests, each at level 1 - {FLIP_ALPHA}/{len(rows)}; "
                    "a direction resting on headless or censored cells does not count",
            "level": level, "n_tests": len(rows), "rows": calls, "verdict": verdict}


def lr_batch_grid(by_label: dict) -> dict | None:
    """Conditions that differ only in learning rate and batch (>= 2 of each): per cell the KM median jump
    step with its interval and k/n jumped; per batch with >= 2 learning rates the learning-rate effect over
    all of them (`lr_effect`, the protocol's rule, at 95%), and, because a slope over a U-shaped row reads as
    "no effect", the effect between each pair of neighbouring learning rates (`pairs`, Bonferroni over every
    pair) and the learning rate with the earliest median (`fastest_learning_rate`).

    The sign flips (`sign_flips` True) if "earlier" and "later" both occur over whole rows at the
    Bonferroni-corrected level, neither resting on censored or headless cells (`sign_flip_test`, whose
    `verdict` also says "not resolved" where the flip rests on them); `pair_sign_flips`: pairs of neighbours
    whose direction flips between batches, counting only pairs of cells neither censored nor headless (the
    pairs whose flip needs such a cell are `pair_sign_flips_not_resolved`)."""
    labels = family(by_label, ("learning_rate", *BATCH_FIELDS))
    lrs = sorted({by_label[l]["config"]["learning_rate"] for l in labels})
    batches = sorted({by_label[l]["config"]["tokens_per_step"] for l in labels})
    if len(lrs) < 2 or len(batches) < 2:
        return None
    rows = [sorted((l for l in labels if by_label[l]["config"]["tokens_per_step"] == batch),
                   key=lambda l: by_label[l]["config"]["learning_rate"]) for batch in batches]
    pair_level = 1 - 0.05 / max(1, sum(max(0, len(r) - 1) for r in rows))  # Bonferroni over every pair
    cells, effects = [], []
    for batch, row in zip(batches, rows):
        for label in row:
            c = by_label[label]
            cells.append({"label": label, "learning_rate": c["config"]["learning_rate"], "tokens_per_step": batch,
                          "n_runs": c["stats"]["n_runs"], "n_jumped": c["stats"]["n_jumped"],
                          "n_with_head": c["stats"].get("n_with_head"), "headless": _headless(c),
                          "jump_step_median": c["stats"]["jump_step_median"],
                          **{k: c["stats"][k] for k in ("jump_step_ci95", "jump_step_ci95_coverage",
                                                        "jump_step_ci95_method")},
                          "jump_step_lower_bound": c["stats"].get("jump_step_lower_bound")})
        if len(row) < 2:
            continue
        defined = [l for l in row if by_label[l]["stats"]["jump_step_median"] is not None]
        fastest = min(defined, key=lambda l: by_label[l]["stats"]["jump_step_median"]) if defined else None
        effects.append({"tokens_per_step": batch, **lr_effect(by_label, row),
                        "pairs": [_pair_effect(by_label, list(pair), pair_level) for pair in zip(row, row[1:])],
                        "fastest_learning_rate": by_label[fastest]["config"]["learning_rate"] if fastest else None})
    both = {"larger LR earlier", "larger LR later"}
    tested = [(row, batch) for batch, row in zip(batches, rows) if len(row) >= 2]
    flip = sign_flip_test(by_label, [r for r, _ in tested], [b for _, b in tested])
    by_pair, clean_pair = {}, {}
    for e in effects:
        for pair in e["pairs"]:
            key = tuple(pair["learning_rates"])
            by_pair.setdefault(key, set()).add(pair["verdict"])
            if not pair["rests_on_flagged"]:
                clean_pair.setdefault(key, set()).add(pair["verdict"])
    pair_flips = [list(p) for p in sorted(by_pair) if clean_pair.get(p, set()) >= both]
    return {"learning_rates": lrs, "tokens_per_step": batches, "cells": cells, "lr_effect": effects,
            "sign_flips": flip["verdict"] == "flips", "sign_flip_test": flip,
            "pair_sign_flips": pair_flips,
            "pair_sign_flips_not_resolved": [list(p) for p in sorted(by_pair) if by_pair[p] >= both
                                             and list(p) not in pair_flips]}


def lr_batch_figure(grid: dict, out: Path) -> Path:
    """Heatmap of the median jump step (log colour), each cell labelled with it, k/n jumped and h/n that formed
    an induction head (a jump without one is the other solution, capped near exact match 0.67). A cell whose
    median was not reached is hatched and labelled with its lower bound ("> step"); a combination that was not
    run stays blank, so "never jumped" and "not measured" cannot be confused."""
    lrs, batches = grid["learning_rates"], grid["tokens_per_step"]
    values = np.full((len(lrs), len(batches)), np.nan)
    fig, ax = plt.subplots(figsize=(1.6 * len(batches) + 2, 0.9 * len(lrs) + 1.5), dpi=110)
    labels = []
    for cell in grid["cells"]:
        i, j = lrs.index(cell["learning_rate"]), batches.index(cell["tokens_per_step"])
        median, bound = cell["jump_step_median"], cell.get("jump_step_lower_bound")
        if median is None:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.85", hatch="//", edgecolor="0.6"))
            text = "not reached" if bound is None else f"> {bound:,.0f}"
        else:
            values[i, j] = np.log10(median)
            text = f"{median:,.0f}"
        n, head = cell["n_runs"], cell.get("n_with_head")
        heads = "" if head is None else f"\n{head}/{n} formed a head"
        labels.append((i, j, f"{text}\n{cell['n_jumped']}/{n} jumped{heads}"))
    image = ax.imshow(values, cmap="viridis_r", aspect="auto")
    for i, j, text in labels:  # white on the dark (slow) end of the colour scale
        dark = np.isfinite(values[i, j]) and image.norm(values[i, j]) > 0.6
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fig.colorbar(image, ax=ax, label="log10 median jump step")
    ax.set_xticks(range(len(batches)), [f"{b:,}" for b in batches])
    ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_xlabel("tokens per optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("median steps to the copy jump (k/n seeds jumped; h/n formed an induction head, at any step;\n"
                 "hatched: median not reached, > its lower bound; blank: not run)", fontsize=9)
    return save_figure(fig, out)


# The noise-scale callback logs the mean over its last 100 usable steps (GradientNoiseScaleCallback.window):
# a value logged at step s describes steps (s - 100, s].
NOISE_AVERAGING_STEPS = 100
MIN_PLATEAU_POINTS = 3
WINDOW_RULE = (f"each run's own plateau: logged values from its 80%-loss-fall step + {NOISE_AVERAGING_STEPS} "
               f"(the callback's averaging window, so no value averages steps of the fall) to its jump step (its "
               f"last step if it never jumped); runs with fewer than {MIN_PLATEAU_POINTS} values there are left out")


def plateau_window(stats: dict) -> list[float] | None:
    """[first, last] logged step whose noise scale describes the run's own plateau only: from its 80% loss
    fall (`loss_80pct_fall_step`, the run's own, not a target shared with other runs) plus the callback's
    averaging window, to its jump (or its last step, censored). None without a fall step or an end, or
    when the plateau is shorter than the averaging window."""
    start = stats.get("loss_80pct_fall_step")
    end = stats.get("jump_step") if stats.get("jump_step") is not None else stats.get("jump_censored_at")
    if start is None or end is None or start + NOISE_AVERAGING_STEPS > end:
        return None
    return [float(start + NOISE_AVERAGING_STEPS), float(end)]


def plateau_noise_scale(log: list[dict], stats: dict) -> dict:
    """The run's median logged noise scale (tokens) over its plateau window (`plateau_window`): `window`,
    `n_points` and `median` (None when the window holds fewer than MIN_PLATEAU_POINTS finite values). Not
    a fixed number of steps before the jump: at large batches the plateau is a couple of hundred steps and
    such a window reaches back into the loss's fast fall, whose large early gradients read ~10x low.
    `left_out` says why a run gives no value (None when it gives one)."""
    window = plateau_window(stats)
    logged = [r for r in log if r.get(NOISE_SCALE_KEY) is not None and np.isfinite(r[NOISE_SCALE_KEY])]
    values = [] if window is None else [r[NOISE_SCALE_KEY] for r in logged if window[0] <= r["step"] <= window[1]]
    enough = len(values) >= MIN_PLATEAU_POINTS
    reason = (None if enough else "no noise scale logged" if not logged else "no plateau window" if window is None
              else f"fewer than {MIN_PLATEAU_POINTS} values on the plateau")
    return {"window": window, "n_points": len(values), "median": float(np.median(values)) if enough else None,
            "left_out": reason}


def noise_scale_summary(by_label: dict, fit: dict | None) -> dict | None:
    """Per batch condition, the seeds' plateau noise scales (`runs`: each with the window it used) and their
    median; beside the fitted B_crit. A run that logged no noise scale, or fewer than MIN_PLATEAU_POINTS
    values on its plateau, is left out and counted (`n_left_out` per condition; `n_runs_left_out` and, by
    reason, `left_out` over all)."""
    if not fit:
        return None
    rows, left_out = [], {}
    for label, batch in zip(fit["conditions"], fit["tokens_per_step"]):
        runs = [{"name": r.get("name"), **plateau_noise_scale(r.get("data", {}).get("log_history") or [], r["stats"])}
                for r in by_label[label]["runs"]]
        values = [r["median"] for r in runs if r["median"] is not None]
        for r in runs:
            if r["left_out"]:
                left_out[r["left_out"]] = left_out.get(r["left_out"], 0) + 1
        if values:
            rows.append({"label": label, "tokens_per_step": batch, "n_runs": len(values),
                         "n_left_out": len(runs) - len(values), "median": float(np.median(values)),
                         "range": [float(min(values)), float(max(values))], "runs": runs})
    if not rows:
        return None
    fitted = [r for r in rows if r["label"] in (fit.get("fitted") or [r["label"] for r in rows])] or rows
    overall = float(np.median([r["median"] for r in fitted]))  # over the batches the fit describes
    out = {"per_condition": rows, "median_tokens": overall, "over": [r["label"] for r in fitted],
           "window_rule": WINDOW_RULE, "n_runs_left_out": sum(left_out.values()), "left_out": left_out}
    if fit.get("resolved"):
        ci = fit.get("b_crit_ci95")
        out.update(b_crit=fit["b_crit"], b_crit_ci95=ci, b_crit_ci95_coverage=fit.get("b_crit_ci95_coverage"),
                   b_crit_ci95_method=fit.get("b_crit_ci95_method"), ratio=overall / fit["b_crit"],
                   within_b_crit_ci=bool(ci and ci[0] <= overall <= ci[1]))
    return out


def _effect_text(effect: dict) -> str:
    """slope [low, high] (verdict): an end is "-inf" / "inf" where resamples lost a median on that side."""
    ci = effect.get("ci")
    ends = "" if not ci else " [" + ", ".join(("-inf" if k == 0 else "inf") if v is None else f"{v:.2f}"
                                               for k, v in enumerate(ci)) + "]"
    slope = "-" if effect["slope"] is None else f"{effect['slope']:.2f}{ends}"
    censored = len(effect.get("censored_cells") or [])
    return f"{slope} ({effect['verdict']}" + (f"; {censored} censored, one-sided" if censored else "") + ")"


def lr_effect_table(grid: dict) -> list[str]:
    """Per batch: the protocol's effect over the whole row, the fastest learning rate, and the effect between
    each pair of neighbouring learning rates (where a U-shaped row hides a sign; exploratory, Bonferroni)."""
    pairs = sorted({tuple(p["learning_rates"]) for e in grid["lr_effect"] for p in e.get("pairs", [])})
    level = next((p["level"] for e in grid["lr_effect"] for p in e.get("pairs", [])), 0.95)
    lines = ["", "Learning-rate effect d ln S* / d ln LR over each batch's learning rates (the protocol's rule, "
             "95% bootstrap interval) and, exploratory, between neighbouring learning rates (intervals at "
             f"{100 * level:.1f}%, Bonferroni over every pair). A censored cell enters at its lower bound, so "
             "the slope is one-sided there; 'fastest LR' is the earliest median, without an interval:", "",
             "| tokens/step | fastest LR | all learning rates | " + " | ".join(f"{a:g} -> {b:g}" for a, b in pairs)
             + " |", "|---|---|---|" + "---|" * len(pairs)]
    for e in grid["lr_effect"]:
        by_pair = {tuple(p["learning_rates"]): p for p in e.get("pairs", [])}
        fastest = e.get("fastest_learning_rate")
        lines.append(f"| {e['tokens_per_step']:,} | {'-' if fastest is None else f'{fastest:g}'} | {_effect_text(e)} | "
                     + " | ".join(_effect_text(by_pair[p]) if p in by_pair else "-" for p in pairs) + " |")
    flips = [f"{a:g} -> {b:g}" for a, b in grid.get("pair_sign_flips") or []]
    unresolved = [f"{a:g} -> {b:g}" for a, b in grid.get("pair_sign_flips_not_resolved") or []]
    test = grid.get("sign_flip_test") or {}
    def call_text(c):
        cells = ", ".join(f"{label} {why}" for label, why in c["flagged_cells"].items())
        return f"{c['tokens_per_step']:,}: {c['verdict']}" + (f" (rests on {cells})" if c["rests_on_flagged"] else "")
    calls = "; ".join(call_text(c) for c in test.get("rows") or [])
    verdict = test.get("verdict") or ("flips" if grid["sign_flips"] else "no flip shown")
    said = {"flips": "the sign flips with the batch", "no flip shown": "no flip of the sign is shown"}.get(
        verdict, "the sign flip is not resolved: it rests on headless or censored cells")
    lines += ["", f"Over whole rows: {said}" + (f" ({test['rule']}; each row's direction at "
                                               f"{100 * test['level']:.1f}%: {calls}). " if test else ". ")
              + (f"Between neighbours (exploratory) it flips for {', '.join(flips)}." if flips else
                 "Between neighbouring learning rates it does not flip.")
              + (f" Not resolved between neighbours (the flip rests on headless or censored cells): "
                 f"{', '.join(unresolved)}." if unresolved else "")]
    return lines
