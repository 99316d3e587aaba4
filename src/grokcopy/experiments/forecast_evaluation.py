"""How good the forecast is: forecasts made part of the way to each run's jump, scored against what happened.

`grokcopy forecast --evaluate DIRS --out OUT` forecasts every run under DIRS at 25%, 50% and 75% of the way to its
jump (of its last step when it never jumped), from its records up to there only, beside the baselines of
grokcopy.experiments.forecast_baselines, and scores them (docs/reproduction/forecast/PROTOCOL.md fixes the measures): the
median absolute error of the jump step as a share of the true one, the 80% interval's coverage, AUROC, Brier
score and reliability of `p_circuit`, and false alarms. Runs of experiments in the forecaster's reference set are
scored apart ("in-sample"): only the others ("held-out") test it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from grokcopy.experiments.conditions import find_runs
from grokcopy.experiments.forecast_baselines import Baselines
from grokcopy.forecast.reference import Forecaster, reference_record, shipped_forecaster
from grokcopy.forecast.signals import outcome, snapshot
from grokcopy.run_dir import load_histories
from grokcopy.safe_io import write_json_atomic, write_text_atomic

FRACTIONS = (0.25, 0.5, 0.75)
PASS = {"coverage": 0.8, "error": 0.15, "auroc": 0.9}  # the bar, at f = 0.5 on held-out runs
MIN_NEGATIVES = 5


def build_reference(paths, out: str | Path | None = None) -> dict:
    """The reference set of every run under `paths` (experiment folders of committed runs)."""
    runs = []
    for path in paths:
        for run in find_runs([path]):
            runs.append(reference_record(load_histories(run), Path(path).name,
                                         str(Path(run).relative_to(Path(path)))))
    record = {"experiments": [Path(p).name for p in paths], "runs": runs}
    if out is not None:  # compact, one run per line: small to ship, readable in a diff
        runs = ",\n".join(json.dumps(r, separators=(",", ":")) for r in runs)
        write_text_atomic(Path(out), f'{{"experiments": {json.dumps(record["experiments"])},\n"runs": [\n{runs}\n]}}\n')
    return record


def forecast_points(paths, forecaster: Forecaster, fractions=FRACTIONS, found: dict | None = None) -> list[dict]:
    """One row per (run, fraction): the truth, the forecast and each baseline's jump step and interval. `found`:
    each path's runs, when the caller has listed them already."""
    baselines, known = Baselines(forecaster.reference), set(forecaster.reference.get("experiments", []))
    rows = []
    for path in paths:
        experiment = Path(path).name
        for run in (found or {}).get(path) or find_runs([path]):
            histories = load_histories(run)
            end = outcome(histories)
            base = end["jump_step"] if end["jump_step"] is not None else end["last_step"]
            alarm = first_alarm(histories, forecaster, max(fractions) * base) if end["solution"] == "circuit" else None
            for f in fractions:
                snap = snapshot(histories, max(1, int(round(f * base))))
                forecast = forecaster.forecast(snap)
                rows.append({"experiment": experiment, "run": str(Path(run).relative_to(path)), "fraction": f,
                             "held_out": experiment not in known, "at_step": snap.step, **end,
                             "alarmed_by_then": alarm is not None and alarm <= snap.step, "first_alarm": alarm,
                             "forecast": forecast.to_json(), "baselines": baselines.all(snap)})
    return rows


def first_alarm(histories: dict, forecaster: Forecaster, until: float) -> int | None:
    """The first record step (a copy test or an induction analysis) before `until` at which the forecast turned
    to headless or no jump: where CopyForecastCallback would have warned; None when it never did."""
    steps = sorted({r["step"] for r in histories.get("copy_history") or []}
                   | {r["step"] for r in histories.get("induction_history") or []})
    for step in (s for s in steps if 0 < s <= until):
        if forecaster.forecast(snapshot(histories, step)).outcome != "circuit":
            return step
    return None


def paired_difference(rows: list[dict], baseline: str, n: int = 2000, seed: int = 0) -> dict:
    """The forecast's median absolute error minus a baseline's on the same runs, with a 95% percentile bootstrap
    over runs (nominal; coverage not guaranteed): whether the forecast is told apart from the baseline."""
    pairs = np.array([(_error(r["forecast"]["jump_step"], r["jump_step"]),
                       _error(r["baselines"][baseline]["jump_step"], r["jump_step"])) for r in rows
                      if r["jump_step"] is not None])
    if len(pairs) < 2:
        return {"difference": None, "ci95": None}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(pairs), size=(n, len(pairs)))
    diffs = np.median(pairs[picks, 0], axis=1) - np.median(pairs[picks, 1], axis=1)
    diffs = diffs[np.isfinite(diffs)]
    point = float(np.median(pairs[:, 0]) - np.median(pairs[:, 1]))
    return {"difference": point if math.isfinite(point) else None,
            "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))] if len(diffs) else None,
            "ci95_method": f"percentile bootstrap over runs ({n} resamples); nominal 95%", "ci95_coverage": None,
            "n_runs_better": int((pairs[:, 0] < pairs[:, 1]).sum()), "n_runs": len(pairs)}


def uncertainty(errors, covered, p, y, n: int = 2000, seed: int = 0) -> dict:
    """How much the headline measures are pinned down by this many runs: the 80% coverage with its Clopper-Pearson
    interval (exact: coverage >= 95%), the median absolute error with its order-statistic interval (the widest-rank
    pair that still guarantees >= 95%, exact under any distribution), and AUROC with a percentile bootstrap
    stratified by class (nominal 95%)."""
    out = {"coverage_80_ci95": None, "median_abs_error_ci95": None, "auroc_ci95": None}
    if covered:
        ci = stats.binomtest(int(sum(covered)), len(covered)).proportion_ci(0.95, method="exact")
        out["coverage_80_ci95"] = [float(ci.low), float(ci.high)]
    if len(errors) >= 6:  # below 6 runs no pair of order statistics reaches 95%
        x, m = np.sort(errors), len(errors)
        k = int(stats.binom.ppf(0.025, m, 0.5))  # P(B <= k-1) <= 2.5% with B ~ Bin(m, 1/2)
        while k > 0 and stats.binom.cdf(k - 1, m, 0.5) > 0.025:
            k -= 1
        if k >= 1:
            out["median_abs_error_ci95"] = [float(x[k - 1]), float(x[m - k])]
    pos, neg = np.asarray(p)[np.asarray(y) == 1], np.asarray(p)[np.asarray(y) == 0]
    if len(pos) >= 2 and len(neg) >= 2:
        rng = np.random.default_rng(seed)
        draws = [auroc(np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))].tolist(),
                       [1] * len(pos) + [0] * len(neg)) for _ in range(n)]
        out["auroc_ci95"] = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
    return out


def _error(predicted, truth) -> float:
    return math.inf if predicted is None else abs(predicted - truth) / truth


def _covers(interval, truth) -> bool:
    if not interval or interval[0] is None:
        return False
    return interval[0] <= truth <= (math.inf if interval[1] is None else interval[1])


def auroc(scores, labels) -> float | None:
    """P(a positive outranks a negative), ties half (Mann-Whitney U / n1 n0); None without both classes."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    return float(stats.mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def score(rows: list[dict]) -> dict:
    """The measures over one set of rows (one fraction)."""
    jumped = [r for r in rows if r["jump_step"] is not None]
    errors = [_error(r["forecast"]["jump_step"], r["jump_step"]) for r in jumped]
    covered = [_covers(r["forecast"]["jump_step_interval"], r["jump_step"]) for r in jumped]
    names = list(rows[0]["baselines"]) if rows else []
    labelled = [r for r in rows if r["solution"] in ("circuit", "headless", "no jump")]
    p = np.array([r["forecast"]["p_circuit"] for r in labelled])
    y = np.array([r["solution"] == "circuit" for r in labelled], dtype=float)
    circuits = [r for r in labelled if r["solution"] == "circuit"]
    edges = np.linspace(0, 1, 6)
    reliability = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        if inside.any():
            reliability.append({"bin": [float(lo), float(hi)], "n": int(inside.sum()),
                                "mean_p_circuit": float(p[inside].mean()), "share_circuit": float(y[inside].mean())})
    return {
        "n_runs": len(rows), "n_jumped": len(jumped),
        "median_abs_error": float(np.median(errors)) if errors else None,
        "coverage_80": float(np.mean(covered)) if covered else None,
        "baselines": {name: {"median_abs_error": float(np.median([_error(r["baselines"][name]["jump_step"], r["jump_step"])
                                                                   for r in jumped])) if jumped else None,
                             "coverage_80": (float(np.mean([_covers(r["baselines"][name]["interval"], r["jump_step"])
                                                            for r in jumped]))
                                             if jumped and any(r["baselines"][name]["interval"] for r in jumped) else None),
                             "n_without_forecast": sum(r["baselines"][name]["jump_step"] is None for r in jumped),
                             "forecast_minus_baseline": paired_difference(jumped, name)}
                      for name in names},
        "n_circuit": int(y.sum()), "n_not_circuit": int(len(y) - y.sum()),
        "auroc": auroc(p.tolist(), y.tolist()), "brier": float(np.mean((p - y) ** 2)) if len(y) else None,
        "reliability": reliability,
        **uncertainty(errors, covered, p, y),
        # warned (turned to headless or no jump) at any record step up to K, on a run that then formed a circuit
        "false_alarm_rate": (float(np.mean([r["alarmed_by_then"] for r in circuits]))
                             if circuits else None),
    }


def evaluate(paths, out: str | Path, forecaster: Forecaster | None = None, fractions=FRACTIONS) -> dict:
    """Forecast every run under `paths`, score held-out and in-sample runs apart, write OUT/forecast_evaluation.json,
    .md and .png; returns the record."""
    forecaster = forecaster or shipped_forecaster()
    from grokcopy.errors import ConfigError

    found, skipped = {}, []
    for path in paths:  # an experiment whose runs have not landed yet is named, not fatal
        try:
            found[path] = find_runs([path])
        except ConfigError as err:
            skipped.append(f"{Path(path).name}: {err}")
    if not found:
        raise ConfigError("no runs in any folder given: " + "; ".join(skipped))
    paths = list(found)
    rows = forecast_points(paths, forecaster, fractions, found)
    record = {"reference_experiments": forecaster.reference.get("experiments", []),
              "evaluated": [Path(p).name for p in paths], "skipped": skipped, "fractions": list(fractions),
              "pass_rule": PASS, "sets": {}}
    for name, held in (("held_out", True), ("in_sample", False)):
        chosen = [r for r in rows if r["held_out"] is held]
        if chosen:
            record["sets"][name] = {
                str(f): score([r for r in chosen if r["fraction"] == f]) for f in fractions}
            record["sets"][name]["by_experiment"] = {
                e: score([r for r in chosen if r["experiment"] == e and r["fraction"] == 0.5])
                for e in sorted({r["experiment"] for r in chosen})}
            half = [r for r in chosen if r["fraction"] == 0.5]
            record["sets"][name]["by_range"] = {
                label: score(part) for label, part in (
                    ("within the reference ranges", [r for r in half if not r["forecast"]["outside_reference"]]),
                    ("extrapolated", [r for r in half if r["forecast"]["outside_reference"]])) if part}
    record["signal_leads"] = signal_leads(rows)
    record["verdict"] = verdict(record)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "forecast_evaluation.json", {**record, "forecasts": rows})
    from grokcopy.experiments.forecast_figures import evaluation_figure, evaluation_text

    evaluation_figure(record, out / "forecast_evaluation.png")
    write_text_atomic(out / "forecast_evaluation.md", evaluation_text(record))
    return record


def signal_leads(rows: list[dict]) -> dict:
    """Each signal's value part of the way to the jump, by how the run ended: {solution: {fraction: {signal:
    [10th, 50th, 90th percentile]}}} over the runs that jumped with a known solution: which signals move before
    the jump, and how far ahead (measured, not assumed)."""
    from grokcopy.forecast.signals import SIGNALS

    out: dict = {}
    for solution in ("circuit", "headless"):
        for f in sorted({r["fraction"] for r in rows}):
            chosen = [r["forecast"]["signals"] for r in rows if r["solution"] == solution and r["fraction"] == f]
            out.setdefault(solution, {})[str(f)] = {
                name: [float(v) for v in np.percentile(values, [10, 50, 90])]
                for name in SIGNALS if (values := [s[name] for s in chosen if s.get(name) is not None])}
            out[solution][str(f)]["n_runs"] = len(chosen)
    return out


def verdict(record: dict) -> dict:
    """The pass rule at f = 0.5 on held-out runs, part by part."""
    held = (record["sets"].get("held_out") or {}).get("0.5")
    if not held:
        return {"passed": None, "why": "no held-out runs evaluated"}
    parts = {"coverage": held["coverage_80"] is not None and held["coverage_80"] >= PASS["coverage"],
             "error": held["median_abs_error"] is not None and held["median_abs_error"] <= PASS["error"]}
    if held["n_not_circuit"] >= MIN_NEGATIVES:
        parts["auroc"] = held["auroc"] is not None and held["auroc"] >= PASS["auroc"]
    beaten = {}
    for name, b in held["baselines"].items():  # told apart only when the paired interval excludes 0
        ci = (b.get("forecast_minus_baseline") or {}).get("ci95")
        beaten[name] = ("beaten" if b["median_abs_error"] == math.inf or (ci and ci[1] < 0) else
                        "worse" if ci and ci[0] > 0 else "not told apart")
    return {"passed": all(parts.values()), "parts": parts, "baselines_beaten": beaten,
            "auroc_claimed": "auroc" in parts}
