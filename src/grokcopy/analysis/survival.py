"""Statistics over seeds of a landmark some runs never reach: Kaplan-Meier medians and bootstrap intervals.

"When did copying jump?" over seeds is a time-to-event question with right-censoring: a run that
stopped before it jumped says "later than its last step", not "never" and not "missing". Dropping
such runs biases every average toward "earlier"; the Kaplan-Meier estimate keeps them. The median
is the first time the estimated share of runs still waiting falls to one half; it is undefined
(None) when fewer than half can be said to have jumped. Intervals come from resampling the seeds
(the runs) with replacement, the one source of variation a reader can rerun.
"""

from __future__ import annotations

import zlib

import numpy as np

N_BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0  # fixed: a report regenerated from the same histories gives the same intervals


def km_median(times, observed) -> float | None:
    """Kaplan-Meier median of event times; `observed[i]` False means run i was censored at `times[i]`.

    Ties: events before censorings at the same time (the usual convention). None when the survival
    curve never reaches 0.5.
    """
    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    if times.size == 0:
        return None
    order = np.lexsort((~observed, times))  # by time, events first among equal times
    survival, at_risk = 1.0, len(times)
    for t, event in zip(times[order], observed[order]):
        if event:
            survival *= 1.0 - 1.0 / at_risk
            if survival <= 0.5 + 1e-12:
                return float(t)
        at_risk -= 1
    return None


def bootstrap_medians(times, observed, n: int = N_BOOTSTRAP, rng: np.random.Generator | None = None) -> np.ndarray:
    """KM medians of `n` resamples of the runs (NaN where a resample's median is undefined)."""
    rng = rng or np.random.default_rng(BOOTSTRAP_SEED)
    times = np.asarray(times, dtype=float)
    observed = np.asarray(observed, dtype=bool)
    if times.size == 0:
        return np.full(n, np.nan)
    picks = rng.integers(0, times.size, size=(n, times.size))
    return np.array([np.nan if (m := km_median(times[p], observed[p])) is None else m for p in picks])


def interval(samples: np.ndarray, level: float = 0.95, max_undefined: float = 0.025) -> list | None:
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


def landmark_summary(times, observed, n: int = N_BOOTSTRAP) -> dict:
    """`n_runs`, `n_reached`, the KM `median`, its 95% bootstrap `ci95` and the bootstrap `samples`
    (kept for statistics across conditions, e.g. a slope; not for JSON)."""
    samples = bootstrap_medians(times, observed, n, data_rng(times, observed))
    return {"n_runs": len(times), "n_reached": int(np.sum(observed)), "median": km_median(times, observed),
            "ci95": interval(samples), "samples": samples}


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


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> list | None:
    """95% Wilson score interval of a rate: sound at 0/n and n/n, where the normal approximation is not."""
    if trials == 0:
        return None
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def bootstrap_slope(xs, medians, samples: list[np.ndarray], max_undefined: float = 0.05) -> dict:
    """Slope of ln(median) against ln(x) across conditions (least squares), with its 95% interval from
    the conditions' bootstrap medians (resampled independently). `resolved` False when a median is
    undefined, or more than `max_undefined` of the resamples lack one somewhere (too many censored
    seeds to fit a line)."""
    lx = np.log(np.asarray(xs, dtype=float))
    stacked = np.vstack(samples)  # [conditions, n]
    defined = ~np.isnan(stacked).any(axis=0)
    undefined = float(1 - defined.mean())
    if len(xs) < 2 or any(m is None for m in medians) or undefined > max_undefined:
        return {"slope": None, "ci95": None, "resolved": False, "undefined_share": undefined}
    slopes = np.polyfit(lx, np.log(stacked[:, defined]), 1)[0]
    point = np.polyfit(lx, np.log(np.asarray(medians, dtype=float)), 1)[0]
    low, high = np.quantile(slopes, [0.025, 0.975])
    return {"slope": float(point), "ci95": [float(low), float(high)], "resolved": True, "undefined_share": undefined}
