"""The critical batch at each batch's best learning rate (issue #29 item 5), by the rule fixed before the runs
in docs/reproduction/cpu-critical-batch-tuned/PROTOCOL.md.

McCandlish's S(B) = S_min (1 + B_crit / B) is steps to a target at the learning rate tuned for each batch; a
rate held fixed (sweep A's 1.5e-3, tuned at B = 512) is too noisy for the small batches. Over conditions that
differ only in learning rate and batch: per batch the best rate is the one with the smallest Kaplan-Meier
median jump step (a rate whose median is undefined is never best while another's is defined; ties: the
smaller rate). The censored log-normal fit of critical_batch.py then runs on every seed of each batch's best
rate, over every batch from the smallest with more than one rate up where that median is defined (a smaller
batch was never tuned: the protocol's B = 64 ... 2,048). The choice is read from the outcome, so each
bootstrap resample (seeds resampled within each batch x rate cell) re-chooses the best rates from its own
medians before fitting, and the intervals carry the choice.

Verdict: the tuned fit *describes the small batches* (the batches with more than one rate below the fixed-rate
fit's fewest-tokens batch) when each one's median at its best rate lies within the fit's 95% prediction
interval for the median of as many seeds; B_crit is then compared with the fixed-rate fit's: "the fixed
learning rate biased B_crit" when the two intervals do not overlap, "no measurable bias" when they do.
"""

from __future__ import annotations

import numpy as np

from grokcopy.analysis.survival import data_rng
from grokcopy.experiments.claims import BATCH_FIELDS
from grokcopy.experiments.conditions import family
from grokcopy.experiments.critical_batch import (
    MIN_FITTED_BATCHES,
    N_FIT_RESAMPLES,
    _quantiles,
    _resampled_medians,
    _seeds,
    _start,
    _with_method,
)
from grokcopy.experiments.critical_batch_fit import MIN_SIGMA, fit_censored

N_PREDICTIVE_DRAWS = 50  # simulated seed sets per bootstrap fit, for the prediction intervals
DESCRIBES, DOES_NOT, NOT_RESOLVED = ("describes the small batches", "does not describe the small batches",
                                     "not resolved")
BIASED, NO_BIAS = "the fixed learning rate biased B_crit", "no measurable bias"
RULE = ("best learning rate per batch: the smallest KM median jump step (an undefined median is never best "
        "while another is defined; ties: the smaller rate); fitted: every seed of each batch's best rate, over "
        "the batches from the smallest with more than one rate up whose best rate's median is defined")
INTERVAL_METHOD = (f"percentile bootstrap over seeds ({N_FIT_RESAMPLES} resamples), resampled per batch x "
                   "learning-rate cell, the best rate re-chosen per batch and the fit range re-applied in each "
                   "resample; nominal 95%, coverage not guaranteed")
PREDICTION_METHOD = (f"percentile interval of the median of n seeds simulated ({N_PREDICTIVE_DRAWS} sets per "
                     "bootstrap fit) as ln S = ln S_min + ln(1 + B_crit / B) + sigma Z from each converged "
                     "resample's S_min, B_crit and sigma (parameter and seed noise); nominal 95%, coverage not "
                     "guaranteed")


def best_rate(medians, rates) -> int | None:
    """Index of the best learning rate: the smallest defined median (None or NaN: undefined, never best while
    another is defined), on a tie the smaller rate; None when no median is defined."""
    defined = [i for i, m in enumerate(medians) if m is not None and not np.isnan(m)]
    return min(defined, key=lambda i: (medians[i], rates[i])) if defined else None


def _batch_rows(conditions: dict, cells: list[list[str]], batches: list, best: list, in_range: list) -> list[dict]:
    rows = []
    for b, cell, i, r in zip(batches, cells, best, in_range):
        stats = [conditions[l]["stats"] for l in cell]
        bounds = [s.get("jump_step_lower_bound") for s in stats if s.get("jump_step_lower_bound") is not None]
        rows.append({"tokens_per_step": b, "tuned": len(cell) > 1, "in_fit_range": r,
                     "rates": [{"label": l, "learning_rate": conditions[l]["config"]["learning_rate"],
                                "jump_step_median": s.get("jump_step_median"),
                                "jump_step_lower_bound": s.get("jump_step_lower_bound"),
                                "n_jumped": s.get("n_jumped"), "n_runs": s.get("n_runs")}
                               for l, s in zip(cell, stats)],
                     "best_label": None if i is None else cell[i],
                     "best_learning_rate": None if i is None else conditions[cell[i]]["config"]["learning_rate"],
                     "jump_step_median": None if i is None else stats[i]["jump_step_median"],
                     "jump_tokens_median": None if i is None else stats[i].get("jump_tokens_median"),
                     # no rate's median defined: the best rate's median lies beyond the smallest of their bounds
                     "jump_step_lower_bound": min(bounds) if i is None and bounds else None,
                     "fitted": i is not None and r})
    return rows


def _small_batches(rows: list[dict], fixed: dict | None, boot: np.ndarray, s_min: float, b_crit: float,
                   method: str) -> list[dict]:
    """The batches with more than one rate below the fixed-rate fit's fewest-tokens batch, each against the
    tuned fit's prediction for the median of as many seeds as its best rate has (`within`: None where its
    median is undefined and its bound does not settle it)."""
    if not fixed or fixed.get("e_min_batch") not in (fixed.get("conditions") or []):
        return []
    edge = fixed["tokens_per_step"][fixed["conditions"].index(fixed["e_min_batch"])]
    rng = data_rng(boot)
    out = []
    for row in rows:
        if not row["tuned"] or row["tokens_per_step"] >= edge:
            continue
        best = next((r for r in row["rates"] if r["label"] == row["best_label"]), None)
        n = best["n_runs"] if best else max(r["n_runs"] or 1 for r in row["rates"])
        mu = np.log(boot[:, 0] * (1 + boot[:, 1] / row["tokens_per_step"]))
        draws = np.exp(mu[:, None, None] + np.maximum(boot[:, 2], MIN_SIGMA)[:, None, None]
                       * rng.standard_normal((boot.shape[0], N_PREDICTIVE_DRAWS, n)))
        predicted = _quantiles(np.median(draws, axis=2).ravel())
        seen, bound = row["jump_step_median"], row["jump_step_lower_bound"]
        within = (None if predicted is None else predicted[0] <= seen <= predicted[1] if seen is not None
                  else False if bound is not None and bound > predicted[1] else None)
        out.append({"tokens_per_step": row["tokens_per_step"], "label": row["best_label"],
                    "learning_rate": row["best_learning_rate"], "n_seeds": n, "jump_step_median": seen,
                    "jump_step_lower_bound": bound,
                    "predicted_jump_step": s_min * (1 + b_crit / row["tokens_per_step"]),
                    **_with_method("predicted_ci95", predicted, method),
                    **_with_method("predicted_seed_ci95", _quantiles(draws[:, :, 0].ravel()),
                                   method.replace("the median of n seeds", "one seed")),
                    "within": within})
    return out


def _comparison(fixed: dict | None, b_crit_ci: list | None, verdict: str) -> dict | None:
    if not fixed or not fixed.get("resolved"):
        return None
    low, high = fixed.get("b_crit_ci95") or (None, None)
    overlap = None if low is None or not b_crit_ci else bool(b_crit_ci[0] <= high and low <= b_crit_ci[1])
    read = (NOT_RESOLVED if overlap is None else NO_BIAS if overlap else BIASED) if verdict == DESCRIBES else \
        f"not read: the tuned fit's small-batch verdict is '{verdict}'"
    return {"fixed_b_crit": fixed.get("b_crit"), "fixed_b_crit_ci95": fixed.get("b_crit_ci95"),
            "fixed_conditions": fixed.get("fitted"), "tuned_b_crit_ci95": b_crit_ci, "overlap": overlap,
            "verdict": read}


def critical_batch_best_lr(conditions: dict, labels: list[str] | None = None, fixed: dict | None = None) -> dict | None:
    """The tuned fit (`critical_batch_best_lr` in report.json) over `labels` (default: the largest family of
    conditions differing only in learning rate and batch); None unless at least two batches have more than one
    learning rate. `fixed`: the fixed-rate fit (critical_batch's record) the small batches and the comparison
    are read from. Per batch (`batches`) its rates with KM median, k/n jumped and how often each was chosen
    over the resamples (`n_chosen_resampled`), the best; `b_crit`, `s_min`, `e_min`, `sigma` with `_ci95`,
    `_ci95_method`, `_ci95_coverage` (None: a percentile bootstrap); `small_batches` with their prediction
    intervals and `verdict`; `fixed_lr_comparison`. `resolved` False with fewer than MIN_FITTED_BATCHES
    fitted batches."""
    labels = family(conditions, ("learning_rate", *BATCH_FIELDS)) if labels is None else labels
    labels = [l for l in labels if conditions[l]["config"].get("learning_rate") is not None]
    rate = {l: conditions[l]["config"]["learning_rate"] for l in labels}
    batches = sorted({conditions[l]["config"]["tokens_per_step"] for l in labels})
    cells = [sorted((l for l in labels if conditions[l]["config"]["tokens_per_step"] == b), key=rate.get)
             for b in batches]
    tuned = [len(c) > 1 for c in cells]
    if sum(tuned) < 2:
        return None
    in_range = [i >= tuned.index(True) for i in range(len(batches))]
    best = [best_rate([conditions[l]["stats"].get("jump_step_median") for l in c], [rate[l] for l in c])
            for c in cells]
    rows = _batch_rows(conditions, cells, batches, best, in_range)
    fitted = [r["best_label"] for r in rows if r["fitted"]]
    out = {"rule": RULE, "batches": rows, "fitted": fitted, "resolved": False,
           "method": "censored log-normal maximum likelihood over the best rate's seeds (scipy L-BFGS-B), as "
                     "critical_batch's; intervals from resampling seeds per batch x rate cell, the best rate "
                     "re-chosen in each resample", "small_batches": [], "verdict": NOT_RESOLVED}
    if len(fitted) < MIN_FITTED_BATCHES:
        out["fixed_lr_comparison"] = _comparison(fixed, None, NOT_RESOLVED)
        return out
    pool = [l for c, r in zip(cells, in_range) if r for l in c]  # every cell a resample may choose
    index, batch, steps, observed = _seeds(conditions, pool)
    counts, tokens, _, _ = _resampled_medians(index, batch, steps, observed, len(pool), N_FIT_RESAMPLES)
    groups = [[pool.index(l) for l in c] for c, r in zip(cells, in_range) if r]
    chosen = np.zeros((N_FIT_RESAMPLES, len(pool)), dtype=bool)
    for k in range(N_FIT_RESAMPLES):
        for g in groups:  # a batch's cells share its tokens per step: tokens order them as steps do
            i = best_rate(tokens[k, g], [rate[pool[j]] for j in g])
            if i is not None:
                chosen[k, g[i]] = True
    enough = chosen.sum(axis=1) >= MIN_FITTED_BATCHES
    weights = counts * chosen[:, index] * enough[:, None]
    point_row = np.array([pool[i] in fitted for i in index], dtype=float)
    (point,), (point_ok,) = fit_censored(np.log(batch), np.log(steps), observed, point_row[None, :],
                                         start=_start(conditions, fitted))
    thetas, converged = fit_censored(np.log(batch), np.log(steps), observed, weights, start=list(point))
    boot = np.exp(thetas[converged])
    s_min, b_crit = float(np.exp(point[0])), float(np.exp(point[1]))
    usable = int(converged.sum())
    method = INTERVAL_METHOD + ("" if usable == N_FIT_RESAMPLES else
                                f"; over the {usable} of {N_FIT_RESAMPLES} resamples with a converged fit of >= "
                                f"{MIN_FITTED_BATCHES} batches")
    for row in rows:
        for r in row["rates"]:
            r["n_chosen_resampled"] = int(chosen[:, pool.index(r["label"])].sum()) if r["label"] in pool else None
        row["n_resamples_none_defined"] = (int((~chosen[:, [pool.index(r["label"]) for r in row["rates"]]]
                                                .any(axis=1)).sum()) if row["in_fit_range"] else None)
    fitted_batches = [r["tokens_per_step"] for r in rows if r["fitted"]]
    b_crit_ci = _quantiles(boot[:, 1])
    out.update(resolved=True, converged=bool(point_ok),
               s_min=s_min, **_with_method("s_min_ci95", _quantiles(boot[:, 0]), method),
               b_crit=b_crit, **_with_method("b_crit_ci95", b_crit_ci, method),
               e_min=s_min * b_crit, **_with_method("e_min_ci95", _quantiles(boot[:, 0] * boot[:, 1]), method),
               sigma=float(max(np.exp(point[2]), MIN_SIGMA)),
               **_with_method("sigma_ci95", _quantiles(boot[:, 2]), method),
               fitted_range=[min(fitted_batches), max(fitted_batches)], n_seeds_fitted=int(point_row.sum()),
               n_censored_seeds_fitted=int(((point_row > 0) & ~observed).sum()), n_resamples=N_FIT_RESAMPLES,
               n_resamples_unfitted=int((~enough).sum()), n_resamples_not_converged=int((enough & ~converged).sum()))
    small = _small_batches(rows, fixed, boot, s_min, b_crit, PREDICTION_METHOD) if usable else []
    within = [s["within"] for s in small]
    verdict = (NOT_RESOLVED if not small else DOES_NOT if False in within else NOT_RESOLVED if None in within
               else DESCRIBES)
    out.update(small_batches=small, small_batches_below=(fixed or {}).get("e_min_batch"), verdict=verdict,
               fixed_lr_comparison=_comparison(fixed, b_crit_ci, verdict))
    return out
