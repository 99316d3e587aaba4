"""The report's text: numbers, intervals and the sections of the batch experiments, as report.md prints them."""

from __future__ import annotations


def num(value, kind="steps") -> str:
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


def rate_text(s: dict) -> str:
    if not s.get("groks_ci95"):
        return "-"
    low, high = s["groks_ci95"]
    return f"{s['n_groks']}/{s['n_rated']} [{low:.2f}, {high:.2f}]"


def interval_text(ci, coverage=None) -> str:
    """` [low, high]`, tagged with its coverage where that falls short of 95% (few seeds)."""
    if not ci:
        return ""
    tag = f" ({coverage:.1%})" if coverage is not None and coverage < 0.95 else ""
    return f" [{num(ci[0])}, {'inf' if ci[1] is None else num(ci[1])}]{tag}"


def censored_text(stats: dict, key: str, censor: str) -> str:
    if stats.get(key) is not None:
        return num(stats[key], "tokens" if key.endswith("tokens") else "steps")
    return f"> {num(stats[censor])} (censored)" if stats.get(censor) is not None else "-"

def noise_scale_lines(noise: dict | None) -> list[str]:
    """The gradient noise scale on each condition's plateau beside the fitted B_crit."""
    if not noise:
        return []
    lines: list[str] = []
    lines += ["", "## Gradient noise scale on the plateau (McCandlish's B_simple, tokens)", "",
              "| condition | tokens/step | seeds | median | range |", "|---|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['tokens_per_step']:,} | {r['n_runs']} | {r['median']:,.0f} | "
              f"{r['range'][0]:,.0f}-{r['range'][1]:,.0f} |" for r in noise["per_condition"]]
    if noise.get("b_crit"):
        lines += ["", f"Median over the fitted batches ({', '.join(noise.get('over') or [])}) "
                  f"{noise['median_tokens']:,.0f} tokens = {noise['ratio']:.2f} x the "
                  f"fitted B_crit ({'inside' if noise['within_b_crit_ci'] else 'outside'} its 95% interval)."]
    return lines


def critical_batch_lines(fit: dict | None) -> list[str]:
    """McCandlish's fit: B_crit, S_min, E_min with intervals, local slopes, the fit-range sensitivity, and the
    batches it leaves out (below the fewest-tokens batch, or censored)."""
    if not fit:
        return []
    lines: list[str] = []
    lines += ["", "## Critical batch (McCandlish et al. 2018: S = S_min (1 + B_crit / B))", ""]
    if not fit.get("resolved"):
        lines.append("Not resolved: fewer than two batches with a defined median jump step, or too many "
                     "bootstrap resamples without one (too many censored seeds).")
    else:
        lines.append(f"B_crit = {num(fit['b_crit'], 'tokens')} tokens per step {interval_text(fit['b_crit_ci95'])}, "
                     f"S_min = {num(fit['s_min'])} steps {interval_text(fit['s_min_ci95'])}, E_min = "
                     f"{num(fit['e_min'], 'tokens')} tokens; seeds' spread sigma(ln S*) = {fit['sigma']:.2f}; "
                     f"fitted on {fit['n_seeds_fitted']} seeds ({fit['n_censored_seeds_fitted']} censored) of "
                     f"{len(fit['fitted'])} batches ({fit['fitted_range'][0]:,}-{fit['fitted_range'][1]:,} tokens "
                     "per step), by censored log-normal maximum likelihood.")
        lines += ["", "| tokens per step | local slope d ln S / d ln B [95% CI] | regime |", "|---|---|---|"]
        lines += [f"| {s['tokens_per_step']:,} | {s['slope']:.2f} [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}] | "
                  f"{s['regime']} |" for s in fit["local_slopes"]]
        lines += ["", "Intervals: " + (fit.get("b_crit_ci95_method") or "percentile bootstrap over seeds") + ".",
                  "", "Where the fit starts changes B_crit (the start is chosen by the fewest-tokens rule above, "
                  "re-applied in every resample):", "", "| fit starts at | B_crit (tokens) | S_min (steps) |",
                  "|---|---|---|"]
        lines += [f"| {r['start']}{' (chosen)' if r.get('chosen') else ''} | "
                  f"{'-' if r.get('b_crit') is None else num(r['b_crit'], 'tokens')} | "
                  f"{'-' if r.get('s_min') is None else num(r['s_min'])} |"
                  for r in fit.get("fit_range_sensitivity") or []]
    for row in fit.get("below_fewest_tokens") or []:
        e = (num(row["jump_tokens_median"], "tokens") if row["jump_tokens_median"] is not None else
             f"> {num(row['jump_tokens_lower_bound'], 'tokens')}" if row["jump_tokens_lower_bound"] else "-")
        lines.append(f"- {row['label']} ({row['tokens_per_step']:,} tokens per step): below the batch with the "
                     f"fewest tokens to the jump ({fit['e_min_batch']}), median tokens to the jump {e} "
                     f"({row['n_jumped']}/{row['n_runs']} jumped): more tokens at a smaller batch, which the "
                     "model does not describe; not fitted.")
    for row in fit.get("censored") or []:  # no point of the fit: a bound, checked against it
        predicted = (f"; the fit predicts {num(row['predicted_jump_step'])} "
                     f"{interval_text(row['predicted_ci95'])}: "
                     + ("**the model fails here** (no jump where it predicts one)" if row["below_model"]
                        else "no conflict") if "predicted_jump_step" in row else "")
        lines.append(f"- {row['label']} ({row['tokens_per_step']:,} tokens per step): most seeds never jumped "
                     f"(by step {num(row['steps_without_jump'])}){predicted}.")
    return lines
