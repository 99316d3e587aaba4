"""The forecaster: when will the copy test jump, and will the run copy by induction, headless, or not at all.

Small regressions, fit on snapshots of the reference runs taken before their jump (each run weighing one in all;
a snapshot at step K is a run known to be without a jump at K, so every model is conditional on T > K):

- **Whether**: a cure-rate model (Farewell 1982): a share pi of runs never jumps, the rest jump at a time drawn from
  the model below. pi is a ridge logistic regression on the configuration (ln tokens per step, ln learning rate,
  their squares and product, depth), fit by maximum likelihood over runs (a run that jumped at T: 1 - pi; one
  censored at its last step C: pi + (1 - pi) S(C)). Given no jump by K, Bayes moves the mass: P(never) =
  pi / (pi + (1 - pi) S(K)), so a run far past the step its configuration and signals say it should have jumped
  by is forecast "no jump", and the forecast to a horizon H counts only the jumps between K and H. And "circuit,
  given a jump": a ridge logistic regression on the configuration and the run's signals so far.
- **When**: for each solution, a log-normal time-to-jump regression (an accelerated-failure-time model) over the
  runs that jumped with it, its likelihood truncated at K: circuit runs on the configuration and the signals,
  headless runs (fewer) on ln tokens per step and ln learning rate alone. The two solutions' jumps differ (the
  headless one comes later), so the forecast of T is their mixture weighted by P(circuit | jump), given T > K:
  its median and 10-90% quantiles (the 80% interval).
- **Beyond the reference runs**: for a configuration no reference run had, the circuit time's spread is the
  leave-one-configuration-out error of the fit (each configuration predicted by a fit without it), not the
  in-sample spread: a forecast that extrapolates says so in its interval.

`p_circuit` = (1 - pi) P(circuit | jump) (S_circuit(K) - S_circuit(H)) / (pi + (1 - pi) S(K)); likewise headless;
the rest is "no jump" (by H).
Models exist for each set of signals (configuration only; + copy test and loss; + previous-token score): a run is
forecast by the richest one whose signals it has.
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
RIDGE = 1.0  # on standardized features: keeps the small classes (headless, no jump) from separating perfectly
REFERENCE_BATCH, REFERENCE_LR = 20480.0, 1.5e-3  # the demo's tokens per step and learning rate: features centre here
MIN_RUNS = 10


def configuration_key(config: dict) -> tuple:
    """Runs sharing tokens per step, learning rate, depth and context are one configuration (a forecast for
    one no reference run had uses the leave-one-configuration-out spread)."""
    return (config.get("tokens_per_step"), config.get("learning_rate"), config.get("num_layers") or 2,
            config.get("context"))


def features(snapshot: Snapshot, signals: tuple[str, ...], linear: bool = False) -> np.ndarray | None:
    """The model's inputs for a snapshot: None when a configuration value or a named signal is missing.
    `linear`: ln tokens per step and ln learning rate only (for the small headless set)."""
    c = snapshot.config
    if not c.get("tokens_per_step") or not c.get("learning_rate"):
        return None
    u, v = math.log(c["tokens_per_step"] / REFERENCE_BATCH), math.log(c["learning_rate"] / REFERENCE_LR)
    row = [u, v] if linear else [u, v, u * u, v * v, u * v, float(c.get("num_layers") or 2) - 2.0]
    for name in signals:
        value = snapshot.signals.get(name)
        if value is None:
            return None
        row.append(math.log(max(value, 1.0)) if name == "loss_fall_step" else float(value))
    return np.array(row)


@dataclass
class Regression:
    """One fitted regression: its inputs (`signals`, `linear`), standardization and coefficients; `sigma` (ln
    steps) for a time model, None for a logistic one; `sigma_new` the spread for an unseen configuration."""

    signals: tuple
    linear: bool
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    sigma: float | None = None
    sigma_new: float | None = None
    n_runs: int = 0
    n_snapshots: int = 0

    def design(self, snap: Snapshot) -> np.ndarray | None:
        x = features(snap, self.signals, self.linear)
        return None if x is None else np.concatenate([[1.0], (x - self.mean) / self.scale])

    def mu(self, snap: Snapshot) -> float:
        return float(self.design(snap) @ self.coef)

    def probability(self, snap: Snapshot) -> float:
        return float(1 / (1 + math.exp(-self.mu(snap))))


def _time_nll(params, X, log_t, log_k, weight):
    beta, log_sigma = params[:-1], params[-1]
    mu = X @ beta
    sigma = math.exp(log_sigma)
    ll = (stats.norm.logpdf((log_t - mu) / sigma) - log_sigma) - stats.norm.logsf((log_k - mu) / sigma)
    return -(weight * ll).sum() + 1e-3 * (beta[1:] ** 2).sum()


def _logistic_nll(w, X, y, weight):
    z = X @ w
    return (weight * (np.logaddexp(0, z) - y * z)).sum() + 0.5 * RIDGE * (w[1:] ** 2).sum()


def _design(rows: list[dict], signals, linear):
    kept = [(r, x) for r in rows if (x := features(r["snapshot"], signals, linear)) is not None]
    runs = {r["run"] for r, _ in kept}
    if len(runs) < MIN_RUNS:
        return None
    per_run = {run: 0 for run in runs}
    for r, _ in kept:
        per_run[r["run"]] += 1
    x = np.array([x for _, x in kept])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    X = np.hstack([np.ones((len(kept), 1)), (x - mean) / scale])
    weight = np.array([1.0 / per_run[r["run"]] for r, _ in kept])
    return [r for r, _ in kept], X, weight, Regression(signals, linear, mean, scale, np.zeros(X.shape[1]),
                                                       n_runs=len(runs), n_snapshots=len(kept))


def fit_time(rows: list[dict], signals: tuple[str, ...], linear: bool = False) -> Regression | None:
    """The log-normal time to the jump over rows of runs that jumped, each truncated at its snapshot's step."""
    designed = _design([r for r in rows if r["outcome"]["jump_step"] is not None], signals, linear)
    if designed is None:
        return None
    kept, X, weight, model = designed
    log_t = np.log([r["outcome"]["jump_step"] for r in kept])
    log_k = np.log([max(r["snapshot"].step, 1) for r in kept])
    start = np.zeros(X.shape[1] + 1)
    start[0], start[-1] = log_t.mean(), math.log(0.3)
    fit = optimize.minimize(_time_nll, start, args=(X, log_t, log_k, weight), method="L-BFGS-B")
    if not np.isfinite(fit.fun):
        raise RuntimeError(f"the time model ({'+'.join(signals) or 'configuration'}) did not converge: {fit.message}")
    model.coef, model.sigma = fit.x[:-1], float(math.exp(fit.x[-1]))
    return model


def fit_logistic(rows: list[dict], signals: tuple[str, ...], label) -> Regression | None:
    """P(label) over the rows `label` gives a 0 or 1 for (None: left out); None when one class is missing."""
    labelled = [r for r in rows if label(r) is not None]
    designed = _design(labelled, signals, False)
    if designed is None:
        return None
    kept, X, weight, model = designed
    y = np.array([float(label(r)) for r in kept])
    if not 0 < y.mean() < 1:
        return None
    model.coef = optimize.minimize(_logistic_nll, np.zeros(X.shape[1]), args=(X, y, weight), method="L-BFGS-B").x
    return model


def leave_one_configuration_out(rows: list[dict], signals: tuple[str, ...]) -> float | None:
    """The circuit time model's spread (ln steps, root mean square over runs) when each configuration's runs are
    predicted by a fit without that configuration: the error of a forecast for a configuration it never saw."""
    keys = {configuration_key(r["snapshot"].config) for r in rows}
    errors = []
    for key in keys:
        inside = [r for r in rows if configuration_key(r["snapshot"].config) == key]
        model = fit_time([r for r in rows if configuration_key(r["snapshot"].config) != key], signals)
        if model is None:
            continue
        per_run: dict[str, list[float]] = {}
        for r in inside:
            if model.design(r["snapshot"]) is not None:
                per_run.setdefault(r["run"], []).append(math.log(r["outcome"]["jump_step"]) - model.mu(r["snapshot"]))
        errors += [float(np.mean(np.square(v))) for v in per_run.values()]
    return float(math.sqrt(np.mean(errors))) if errors else None


def fit_models(rows: list[dict], signals: tuple[str, ...]) -> dict | None:
    """Every regression of one signal set: `circuit_time`, `headless_time`, `circuit` (the cure share, which reads
    the configuration only, is fit once: `fit_cure`)."""
    circuit_rows = [r for r in rows if r["outcome"]["solution"] == "circuit"]
    circuit_time = fit_time(circuit_rows, signals)
    if circuit_time is None:
        return None
    circuit_time.sigma_new = max(circuit_time.sigma, leave_one_configuration_out(circuit_rows, signals) or 0.0)
    return {"circuit_time": circuit_time,
            "headless_time": fit_time([r for r in rows if r["outcome"]["solution"] == "headless"], (), linear=True),
            "circuit": fit_logistic(rows, signals, lambda r: {"circuit": 1, "headless": 0}.get(r["outcome"]["solution"]))}


def _log_survival(t: float, mu: float, sigma: float) -> float:
    return float(stats.norm.logsf((math.log(max(t, 1.0)) - mu) / sigma))


def _jump_parts(models: dict, snap: Snapshot, known_configuration: bool) -> list[tuple[float, float, float]]:
    """[(P(solution | jump), mu, sigma)] of the circuit and headless jump times (log-normal, untruncated)."""
    p_circuit = models["circuit"].probability(snap) if models["circuit"] is not None else 1.0
    circuit_time, headless_time = models["circuit_time"], models["headless_time"]
    parts = [(p_circuit, circuit_time.mu(snap), circuit_time.sigma if known_configuration else circuit_time.sigma_new)]
    if headless_time is not None and p_circuit < 1.0:
        parts.append((1.0 - p_circuit, headless_time.mu(snap), headless_time.sigma))
    return parts


def _cure_nll(w, X, jumped, log_survival, weight):
    log_pi = -np.logaddexp(0, -(X @ w))  # ln pi
    log_rest = -np.logaddexp(0, X @ w)  # ln (1 - pi)
    ll = np.where(jumped, log_rest, np.logaddexp(log_pi, log_rest + log_survival))
    return -(weight * ll).sum() + 0.5 * RIDGE * (w[1:] ** 2).sum()


def fit_cure(runs: list[dict], models: dict) -> Regression | None:
    """pi, the share of runs that never jump, on the configuration: maximum likelihood over `runs` ({config,
    outcome}), the jump times from the configuration-only `models` (a run censored at C could still have jumped
    after C with probability S(C))."""
    snaps = [(Snapshot(step=0, config=r["config"]), r["outcome"]) for r in runs]
    kept = [(s, o, x) for s, o in snaps if (x := features(s, ())) is not None]
    if len(kept) < MIN_RUNS:
        return None
    jumped = np.array([o["jump_step"] is not None for _, o, _ in kept])
    if jumped.all() or not jumped.any():
        return None
    x = np.array([x for _, _, x in kept])
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    X = np.hstack([np.ones((len(kept), 1)), (x - mean) / scale])
    log_survival = []
    for s, o, _ in kept:
        parts = _jump_parts(models, s, True)
        end = o["last_step"] or 1
        log_survival.append(float(np.logaddexp.reduce([math.log(max(w, 1e-300)) + _log_survival(end, mu, sd)
                                                       for w, mu, sd in parts])))
    model = Regression((), False, mean, scale, np.zeros(X.shape[1]), n_runs=len(kept), n_snapshots=len(kept))
    model.coef = optimize.minimize(_cure_nll, np.zeros(X.shape[1]),
                                   args=(X, jumped, np.array(log_survival), np.ones(len(kept))),
                                   method="L-BFGS-B").x
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
            when = f"If it jumps, not within any step the model can place (80% interval from {lo:.0f})."
        else:
            when = (f"If it jumps (exact match 0.5): at step {self.jump_step:.0f}, 80% interval [{lo:.0f}, "
                    + (f"{hi:.0f}]." if hi is not None else f"past {horizon}]."))
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.signals.items())
        lines = [f"At step {self.at_step}: P(copies by induction by {horizon}) = {self.p_circuit:.2f}, "
                 f"headless {self.p_headless:.2f}, no jump {self.p_no_jump:.2f} -> {self.outcome}. {when}",
                 f"Rests on ({self.model} model): {shown}."]
        if self.missing:
            lines.append("Not recorded by this run, so not used: " + ", ".join(
                f"{name} ({SIGNALS[name]})" for name in self.missing) + ".")
        if self.outside_reference:
            lines.append("Unlike every reference run (the forecast extrapolates): " + "; ".join(self.outside_reference) + ".")
        if self.reason:
            lines.append(f"Why {self.outcome}: {self.reason}.")
        return "\n".join(lines)


def _cdf_after(t: float, mu: float, sigma: float, after: float) -> float:
    """P(T <= t | T > after) for a log-normal(mu, sigma)."""
    if t <= after:
        return 0.0
    log_ratio = stats.norm.logsf((math.log(t) - mu) / sigma) - stats.norm.logsf((math.log(max(after, 1.0)) - mu) / sigma)
    return float(-math.expm1(log_ratio))  # in logs: a K far in the tail does not underflow


def mixture_quantile(q: float, parts: list[tuple[float, float, float]], after: float) -> float:
    """Quantile q of a mixture of log-normals [(weight, mu, sigma)], each given T > after (bisection in ln t)."""
    def cdf(t):
        return sum(w * _cdf_after(t, mu, sigma, after) for w, mu, sigma in parts)

    lo = math.log(max(after, 1.0))
    hi = max(lo, max(mu for _, mu, _ in parts)) + 8 * max(sigma for _, _, sigma in parts)
    if cdf(math.exp(hi)) < q:
        return math.inf
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(math.exp(mid)) < q else (lo, mid)
    return float(math.exp(hi))


def predict(models: dict, snap: Snapshot, horizon: float | None, known_configuration: bool, p_never: float) -> dict:
    """The jump's median and 80% interval given T > K (the two solutions' times mixed), and the probabilities to
    the horizon, `p_never` (the cure share pi) updated by the run not having jumped by K."""
    k = max(snap.step, 1)
    parts = _jump_parts(models, snap, known_configuration)
    log_alive = [math.log(max(w, 1e-300)) + _log_survival(k, mu, sd) for w, mu, sd in parts]  # ln P(solution, T > K)
    log_jumper = math.log1p(-p_never) + float(np.logaddexp.reduce(log_alive)) if p_never < 1 else -math.inf
    log_never = math.log(p_never) if p_never > 0 else -math.inf
    log_total = float(np.logaddexp(log_never, log_jumper))
    # the jump time given a jump after K: each solution's truncated time, weighted by P(solution | T > K)
    weights = np.exp(np.array(log_alive) - np.logaddexp.reduce(log_alive))
    given = [(float(w), mu, sd) for w, (_, mu, sd) in zip(weights, parts)]
    lo, median, hi = (mixture_quantile(q, given, k) for q in (INTERVAL[0], 0.5, INTERVAL[1]))
    by_horizon = [_cdf_after(horizon, mu, sd, k) if horizon else 1.0 for _, mu, sd in parts]
    p_solution = [math.exp(log_jumper - log_total) * w * h for (w, _, _), h in zip(given, by_horizon)]
    p_c, p_h = p_solution[0], (p_solution[1] if len(p_solution) > 1 else 0.0)
    return {"median": median, "interval": [lo, hi], "p_circuit": p_c, "p_headless": p_h,
            "p_jump": p_c + p_h, "sigma": parts[0][2], "p_never": p_never,
            "jumpers_done_by_k": -math.expm1(float(np.logaddexp.reduce(log_alive)))}
