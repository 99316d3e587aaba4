"""Statistics over seeds of a landmark some runs never reach: medians and intervals that say their coverage.

"When did copying jump?" over seeds is a time-to-event question with censoring: a run that stopped
before it jumped says "later than its last step", not "never" and not "missing"; and a landmark read
from analyses some steps apart is only known to lie between two of them. Dropping or rounding either
biases the answer, so every landmark here is a pair of bounds [lower, upper] per run (equal when it is
known exactly, upper = inf when the run never got there).

- The median is the Kaplan-Meier median (scipy.stats.ecdf) of the point estimates, with one stated
  convention: where the estimated share still waiting is exactly one half over a stretch, the median
  is the middle of that stretch (as R's survfit), which for complete data is the ordinary sample median.
  It is undefined (None) when fewer than half can be said to have reached the landmark.
- The interval is the distribution-free order-statistic interval for the median [X_(r), X_(n+1-r)],
  whose coverage is exactly P(r <= Binomial(n, 1/2) <= n - r) for continuous times; the bounds make it
  conservative under censoring (X_(r) is at least the r-th smallest lower bound, X_(n+1-r) at most the
  (n+1-r)-th smallest upper bound). The narrowest symmetric pair reaching 95% is used; with fewer than 6
  seeds none does, and the interval is the sample range labelled with what it covers (87.5% at 4 seeds,
  93.75% at 5). Every interval comes with `_method` and `_coverage`.
- Rates get the Clopper-Pearson interval (coverage >= 95% at every n), a mean the Student-t interval.
- The percentile bootstrap over seeds remains only where nothing exact exists (a slope across
  conditions, the critical-batch fit); its coverage is nominal and says so (`_coverage` None).
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import stats

N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0  # fixed: a report regenerated from the same histories gives the same intervals
LEVEL = 0.95
ORDER_STATISTIC = "distribution-free order-statistic interval for the median (exact binomial coverage{})"
BOOTSTRAP = "percentile bootstrap over seeds (coverage nominal, not guaranteed at few seeds)"


def km_median(times, observed) -> float | None:
    """Kaplan-Meier median of event times; `observed[i]` False means run i was censored at `times[i]`.

    Midpoint convention where the curve sits at exactly 0.5 (for complete data: the sample median);
    None when the curve never reaches 0.5."""
    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    if not observed.any():
        return None
    curve = stats.ecdf(stats.CensoredData(uncensored=times[observed], right=times[~observed])).sf
    q, p = curve.quantiles, curve.probabilities
    below = np.flatnonzero(p <= 0.5 + 1e-12)
    if below.size == 0:
        return None
    i = below[0]
    if abs(p[i] - 0.5) > 1e-12:
        return float(q[i])
    later = np.flatnonzero(p < p[i] - 1e-12)  # the next event, where the curve leaves 0.5
    return float((q[i] + q[later[0]]) / 2) if later.size else float(q[i])


def order_statistic_rank(n: int, level: float = LEVEL) -> tuple[int, float]:
    """(r, coverage): the largest r with P(r <= Binomial(n, 1/2) <= n - r) >= level, so that
    [X_(r), X_(n+1-r)] covers the median with that probability; r = 1 (the sample range) with its
    smaller coverage when no r reaches `level`."""
    best = (1, float(stats.binom.cdf(n - 1, n, 0.5) - stats.binom.cdf(0, n, 0.5)))
    for r in range(2, n // 2 + 1):
        coverage = float(stats.binom.cdf(n - r, n, 0.5) - stats.binom.cdf(r - 1, n, 0.5))
        if coverage < level:
            break
        best = (r, coverage)
    return best


def median_interval(lower, upper, level: float = LEVEL) -> dict:
    """`ci95` [low, high] (high None: unbounded, the run(s) it rests on never got there), `ci95_coverage`
    and `ci95_method` of the median of runs whose landmark lies in [lower[i], upper[i]] (upper inf:
    right-censored). None interval with fewer than 2 runs, or when its lower end is itself unbounded."""
    lower = np.sort(np.asarray(lower, dtype=float))
    upper = np.sort(np.asarray(upper, dtype=float))
    n = lower.size
    if n < 2:
        return {"ci95": None, "ci95_coverage": None, "ci95_method": ORDER_STATISTIC.format("")}
    r, coverage = order_statistic_rank(n, level)
    low, high = lower[r - 1], upper[n - r]
    label = "" if coverage >= level else f"; {n} seeds reach at most {coverage:.1%}: the sample range"
    return {"ci95": None if not np.isfinite(low) else [float(low), float(high) if np.isfinite(high) else None],
            "ci95_coverage": round(coverage, 4), "ci95_method": ORDER_STATISTIC.format(label)}


def bootstrap_medians(times, observed, n: int = N_BOOTSTRAP, rng: np.random.Generator | None = None) -> np.ndarray:
    """KM medians of `n` resamples of the runs (NaN where a resample's median is undefined); for
    statistics across conditions (a slope), whose coverage is nominal."""
    rng = rng or np.random.default_rng(BOOTSTRAP_SEED)
    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    if times.size == 0:
        return np.full(n, np.nan)
    picks = rng.integers(0, times.size, size=(n, times.size))
    cache: dict = {}
    out = np.empty(n)
    for i, p in enumerate(np.sort(picks, axis=1)):  # a resample is a multiset: sorted, repeats are cached
        key = p.tobytes()
        if key not in cache:
            m = km_median(times[p], observed[p])
            cache[key] = np.nan if m is None else m
        out[i] = cache[key]
    return out


def interval(samples: np.ndarray, level: float = LEVEL, max_undefined: float = 0.025) -> list | None:
    """Percentile interval of bootstrap samples. An undefined sample (NaN: median not reached) counts
    as +infinity, so the upper bound is None (unbounded) once more than `max_undefined` of them are;
    None when the lower bound itself is undefined."""
    samples = np.asarray(samples, dtype=float)
    if samples.size == 0:
        return None
    filled = np.where(np.isnan(samples), np.inf, samples)
    with np.errstate(invalid="ignore"):  # interpolating between two infinite samples
        low, high = np.quantile(filled, [(1 - level) / 2, 1 - (1 - level) / 2])
    if not np.isfinite(low):
        return None
    return [float(low), None if not np.isfinite(high) or np.isnan(samples).mean() > max_undefined else float(high)]


def data_rng(*arrays) -> np.random.Generator:
    """A generator seeded by BOOTSTRAP_SEED and the data: the same histories give the same intervals,
    and two conditions are resampled independently (the same seed for both would draw the same
    run indices and correlate their bootstrap medians, narrowing any interval across conditions)."""
    digest = zlib.crc32(b"".join(np.asarray(a, dtype=float).tobytes() for a in arrays))
    return np.random.default_rng([BOOTSTRAP_SEED, digest])


def landmark_summary(times, observed, lower=None, upper=None, n: int = N_BOOTSTRAP) -> dict:
    """`n_runs`, `n_reached`, the KM `median` of the point `times`, its order-statistic `ci95` (with
    `ci95_coverage`, `ci95_method`) from each run's bounds (default: the time itself, or [time, inf)
    for a censored run), and bootstrap `samples` of the median (for a slope across conditions; not for
    JSON)."""
    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    lower = times if lower is None else np.asarray(lower, dtype=float)
    upper = np.where(observed, times, np.inf) if upper is None else np.asarray(upper, dtype=float)
    samples = bootstrap_medians(times, observed, n, data_rng(times, observed))
    return {"n_runs": int(times.size), "n_reached": int(observed.sum()), "median": km_median(times, observed),
            **median_interval(lower, upper), "samples": samples}


def median_lower_bound(times, observed) -> float | None:
    """Where the median is undefined, what is known of it: the latest time by which more than half the runs
    were seen without the event (a censored run until its censoring, one that reached it until then). None
    when the median is defined or nothing is known."""
    times, observed = np.asarray(times, dtype=float), np.asarray(observed, dtype=bool)
    if times.size == 0 or km_median(times, observed) is not None:
        return None
    # by (just before) time t, every run whose time is >= t was without the event: the bound is the
    # (n // 2 + 1)-th largest time
    return float(np.sort(times)[::-1][times.size // 2])


def proportion_interval(successes: int, trials: int) -> dict:
    """`ci95` of a rate by Clopper-Pearson (exact: coverage >= 95% at every n, sound at 0/n and n/n)."""
    method = "Clopper-Pearson exact binomial interval (coverage >= 0.95)"
    if trials == 0:
        return {"ci95": None, "ci95_coverage": None, "ci95_method": method}
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=LEVEL, method="exact")
    return {"ci95": [float(ci.low), float(ci.high)], "ci95_coverage": LEVEL, "ci95_method": method}


def mean_interval(values, bounds: tuple[float, float] = (-np.inf, np.inf)) -> dict:
    """`mean` and Student-t `ci95` over seeds (coverage 95% when the seeds' values are normal), clipped
    to the values' possible range `bounds` (clipping loses no coverage)."""
    values = np.asarray(values, dtype=float)
    method = "Student t interval of the mean over seeds (coverage 0.95 if normal)"
    if values.size < 2:
        return {"mean": float(values.mean()) if values.size else None, "ci95": None, "ci95_coverage": None,
                "ci95_method": method}
    if np.ptp(values) == 0:
        low = high = float(values[0])
    else:
        low, high = stats.t.interval(LEVEL, values.size - 1, loc=values.mean(), scale=stats.sem(values))
    low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": float(values.mean()), "ci95": [float(low), float(high)], "ci95_coverage": LEVEL,
            "ci95_method": method}


def bootstrap_slope(xs, medians, samples: list[np.ndarray], max_undefined: float = 0.05) -> dict:
    """Slope of ln(median) against ln(x) across conditions (least squares), with its 95% interval from
    the conditions' bootstrap medians (resampled independently; coverage nominal). `resolved` False when a
    median is undefined, or more than `max_undefined` of the resamples lack one somewhere (too many
    censored seeds to fit a line)."""
    lx = np.log(np.asarray(xs, dtype=float))
    stacked = np.vstack(samples)  # [conditions, n]
    defined = ~np.isnan(stacked).any(axis=0)
    undefined = float(1 - defined.mean())
    out = {"slope": None, "ci95": None, "ci95_coverage": None, "ci95_method": BOOTSTRAP, "resolved": False,
           "undefined_share": undefined}
    if len(xs) < 2 or any(m is None for m in medians) or undefined > max_undefined:
        return out
    slopes = np.polyfit(lx, np.log(stacked[:, defined]), 1)[0]
    point = np.polyfit(lx, np.log(np.asarray(medians, dtype=float)), 1)[0]
    low, high = np.quantile(slopes, [0.025, 0.975])
    return {**out, "slope": float(point), "ci95": [float(low), float(high)], "resolved": True}
