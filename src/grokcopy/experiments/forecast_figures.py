"""The forecast evaluation as a figure and a page: error and coverage against lead, and reliability."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _pct(value) -> str:
    return "n/a" if value is None else ("inf" if value == float("inf") else f"{100 * value:.0f}%")


def _with_ci(value, ci, pct=True) -> str:
    """A measure with its 95% interval when the record holds one."""
    shown = _pct(value) if pct else ("n/a" if value is None else f"{value:.2f}")
    if value is None or not ci:
        return shown
    lo, hi = ci
    return shown + (f" [{100 * lo:.0f}, {_pct(hi)[:-1] if hi != float('inf') else 'inf'}]" if pct
                    else f" [{lo:.2f}, {hi:.2f}]")


def evaluation_figure(record: dict, out: Path) -> Path:
    fractions = record["fractions"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, style in (("held_out", "-"), ("in_sample", ":")):
        sets = record["sets"].get(name)
        if not sets:
            continue
        err = [sets[str(f)]["median_abs_error"] for f in fractions]
        axes[0].plot(fractions, err, "o" + style, color="k", label=f"forecast ({name.replace('_', '-')})")
        axes[1].plot(fractions, [sets[str(f)]["coverage_80"] for f in fractions], "o" + style, color="k",
                     label=f"forecast ({name.replace('_', '-')})")
        if name == "held_out":
            for baseline in sets[str(fractions[0])]["baselines"]:
                values = [min(sets[str(f)]["baselines"][baseline]["median_abs_error"], 10.0) for f in fractions]
                axes[0].plot(fractions, values, "s--", alpha=0.6, label=baseline)
            near = [sets[str(f)]["baselines"]["nearest configuration"]["coverage_80"] for f in fractions]
            axes[1].plot(fractions, near, "s--", alpha=0.6, label="nearest configuration")
        rel = sets["0.5"]["reliability"]
        axes[2].plot([r["mean_p_circuit"] for r in rel], [r["share_circuit"] for r in rel], "o" + style, color="k",
                     label=f"{name.replace('_', '-')}, half-way")
        for r in rel:
            axes[2].annotate(str(r["n"]), (r["mean_p_circuit"], r["share_circuit"]), fontsize=8)
    axes[0].axhline(0.15, color="r", lw=0.8)
    axes[0].set(xlabel="forecast made at this share of the way to the jump", ylabel="median |error| / jump step",
                title="jump step error (log scale, capped at 10)", yscale="log")
    axes[1].axhline(0.8, color="r", lw=0.8)
    axes[1].set(xlabel="share of the way to the jump", ylabel="share inside the 80% interval", ylim=(0, 1.05),
                title="80% interval coverage")
    axes[2].plot([0, 1], [0, 1], color="grey", lw=0.8)
    axes[2].set(xlabel="forecast p_circuit", ylabel="share that formed a circuit", title="reliability (n per point)")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def evaluation_text(record: dict) -> str:
    lines = ["# Forecast evaluation", "",
             f"Reference (fit) set: {', '.join(record['reference_experiments'])}. Evaluated: "
             f"{', '.join(record['evaluated'])}. Forecasts at {', '.join(str(f) for f in record['fractions'])} of the "
             "way to each run's jump, from its records up to there only."
             + (f" Skipped (no runs yet): {'; '.join(record['skipped'])}." if record.get("skipped") else ""), ""]
    for name, sets in record["sets"].items():
        lines += [f"## {name.replace('_', '-')}", "",
                  "95% intervals in brackets: coverage Clopper-Pearson and median error order-statistic (both exact, "
                  "coverage >= 95%), AUROC a bootstrap stratified by class (nominal).", "",
                  "| lead | runs (jumped) | median abs error | 80% coverage | AUROC (circuit / not) | Brier | "
                  "false alarms |", "|---|---|---|---|---|---|---|"]
        for f in record["fractions"]:
            s = sets[str(f)]
            auroc = _with_ci(s["auroc"], s.get("auroc_ci95"), pct=False)
            brier = "n/a" if s["brier"] is None else f"{s['brier']:.3f}"
            lines.append(f"| {f} | {s['n_runs']} ({s['n_jumped']}) | "
                         f"{_with_ci(s['median_abs_error'], s.get('median_abs_error_ci95'))} | "
                         f"{_with_ci(s['coverage_80'], s.get('coverage_80_ci95'))} | {auroc} ({s['n_circuit']} / "
                         f"{s['n_not_circuit']}) | {brier} | {_pct(s['false_alarm_rate'])} |")
        half = sets["0.5"]
        lines += ["", "Baselines at half-way (median abs error; 80% coverage where the baseline has an interval; runs "
                  "it gave no forecast for):", ""]
        for baseline, b in half["baselines"].items():
            d = b.get("forecast_minus_baseline") or {}
            paired = ("" if d.get("difference") is None or d.get("ci95") is None else
                      f"; forecast minus baseline {100 * d['difference']:+.1f} points [{100 * d['ci95'][0]:+.1f}, "
                      f"{100 * d['ci95'][1]:+.1f}] (bootstrap over runs, nominal 95%), the forecast closer in "
                      f"{d['n_runs_better']} of {d['n_runs']} runs")
            lines.append(f"- {baseline}: {_pct(b['median_abs_error'])}"
                         + (f", coverage {_pct(b['coverage_80'])}" if b["coverage_80"] is not None else "")
                         + (f", no forecast for {b['n_without_forecast']}" if b["n_without_forecast"] else "") + paired)
        lines += ["", "By experiment, at half-way (baselines' median abs error beside the forecast's):", "",
                  "| experiment | runs | median abs error | 80% coverage | AUROC | nearest configuration | McCandlish |",
                  "|---|---|---|---|---|---|---|"]
        for experiment, s in sets["by_experiment"].items():
            auroc = "n/a" if s["auroc"] is None else f"{s['auroc']:.2f}"
            near, mc = (s["baselines"].get(k, {}).get("median_abs_error")
                        for k in ("nearest configuration", "McCandlish (batch only)"))
            lines.append(f"| {experiment} | {s['n_runs']} | {_pct(s['median_abs_error'])} | {_pct(s['coverage_80'])} "
                         f"| {auroc} ({s['n_circuit']} / {s['n_not_circuit']}) | {_pct(near)} | {_pct(mc)} |")
        lines += ["", "At half-way, runs whose settings lie within the reference runs' ranges vs beyond them:", "",
                  "| runs | n | median abs error | 80% coverage |", "|---|---|---|---|"]
        for label, s in sets.get("by_range", {}).items():
            lines.append(f"| {label} | {s['n_runs']} | {_pct(s['median_abs_error'])} | {_pct(s['coverage_80'])} |")
        lines.append("")
    leads = record.get("signal_leads") or {}
    if leads:
        lines += ["## Which signals move before the jump (all evaluated runs that jumped; median [10th, 90th "
                  "percentile])", "", "| solution | share of the way | runs | token accuracy | loss fall step | "
                  "previous-token rise |", "|---|---|---|---|---|---|"]
        for solution, by_fraction in leads.items():
            for f, values in by_fraction.items():
                cells = [("-" if name not in values else
                          f"{values[name][1]:.3g} [{values[name][0]:.3g}, {values[name][2]:.3g}]")
                         for name in ("token_accuracy", "loss_fall_step", "prev_token_rise")]
                lines.append(f"| {solution} | {f} | {values['n_runs']} | " + " | ".join(cells) + " |")
        lines.append("")
    v = record["verdict"]
    lines += ["## Verdict (the pass rule of docs/reproduction/forecast/PROTOCOL.md, held-out, half-way)", "",
              f"passed: {v.get('passed')}; parts: {v.get('parts')}; against each baseline on error (paired bootstrap): "
              f"{v.get('baselines_beaten')}" + ("" if v.get("auroc_claimed", True) else
                                                 f" (AUROC not claimed: fewer than 5 held-out negatives)"), "",
              "![evaluation](forecast_evaluation.png)", ""]
    return "\n".join(lines)
