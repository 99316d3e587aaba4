"""The reference runs a forecast learns from, and the `Forecaster` fit on them.

The reference set ships with the package (`reference_runs.json`, summaries of committed runs, no histories):
per run its configuration, how it ended, and its signals at up to MAX_SNAPSHOTS steps before its jump. It is
rebuilt from run folders by `grokcopy forecast --build-reference DIRS --out FILE`
(grokcopy.experiments.forecast_evaluation); the fit takes a second, so the
shipped file holds data, not coefficients, and a user can fit on their own runs the same way.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from grokcopy.analysis.grokking import crossing_step
from grokcopy.forecast.model import MODELS, Forecast, configuration_key, fit_cure, fit_models, predict
from grokcopy.forecast.signals import Snapshot, outcome, snapshot
from grokcopy.safe_io import write_json_atomic

UNREAD = {"attention_dropout": 0.0, "weight_decay": 0.0, "knockout_attention_layers": None,
          "attention_layer_drop": 0.0}  # and their defaults
MAX_SNAPSHOTS = 24  # per run: enough leads for the fit, a file small enough to ship
SHIPPED = Path(__file__).with_name("reference_runs.json")


def _snapshot_steps(copy_steps: list[int], before: float, limit: int = MAX_SNAPSHOTS) -> list[int]:
    steps = [s for s in copy_steps if 0 < s < before]
    if len(steps) <= limit:
        return steps
    picks = np.linspace(0, len(steps) - 1, limit).round().astype(int)
    return [steps[i] for i in sorted(set(picks.tolist()))]


def reference_record(histories: dict, experiment: str, name: str) -> dict:
    """One run's summary for the reference set."""
    end = outcome(histories)
    copy_steps = sorted(r["step"] for r in histories.get("copy_history") or [])
    before = end["jump_step"] if end["jump_step"] is not None else (end["last_step"] or 0) + 1
    snaps = [snapshot(histories, k) for k in _snapshot_steps(copy_steps, before)]
    return {"experiment": experiment, "run": name, "config": snaps[0].config if snaps else snapshot(histories).config,
            "outcome": end,
            "snapshots": [{"step": s.step, "signals": {k: _round(v) for k, v in s.signals.items()},
                           "exact_match": _round(s.exact_match)} for s in snaps]}


def _round(value):
    return round(value, 5) if isinstance(value, float) else value


def rows_of(reference: dict) -> list[dict]:
    """Snapshot rows ({run, snapshot, outcome}) for the fit."""
    rows = []
    for run in reference["runs"]:
        for s in run["snapshots"]:
            rows.append({"run": f"{run['experiment']}/{run['run']}", "outcome": run["outcome"],
                         "snapshot": Snapshot(step=s["step"], config=run["config"], signals=s["signals"],
                                              exact_match=s.get("exact_match"))})
    return rows


class Forecaster:
    """Every model of grokcopy.forecast.model fit on one reference set, and the facts its warnings quote."""

    def __init__(self, reference: dict):
        self.reference = reference
        rows = rows_of(reference)
        self.models = {name: fit_models(rows, signals) for name, signals in MODELS.items()}
        if self.models["config"] is None:
            raise ValueError("the reference set has fewer than 10 runs that formed a circuit with a known "
                             "configuration: nothing to fit")
        self.cure = fit_cure(reference["runs"], self.models["config"])
        self.configurations = {configuration_key(r["config"]) for r in reference["runs"]}
        self.facts = _facts(reference)
        self.ranges = {name: (min(values), max(values)) for name in ("tokens_per_step", "learning_rate", "num_layers",
                                                                    "context")
                       if (values := [r["config"][name] for r in reference["runs"] if r["config"].get(name)])}
        self.unread = {name: {r["config"].get(name, default) for r in reference["runs"]}
                       for name, default in UNREAD.items()}

    def outside_reference(self, config: dict) -> list[str]:
        """The settings of `config` outside the range of the reference runs' (the forecast extrapolates there)."""
        out = []
        for name, (lo, hi) in self.ranges.items():
            value = config.get(name)
            if value is not None and not lo <= value <= hi:
                out.append(f"{name} {value:g} {'below' if value < lo else 'above'} the reference runs' {lo:g}-{hi:g}")
        for name, seen in self.unread.items():  # settings no model reads: named when no reference run had them
            value = config.get(name, UNREAD[name])
            if value not in seen:
                out.append(f"{name} {value} (reference runs: {', '.join(str(v) for v in sorted(seen, key=str))}; "
                           "not a model input)")
        return out

    def forecast(self, snap: Snapshot, horizon: int | None = None) -> Forecast:
        """The forecast at `snap.step`, to `horizon` (default: the run's max_steps)."""
        if horizon is not None and horizon < snap.step:
            raise ValueError(f"horizon {horizon} is before the step forecast from ({snap.step}): name a later "
                             "--horizon")
        if horizon is None and snap.config.get("max_steps"):  # a run read at its end: the horizon is its end
            horizon = max(snap.config["max_steps"], snap.step)
        name = next(n for n, m in self.models.items() if m is not None and all(
            snap.signals.get(s) is not None for s in MODELS[n]))
        missing = [s for s in MODELS["full"] if snap.signals.get(s) is None]
        if not snap.config.get("tokens_per_step") or not snap.config.get("learning_rate"):
            raise ValueError("the run's folder does not say its tokens per step and learning rate (run_config.json): "
                             "the forecast needs both")
        p_never = self.cure.probability(snap) if self.cure is not None else 0.0
        p = predict(self.models[name], snap, horizon, configuration_key(snap.config) in self.configurations, p_never)
        jumped = snap.exact_match is not None and snap.exact_match >= 0.5
        if jumped:  # measured, not forecast; which solution it took is still the model's
            crossed = crossing_step(snap.copy_points, 0.5)
            steps = [s for s, _ in snap.copy_points]
            before = max([s for s in steps if s < (crossed or snap.step)], default=0)
            share = p["p_circuit"] / p["p_jump"] if p["p_jump"] > 0 else 1.0
            p.update(median=crossed, interval=[before, crossed], p_jump=1.0, p_circuit=share, p_headless=1 - share)
        p_circuit, p_headless = p["p_circuit"], p["p_headless"]
        probs = {"circuit": p_circuit, "headless": p_headless, "no jump": 1 - p["p_jump"]}
        hi = p["interval"][1]
        forecast = Forecast(at_step=snap.step, horizon=horizon, jump_step=p["median"] if math.isfinite(p["median"]) else None,
                            jump_step_interval=[p["interval"][0], hi if horizon is None or hi <= horizon else None],
                            p_jump=p["p_jump"], p_circuit=p_circuit, p_headless=p_headless, p_no_jump=1 - p["p_jump"],
                            outcome=max(probs, key=probs.get), model=name,
                            signals={**{k: snap.config.get(k) for k in ("tokens_per_step", "learning_rate",
                                                                          "num_layers")},
                                     **{k: snap.signals.get(k) for k in MODELS[name]}},
                            missing=missing, jumped_already=jumped,
                            outside_reference=self.outside_reference(snap.config))
        forecast.reason = self.reason(forecast, snap, p)
        return forecast

    def reason(self, forecast: Forecast, snap: Snapshot, p: dict | None = None) -> str:
        """The measured reason behind a headless or no-jump forecast, in one sentence."""
        rise, facts = snap.signals.get("prev_token_rise"), self.facts
        if forecast.outcome == "circuit":
            return ""
        if rise is not None and forecast.outcome == "headless" and rise < facts["headless_prev_rise"] / 2:
            return (f"layer 0's best previous-token score is {rise:+.3f} from its start by step {snap.step}: it fell "
                    f"(median {facts['headless_prev_rise']:+.3f}) in the reference runs that jumped headless, and "
                    f"stayed level or rose (median {facts['circuit_prev_rise']:+.3f}) in those that formed a circuit")
        why = (f"at {snap.config['tokens_per_step']:.0f} tokens per step and learning rate "
               f"{snap.config['learning_rate']:g}, no jump by step {forecast.horizon} has probability "
               f"{forecast.p_no_jump:.2f}" if forecast.outcome == "no jump" else
               f"at {snap.config['tokens_per_step']:.0f} tokens per step and learning rate "
               f"{snap.config['learning_rate']:g}, the reference runs that jumped mostly jumped headless")
        if forecast.outcome == "no jump" and p and p["jumpers_done_by_k"] >= 0.5 and not forecast.jumped_already:
            why += (f": a run with these settings and signals that jumps at all would have jumped by step {snap.step} "
                    f"with probability {p['jumpers_done_by_k']:.2f}, and "
                    f"{p['p_never']:.0%} of such runs never jump (fit on the reference runs)")
        elif forecast.jump_step is not None and forecast.horizon and forecast.jump_step > forecast.horizon:
            why += f" (a jump, if it comes, is forecast at step {forecast.jump_step:.0f})"
        if rise is not None and rise < facts["circuit_prev_rise_before_jump"]:
            why += (f"; and no previous-token head yet by step {snap.step} (layer 0's best previous-token score "
                    f"{rise:+.3f} from its start; in 90% of the reference circuits it had risen by >= "
                    f"{facts['circuit_prev_rise_before_jump']:.3f} before the jump)")
        return why


def _facts(reference: dict) -> dict:
    """Measured on the reference runs, quoted by the warnings: layer 0's previous-token rise at the last snapshot
    before the jump (circuits: its 10th percentile) and in the second half of the way (medians by solution)."""
    last, half = {"circuit": [], "headless": []}, {"circuit": [], "headless": []}
    for run in reference["runs"]:
        solution, jump = run["outcome"]["solution"], run["outcome"]["jump_step"]
        if solution not in last or jump is None:
            continue
        rises = [(s["step"], s["signals"].get("prev_token_rise")) for s in run["snapshots"]
                 if s["signals"].get("prev_token_rise") is not None]
        if rises:
            last[solution].append(rises[-1][1])
            half[solution] += [r for k, r in rises if k >= jump / 2]
    pick = lambda values, q, default: float(np.percentile(values, q)) if values else default  # noqa: E731
    return {"circuit_prev_rise_before_jump": pick(last["circuit"], 10, 0.0),
            "circuit_prev_rise": pick(half["circuit"], 50, 0.0),
            "headless_prev_rise": pick(half["headless"], 50, -0.03)}


@lru_cache(maxsize=1)
def shipped_forecaster() -> Forecaster:
    """The forecaster fit on the reference set that ships with grokcopy."""
    if not SHIPPED.is_file():
        raise FileNotFoundError(f"{SHIPPED} is missing from this grokcopy installation")
    return Forecaster(json.loads(SHIPPED.read_text()))


def forecast_run(folder: str | Path, at_step: int | None = None, horizon: int | None = None,
                 forecaster: Forecaster | None = None) -> Forecast:
    """The forecast for a run folder from its records at steps <= `at_step` (default: its last record)."""
    from grokcopy.run_dir import RunFolder

    run = RunFolder(folder)
    if not run.copy_history.is_file() and not run.run_config.is_file():
        raise FileNotFoundError(f"{folder}: not a grokcopy run folder (no copy_history.jsonl or run_config.json)")
    histories = run.histories()
    last = max([r["step"] for r in histories["copy_history"]] + [r["step"] for r in histories["induction_history"]]
               + [s for s, _ in histories["losses"]], default=0)
    if at_step is not None and at_step > last:
        raise ValueError(f"{folder}: its last record is at step {last}; --at-step {at_step} is past it (a forecast "
                         "reads only what the run has recorded)")
    snap = snapshot(histories, at_step)
    return (forecaster or shipped_forecaster()).forecast(snap, horizon)
