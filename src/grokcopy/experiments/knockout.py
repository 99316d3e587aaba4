"""Claim 3's knock-out reading: with a shallow layer's attention knocked out from step 0, do deeper layers take the
induction circuit? The rule its protocol fixed before the runs (docs/reproduction/cpu-depth-knockout/PROTOCOL.md):

- a run **takes** the circuit deeper when some layer L below the knocked-out ones forms an induction head (a head's
  I >= the formation threshold at an analysis), the run copies (final exact match >= 0.5), and ablating layer L's
  whole attention in the final model leaves at most half of its exact match (`ablation_final.json`);
- **deeper layers take the circuit** when >= 3/4 of the seeds take it; **do not take it** when in >= 3/4 of them
  no deeper layer forms; otherwise **mixed**; **not resolved** with fewer than MIN_SEEDS seeds.

Read beside the verdict, not part of it: whether the knocked-out condition jumps later than its intact twin (the
condition whose configuration differs only in the knock-out), an exact one-sided permutation test of the rank sum
of the jump steps (runs that never jumped rank last).
"""

from __future__ import annotations

import numpy as np

TAKES, DOES_NOT, MIXED, NOT_RESOLVED = ("deeper layers take the circuit", "deeper layers do not take it",
                                        "mixed", "not resolved")
MIN_SEEDS = 3
SHARE = 0.75


def knocked_layers(config: dict) -> list[int]:
    value = config.get("knockout_attention_layers")
    if value in (None, "", "None"):
        return []
    return sorted(int(v) for v in str(value).replace(" ", "").split(",") if v != "")


def run_takes_circuit(stats: dict, knocked: list[int]) -> dict:
    """One run under the rule: the deeper layers that formed, those whose ablation removes >= half the copying."""
    formed = {f["layer"]: f["formation_step"] for f in stats.get("formation") or [] if f.get("formation_step") is not None}
    deeper = [layer for layer in sorted(formed) if layer > max(knocked)]
    em = stats.get("final_exact_match")
    ablated = stats.get("layer_ablated_exact_match")
    carries = [] if ablated is None or em is None else [l for l in deeper if l < len(ablated) and ablated[l] <= 0.5 * em]
    return {"formed": formed, "deeper_formed": deeper, "final_exact_match": em, "layer_ablated_exact_match": ablated,
            "deeper_carries": carries, "ablation_measured": ablated is not None,
            "takes": bool(deeper) and em is not None and em >= 0.5 and bool(carries)}


def jumps_later(treated: list[float | None], baseline: list[float | None]) -> dict:
    """Exact one-sided permutation p that `treated` jumps later (rank sum; None = never, ranked last)."""
    from scipy.stats import permutation_test, rankdata

    x = np.array([np.inf if v is None else v for v in treated], dtype=float)
    y = np.array([np.inf if v is None else v for v in baseline], dtype=float)

    def rank_sum(a, b, axis):
        ranks = rankdata(np.concatenate([a, b], axis=axis), axis=axis)
        return np.take(ranks, range(a.shape[axis]), axis=axis).sum(axis=axis)

    result = permutation_test((x, y), rank_sum, permutation_type="independent", alternative="greater",
                              n_resamples=np.inf, vectorized=True)
    finite = lambda v: float(np.median(v)) if np.isfinite(np.median(v)) else None  # noqa: E731
    return {"p_value": float(result.pvalue), "median_knocked_out": finite(x), "median_intact": finite(y),
            "n_knocked_out": len(x), "n_intact": len(y)}


def _twin(conditions: dict, config: dict) -> str | None:
    """The intact condition: the same configuration without the knock-out."""
    for label, c in conditions.items():
        other = c["config"]
        if not knocked_layers(other) and all(other.get(k) == v for k, v in config.items()
                                              if k != "knockout_attention_layers"):
            return label
    return None


def knockout_reading(conditions: dict) -> list[dict]:
    """The rule above for every condition with a knocked-out layer (none: an empty list)."""
    readings = []
    for label, c in conditions.items():
        knocked = knocked_layers(c["config"])
        if not knocked or not c.get("runs"):
            continue
        runs = [{"run": r["name"], "seed": r.get("seed"), "jump_step": r["stats"].get("jump_step"),
                 **run_takes_circuit(r["stats"], knocked)} for r in c["runs"]]
        n, takes = len(runs), sum(r["takes"] for r in runs)
        none_deeper = sum(not r["deeper_formed"] for r in runs)
        verdict = (NOT_RESOLVED if n < MIN_SEEDS or not all(r["ablation_measured"] for r in runs if r["deeper_formed"])
                   else TAKES if takes >= SHARE * n else DOES_NOT if none_deeper >= SHARE * n else MIXED)
        twin = _twin(conditions, c["config"])
        later = None if twin is None else jumps_later([r["jump_step"] for r in runs],
                                                       [r["stats"].get("jump_step") for r in conditions[twin]["runs"]])
        readings.append({"condition": label, "knocked_out": knocked, "n_runs": n, "n_takes": takes,
                         "n_no_deeper_layer": none_deeper, "verdict": verdict, "runs": runs, "intact_twin": twin,
                         "jumps_later_than_twin": later})
    return readings
