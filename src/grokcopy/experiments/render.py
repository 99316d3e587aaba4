"""How `grokcopy report` looks: the paper's figures (mean over seeds, min-max band) and report.md.

Kept apart from report.py, which decides what the numbers are; this module only draws and writes them.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from grokcopy.analysis.grokking import smooth  # noqa: E402
from grokcopy.analysis.plots import save_figure  # noqa: E402
from grokcopy.experiments.conditions import family  # noqa: E402
from grokcopy.run_dir import write_text_atomic  # noqa: E402


def _band(curves: list[list[tuple[float, float]]]):
    """Mean, min and max of several curves on the union of their x values where all are defined."""
    import numpy as np

    curves = [c for c in curves if c]
    low, high = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    xs = sorted({x for c in curves for x, _ in c if low <= x <= high})
    if not xs:  # the runs do not overlap
        return [], None, None, None
    ys = np.array([np.interp(xs, [p[0] for p in c], [p[1] for p in c]) for c in curves])
    return xs, ys.mean(0), ys.min(0), ys.max(0)


def _curves(run: dict, what: str, x: str, loss_window: int = 5) -> list[tuple[float, float]]:
    data = run["data"]
    per_step = run["stats"].get("tokens_per_step") or 0
    if what == "loss":
        points = sorted(data["losses"])
        points = list(zip([s for s, _ in points], smooth([v for _, v in points], loss_window)))
    else:
        points = [(r["step"], r["exact_match"]) for r in sorted(data["copy_history"], key=lambda r: r["step"])]
    return [(s * per_step if x == "tokens" else s, v) for s, v in points]


def _draw(ax, conditions, what, x, colors):
    for i, c in enumerate(conditions):
        curves = [k for k in (_curves(r, what, x) for r in c["runs"]) if k]
        if not curves:
            continue
        xs, mean, low, high = _band(curves)
        if not xs:
            continue
        ax.plot(xs, mean, color=colors[i], lw=1.4, label=f"{c['label']} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(xs, low, high, color=colors[i], alpha=0.2, lw=0)
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


def write_figures(conditions: list[dict], out: Path, threshold: float) -> list[Path]:
    """curves.png (Figs. 2-4), learning_rate.png (Fig. 5), regularization.png (Fig. 7) and
    induction_formation.png (Fig. 6, as first-formation steps), the last three when they apply."""
    colors = _colors(len(conditions))
    written = []
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=110)
    for row, what in enumerate(("em", "loss")):
        for col, x in enumerate(("steps", "tokens")):
            _draw(axes[row][col], conditions, what, x, colors)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle("copy accuracy and training loss against steps (left) and tokens (right); band: min-max over seeds")
    written.append(save_figure(fig, out / "curves.png"))
    by_label = {c["label"]: c for c in conditions}
    if _varies(conditions, "learning_rate"):
        chosen = family(by_label, ("learning_rate",), key="learning_rate") or list(by_label)
        subset = [by_label[label] for label in chosen]
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
        _draw(left, subset, "em", "steps", [colors[conditions.index(c)] for c in subset])
        left.legend(fontsize=8)
        for c in subset:
            s, spread = c["stats"], c["spread"]["copy_jump_step"]
            if s["copy_jump_step"] is not None:
                right.errorbar([c["config"]["learning_rate"]], [s["copy_jump_step"]], fmt="o",
                               yerr=[[s["copy_jump_step"] - spread["min"]], [spread["max"] - s["copy_jump_step"]]],
                               color=colors[conditions.index(c)], capsize=4, label=c["label"])
        right.set_xscale("log")
        right.set_xlabel("learning rate")
        right.set_ylabel("copy jump step (mean, min-max)")
        right.grid(alpha=0.3)
        fig.suptitle("learning rate (the paper's Fig. 5)")
        written.append(save_figure(fig, out / "learning_rate.png"))
    if _varies(conditions, "attention_dropout") or _varies(conditions, "weight_decay"):
        chosen = family(by_label, ("attention_dropout", "weight_decay")) or list(by_label)
        subset = [by_label[label] for label in chosen]
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
        sub_colors = [colors[conditions.index(c)] for c in subset]
        _draw(left, subset, "em", "tokens", sub_colors)
        _draw(right, subset, "loss", "tokens", sub_colors)
        left.legend(fontsize=8)
        fig.suptitle("attention dropout and weight decay (the paper's Fig. 7)")
        written.append(save_figure(fig, out / "regularization.png"))
    if any(c["formation"] for c in conditions):
        written.append(_formation_figure(conditions, out / "induction_formation.png", threshold, colors))
    return written


def formation_summary(condition: dict) -> list[dict]:
    """Per layer over the condition's seeds: mean first step among seeds where it formed, and how many did."""
    runs = condition["formation"]
    if not runs:
        return []
    rows = []
    for layer in range(max(len(r) for r in runs)):
        firsts = [r[layer]["first_step"] for r in runs if layer < len(r) and r[layer]["first_step"] is not None]
        rows.append({"layer": layer, "first_step": sum(firsts) / len(firsts) if firsts else None,
                     "formed": len(firsts), "runs": len(runs),
                     "max_induction": max(r[layer]["max_induction"] for r in runs if layer < len(r))})
    return rows


def _formation_figure(conditions, out, threshold, colors):
    summaries = [formation_summary(c) for c in conditions]
    layers = max(len(s) for s in summaries)
    last = max((r["step"] for c in conditions for run in c["runs"] for r in run["induction"]), default=0)
    height = 0.8 / len(conditions)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.5 * layers * len(conditions) ** 0.5), dpi=110)
    for i, (c, rows) in enumerate(zip(conditions, summaries)):
        for r in rows:
            y = r["layer"] + (i - (len(conditions) - 1) / 2) * height
            if r["first_step"] is None:
                ax.barh(y, last, height=height, color="lightgrey", hatch="//", edgecolor=colors[i])
                ax.text(last, y, "  not formed", va="center", fontsize=7)
            else:
                ax.barh(y, r["first_step"], height=height, color=colors[i])
                ax.text(r["first_step"], y, f"  {r['first_step']:,.0f} ({r['formed']}/{r['runs']})", va="center",
                        fontsize=7)
    ax.set_yticks(range(layers))
    ax.invert_yaxis()
    ax.set_ylabel("layer (shallow at top)")
    ax.set_xlabel(f"first step with best head's I >= {threshold} (mean over seeds that formed)")
    ax.set_title("induction-head formation per condition (the paper's Fig. 6)", fontsize=10)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colors[i], label=c["label"]) for i, c in enumerate(conditions)], fontsize=8,
              loc="lower right")
    return save_figure(fig, out)


# --- report.md ----------------------------------------------------------------------------------

def _num(value, kind="steps") -> str:
    if value is None:
        return "-"
    if kind == "em":
        return f"{value:.3f}"
    if kind == "tokens":
        for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
        return f"{value:.0f}"
    return f"{value:,.0f}"


KINDS = {"final_loss": "em", "final_exact_match": "em"}


def _kind(key):
    return "tokens" if key.endswith("tokens") else KINDS.get(key, "steps")


RUN_COLUMNS = [("steps", "steps"), ("tokens/step", "tokens_per_step"), ("final loss", "final_loss"),
               ("final EM", "final_exact_match"), ("loss plateau step", "loss_plateau_step"),
               ("plateau tokens", "loss_plateau_tokens"), ("copy jump step", "copy_jump_step"),
               ("jump tokens", "copy_jump_tokens"), ("EM half step", "copy_half_step"), ("lag steps", "lag_steps"),
               ("lag tokens", "lag_tokens")]
CONDITION_COLUMNS = [c for c in RUN_COLUMNS if c[1] not in ("steps", "tokens_per_step")]

DEFINITIONS = """\
- **loss plateau step**: the first logged step from which the training loss (moving average of {loss_window} logged
  losses, from trainer_state.json) stays within {band} of its final value (the mean of the last {loss_window}).
- **copy jump step**: where copy exact match rises fastest: the centre of the window of W steps over which exact
  match, linearly interpolated between copy tests, rises the most (the steepest slope of its W-step moving
  average); W = {jump_window}. None if no window rises by more than 0.01.
- **EM half step**: the first step (interpolated) at which exact match reaches half its final value.
- **lag**: copy jump step - loss plateau step (positive: copying jumped after the loss had settled).
- Tokens = steps x tokens per optimizer step (global batch x block size, from run_config.json).
- A condition is the set of runs whose configs differ only in the seed (and bookkeeping); its numbers are means over
  seeds ± the standard deviation, with (k/n) when only k of its n runs have the landmark.
- Claims: (a) the relative spread (max - min) / mean of the jump steps across batch sizes is at most {align} and
  smaller than that of the jump tokens; (b) the loss plateau's relative spread is smaller in tokens than in steps;
  (c) the jump step decreases strictly as the learning rate grows (no jump = later than any); (d) every condition
  with dropout or weight decay has an earlier jump or a higher final exact match than the baseline (neither).
"""


def write_markdown(record: dict, out: Path) -> None:
    settings = record["settings"]
    band = (f"{settings.get('loss_tolerance', 0.05):g} x the total fall" if settings.get("relative", True)
            else f"{settings.get('loss_tolerance', 0.05):g} nats")
    window = settings.get("jump_window")
    n_runs, n_conditions = len(record["runs"]), len(record["conditions"])
    lines = ["# grokcopy report", "",
             f"{n_runs} run{'s' * (n_runs != 1)} in {n_conditions} condition{'s' * (n_conditions != 1)}; generated "
             f"{record['generated']} by `grokcopy report`.", "", "## Figures", ""]
    lines += [f"![{name}]({name})" for name in record["figures"]]
    lines += ["", "## Grokking statistics per run", "",
              "| run | condition | seed | " + " | ".join(h for h, _ in RUN_COLUMNS) + " |",
              "|" + "---|" * (3 + len(RUN_COLUMNS))]
    for run in record["runs"]:
        cells = [_num(run["stats"].get(k), _kind(k)) for _, k in RUN_COLUMNS]
        name = run["name"] + (f" (**unfinished**: {run['unfinished']})" if run.get("unfinished") else "")
        lines.append(f"| {name} | {run['condition']} | {run['seed']} | " + " | ".join(cells) + " |")
    for member in record.get("missing", []):
        lines.append(f"\nSweep member **{member['name']}** has no run in this report ({member['status']}"
                     + (f": {member['error']}" if member["error"] else "") + ").")
    lines += ["", "## Per condition (mean ± sd over seeds)", "",
              "| condition | config | runs | " + " | ".join(h for h, _ in CONDITION_COLUMNS) + " |",
              "|" + "---|" * (3 + len(CONDITION_COLUMNS))]
    for c in record["conditions"]:
        cells = []
        for _, key in CONDITION_COLUMNS:
            mean, spread = c["stats"].get(key), c["spread"][key]
            cell = _num(mean, _kind(key))
            if mean is not None and c["n"] > 1:
                cell += f" ± {_num(spread['sd'], _kind(key))}"
                cell += f" ({spread['count']}/{c['n']})" if spread["count"] < c["n"] else ""
            cells.append(cell)
        lines.append(f"| {c['label']} | {c['description'] or '-'} | {c['n']} | " + " | ".join(cells) + " |")
    formation = [(c["label"], formation_summary(c)) for c in record["conditions"] if c["formation"]]
    if formation:
        lines += ["", f"## Induction-head formation (first step with a head's I >= {settings['threshold']})", "",
                  "| layer | " + " | ".join(label for label, _ in formation) + " |",
                  "|" + "---|" * (1 + len(formation))]
        for layer in range(max(len(rows) for _, rows in formation)):
            cells = []
            for _, rows in formation:
                r = rows[layer] if layer < len(rows) else None
                cells.append("-" if r is None else "never" if r["first_step"] is None else
                             f"{r['first_step']:,.0f} ({r['formed']}/{r['runs']})")
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines += ["", "## The paper's claims", ""]
    for claim in record["claims"]:
        lines.append(f"- **{claim['text']}**: **{claim['verdict']}**. {claim['evidence']}.")
    lines += ["", "## Definitions", "",
              DEFINITIONS.format(loss_window=settings.get("loss_window", 5), band=band,
                                 jump_window=f"{window:g}" if window else "the widest gap between two copy tests",
                                 align=settings.get("align_tolerance", 0.25))]
    write_text_atomic(out, "\n".join(lines) + "\n")
