"""Where "steps, not tokens" holds: McCandlish et al.'s critical batch fitted to the copy jump.

Steps S and examples E to a target trade off as (S/S_min - 1)(E/E_min - 1) = 1 (arXiv 1812.06162),
i.e. S(B) = S_min (1 + B_crit / B) with B_crit = E_min / S_min. Far below B_crit the jump follows
tokens (S ~ 1/B), far above it steps (S ~ S_min): the local slope d ln S / d ln B = -1 / (1 + B/B_crit).
We fit ln S* = ln S_min + ln(1 + B_crit/B) + noise (B in tokens per optimizer step) to every seed's jump
step, the seeds that never jumped entering as right-censored (a censored log-normal fit: the noise is
normal in ln S* with one spread for all batches; scipy's L-BFGS-B, critical_batch_fit.py), with 95%
intervals from resampling the seeds of each batch, and read each batch's regime from its local slope's
interval: steps govern where it lies in (-0.2, 0], tokens where it lies in [-1, -0.8), in between otherwise.
A batch where no seed jumped says nothing about where on the curve it lies, only that it lies beyond its
budget: it is kept out of the fit as a bound and checked against it (`censored`), never silently dropped.
Batches smaller than the one with the fewest tokens to the jump, where fewer examples per step cost more
examples in all, are outside what the model describes (its E grows with B): they are reported apart, with
their tokens to the jump. That starting batch is read from the outcome, so the rule is part of the
bootstrap (each resample re-applies it to its own medians), and the point fit from every possible start is
reported beside it (`fit_range_sensitivity`).
"""

from __future__ import annotations

import numpy as np

from grokcopy.analysis.survival import data_rng, km_median, median_lower_bound
from grokcopy.experiments.critical_batch_fit import MIN_SIGMA, fit_censored, fit_critical_batch

STEPS_GOVERN = (-0.2, 0.0)
TOKENS_GOVERN = (-1.0, -0.8)
MIN_FITTED_BATCHES = 2  # S_min and B_crit are two parameters: fewer batches leave the curve undetermined
N_FIT_RESAMPLES = 400
RULE = "the fit starts at the batch with the fewest median tokens to the jump"
INTERVAL_METHOD = (f"percentile bootstrap over seeds ({N_FIT_RESAMPLES} resamples), resampled per batch, fit-range "
                   f"rule ({RULE}) re-applied in each resample; nominal 95%, coverage not guaranteed")


def local_slope(batch: float, b_crit: float) -> float:
    return -1.0 / (1.0 + batch / b_crit)


def regime(ci) -> str:
    if ci is None:
        return "not resolved"
    low, high = ci
    if STEPS_GOVERN[0] < low and high <= STEPS_GOVERN[1]:
        return "steps govern"
    if TOKENS_GOVERN[0] <= low and high < TOKENS_GOVERN[1]:
        return "tokens govern"
    return "in between / not resolved"


def fit_range(tokens, bounds, jumped) -> tuple[int, list[bool], list[bool]]:
    """The fit-range rule over batches in increasing order: (edge, below, fitted). `tokens[i]`: batch i's
    median tokens to the jump (None: undefined), `bounds[i]` what is known of it then (a lower bound, or
    None), `jumped[i]` whether any of its seeds jumped. The edge is the batch with the fewest median tokens
    (the smallest on a tie; the first batch when no median is defined); a smaller batch is `below` (outside
    the model, whose E grows with B) when its median tokens are defined (so more than the edge's) or known to
    exceed the edge's; every other batch where a seed jumped is `fitted`."""
    known = [i for i, t in enumerate(tokens) if t is not None]
    edge = min(known, key=lambda i: (tokens[i], i)) if known else 0
    below = [bool(known) and i < edge and (tokens[i] is not None or (bounds[i] or 0) >= tokens[edge])
             for i in range(len(tokens))]
    return edge, below, [bool(j) and not b for j, b in zip(jumped, below)]


def _quantiles(samples) -> list[float] | None:
    if len(samples) == 0:
        return None
    low, high = np.quantile(np.asarray(samples, dtype=float), [0.025, 0.975])
    return [float(low), float(high)]


def _with_method(name: str, interval, method: str) -> dict:
    return {name: interval, f"{name}_method": method, f"{name}_coverage": None}


def _seeds(conditions: dict, labels: list[str]) -> tuple[np.ndarray, ...]:
    """Every seed of `labels` as arrays (batch index, tokens per step, step, observed)."""
    rows = [(i, conditions[l]["config"]["tokens_per_step"], s.get("jump_censored_at") if s.get("jump_step") is None
             else s["jump_step"], s.get("jump_step") is not None)
            for i, l in enumerate(labels) for s in (r["stats"] for r in conditions[l]["runs"])]
    rows = [r for r in rows if r[2]]
    index, batch, steps, observed = (np.array(v) for v in zip(*rows))
    return index.astype(int), batch.astype(float), steps.astype(float), observed.astype(bool)


def _resampled_medians(index, batch, steps, observed, n_groups: int, n: int) -> tuple[np.ndarray, ...]:
    """Resample the seeds of each group (every group keeps its number of seeds): (counts [n, seeds], each
    resample's per-group KM median tokens to the jump [n, groups] (NaN: undefined), the lower bound where it
    is undefined [n, groups] (NaN: none), whether any seed jumped [n, groups])."""
    rng = data_rng(batch, steps, observed)
    counts = np.zeros((n, index.size))
    tokens = np.full((n, n_groups), np.nan)
    bounds = np.full((n, n_groups), np.nan)
    jumped = np.zeros((n, n_groups), dtype=bool)
    cache: dict = {}
    for b in range(n_groups):
        members = np.flatnonzero(index == b)
        if members.size == 0:
            continue
        picks = members[rng.integers(0, members.size, size=(n, members.size))]
        np.add.at(counts, (np.arange(n)[:, None], picks), 1)
        for k, p in enumerate(np.sort(picks, axis=1)):  # a resample is a multiset: repeats are cached
            key = p.tobytes()
            if key not in cache:
                t, o = steps[p] * batch[p], observed[p]
                median = km_median(t, o)
                bound = None if median is not None else median_lower_bound(t, o)
                cache[key] = (np.nan if median is None else median, np.nan if bound is None else bound, o.any())
            tokens[k, b], bounds[k, b], jumped[k, b] = cache[key]
    return counts, tokens, bounds, jumped


def _resampled_fitted(index, batch, steps, observed, n_batches: int, n: int) -> tuple[np.ndarray, ...]:
    """Resample the seeds of each batch (every batch keeps its number of seeds) and re-apply the fit-range
    rule to each resample's per-batch KM medians: (counts [n, seeds], fitted [n, batches], edge [n])."""
    counts, tokens, bounds, jumped = _resampled_medians(index, batch, steps, observed, n_batches, n)
    fitted, edges = np.zeros((n, n_batches), dtype=bool), np.zeros(n, dtype=int)
    for k in range(n):
        edges[k], _, mask = fit_range([None if np.isnan(t) else t for t in tokens[k]],
                                      [None if np.isnan(v) else v for v in bounds[k]], jumped[k])
        fitted[k] = mask
    return counts, fitted, edges


def _start(conditions: dict, fitted: list[str]) -> list[float] | None:
    defined = [l for l in fitted if conditions[l]["stats"].get("jump_step_median") is not None]
    guess = fit_critical_batch([conditions[l]["config"]["tokens_per_step"] for l in defined],
                               [conditions[l]["stats"]["jump_step_median"] for l in defined])  # the medians' fit
    return [float(np.log(guess[0])), float(np.log(guess[1])), float(np.log(0.3))] if guess else None


def fit_range_sensitivity(conditions: dict, labels: list[str]) -> list[dict]:
    """How the fit moves with where it starts: per possible starting batch (the smallest up to the last
    that leaves MIN_FITTED_BATCHES batches where a seed jumped), the censored fit over every batch from it
    up where a seed jumped (`fitted`): `b_crit`, `s_min`, `e_min`, `sigma` (point fits), `converged`, and
    `chosen` for the start the rule picks (`fit_range`). A start where no seed jumped fits as the next one."""
    labels = sorted(labels, key=lambda l: conditions[l]["config"]["tokens_per_step"])
    stats = [conditions[l]["stats"] for l in labels]
    chosen = labels[fit_range([s.get("jump_tokens_median") for s in stats], [s.get("jump_tokens_lower_bound")
                                                                             for s in stats],
                              [s.get("n_jumped") for s in stats])[0]]
    rows = []
    for i, first in enumerate(labels):
        fitted = [l for l in labels[i:] if conditions[l]["stats"].get("n_jumped")]
        if len(fitted) < MIN_FITTED_BATCHES:
            break
        index, batch, steps, observed = _seeds(conditions, fitted)
        (theta,), (ok,) = fit_censored(np.log(batch), np.log(steps), observed, np.ones(index.size),
                                       start=_start(conditions, fitted))
        s_min, b_crit = float(np.exp(theta[0])), float(np.exp(theta[1]))
        rows.append({"start": first, "tokens_per_step": conditions[first]["config"]["tokens_per_step"],
                     "fitted": fitted, "b_crit": b_crit, "s_min": s_min, "e_min": s_min * b_crit,
                     "sigma": float(max(np.exp(theta[2]), MIN_SIGMA)), "converged": bool(ok),
                     "chosen": first == chosen})
    return rows


def critical_batch(conditions: dict, labels: list[str], propagate_fit_range: bool = True) -> dict:
    """The fit over a batch family: `s_min`, `b_crit`, `e_min` (tokens) and `sigma` (the seeds' spread in
    ln S*) with 95% intervals, and per batch the local slope with its interval and regime. Every seed of the
    batches where at least one jumped enters (`fitted`), from the batch with the fewest median tokens to the
    jump up (`e_min_batch`; smaller batches, which needed more tokens, are `below_fewest_tokens`: the model's
    E grows with B, so it does not describe them); a batch where none jumped is listed under `censored`
    with the step by which more than half its seeds were seen without a jump and what the fit predicts there
    (`below_model`: that step lies above the prediction's interval, i.e. the model fails at that batch).
    `resolved` False with fewer than MIN_FITTED_BATCHES fitted batches.

    The starting batch is read from the outcome, so the intervals carry it: each bootstrap resample of the
    seeds re-applies the rule (`fit_range`) to its own KM medians before fitting (`e_min_batch_resampled`
    counts where it started); `propagate_fit_range=False` fixes the point's range instead (for comparison).
    Resamples that leave fewer than MIN_FITTED_BATCHES batches (`n_resamples_unfitted`) or whose fit did not
    converge (`n_resamples_not_converged`) are left out of the intervals. `fit_range_sensitivity`: the point
    fit from every possible starting batch. Every interval has `<name>_method` and `<name>_coverage` (None:
    a percentile bootstrap, nominal 95% not guaranteed)."""
    labels = sorted(labels, key=lambda l: conditions[l]["config"]["tokens_per_step"])
    all_batches = [conditions[l]["config"]["tokens_per_step"] for l in labels]
    stats = [conditions[l]["stats"] for l in labels]
    out = {"conditions": labels, "tokens_per_step": all_batches, "jump_step_median": [s.get("jump_step_median")
                                                                                       for s in stats],
           "resolved": False, "fit_range_rule": RULE,
           "method": "censored log-normal maximum likelihood over seeds (scipy L-BFGS-B); intervals from "
                     "resampling seeds per batch, the fit-range rule re-applied in each resample"}
    # The model's E(B) = E_min (1 + B / B_crit) grows with B: where the tokens to the jump instead grow as the
    # batch shrinks, the model does not apply (a fixed learning rate too noisy for the small batches). So the
    # fit starts at the batch with the fewest median tokens to the jump; the smaller ones are reported apart.
    tokens = [s.get("jump_tokens_median") for s in stats]
    bound = [s.get("jump_tokens_lower_bound") for s in stats]
    edge, below_mask, fitted_mask = fit_range(tokens, bound, [s.get("n_jumped") for s in stats])
    below = [l for l, m in zip(labels, below_mask) if m]
    fitted = [l for l, m in zip(labels, fitted_mask) if m]
    out.update(fitted=fitted, e_min_batch=labels[edge],
               below_fewest_tokens=[{"label": l, "tokens_per_step": b, "jump_tokens_median": t,
                                     "jump_tokens_lower_bound": lb, "n_jumped": s.get("n_jumped"),
                                     "n_runs": s.get("n_runs")}
                                    for l, b, t, lb, s, m in zip(labels, all_batches, tokens, bound, stats, below_mask)
                                    if m],
               censored=[{"label": l, "tokens_per_step": b, "steps_without_jump": s.get("jump_step_lower_bound")}
                         for l, b, s in zip(labels, all_batches, stats) if l not in fitted and l not in below])
    if len(fitted) < MIN_FITTED_BATCHES:
        return out
    jumped = [l for l in labels if conditions[l]["stats"].get("n_jumped")]  # the batches any resample can fit
    index, batch, steps, observed = _seeds(conditions, jumped)
    jumped_index = [labels.index(l) for l in jumped]  # into `labels`, for the rule
    counts, fitted_rows, edges = _resampled_fitted(index, batch, steps, observed, len(jumped), N_FIT_RESAMPLES)
    if not propagate_fit_range:
        fitted_rows[:] = np.array([l in fitted for l in jumped])
        edges[:] = jumped.index(labels[edge]) if labels[edge] in jumped else 0
    point_row = np.array([jumped[i] in fitted for i in index], dtype=float)
    enough = fitted_rows.sum(axis=1) >= MIN_FITTED_BATCHES
    weights = counts * fitted_rows[:, index] * enough[:, None]
    (point,), (point_ok,) = fit_censored(np.log(batch), np.log(steps), observed, point_row[None, :],
                                         start=_start(conditions, fitted))
    thetas, converged = fit_censored(np.log(batch), np.log(steps), observed, weights, start=list(point))
    boot = np.exp(thetas[converged])
    log_s_min, log_b_crit, log_sigma = point
    s_min, b_crit = float(np.exp(log_s_min)), float(np.exp(log_b_crit))
    usable = int(converged.sum())
    method = INTERVAL_METHOD if propagate_fit_range else INTERVAL_METHOD.replace(
        "re-applied in each resample", "fixed at the point estimate's range")
    if usable < N_FIT_RESAMPLES:
        method += (f"; over the {usable} of {N_FIT_RESAMPLES} resamples with a converged fit of >= "
                   f"{MIN_FITTED_BATCHES} batches")
    batches = sorted({int(b) if float(b).is_integer() else float(b) for b, i in zip(batch, index)
                      if jumped[i] in fitted})
    out.update(resolved=True, converged=bool(point_ok),
               s_min=s_min, **_with_method("s_min_ci95", _quantiles(boot[:, 0]), method),
               b_crit=b_crit, **_with_method("b_crit_ci95", _quantiles(boot[:, 1]), method),
               e_min=s_min * b_crit, **_with_method("e_min_ci95", _quantiles(boot[:, 0] * boot[:, 1]), method),
               sigma=float(max(np.exp(log_sigma), MIN_SIGMA)),
               **_with_method("sigma_ci95", _quantiles(boot[:, 2]), method),
               fitted_range=[min(batches), max(batches)], n_seeds_fitted=int(point_row.sum()),
               n_censored_seeds_fitted=int(((point_row > 0) & ~observed).sum()), n_resamples=N_FIT_RESAMPLES,
               n_resamples_unfitted=int((~enough).sum()),
               n_resamples_not_converged=int((enough & ~converged).sum()),
               e_min_batch_resampled={labels[jumped_index[e]]: int((edges[enough] == e).sum())
                                      for e in sorted(set(edges[enough].tolist()))},
               fit_range_sensitivity=fit_range_sensitivity(conditions, labels))
    out["local_slopes"] = [{"tokens_per_step": b, "slope": local_slope(b, b_crit),
                            "ci95": (interval := _quantiles(-1.0 / (1.0 + b / boot[:, 1]))),
                            "ci95_method": method, "ci95_coverage": None, "regime": regime(interval)}
                           for b in batches]
    for row in out["censored"]:
        predicted = _quantiles(boot[:, 0] * (1 + boot[:, 1] / row["tokens_per_step"]))
        row.update(predicted_jump_step=s_min * (1 + b_crit / row["tokens_per_step"]),
                   **_with_method("predicted_ci95", predicted, method),
                   below_model=bool(row["steps_without_jump"] is not None and predicted is not None
                                    and row["steps_without_jump"] > predicted[1]))
    return out
