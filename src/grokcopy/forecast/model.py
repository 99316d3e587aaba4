"""The forecaster: when will the copy test jump, and will the run copy by induction, headless, or not at all.

Two small models, fit on snapshots of the reference runs taken before their jump (each run weighing one in all):

- **When**: a log-normal time-to-jump regression (an accelerated-failure-time model) whose mean is linear in the
  configuration (ln tokens per step, ln learning rate, their squares and product, depth) and the run's signals so
  far. Each snapshot at step K is a run known to survive past K, so its likelihood is truncated at K, and runs that
  never jumped enter censored at their last copy test. The forecast is that distribution given T > K: its median
  and its 10-90% quantiles (the 80% interval), and P(T <= horizon).
- **Which solution**: a ridge logistic regression of circuit vs headless on the same features, over the snapshots
  of runs that jumped with a known solution.

`p_circuit` = P(jump by the horizon) x P(circuit | jump). Models exist for each set of signals (configuration only;
+ copy test and loss; + previous-token score): a run is forecast by the richest one whose signals it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

from grokcopy.forecast.signals import SIGNALS, Snapshot

# Which signals each model reads, richest first.
MODELS = {"full": ("token_accuracy", "loss_fall_step", "prev_token_rise"),
          "copy": ("token_accuracy", "loss_fall_step"),
          "config": ()}
INTERVAL = (0.1, 0.9)  # the 80% interval's quantiles
RIDGE = 1.0  # on standardized features: keeps the small headless class from separating perfectly
REFERENCE_BATCH, REFERENCE_LR = 20480.0, 1.5e-3  # the demo's tokens per step and learning rate: features centre here


def features(snapshot: Snapshot, signals: tuple[str, ...]) -> np.ndarray | None:
    """The model's inputs for a snapshot: None when a configuration value or a named signal is missing."""
    c = snapshot.config
    if not c.get("tokens_per_step") or not c.get("learning_rate"):
        return None
    u, v = math.log(c["tokens_per_step"] / REFERENCE_BATCH), math.log(c["learning_rate"] / REFERENCE_LR)
    row = [u, v, u * u, v * v, u * v, float(c.get("num_layers") or 2) - 2.0]
    for name in signals:
        value = snapshot.signals.get(name)
        if value is None:
            return None
        row.append(math.log(max(value, 1.0)) if name == "loss_fall_step" else float(value))
    return np.array(row)


@dataclass
class FittedModel:
    """One model's standardization and coefficients: `time` = (beta, ln sigma), `solution` = logistic weights."""

    signals: tuple
    mean: np.ndarray
    scale: np.ndarray
    time: np.ndarray
    solution: np.ndarray | None
    n_runs: int
    n_snapshots: int

    def design(self, x: np.ndarray) -> np.ndarray:
        x = (np.atleast_2d(x) - self.mean) / self.scale
        return np.hstack([np.ones((x.shape[0], 1)), x])


def _time_nll(params, X, log_t, log_k, observed, weight):
    beta, log_sigma = params[:-1], params[-1]
    sigma = math.exp(log_sigma)
    mu = X @ beta
    z_t, z_k = (log_t - mu) / sigma, (log_k - mu) / sigma
    event = stats.norm.logpdf(z_t) - log_sigma - log_t
    tail = stats.norm.logsf(z_t)
    ll = np.where(observed, event, tail) - stats.norm.logsf(z_k)
    return -(weight * ll).sum() + 1e-3 * (beta[1:] ** 2).sum()


def _logistic_nll(w, X, y, weight):
    z = X @ w
    return (weight * (np.logaddexp(0, z) - y * z)).sum() + 0.5 * RIDGE * (w[1:] ** 2).sum()


def fit_model(rows: list[dict], signals: tuple[str, ...]) -> FittedModel | None:
    """Fit one model on reference snapshot rows ({run, snapshot, outcome}); None with too few runs."""
    kept = [(r, x) for r in rows if (x := features(r["snapshot"], signals)) is not None]
    runs = {r["run"] for r, _ in kept}
    if len(runs) < 10:
        return None
    per_run = {run: sum(1 for r, _ in kept if r["run"] == run) for run in runs}
    x = np.array([x for _, x in kept])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    model = FittedModel(signals, mean, scale, np.zeros(x.shape[1] + 2), None, len(runs), len(kept))
    X = model.design(x)
    weight = np.array([1.0 / per_run[r["run"]] for r, _ in kept])
    observed = np.array([r["outcome"]["jump_step"] is not None for r, _ in kept])
    t = np.array([r["outcome"]["jump_step"] if r["outcome"]["jump_step"] is not None else r["outcome"]["last_step"]
                  for r, _ in kept], dtype=float)
    k = np.array([max(r["snapshot"].step, 1) for r, _ in kept], dtype=float)
    start = np.zeros(X.shape[1] + 1)
    start[0], start[-1] = np.log(t[observed]).mean() if observed.any() else np.log(t).mean(), math.log(0.5)
    fit = optimize.minimize(_time_nll, start, args=(X, np.log(t), np.log(k), observed, weight), method="L-BFGS-B")
    if not fit.success and not np.isfinite(fit.fun):
        raise RuntimeError(f"the time model ({'+'.join(signals) or 'configuration'}) did not converge: {fit.message}")
    model.time = fit.x
    labelled = np.array([r["outcome"]["solution"] in ("circuit", "headless") for r, _ in kept])
    y = np.array([r["outcome"]["solution"] == "circuit" for r, _ in kept], dtype=float)
    if labelled.sum() and 0 < y[labelled].mean() < 1:
        w = optimize.minimize(_logistic_nll, np.zeros(X.shape[1]), args=(X[labelled], y[labelled], weight[labelled]),
                              method="L-BFGS-B")
        model.solution = w.x
    return model


@dataclass
class Forecast:
    """What `grokcopy forecast` and the callback report. Steps are optimizer steps."""

    at_step: int
    horizon: int | None
    jump_step: float | None
    jump_step_interval: list
    p_jump: float
    p_circuit: float
    p_headless: float
    p_no_jump: float
    outcome: str  # the most probable of "circuit", "headless", "no jump"
    model: str
    signals: dict
    missing: list = field(default_factory=list)
    jumped_already: bool = False
    reason: str = ""
    outside_reference: list = field(default_factory=list)  # settings beyond the reference runs': extrapolated

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}

    def text(self) -> str:
        """The paragraph `grokcopy forecast` prints: read in ten seconds."""
        horizon = f"step {self.horizon}" if self.horizon else "the end"
        lo, hi = self.jump_step_interval
        if self.jumped_already:
            when = f"It has jumped: exact match crossed 0.5 at step {self.jump_step:.0f} (between copy tests at {lo:.0f} and {hi:.0f})."
        elif self.jump_step is None:
            when = f"The jump is not expected within any step the model can place (80% interval from {lo:.0f})."
        else:
            when = (f"Jump (exact match 0.5) forecast at step {self.jump_step:.0f}, 80% interval [{lo:.0f}, "
                    + (f"{hi:.0f}]." if hi is not None else f"past {horizon}]."))
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.signals.items())
        lines = [f"At step {self.at_step}: P(copies by induction by {horizon}) = {self.p_circuit:.2f}, "
                 f"headless {self.p_headless:.2f}, no jump {self.p_no_jump:.2f} -> {self.outcome}. {when}",
                 f"Rests on ({self.model} model): {shown}."]
        if self.missing:
            lines.append("Not recorded by this run, so not used: " + ", ".join(
                f"{name} ({SIGNALS[name]})" for name in self.missing) + ".")
        if self.outside_reference:
            lines.append("Extrapolated (no reference run is like this): " + "; ".join(self.outside_reference) + ".")
        if self.reason:
            lines.append(f"Why {self.outcome}: {self.reason}.")
        return "\n".join(lines)


def conditional_quantile(q: float, mu: float, sigma: float, after: float) -> float:
    """Quantile q of a log-normal(mu, sigma) given T > after."""
    f_k = stats.norm.cdf((math.log(max(after, 1.0)) - mu) / sigma)
    p = f_k + q * (1.0 - f_k)
    if p >= 1.0:
        return math.inf
    return float(math.exp(mu + sigma * stats.norm.ppf(p)))


def survival_past(step: float, mu: float, sigma: float, after: float) -> float:
    """P(T > step | T > after) for a log-normal(mu, sigma)."""
    if step <= after:
        return 1.0
    s_k = stats.norm.sf((math.log(max(after, 1.0)) - mu) / sigma)
    return float(stats.norm.sf((math.log(step) - mu) / sigma) / s_k) if s_k > 0 else 1.0


def predict(model: FittedModel, snap: Snapshot, horizon: float | None) -> dict:
    """The time distribution's median and 80% interval given T > K, P(jump by the horizon), P(circuit | jump)."""
    X = model.design(features(snap, model.signals))
    beta, sigma = model.time[:-1], math.exp(model.time[-1])
    mu = float((X @ beta)[0])
    k = max(snap.step, 1)
    lo, med, hi = (conditional_quantile(q, mu, sigma, k) for q in (INTERVAL[0], 0.5, INTERVAL[1]))
    p_jump = 1.0 - survival_past(horizon, mu, sigma, k) if horizon else 1.0
    p_circuit_given_jump = float(1 / (1 + math.exp(-(X @ model.solution)[0]))) if model.solution is not None else 1.0
    return {"mu": mu, "sigma": sigma, "median": med, "interval": [lo, hi], "p_jump": p_jump,
            "p_circuit_given_jump": p_circuit_given_jump}
