"""The fits behind experiments/critical_batch.py: McCandlish's S(B) = S_min (1 + B_crit / B) to seeds' jump steps.

`fit_critical_batch`: least squares in ln S to one step per batch (a grid over B_crit, S_min closed-form),
the censored fit's starting point. `fit_censored`: the censored log-normal maximum likelihood over every
seed, by scipy.optimize.minimize (L-BFGS-B, analytic gradient, ln B_crit and ln sigma bounded), one fit per
row of bootstrap weights, each with a convergence check: the projected gradient at the end is small
(GRADIENT_TOLERANCE per unit of weight), so a fit reaches the optimum rather than stopping after a fixed
number of steps.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_ndtr

MIN_SIGMA = 0.01  # ln-steps: below it one seed per batch would fit exactly and the likelihood diverge
GRADIENT_TOLERANCE = 1e-3  # converged: projected gradient (inf-norm) <= this x the total weight of the fit
B_CRIT_RANGE = 1e3  # ln B_crit is kept within 1e-3..1e3 x the fitted batches' range


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


def _negative_log_likelihood(theta, lb, lt, seen, w):
    """The weighted censored log-normal negative log-likelihood and its gradient in (ln S_min, ln B_crit,
    ln sigma); an observed seed contributes its normal density in ln S (constant dropped), a censored one
    -ln P(ln S > its last step)."""
    a, c, ls = theta
    sigma = np.exp(ls)
    shift = c - lb
    mu = a + np.logaddexp(0.0, shift)  # ln S_min + ln(1 + B_crit / B)
    z = (lt - mu) / sigma
    tail = log_ndtr(-z)  # ln P(Z > z)
    nll = np.where(seen, 0.5 * z * z + ls, -tail)
    ratio = np.exp(-0.5 * z * z - 0.5 * np.log(2 * np.pi) - tail)  # phi(z) / P(Z > z): d(-tail)/dz
    d_z = np.where(seen, z, ratio)  # d nll / dz
    d_mu = -d_z / sigma
    d_ls = np.where(seen, 1.0 - z * z, -ratio * z)
    slope = 0.5 * (1.0 + np.tanh(0.5 * shift))  # d softplus / d shift (sigmoid), overflow-free
    grad = np.array([np.dot(w, d_mu), np.dot(w, d_mu * slope), np.dot(w, d_ls)])
    return float(np.dot(w, nll)), grad


def _projected_gradient(theta, grad, bounds) -> float:
    """Inf-norm of the gradient, leaving out components that push a parameter against its active bound."""
    out = grad.copy()
    for i, (low, high) in enumerate(bounds):
        if low is not None and theta[i] <= low + 1e-9 and grad[i] > 0:
            out[i] = 0.0
        if high is not None and theta[i] >= high - 1e-9 and grad[i] < 0:
            out[i] = 0.0
    return float(np.max(np.abs(out)))


def fit_censored(log_batch, log_steps, observed, weights, start=None,
                 max_iterations: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood (ln S_min, ln B_crit, ln sigma) of ln S = ln S_min + ln(1 + B_crit/B) + N(0, sigma^2),
    a censored run contributing P(ln S > its last step); one fit per row of `weights` [fits, runs] (the
    bootstrap's counts; a run of weight 0 is left out of that fit). Returns (thetas [fits, 3], converged
    [fits] bool). ln B_crit is kept within 1e-3..1e3 x the range of the batches the row fits, sigma >=
    MIN_SIGMA. A row with no weight gives NaN, not converged; so does one whose optimizer stopped (after
    `max_iterations`) with a gradient above tolerance."""
    lb, lt = np.asarray(log_batch, dtype=float), np.asarray(log_steps, dtype=float)
    seen = np.asarray(observed, dtype=bool)
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    if start is None:
        start = [float(lt[seen].min()) if seen.any() else float(lt.max()), float(lb.mean()), np.log(0.3)]
    thetas, converged = np.full((w.shape[0], 3), np.nan), np.zeros(w.shape[0], dtype=bool)
    for k, row in enumerate(w):
        used = row > 0
        if not used.any():
            continue
        args = (lb[used], lt[used], seen[used], row[used])
        span = (float(args[0].min() - np.log(B_CRIT_RANGE)), float(args[0].max() + np.log(B_CRIT_RANGE)))
        bounds = [(None, None), span, (float(np.log(MIN_SIGMA)), None)]
        x0 = np.clip(np.asarray(start, dtype=float), [-np.inf, span[0], bounds[2][0]], [np.inf, span[1], np.inf])
        result = minimize(_negative_log_likelihood, x0, args=args, jac=True, method="L-BFGS-B", bounds=bounds,
                          options={"maxiter": max_iterations, "ftol": 1e-12, "gtol": 1e-8})
        _, grad = _negative_log_likelihood(result.x, *args)
        thetas[k] = result.x
        # the check is the gradient, not result.success: L-BFGS-B also ends "ABNORMAL" when its line search
        # cannot improve on an optimum already found to rounding error
        converged[k] = bool(np.all(np.isfinite(result.x))) and \
            _projected_gradient(result.x, grad, bounds) <= GRADIENT_TOLERANCE * row[used].sum()
    return thetas, converged
