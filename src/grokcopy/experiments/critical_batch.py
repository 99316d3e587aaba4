"""Where "steps, not tokens" holds: McCandlish et al.'s critical batch fitted to the copy jump.

Steps S and examples E to a target trade off as (S/S_min - 1)(E/E_min - 1) = 1 (arXiv 1812.06162),
i.e. S(B) = S_min (1 + B_crit / B) with B_crit = E_min / S_min. Far below B_crit the jump follows
tokens (S ~ 1/B), far above it steps (S ~ S_min): the local slope d ln S / d ln B = -1 / (1 + B/B_crit).
We fit ln S* = ln S_min + ln(1 + B_crit/B) + noise (B in tokens per optimizer step) to every seed's jump
step, the seeds that never jumped entering as right-censored (a censored log-normal fit: the noise is
normal in ln S* with one spread for all batches), with 95% intervals from resampling the seeds of each
batch, and read each batch's regime from its local slope's interval: steps govern where it lies in
(-0.2, 0], tokens where it lies in [-1, -0.8), in between otherwise. A batch where no seed jumped says
nothing about where on the curve it lies, only that it lies beyond its budget: it is kept out of the fit
as a bound and checked against it (`censored`), never silently dropped. Batches smaller than the one with
the fewest tokens to the jump, where fewer examples per step cost more examples in all, are outside what the
model describes (its E grows with B): they are reported apart, with their tokens to the jump.
"""

from __future__ import annotations

import numpy as np

from grokcopy.analysis.survival import data_rng
from grokcopy.analysis.survival import interval as ci  # the fits are finite: a plain percentile interval

STEPS_GOVERN = (-0.2, 0.0)
TOKENS_GOVERN = (-1.0, -0.8)
MIN_FITTED_BATCHES = 2  # S_min and B_crit are two parameters: fewer batches leave the curve undetermined


def fit_critical_batch(batches, steps) -> tuple[float, float] | None:
    """(S_min, B_crit) minimising the squared error in ln S over a log grid of B_crit (S_min is then
    closed-form): the fit to one step per batch (the censored fit's starting point). None with fewer than two
    batch sizes or a non-positive step."""
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


N_FIT_RESAMPLES = 400
MIN_SIGMA = 0.01  # ln-steps: below it one seed per batch would fit exactly and the likelihood diverge


def fit_censored(log_batch, log_steps, observed, weights, iterations: int = 1500, start=None) -> np.ndarray:
    """Maximum-likelihood (ln S_min, ln B_crit, ln sigma) of ln S = ln S_min + ln(1 + B_crit/B) + N(0, sigma^2),
    a censored run contributing P(ln S > its last step); one fit per row of `weights` [fits, runs] (the
    bootstrap's counts), all at once. ln B_crit is kept within 1e-3..1e3 x the batches' range."""
    import torch

    lb, lt = torch.tensor(log_batch, dtype=torch.float64), torch.tensor(log_steps, dtype=torch.float64)
    seen = torch.tensor(observed, dtype=torch.bool)
    w = torch.tensor(np.atleast_2d(weights), dtype=torch.float64)
    low, high = float(lb.min()) - np.log(1e3), float(lb.max()) + np.log(1e3)
    start = start or [float(lt[seen].min()) if seen.any() else float(lt.max()), float(lb.mean()), np.log(0.3)]
    theta = torch.tensor(start, dtype=torch.float64).repeat(w.shape[0], 1).requires_grad_()
    optimizer = torch.optim.Adam([theta], lr=0.05)
    for _ in range(iterations):
        sigma = theta[:, 2:3].exp().clamp_min(MIN_SIGMA)
        z = (lt - theta[:, :1] - torch.nn.functional.softplus(theta[:, 1:2] - lb)) / sigma
        nll = torch.where(seen, 0.5 * z**2 + sigma.log(), -torch.special.log_ndtr(-z))
        optimizer.zero_grad()
        (w * nll).sum().backward()
        optimizer.step()
        with torch.no_grad():
            theta[:, 1].clamp_(low, high)
            theta[:, 2].clamp_(min=np.log(MIN_SIGMA))
    return theta.detach().numpy()


def critical_batch(conditions: dict, labels: list[str]) -> dict:
    """The fit over a batch family: `s_min`, `b_crit`, `e_min` (tokens) and `sigma` (the seeds' spread in
    ln S*) with 95% intervals, and per batch the local slope with its interval and regime. Every seed of the
    batches where at least one jumped enters (`fitted`), from the batch with the fewest median tokens to the
    jump up (`e_min_batch`; smaller batches, which needed more tokens, are `below_fewest_tokens`: the model's
    E grows with B, so it does not describe them); a batch where none jumped is listed under `censored`
    with the step by which more than half its seeds were seen without a jump and what the fit predicts there
    (`below_model`: that step lies above the prediction's interval, i.e. the model fails at that batch).
    `resolved` False with fewer than MIN_FITTED_BATCHES fitted batches."""
    labels = sorted(labels, key=lambda l: conditions[l]["config"]["tokens_per_step"])
    all_batches = [conditions[l]["config"]["tokens_per_step"] for l in labels]
    medians = [conditions[l]["stats"].get("jump_step_median") for l in labels]
    out = {"conditions": labels, "tokens_per_step": all_batches, "jump_step_median": medians, "resolved": False,
           "method": "censored log-normal maximum likelihood over seeds; intervals from resampling seeds per batch"}
    # The model's E(B) = E_min (1 + B / B_crit) grows with B: where the tokens to the jump instead grow as the
    # batch shrinks, the model does not apply (a fixed learning rate too noisy for the small batches). So the
    # fit starts at the batch with the fewest median tokens to the jump; the smaller ones are reported apart.
    tokens = {l: conditions[l]["stats"].get("jump_tokens_median") for l in labels}
    known = [l for l in labels if tokens[l] is not None]
    edge = min(known, key=lambda l: tokens[l]) if known else labels[0]
    edge_batch = conditions[edge]["config"]["tokens_per_step"]
    bound = {l: conditions[l]["stats"].get("jump_tokens_lower_bound") for l in labels}
    below = [l for l in labels if conditions[l]["config"]["tokens_per_step"] < edge_batch and known  # needed more
             and (tokens[l] is not None or (bound[l] or 0) >= tokens[edge])]
    fitted = [l for l in labels if conditions[l]["stats"].get("n_jumped") and l not in below]
    out.update(fitted=fitted, e_min_batch=edge,
               below_fewest_tokens=[{"label": l, "tokens_per_step": conditions[l]["config"]["tokens_per_step"],
                                     "jump_tokens_median": tokens[l],
                                     "jump_tokens_lower_bound": bound[l],
                                     "n_jumped": conditions[l]["stats"].get("n_jumped"),
                                     "n_runs": conditions[l]["stats"].get("n_runs")} for l in below],
               censored=[{"label": l, "tokens_per_step": conditions[l]["config"]["tokens_per_step"],
                          "steps_without_jump": conditions[l]["stats"].get("jump_step_lower_bound")}
                         for l in labels if l not in fitted and l not in below])
    if len(fitted) < MIN_FITTED_BATCHES:
        return out
    runs = [(conditions[l]["config"]["tokens_per_step"], r["stats"]) for l in fitted for r in conditions[l]["runs"]]
    runs = [(b, s["jump_step"] if s.get("jump_step") is not None else s.get("jump_censored_at"),
             s.get("jump_step") is not None) for b, s in runs]
    runs = [(b, t, o) for b, t, o in runs if t]
    batch, steps, observed = (np.array(v) for v in zip(*runs))
    rng = data_rng(batch, steps, observed)
    counts = np.zeros((N_FIT_RESAMPLES, len(runs)))
    for b in np.unique(batch):  # resample the seeds of each batch: every batch keeps its number of seeds
        members = np.flatnonzero(batch == b)
        picks = members[rng.integers(0, members.size, size=(N_FIT_RESAMPLES, members.size))]
        np.add.at(counts, (np.arange(N_FIT_RESAMPLES)[:, None], picks), 1)
    defined = [l for l in fitted if conditions[l]["stats"].get("jump_step_median") is not None]
    guess = fit_critical_batch([conditions[l]["config"]["tokens_per_step"] for l in defined],
                               [conditions[l]["stats"]["jump_step_median"] for l in defined])  # the medians' fit
    start = [float(np.log(guess[0])), float(np.log(guess[1])), float(np.log(0.3))] if guess else None
    thetas = fit_censored(np.log(batch), np.log(steps), observed, np.vstack([np.ones(len(runs)), counts]),
                          start=start)
    (log_s_min, log_b_crit, log_sigma), boot = thetas[0], np.exp(thetas[1:])

    s_min, b_crit = float(np.exp(log_s_min)), float(np.exp(log_b_crit))
    batches = sorted({int(b) if float(b).is_integer() else float(b) for b in batch})
    out.update(resolved=True, s_min=s_min, s_min_ci95=ci(boot[:, 0]), b_crit=b_crit, b_crit_ci95=ci(boot[:, 1]),
               e_min=s_min * b_crit, e_min_ci95=ci(boot[:, 0] * boot[:, 1]),
               sigma=float(max(np.exp(log_sigma), MIN_SIGMA)), sigma_ci95=ci(boot[:, 2]),
               fitted_range=[min(batches), max(batches)], n_seeds_fitted=len(runs),
               n_censored_seeds_fitted=int((~observed.astype(bool)).sum()))
    out["local_slopes"] = [{"tokens_per_step": b, "slope": local_slope(b, b_crit),
                            "ci95": (interval := ci(-1.0 / (1.0 + b / boot[:, 1]))), "regime": regime(interval)}
                           for b in batches]
    for row in out["censored"]:
        predicted = boot[:, 0] * (1 + boot[:, 1] / row["tokens_per_step"])
        row.update(predicted_jump_step=s_min * (1 + b_crit / row["tokens_per_step"]), predicted_ci95=ci(predicted),
                   below_model=bool(row["steps_without_jump"] is not None
                                    and row["steps_without_jump"] > np.quantile(predicted, 0.975)))
    return out
