"""`grokcopy report`: runs (or sweeps) in, the paper's figures, grokking statistics and verdicts out.

Runs are grouped into conditions by their run_config.json: runs that differ only in bookkeeping
(output folder, logging, ...) and in `seed` are one condition, averaged over seeds. The paper's
claims are pure functions of the conditions' statistics (`claim_*`), so what counts as "supported"
is written down once, tested on synthetic numbers, and reported with the numbers behind it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from grokcopy.errors import ConfigError
from grokcopy.experiments.ablation_timeline import ablation_figure, ablation_timelines
from grokcopy.experiments.batch_figures import collapse_figure, lr_batch_figure, lr_batch_grid, noise_scale_summary
from grokcopy.experiments.claims import BATCH_FIELDS, evaluate_claims
from grokcopy.experiments.conditions import (
    family,
    find_runs,
    group_conditions,
    load_runs,
    missing_members,
    rate_summary,
)
from grokcopy.experiments.critical_batch import critical_batch
from grokcopy.experiments.critical_batch_tuned import critical_batch_best_lr
from grokcopy.experiments.knockout import knockout_reading
from grokcopy.experiments.options import ReportConfig
from grokcopy.run_dir import writable_problem, write_json_atomic


def build_report(paths, out, *, threshold: float = ReportConfig.threshold,
                 jump_threshold: float = ReportConfig.jump_threshold, loss_target: float | None = None,
                 loss_window: int = ReportConfig.loss_window, held_out_from: int | None = None) -> dict:
    """Load, group, measure, plot and write report.md + report.json into `out`; return the record.

    `threshold`: I of a formed induction head; `jump_threshold`: the exact match that defines the copy
    jump; `loss_target`: the loss every run's steps/tokens are measured to (default: shared by the runs,
    see grokcopy.analysis.grokking.shared_loss_target); `held_out_from`: seeds >= it were never used to
    choose the recipe: their rate of runs that grok is reported apart from the seeds below it."""
    from grokcopy.experiments.render import write_figures, write_markdown

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} is a file, not a folder")
    problem = writable_problem(out)
    if problem:
        raise ConfigError(f"out: {problem}")
    runs = load_runs(find_runs(paths), loss_target=loss_target, loss_window=loss_window,
                     jump_threshold=jump_threshold, formation_threshold=threshold)
    conditions = group_conditions(runs)
    by_label = {c["label"]: c for c in conditions}
    claims = evaluate_claims(by_label)
    batch_family = family(by_label, BATCH_FIELDS, key="tokens_per_step")
    fit = critical_batch(by_label, batch_family) if batch_family else None
    grid = lr_batch_grid(by_label)
    tuned = critical_batch_best_lr(by_label, fixed=fit)  # None unless >= 2 batches ran more than one rate
    noise = noise_scale_summary(by_label, fit)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(conditions, out, threshold, fit)
    if fit and fit.get("resolved"):
        figures.append(collapse_figure(by_label, fit, out / "critical_batch_collapse.png"))
    if grid:
        figures.append(lr_batch_figure(grid, out / "lr_batch.png"))
    timelines = ablation_timelines(runs)
    if timelines:
        figures.append(ablation_figure(runs, out / "ablation_over_training.png"))
    targets = sorted({r["stats"]["loss_target"] for r in runs if r["stats"]["loss_target"] is not None})
    target = targets[0] if len(targets) == 1 else targets or None  # one per experiment the report holds
    record = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": {"threshold": threshold, "jump_threshold": jump_threshold, "loss_target": target,
                     "held_out_from": held_out_from,
                     "loss_target_given": loss_target is not None, "loss_window": loss_window,
                     "loss_target_sources": sorted({r["stats"]["loss_target_source"] for r in runs})},
        "runs": [{"name": r["name"], "path": r["path"], "seed": r["seed"], "unfinished": r["unfinished"],
                  "stats": r["stats"],
                  "jump_step": r["stats"]["jump_step"], "censored_at": r["stats"]["jump_censored_at"],
                  "condition": next(c["label"] for c in conditions if r in c["runs"])} for r in runs],
        "conditions": [{"label": c["label"], "description": c["description"], "config": c["config"],
                        **{k: c["stats"][k] for k in ("n_runs", "n_jumped")},
                        "jump_step_median": c["stats"]["jump_step_median"],
                        **{k: c["stats"][k] for k in ("jump_step_ci95", "jump_step_ci95_coverage",
                                                      "jump_step_ci95_method")},
                        "stats": c["stats"]} for c in conditions],
        "claims": claims, "knockout": knockout_reading(by_label), "ablation_timeline": timelines, "critical_batch": fit,
        "critical_batch_best_lr": tuned, "lr_batch": grid, "noise_scale": noise, "figures": [p.name for p in figures],
        "missing": missing_members(paths),
        "seed_split": None if held_out_from is None else seed_split(conditions, runs, held_out_from),
    }
    write_json_atomic(out / "report.json", json.loads(json.dumps(record, default=str)))
    write_markdown(record, out / "report.md")
    return record


def seed_split(conditions: list[dict], runs: list[dict], held_out_from: int) -> dict:
    """The demo criteria's rate on the seeds that chose a recipe and on those held out, over all runs and per
    condition (recipes screened on a few seeds and dropped have no held-out seeds; the chosen one's held-out
    rate is the number to state)."""
    def split(members):
        return {"chosen_on": rate_summary([r["stats"] for r in members if (r["seed"] or 0) < held_out_from]),
                "held_out": rate_summary([r["stats"] for r in members if (r["seed"] or 0) >= held_out_from])}

    return {"held_out_from": held_out_from, **split(runs),
            "by_condition": [{"label": c["label"], **split(c["runs"])} for c in conditions]}


def run_report(config: ReportConfig) -> int:
    """`grokcopy report`: build the report, then say what it holds, one line per condition and claim."""
    record = build_report(config.runs, config.out, **config.settings())
    n_runs, n_conditions = len(record["runs"]), len(record["conditions"])
    print(f"{n_runs} run{'s' * (n_runs != 1)} in {n_conditions} condition{'s' * (n_conditions != 1)} -> "
          f"{Path(config.out) / 'report.md'}")
    for run in record["runs"]:
        if run["unfinished"]:
            print(f"note: run {run['name']} is unfinished ({run['unfinished']}); its statistics are of a run cut short")
    for member in record["missing"]:
        print(f"note: sweep member {member['name']} has no run to report ({member['status']}"
              + (f": {member['error']}" if member["error"] else "") + ")")
    for c in record["conditions"]:
        ci = c["jump_step_ci95"]
        shown = "" if not ci else f" [{ci[0]:,.0f}, {'inf' if ci[1] is None else f'{ci[1]:,.0f}'}]"
        median = c["jump_step_median"]
        print(f"  {c['label']}: {c['n_jumped']}/{c['n_runs']} jumped; median jump step "
              f"{'not reached' if median is None else f'{median:,.0f}'}{shown}; {c['stats']['n_groks']}/"
              f"{c['n_runs']} grok (loss first, exact match >= 0.9, an induction head)")
    split = record.get("seed_split")
    if split:
        for part in ("chosen_on", "held_out"):
            s = split[part]
            ci = s["groks_ci95"]
            print(f"  seeds {'<' if part == 'chosen_on' else '>='} {split['held_out_from']} ({part.replace('_', ' ')}): "
                  f"{s['n_groks']} grok" + (f", rate {s['groks_rate']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""))
        for c in split.get("by_condition") or []:
            held = c["held_out"]
            if held["n_rated"] and len(split["by_condition"]) > 1:  # the recipe that was confirmed
                low, high = held["groks_ci95"]
                print(f"  held out, {c['label']}: {held['n_groks']}/{held['n_rated']} grok, rate "
                      f"{held['groks_rate']:.2f} [{low:.2f}, {high:.2f}]")
    fit = record.get("critical_batch")
    if fit and fit.get("resolved"):
        low, high = fit["b_crit_ci95"]
        print(f"critical batch B_crit = {fit['b_crit']:,.0f} tokens per step [{low:,.0f}, {high:,.0f}]; " +
              "; ".join(f"{s['tokens_per_step']:,}: slope {s['slope']:.2f} ({s['regime']})" for s in fit["local_slopes"]))
    tuned = record.get("critical_batch_best_lr")
    if tuned and tuned.get("resolved"):
        low, high = tuned["b_crit_ci95"] or (None, None)
        comparison = (tuned.get("fixed_lr_comparison") or {}).get("verdict")
        print(f"critical batch at the best learning rate per batch: B_crit = {tuned['b_crit']:,.0f} tokens per step"
              + ("" if low is None else f" [{low:,.0f}, {high:,.0f}]") + f"; {tuned['verdict']}"
              + (f"; against the fixed rate: {comparison}" if comparison else ""))
    grid = record.get("lr_batch")
    if grid:
        print("learning-rate effect per batch: " + "; ".join(
            f"{e['tokens_per_step']:,} tokens/step: {e['verdict']}" for e in grid["lr_effect"])
              + (" (the sign flips)" if grid["sign_flips"] else "")
              + "".join(f"; between LR {a:g} and {b:g} the sign flips" for a, b in grid.get("pair_sign_flips") or []))
    noise = record.get("noise_scale")
    if noise and noise.get("b_crit"):
        print(f"gradient noise scale on the plateau: {noise['median_tokens']:,.0f} tokens "
              f"({noise['ratio']:.2f} x B_crit)")
    for k in record.get("knockout") or []:
        print(f"knock-out of layer {', '.join(map(str, k['knocked_out']))} ({k['condition']}): {k['verdict']} "
              f"({k['n_takes']}/{k['n_runs']} seeds)")
    for claim in record["claims"]:
        print(f"{claim['text']}: {claim['verdict']}")
    return 0
