"""Where "steps, not tokens" holds: McCandlish et al.'s critical batch fitted to the copy jump.

Steps S and examples E to a target trade off as (S/S_min - 1)(E/E_min - 1) = 1 (arXiv 1812.06162),
i.e. S(B) = S_min (1 + B_crit / B) with B_crit = E_min / S_min. Far below B_crit the jump follows
tokens (S ~ 1/B), far above it steps (S ~ S_min): the local slope d ln S / d ln B = -1 / (1 + B/B_crit).
We fit ln S* = ln S_min + ln(1 + B_crit/B) to the conditions' Kaplan-Meier median jump steps (B in
tokens per optimizer step), with 95% intervals from the conditions' bootstrap medians, and read each
batch's regime from its local slope's interval: steps govern where it lies in (-0.2, 0], tokens where
it lies in [-1, -0.8), in between otherwise. A batch whose median is undefined (most seeds never jumped
within the budget) is kept as a bound and checked against the fit, never silently dropped.
"""

from __future__ import annotations

import numpy as np

STEPS_GOVERN = (-0.2, 0.0)
TOKENS_GOVERN = (-1.0, -0.8)


def fit_critical_batch(batches, steps) -> tuple[float, float] | None:
    """(S_min, B_crit) minimising the squared error in ln S over a log grid of B_crit (S_min is then
    closed-form). None with fewer than two batch sizes or a non-positive step."""
    b = np.asarray(batches, dtype=float)
    s = np.asarray(steps, dtype=float)
    if b.size < 2 or np.any(s <= 0) or np.any(~np.isfinite(s)):
        return None
    grid = np.geomspace(b.min() / 1e3, b.max() * 1e3, 1201)
    shape = np.log1p(grid[:, None] / b[None, :])  # [grid, conditions]
    log_s_min = (np.log(s)[None, :] - shape).mean(axis=1)
    error = ((np.log(s)[None, :] - shape - log_s_min[:, None]) ** 2).sum(axis=1)
    best = int(np.argmin(error))
    return float(np.exp(log_s_min[best])), float(grid[best])


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


def critical_batch(conditions: dict, labels: list[str], max_undefined: float = 0.05) -> dict:
    """The fit over a batch family: `s_min`, `b_crit`, `e_min` (tokens) with 95% intervals, and per batch
    the local slope with its interval and regime. The fit uses the batches whose median jump step is defined
    (`fitted`); a batch where most seeds never jumped is no point on the curve but a bound: it is listed under
    `censored` with the step by which more than half its seeds were seen without a jump and what the fit
    predicts there (`below_model`: that step lies above the prediction's interval and fewer than 2.5% of the
    batch's own bootstrap resamples have a median inside it, i.e. the model fails at that batch). `resolved` False with fewer than two
    defined medians or when more than `max_undefined` of the bootstrap resamples lack one."""
    labels = sorted(labels, key=lambda l: conditions[l]["config"]["tokens_per_step"])
    all_batches = [conditions[l]["config"]["tokens_per_step"] for l in labels]
    all_medians = [conditions[l]["stats"].get("jump_step_median") for l in labels]
    out = {"conditions": labels, "tokens_per_step": all_batches, "jump_step_median": all_medians, "resolved": False}
    fitted = [l for l, m in zip(labels, all_medians) if m is not None]
    censored = [l for l in labels if l not in fitted]
    out.update(fitted=fitted, censored=[{"label": l, "tokens_per_step": conditions[l]["config"]["tokens_per_step"],
                                         "steps_without_jump": conditions[l]["stats"].get("jump_step_lower_bound")}
                                        for l in censored])
    if len(fitted) < 2:
        return out
    batches = [conditions[l]["config"]["tokens_per_step"] for l in fitted]
    point = fit_critical_batch(batches, [conditions[l]["stats"]["jump_step_median"] for l in fitted])
    samples = np.vstack([conditions[l]["samples"]["jump_step"] for l in fitted])  # [conditions, n]
    usable = ~np.isnan(samples).any(axis=0)
    if point is None or usable.mean() < 1 - max_undefined:
        return out
    fits = np.array([f for f in (fit_critical_batch(batches, samples[:, k]) for k in np.flatnonzero(usable))
                     if f is not None])

    def ci(values):
        low, high = np.quantile(values, [0.025, 0.975])
        return [float(low), float(high)]

    s_min, b_crit = point
    out.update(resolved=True, s_min=s_min, s_min_ci95=ci(fits[:, 0]), b_crit=b_crit, b_crit_ci95=ci(fits[:, 1]),
               e_min=s_min * b_crit, e_min_ci95=ci(fits[:, 0] * fits[:, 1]),
               fitted_range=[min(batches), max(batches)])
    slopes = []
    for batch in batches:
        interval = ci(-1.0 / (1.0 + batch / fits[:, 1]))
        slopes.append({"tokens_per_step": batch, "slope": local_slope(batch, b_crit), "ci95": interval,
                       "regime": regime(interval)})
    out["local_slopes"] = slopes
    for row in out["censored"]:
        predicted = fits[:, 0] * (1 + fits[:, 1] / row["tokens_per_step"])
        high = np.quantile(predicted, 0.975)
        own = conditions[row["label"]]["samples"]["jump_step"]  # the censored batch's own resampled medians
        consistent = float(np.mean(~np.isnan(own) & (np.nan_to_num(own, nan=np.inf) <= high)))
        row.update(predicted_jump_step=s_min * (1 + b_crit / row["tokens_per_step"]), predicted_ci95=ci(predicted),
                   share_of_resamples_consistent=consistent,
                   below_model=bool(row["steps_without_jump"] is not None and row["steps_without_jump"] > high
                                    and consistent < 0.025))
    return out
