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


def _rate_cell(r: dict) -> str:
    median = "not reached" if r["jump_step_median"] is None else num(r["jump_step_median"])
    chosen = "" if r.get("n_chosen_resampled") is None else f", best in {r['n_chosen_resampled']}"
    return f"{r['learning_rate']:g}: {median} ({r['n_jumped']}/{r['n_runs']}{chosen})"


def critical_batch_best_lr_lines(tuned: dict | None) -> list[str]:
    """The critical batch at each batch's best learning rate (the tuned sweep's protocol): the best rate per
    batch with how often each rate was best over the resamples, the fit with its intervals, the small batches
    against its prediction intervals, and the comparison with the fixed rate's B_crit."""
    if not tuned:
        return []
    n = tuned.get("n_resamples")
    lines = ["", "## Critical batch at the best learning rate per batch (McCandlish's S(B) at tuned rates)", "",
             f"Rule: {tuned['rule']}.", "",
             "| tokens per step | rate: KM median jump step (k/n jumped"
             + (f", best in how many of {n} resamples" if n else "") + ") | best rate | fitted |", "|---|---|---|---|"]
    for row in tuned["batches"]:
        best = "-" if row["best_learning_rate"] is None else f"{row['best_learning_rate']:g}"
        if row["best_learning_rate"] is None and row.get("jump_step_lower_bound") is not None:
            best = f"none defined (median > {num(row['jump_step_lower_bound'])})"
        lines.append(f"| {row['tokens_per_step']:,} | " + "; ".join(_rate_cell(r) for r in row["rates"])
                     + f" | {best} | {'yes' if row['fitted'] else 'no' if row['in_fit_range'] else 'no (untuned)'} |")
    if not tuned.get("resolved"):
        return lines + ["", "Not resolved: fewer than two batches whose best rate's median is defined."]
    lines += ["", (f"B_crit = {num(tuned['b_crit'], 'tokens')} tokens per step{interval_text(tuned['b_crit_ci95'])}, "
              f"S_min = {num(tuned['s_min'])} steps{interval_text(tuned['s_min_ci95'])}, E_min = "
              f"{num(tuned['e_min'], 'tokens')} tokens, sigma(ln S*) = {tuned['sigma']:.2f}; fitted on "
              f"{tuned['n_seeds_fitted']} seeds ({tuned['n_censored_seeds_fitted']} censored) of "
              f"{len(tuned['fitted'])} batches ({tuned['fitted_range'][0]:,}-{tuned['fitted_range'][1]:,} tokens "
              f"per step). Intervals: {tuned['b_crit_ci95_method']}.")] + ([""] if tuned["small_batches"] else [])
    for s in tuned["small_batches"]:
        seen = (num(s["jump_step_median"]) if s["jump_step_median"] is not None else
                f"not reached (> {num(s['jump_step_lower_bound'])})" if s["jump_step_lower_bound"] else "not reached")
        place = {True: "within", False: "outside", None: "not settled"}[s["within"]]
        lines.append(f"- {s['tokens_per_step']:,} tokens per step at {s['learning_rate'] or '-'}: median jump step "
                     f"{seen}; the fit predicts {num(s['predicted_jump_step'])}{interval_text(s['predicted_ci95'])} "
                     f"(median of {s['n_seeds']} seeds): {place}.")
    method = f" (prediction intervals: {tuned['small_batches'][0]['predicted_ci95_method']})" \
        if tuned["small_batches"] else ""
    lines += ["", (f"Small batches (below the fixed rate's fewest-tokens batch, "
                   f"{tuned.get('small_batches_below') or '-'}): **{tuned['verdict']}**{method}.")]
    comparison = tuned.get("fixed_lr_comparison")
    if comparison:
        lines += ["", (f"Against the fixed rate's B_crit {num(comparison['fixed_b_crit'], 'tokens')}"
                       f"{interval_text(comparison['fixed_b_crit_ci95'])}: **{comparison['verdict']}**.")]
    return lines


def knockout_lines(readings: list[dict] | None) -> list[str]:
    """The knock-out reading of claim 3 (grokcopy.experiments.knockout): verdict, then one row per seed."""
    lines = []
    for k in readings or []:
        knocked = ", ".join(str(layer) for layer in k["knocked_out"])
        lines += ["", f"## Knock-out: with layer {knocked}'s attention removed, do deeper layers take the circuit?", "",
                  f"**{k['verdict']}** ({k['condition']}): in {k['n_takes']}/{k['n_runs']} seeds a deeper layer formed an "
                  "induction head, the run copies (final exact match >= 0.5) and ablating that layer's attention leaves "
                  f"at most half its exact match; in {k['n_no_deeper_layer']}/{k['n_runs']} no deeper layer formed "
                  "(rule: docs/reproduction/cpu-depth-knockout/PROTOCOL.md; 3/4 of the seeds decide).", "",
                  "| seed | deeper layers formed (step) | final EM | EM with the layer's attention ablated | takes it |",
                  "|---|---|---|---|---|"]
        for r in k["runs"]:
            formed = ", ".join(f"{layer} ({num(r['formed'][layer])})" for layer in r["deeper_formed"]) or "none"
            ablated = r["layer_ablated_exact_match"]
            cells = ", ".join(f"layer {layer}: {ablated[layer]:.3f}" for layer in r["deeper_formed"]) if ablated else "-"
            lines.append(f"| {r['seed']} | {formed} | {num(r['final_exact_match'], 'em')} | {cells or '-'} | "
                         f"{'yes' if r['takes'] else 'no'} |")
        later = k.get("jumps_later_than_twin")
        if later:
            lines += ["", f"Beside it (not part of the verdict): the knocked-out runs' median jump "
                          f"{num(later['median_knocked_out'])} against {num(later['median_intact'])} in the intact twin "
                          f"({k['intact_twin']}); one-sided exact permutation p (knocked out later) = {later['p_value']:.2f} "
                          f"({later['n_knocked_out']} vs {later['n_intact']} runs, never-jumped ranked last)."]
    return lines
