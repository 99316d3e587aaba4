"""How `grokcopy report` looks: every seed drawn, the median bold, censored runs marked; report.md.

Kept apart from the statistics (conditions.py) and the claims (claims.py): this module only draws
and writes what they decided.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from grokcopy.analysis.grokking import smooth  # noqa: E402
from grokcopy.analysis.plots import save_figure  # noqa: E402
from grokcopy.analysis.survival import proportion_interval  # noqa: E402
from grokcopy.experiments.batch_figures import lr_effect_table  # noqa: E402
from grokcopy.experiments.claims import describe  # noqa: E402
from grokcopy.experiments.conditions import family  # noqa: E402
from grokcopy.experiments.critical_batch import MIN_FITTED_BATCHES  # noqa: E402
from grokcopy.experiments.report_text import (  # noqa: E402
    censored_text,
    critical_batch_best_lr_lines,
    critical_batch_lines,
    interval_text,
    knockout_lines,
    noise_scale_lines,
    num,
    rate_text,
)
from grokcopy.run_dir import write_text_atomic  # noqa: E402


def _curve(run: dict, what: str, x: str, loss_window: int = 5) -> list[tuple[float, float]]:
    data = run["data"]
    per_step = run["stats"].get("tokens_per_step") or 0
    if what == "loss":
        points = sorted(data["losses"])
        points = list(zip([s for s, _ in points], smooth([v for _, v in points], loss_window)))
    else:
        points = [(r["step"], r["exact_match"]) for r in sorted(data["copy_history"], key=lambda r: r["step"])]
    return [(s * per_step if x == "tokens" else s, v) for s, v in points]


def _median_curve(curves: list[list[tuple[float, float]]]):
    """Pointwise median of several curves on the union of their x where all are measured."""
    low, high = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    xs = sorted({x for c in curves for x, _ in c if low <= x <= high})
    if not xs:
        return [], []
    ys = np.array([np.interp(xs, [p[0] for p in c], [p[1] for p in c]) for c in curves])
    return xs, np.median(ys, axis=0)


def _draw(ax, conditions, what, x, colors):
    """Every seed thin, the condition's median bold; a run censored before the jump ends in an x."""
    for i, c in enumerate(conditions):
        curves = [(r, k) for r in c["runs"] if (k := _curve(r, what, x))]
        if not curves:
            continue
        for run, curve in curves:
            ax.plot(*zip(*curve), color=colors[i], lw=0.6, alpha=0.35)
            if what == "em" and run["stats"].get("jump_step") is None:
                ax.plot(*curve[-1], marker="x", color=colors[i], ms=6)
        xs, median = _median_curve([k for _, k in curves])
        if xs:
            ax.plot(xs, median, color=colors[i], lw=2.0, label=f"{c['label']} ({c['stats']['n_jumped']}/"
                                                                f"{c['stats']['n_runs']} jumped)")
    ax.set_xlabel("optimizer step" if x == "steps" else "tokens seen")
    ax.set_ylabel("copy exact match" if what == "em" else "training loss (moving average)")
    if what == "em":
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _colors(n):
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def _varies(conditions, field) -> bool:
    return len({str(c["config"].get(field)) for c in conditions}) > 1


def _median_with_ci(ax, x, stats, key, color, label):
    median, ci = stats.get(f"{key}_median"), stats.get(f"{key}_ci95")
    if median is None:
        if ci:  # censored: the interval's lower bound is all that is known
            ax.plot([x], [ci[0]], marker="^", color=color, ms=8, label=label and f"{label} (not reached)")
        return
    high = ci[1] if ci and ci[1] is not None else median
    ax.errorbar([x], [median], yerr=[[median - (ci[0] if ci else median)], [high - median]], fmt="o",
                color=color, capsize=4, label=label)


def _critical_batch_figure(conditions: list[dict], fit: dict, out: Path) -> Path:
    """Steps to the jump against tokens per step, log-log: every seed (triangle: censored, at its last
    step), the medians with their intervals, the fit and its two asymptotes, B_crit."""
    by_label = {c["label"]: c for c in conditions}
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for label, batch in zip(fit["conditions"], fit["tokens_per_step"]):
        c = by_label[label]
        for run in c["runs"]:
            s = run["stats"]
            if s.get("jump_step") is not None:
                ax.plot(batch, s["jump_step"], "o", color="tab:blue", alpha=0.4, ms=4)
            elif s.get("jump_censored_at"):
                ax.plot(batch, s["jump_censored_at"], "^", color="tab:red", alpha=0.6, ms=6)
        _median_with_ci(ax, batch, c["stats"], "jump_step", "black", None)
    if fit.get("resolved"):
        b = np.geomspace(min(fit["tokens_per_step"]) / 2, max(fit["tokens_per_step"]) * 2, 200)
        low, high = fit.get("fitted_range") or (b[0], b[-1])
        inside = (b >= low) & (b <= high)
        curve = fit["s_min"] * (1 + fit["b_crit"] / b)
        ax.plot(b[inside], curve[inside], color="black", lw=1.5, label="S_min (1 + B_crit / B), fitted range")
        ax.plot(b, np.where(inside, np.nan, curve), color="black", lw=0.8, ls="-.", label="extrapolated")
        ax.plot(b, np.full_like(b, fit["s_min"]), ls=":", color="grey", label="S_min: steps govern")
        ax.plot(b, fit["s_min"] * fit["b_crit"] / b, ls="--", color="grey", label="E_min / B: tokens govern")
        ax.axvspan(*fit["b_crit_ci95"], color="tab:orange", alpha=0.15)
        ax.axvline(fit["b_crit"], color="tab:orange", label=f"B_crit = {fit['b_crit']:,.0f} tokens")
    else:  # say why there is no curve rather than leave the reader looking for one
        ax.text(0.5, 0.95, f"no fit: {len(fit.get('fitted') or [])} batch(es) with a jump to fit, "
                f"{MIN_FITTED_BATCHES} needed",
                transform=ax.transAxes, ha="center", va="top", fontsize=8, color="tab:red")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens per optimizer step (B)")
    ax.set_ylabel("optimizer steps to the copy jump (S*)")
    ax.set_title("copy jump vs batch: dots seeds, triangles censored, black medians (95% CI)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return save_figure(fig, out)


def write_figures(conditions: list[dict], out: Path, threshold: float, fit: dict | None = None) -> list[Path]:
    """curves.png (Figs. 2-4), learning_rate.png (Fig. 5), regularization.png (Fig. 7) and
    induction_formation.png (Fig. 6, as formation steps), the last three when they apply."""
    colors = _colors(len(conditions))
    written = []
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=110)
    for row, what in enumerate(("em", "loss")):
        for col, x in enumerate(("steps", "tokens")):
            _draw(axes[row][col], conditions, what, x, colors)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle("copy accuracy and training loss against steps (left) and tokens (right); thin: each seed, "
                 "bold: median, x: a run that never jumped", fontsize=10)
    written.append(save_figure(fig, out / "curves.png"))
    by_label = {c["label"]: c for c in conditions}
    if _varies(conditions, "learning_rate"):
        subset = [by_label[label] for label in family(by_label, ("learning_rate",), key="learning_rate") or by_label]
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
        _draw(left, subset, "em", "steps", [colors[conditions.index(c)] for c in subset])
        left.legend(fontsize=8)
        for c in subset:
            _median_with_ci(right, c["config"]["learning_rate"], c["stats"], "jump_step",
                            colors[conditions.index(c)], c["label"])
        right.set_xscale("log")
        right.set_xlabel("learning rate")
        right.set_ylabel("jump step (KM median, 95% CI)")
        right.grid(alpha=0.3)
        fig.suptitle("learning rate (the paper's Fig. 5)")
        written.append(save_figure(fig, out / "learning_rate.png"))
    if _varies(conditions, "attention_dropout") or _varies(conditions, "weight_decay"):
        subset = [by_label[label] for label in family(by_label, ("attention_dropout", "weight_decay")) or by_label]
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
        sub_colors = [colors[conditions.index(c)] for c in subset]
        _draw(left, subset, "em", "tokens", sub_colors)
        _draw(right, subset, "loss", "tokens", sub_colors)
        left.legend(fontsize=8)
        fig.suptitle("attention dropout and weight decay (the paper's Fig. 7)")
        written.append(save_figure(fig, out / "regularization.png"))
    if any(c["stats"]["formation"] for c in conditions):
        written.append(_formation_figure(conditions, out / "induction_formation.png", threshold, colors))
    if fit is not None:
        written.append(_critical_batch_figure(conditions, fit, out / "critical_batch.png"))
    return written


def _formation_figure(conditions, out, threshold, colors):
    layers = max(len(c["stats"]["formation"]) for c in conditions)
    last = max((c["stats"]["steps"] or 0 for c in conditions), default=0)
    height = 0.8 / len(conditions)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.5 * layers * len(conditions) ** 0.5), dpi=110)
    for i, c in enumerate(conditions):
        for r in c["stats"]["formation"]:
            y = r["layer"] + (i - (len(conditions) - 1) / 2) * height
            if r["median"] is None:
                ax.barh(y, last, height=height, color="lightgrey", hatch="//", edgecolor=colors[i])
                ax.text(last, y, f"  not formed ({r['n_formed']}/{r['n_runs']})", va="center", fontsize=7)
                continue
            ci = r["ci95"] or [r["median"], r["median"]]
            high = ci[1] if ci[1] is not None else last
            ax.barh(y, r["median"], height=height, color=colors[i],
                    xerr=[[r["median"] - ci[0]], [high - r["median"]]], capsize=3)
            ax.text(high, y, f"  {r['median']:,.0f} ({r['n_formed']}/{r['n_runs']})", va="center", fontsize=7)
    ax.set_yticks(range(layers))
    ax.invert_yaxis()
    ax.set_ylabel("layer (shallow at top)")
    ax.set_xlabel(f"formation step: first step with a head's I >= {threshold} (KM median over seeds, 95% CI)")
    ax.set_title("induction-head formation per condition (the paper's Fig. 6)", fontsize=10)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colors[i], label=c["label"]) for i, c in enumerate(conditions)], fontsize=8,
              loc="lower right")
    return save_figure(fig, out)


# --- report.md ----------------------------------------------------------------------------------

DEFINITIONS = """\
- **jump step**: the first step (linearly interpolated between copy tests) at which copy exact match reaches
  {jump:g}. A run that never does is right-censored at its last copy test ("> N (censored)"): kept, never dropped.
- **loss target step**: the first logged step at which the training loss (trailing mean of {loss_window} logged
  losses) reaches {target}, one target per experiment, fixed in its sweep file (`report: loss_target`) so that it
  does not move with the runs a report holds (runs of no such experiment share one: {source}).
- **formation step** (per layer): the first analysed step at which the layer's best head has I = A x EP >= {threshold}.
- **lag**: jump step - loss target step (positive: copying jumped after the loss got to the target).
- **jump width**: steps from 10% to 90% of the copy exact match's rise (first copy test to the mean of the last
  three); **plateau**: steps from the loss's 80% fall to the jump's 10% point.
- Per condition (runs whose configs differ only in the seed): the Kaplan-Meier median over seeds (censored runs
  count as "later than their last step"; undefined when fewer than half can be said to have reached it; where the
  curve sits at exactly one half, the middle of that stretch, so for complete data the sample median) and the
  distribution-free order-statistic interval for the median, built from each run's bounds (the two measurements
  around its landmark, or [last step, inf) when censored), so it is never narrower than the measurement grid. Its
  coverage is exact, from the binomial: at least 95% from 6 seeds; with fewer the interval is the seeds' range and
  its coverage is printed beside it (87.5% at 4 seeds). Rates: Clopper-Pearson; means: Student t. (k/n): runs that
  reached it.
- Verdicts (rules fixed before the runs; grokcopy.experiments.claims): **supported** when the claim's interval lies
  inside its region, **contradicted** when outside (or when a condition trained past another's jump without jumping
  in most seeds), **not resolved** when it straddles the edge, medians are undefined, or a condition has fewer than
  3 seeds. (a) slope of ln(median jump step) vs ln(tokens per step) within +-0.2; (b) slope of ln(median tokens to
  the loss target) vs ln(tokens per step) within +-0.2; (c) slope of ln(median jump step) vs ln(learning rate) < 0;
  (d) each regularised condition's median jump step earlier than the baseline's or its mean final exact match higher.
"""

RUN_COLUMNS = ["steps", "finished", "final loss", "final EM", "jump step", "jump tokens", "loss target step",
               "lag steps"]


def _run_row(run: dict) -> list[str]:
    s = run["stats"]
    return [num(s.get("steps")), {True: "yes", False: "**no**", None: "-"}[s.get("finished")],
            num(s.get("final_loss"), "em"), num(s.get("final_exact_match"), "em"),
            censored_text(s, "jump_step", "jump_censored_at"),
            num(s.get("jump_tokens"), "tokens"), censored_text(s, "loss_target_step", "loss_censored_at"),
            num(s.get("lag_steps"))]


def write_markdown(record: dict, out: Path) -> None:
    settings = record["settings"]
    n_runs, n_conditions = len(record["runs"]), len(record["conditions"])
    target = settings.get("loss_target")
    lines = ["# grokcopy report", "",
             f"{n_runs} run{'s' * (n_runs != 1)} in {n_conditions} condition{'s' * (n_conditions != 1)}; generated "
             f"{record['generated']} by `grokcopy report`.", "", "## Figures", ""]
    lines += [f"![{name}]({name})" for name in record["figures"]]
    lines += ["", "## Landmarks per run", "",
              "| run | condition | seed | " + " | ".join(RUN_COLUMNS) + " |", "|" + "---|" * (3 + len(RUN_COLUMNS))]
    for run in record["runs"]:
        name = run["name"] + (f" (**unfinished**: {run['unfinished']})" if run.get("unfinished") else "")
        lines.append(f"| {name} | {run['condition']} | {run['seed']} | " + " | ".join(_run_row(run)) + " |")
    for member in record.get("missing", []):
        lines.append(f"\nSweep member **{member['name']}** has no run in this report ({member['status']}"
                     + (f": {member['error']}" if member["error"] else "") + ").")
    lines += ["", "## Per condition (Kaplan-Meier median over seeds [95% CI, coverage if below] (reached/runs))", "",
              "| condition | config | runs | jumped | jump step | jump tokens | loss target tokens | final EM | grok |",
              "|---|---|---|---|---|---|---|---|---|"]
    widths = ["", "## How abrupt (median over the runs that jumped [95% CI from the copy tests' bounds])", "",
              "| condition | runs measured | jump width (steps, 10% to 90%) | plateau (steps, loss 80% fall to jump 10%) |",
              "|---|---|---|---|"]
    for c in record["conditions"]:
        s = c["stats"]
        em = s.get("final_exact_match_ci95")
        em_text = "-" if s.get("final_exact_match_mean") is None else (
            f"{s['final_exact_match_mean']:.3f}" + (f" [{em[0]:.3f}, {em[1]:.3f}]" if em and em[1] is not None else ""))
        widths.append(f"| {c['label']} | {s.get('jump_width_n', 0)} | "
                      + " | ".join("-" if s.get(f"{k}_median") is None else
                                   f"{num(s[f'{k}_median'])}{interval_text(s[f'{k}_ci95'], s[f'{k}_ci95_coverage'])}"
                                   for k in ("jump_width", "plateau_steps")) + " |")
        lines.append(f"| {c['label']} | {c['description'] or '-'} | {s['n_runs']} | {s['n_jumped']} | "
                     f"{describe(c)} | {describe(c, 'jump_tokens')} | {describe(c, 'loss_target_tokens')} | "
                     f"{em_text} | {rate_text(s)} |")
    if any(c["stats"].get("jump_width_n") for c in record["conditions"]):
        lines += widths
    if any(c["stats"].get("n_copies_measured") for c in record["conditions"]):
        lines += ["", "## Which solution: the final models' induction heads ablated together", "",
                  "A run *copies by induction* when it has heads with I >= 0.3 at its last analysis and ablating them "
                  "together leaves at most half its exact match (grokcopy.analysis.ablation; runs that copy, i.e. "
                  "final exact match >= 0.5, whose final model was ablated).", "",
                  "| condition | runs that copy, ablated | copy by induction | rate [95% CI] |", "|---|---|---|---|"]
        for c in record["conditions"]:
            s = c["stats"]
            if s.get("n_copies_measured"):
                ci = proportion_interval(s["n_copies_by_induction"], s["n_copies_measured"])["ci95"]
                lines.append(f"| {c['label']} | {s['n_copies_measured']} | {s['n_copies_by_induction']} | "
                             f"{s['n_copies_by_induction'] / s['n_copies_measured']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] |")
    formation = [(c["label"], c["stats"]["formation"]) for c in record["conditions"] if c["stats"]["formation"]]
    if formation:
        lines += ["", f"## Induction-head formation (KM median step at which a head's I >= {settings['threshold']})",
                  "", "| layer | " + " | ".join(label for label, _ in formation) + " |",
                  "|" + "---|" * (1 + len(formation))]
        for layer in range(max(len(rows) for _, rows in formation)):
            cells = []
            for _, rows in formation:
                r = rows[layer] if layer < len(rows) else None
                copying = "" if r is None or r.get("copying_at_end") is None else f"; copying {r['copying_at_end']:.2f}"
                cells.append("-" if r is None else f"{'never' if r['median'] is None else num(r['median'])}"
                             f"{interval_text(r['ci95'], r.get('ci95_coverage'))} ({r['n_formed']}/{r['n_runs']})"
                             f"{copying}")
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        if any(r.get("copying_at_end") is not None for _, rows in formation for r in rows):
            lines += ["", "copying: the layer's best head's depth-aware OV copying score at the last analysis (the share "
                          "of tokens it copies, read through the residual stream it actually reads; median over seeds), "
                          "shown beside the paper's I, which reads only the direct path (docs/REPORT.md)."]
    split = record.get("seed_split")
    if split:
        lines += ["", f"## Chosen on seeds < {split['held_out_from']}, confirmed on seeds >= {split['held_out_from']}", "",
                  "| seeds | grok (loss first, final exact match >= 0.9, an induction head) |", "|---|---|",
                  f"| < {split['held_out_from']} (chosen on) | {rate_text(split['chosen_on'])} |",
                  f"| >= {split['held_out_from']} (held out, never used to choose) | {rate_text(split['held_out'])} |"]
        if len(split.get("by_condition") or []) > 1:
            lines += ["", "| condition | chosen on | held out |", "|---|---|---|"]
            lines += [f"| {c['label']} | {rate_text(c['chosen_on'])} | {rate_text(c['held_out'])} |"
                      for c in split["by_condition"]]
    grid = record.get("lr_batch")
    if grid:
        lines += ["", "## Learning rate x batch (median jump step, k/n jumped; h/n formed an induction head, any step)",
                  "",
                  "| learning rate | " + " | ".join(f"{b:,} tokens/step" for b in grid["tokens_per_step"]) + " |",
                  "|---|" + "---|" * len(grid["tokens_per_step"])]
        cell = {(c["learning_rate"], c["tokens_per_step"]): c for c in grid["cells"]}
        for lr in grid["learning_rates"]:
            row = [cell.get((lr, b)) for b in grid["tokens_per_step"]]
            lines.append(f"| {lr:g} | " + " | ".join("-" if c is None else
                         f"{'not reached' if c['jump_step_median'] is None else num(c['jump_step_median'])}"
                         f"{interval_text(c['jump_step_ci95'])} ({c['n_jumped']}/{c['n_runs']}"
                         + ("" if c.get("n_with_head") is None else f"; {c['n_with_head']}/{c['n_runs']} formed a head")
                         + ")"
                         for c in row) + " |")
        lines += lr_effect_table(grid)
    lines += noise_scale_lines(record.get("noise_scale")) + critical_batch_lines(record.get("critical_batch"))
    lines += critical_batch_best_lr_lines(record.get("critical_batch_best_lr"))
    lines += knockout_lines(record.get("knockout"))
    from grokcopy.experiments.ablation_timeline import timeline_lines

    lines += timeline_lines(record.get("ablation_timeline") or {})
    lines += ["", "## The paper's claims", ""]
    for claim in record["claims"]:
        lines.append(f"- **{claim['text']}**: **{claim['verdict']}**. {claim['evidence']}.")
    lines += ["", "## Definitions", "",
              DEFINITIONS.format(jump=settings.get("jump_threshold", 0.5), loss_window=settings.get("loss_window", 5),
                                 target="-" if target is None else f"{target:.3f} nats" if not isinstance(target, list)
                                 else " / ".join(f"{t:.3f}" for t in target) + " nats (one per experiment)",
                                 source=", ".join(settings.get("loss_target_sources") or []) or "-",
                                 threshold=settings.get("threshold", 0.3))]
    write_text_atomic(out, "\n".join(lines) + "\n")

