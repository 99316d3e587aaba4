"""The paper's claims as rules fixed before any run, applied to statistics over seeds with intervals.

Each claim takes {label: condition} (see grokcopy.experiments.conditions: `config`, `stats` with
Kaplan-Meier medians and 95% bootstrap intervals over seeds, `samples` of the bootstrap) and returns
one of three verdicts, with the numbers behind it:

- **supported**: the interval lies inside the claim's region;
- **contradicted**: the interval lies outside it (or a condition trained past another's jump, in
  most of its seeds, without jumping);
- **not resolved**: the interval straddles the region's edge, medians are undefined (too many
  censored seeds), or a condition has fewer than MIN_SEEDS seeds.

The rules: (a) across batch sizes the copy jump aligns in optimizer steps: the slope of ln(median
jump step) against ln(tokens per step) lies within +-ALIGNED (0 = steps govern, -1 = tokens govern);
(b) across batch sizes the loss reaches the shared target after the same number of tokens: the slope
of ln(median tokens to the loss target) against ln(tokens per step) lies within +-ALIGNED; (c) a
larger learning rate groks earlier: the slope of ln(median jump step) against ln(learning rate) is
negative, read per batch size (a verdict per family, "differs by condition" when they disagree); (d) attention dropout / weight decay make the jump earlier or the copy accuracy higher, by the
rule of its protocol (grokcopy.experiments.regularization: exact permutation tests, Holm); (e) induction heads
form from shallow to deep layers: among the layers that form in >= 3/4 of a condition's seeds, the shallower
forms first in every seed (claim_shallow_to_deep); (f) the loss falls first, then copying jumps, abruptly
(claim_loss_first_then_jump).
"""

from __future__ import annotations

import numpy as np

from grokcopy.analysis.survival import bootstrap_slope
from grokcopy.experiments.conditions import BATCH, families, family
from grokcopy.experiments.regularization import claim_regularization

# A batch condition's fields; max_steps with them: a batch sweep at one token budget gives each batch its own
# number of steps (a run's budget, where the copy jump is censored if it has not come).
BATCH_FIELDS = ("tokens_per_step", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size",
                "max_steps", BATCH)
SUPPORTED, CONTRADICTED, NOT_RESOLVED = "supported", "contradicted", "not resolved"
NOT_TESTABLE = "not testable with these runs"
DIFFERS = "differs by condition"  # per-family verdicts that disagree (e.g. claim (c) per batch size)
MIN_SEEDS = 3
ALIGNED = 0.2  # |d ln S / d ln B| below this: aligned (McCandlish's steps-governed regime is slope ~0)


def _claim(name, text, verdict, evidence, numbers=None):
    return {"claim": name, "text": text, "verdict": verdict, "evidence": evidence, "numbers": numbers or {}}


def _fmt(value, kind="steps") -> str:
    if value is None:
        return "inf"
    if kind == "tokens":
        for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
    return f"{value:,.0f}"


def describe(condition: dict, key: str = "jump_step") -> str:
    """`median [low, high] (k/n)`: a censored landmark of a condition, as the report prints it."""
    s, kind = condition["stats"], "tokens" if key.endswith("tokens") else "steps"
    ci, coverage = s.get(f"{key}_ci95"), s.get(f"{key}_ci95_coverage")
    shown = "-" if ci is None else f"[{_fmt(ci[0], kind)}, {_fmt(ci[1], kind)}]" + (
        f" ({coverage:.1%})" if coverage is not None and coverage < 0.95 else "")
    reached = s["n_jumped"] if key.startswith("jump") else s["n_runs"]
    median = s.get(f"{key}_median")
    return f"{'not reached' if median is None else _fmt(median, kind)} {shown} ({reached}/{s['n_runs']})"


def _too_few(conditions, labels) -> list[str]:
    return [label for label in labels if conditions[label]["stats"]["n_runs"] < MIN_SEEDS]


def _outran(conditions, labels, later_first) -> list[str]:
    """Conditions whose median jump is undefined although they trained past the upper bound of the
    interval of a condition expected to jump no earlier (`later_first(a, b)`: a should not jump after b)."""
    out = []
    for label in labels:
        s = conditions[label]["stats"]
        if s.get("jump_step_median") is not None:
            continue
        for other in labels:
            ci = conditions[other]["stats"].get("jump_step_ci95")
            if other != label and later_first(label, other) and ci and ci[1] is not None and s["steps"] > ci[1]:
                out.append(label)
                break
    return out


def _slope_claim(conditions, name, text, labels, x_key, landmark, region, outran=()) -> dict:
    """Shared rule for (a)-(c): bootstrap the slope of ln(median landmark) against ln(config[x_key])."""
    labels = sorted(labels, key=lambda l: conditions[l]["config"][x_key])
    shown = "; ".join(f"{l}: {describe(conditions[l], landmark)}" for l in labels)
    fit = bootstrap_slope([conditions[l]["config"][x_key] for l in labels],
                          [conditions[l]["stats"].get(f"{landmark}_median") for l in labels],
                          [conditions[l]["samples"][landmark] for l in labels])
    numbers = {"conditions": labels, "slope": fit["slope"], "slope_ci95": fit["ci95"],
               "slope_ci95_coverage": fit["ci95_coverage"], "slope_ci95_method": fit["ci95_method"], "region": list(region),
               "undefined_share": fit["undefined_share"], "outran": list(outran)}
    evidence = f"{landmark.replace('_', ' ')} median [95% CI, coverage if below] (reached/runs): {shown}"
    if outran:
        return _claim(name, text, CONTRADICTED, f"{evidence}; {', '.join(outran)} trained past another condition's "
                      "jump without jumping in most seeds", numbers)
    few = _too_few(conditions, labels)
    if few:
        return _claim(name, text, NOT_RESOLVED, f"{evidence}; fewer than {MIN_SEEDS} seeds in {', '.join(few)}", numbers)
    if not fit["resolved"]:
        return _claim(name, text, NOT_RESOLVED, f"{evidence}; too many censored seeds to fit a slope", numbers)
    low, high = fit["ci95"]
    evidence += f"; slope {fit['slope']:.2f} [{low:.2f}, {high:.2f}], region ({region[0]:g}, {region[1]:g})"
    if region[0] < low and high < region[1]:
        return _claim(name, text, SUPPORTED, evidence, numbers)
    if high <= region[0] or low >= region[1]:
        return _claim(name, text, CONTRADICTED, evidence, numbers)
    return _claim(name, text, NOT_RESOLVED, evidence, numbers)


def claim_jump_follows_steps(conditions: dict) -> dict:
    """(a) Across batch sizes the copy jump aligns in optimizer steps, not in tokens."""
    text = "(a) across batch sizes the copy jump aligns in optimizer steps, not in tokens"
    labels = family(conditions, BATCH_FIELDS, key="tokens_per_step")
    if not labels:
        return _claim("a", text, NOT_TESTABLE, "needs conditions that differ only in batch size (tokens per step)")
    outran = _outran(conditions, labels, lambda a, b: True)  # steps-aligned: no condition may jump later
    return _slope_claim(conditions, "a", text, labels, "tokens_per_step", "jump_step", (-ALIGNED, ALIGNED), outran)


def claim_loss_follows_tokens(conditions: dict) -> dict:
    """(b) Across batch sizes the training loss reaches the shared target after the same number of tokens."""
    text = "(b) across batch sizes the training loss reaches the same loss after the same number of tokens"
    labels = family(conditions, BATCH_FIELDS, key="tokens_per_step")
    if not labels:
        return _claim("b", text, NOT_TESTABLE, "needs conditions that differ only in batch size (tokens per step)")
    return _slope_claim(conditions, "b", text, labels, "tokens_per_step", "loss_target_tokens", (-ALIGNED, ALIGNED))


def claim_larger_lr_earlier(conditions: dict) -> dict:
    """(c) A larger learning rate groks earlier: d ln(jump step) / d ln(learning rate) < 0, read in every
    family of conditions that differ only in learning_rate (one per batch size), each with its own verdict
    (`numbers["per_family"]`). The claim's verdict is theirs when they agree; DIFFERS when they do not (the
    answer depends on the batch: which one is read is not a tie to break)."""
    text = "(c) a larger learning rate groks earlier"
    groups = families(conditions, ("learning_rate",), key="learning_rate")
    if not groups:
        return _claim("c", text, NOT_TESTABLE, "needs conditions that differ only in learning_rate")
    per_family = []
    for labels in groups:
        lr = {label: conditions[label]["config"]["learning_rate"] for label in labels}
        outran = _outran(conditions, labels, lambda a, b: lr[a] > lr[b])  # a larger LR outran by a smaller one
        result = _slope_claim(conditions, "c", text, labels, "learning_rate", "jump_step", (-np.inf, 0.0), outran)
        shared = {k: v for k, v in conditions[labels[0]]["config"].items() if k != "learning_rate"}
        batch = shared.get("tokens_per_step")
        per_family.append({"tokens_per_step": batch, "verdict": result["verdict"], "evidence": result["evidence"],
                           **result["numbers"]})
    verdicts = {f["verdict"] for f in per_family}
    verdict = verdicts.pop() if len(verdicts) == 1 else DIFFERS
    if len(per_family) == 1:
        return _claim("c", text, verdict, per_family[0]["evidence"], {**per_family[0], "per_family": per_family})
    evidence = "; ".join(f"at {_fmt(f['tokens_per_step'])} tokens per step: {f['verdict']} ({f['evidence']})"
                         for f in per_family)
    return _claim("c", text, verdict, evidence, {"per_family": per_family})


def _order_in_run(shallow: dict, deep: dict) -> str | None:
    """Which of two layers formed first in one run: "shallow" (first or at the same analysis), "deep"
    (strictly first), or None when the run cannot tell (neither formed, or one was censored before the other
    formed). A layer that never formed by its censoring step, after the other formed, came second."""
    a, b = shallow["formation_step"], deep["formation_step"]
    if a is not None and b is not None:
        return "shallow" if a <= b else "deep"
    if b is not None and (shallow.get("censored_at") or 0) >= b:
        return "deep"
    if a is not None and (deep.get("censored_at") or 0) >= a:
        return "shallow"
    return None


def _layer_order(condition: dict) -> dict | None:
    """One condition's shallow-to-deep evidence: the layers that form (I >= threshold) in >= 3/4 of its
    seeds, their KM medians, and per pair of them how many seeds formed both and in which order."""
    runs = [r["stats"].get("formation") or [] for r in condition["runs"]]
    n = len(runs)
    rows = condition["stats"].get("formation") or []
    formed = [r["layer"] for r in rows if n and r["n_formed"] >= 0.75 * n]
    pairs = []
    for i, shallow in enumerate(formed):
        for deep in formed[i + 1:]:
            orders = [_order_in_run(f[shallow], f[deep]) for f in runs if len(f) > deep]
            known = [o for o in orders if o is not None]
            pairs.append({"shallow": shallow, "deep": deep, "order_known": len(known),
                          "shallow_first_or_tied": known.count("shallow"), "deep_strictly_first": known.count("deep"),
                          "medians_in_order": rows[shallow]["median"] < rows[deep]["median"]})
    return {"n_runs": n, "formed_layers": formed,
            "medians": {r["layer"]: r["median"] for r in rows if r["layer"] in formed}, "pairs": pairs}


def claim_shallow_to_deep(conditions: dict) -> dict:
    """(e) Induction heads form from shallow to deep layers: in each condition with >= 2 layers that form in
    >= 3/4 of its seeds, for every pair the shallower formed first (or with it) in every seed whose order is
    known (both formed, or one formed and the other had not by the end) and its median is earlier (supported);
    contradicted where, for a pair, the deeper formed strictly first in >= 3/4 of those seeds (at least
    MIN_SEEDS of them). A testable condition with fewer than MIN_SEEDS seeds leaves the claim not resolved."""
    text = "(e) induction heads form from shallow to deep layers"
    orders = {label: _layer_order(c) for label, c in conditions.items() if c.get("runs")}
    testable = {label: o for label, o in orders.items() if len(o["formed_layers"]) >= 2}
    if not testable:
        return _claim("e", text, NOT_TESTABLE, "needs a condition in which >= 2 layers form an induction head in "
                                               ">= 3/4 of its seeds", {"conditions": orders})
    verdicts, parts = [], []
    for label, o in testable.items():
        if o["n_runs"] < MIN_SEEDS:
            verdicts.append(NOT_RESOLVED)
        elif any(p["order_known"] >= MIN_SEEDS and p["deep_strictly_first"] >= 0.75 * p["order_known"]
                 for p in o["pairs"]):
            verdicts.append(CONTRADICTED)
        elif all(p["order_known"] and p["shallow_first_or_tied"] == p["order_known"] and p["medians_in_order"]
                 for p in o["pairs"]):
            verdicts.append(SUPPORTED)
        else:
            verdicts.append(NOT_RESOLVED)
        parts.append(f"{label}: layers " + ", ".join(f"{layer} at {_fmt(m)}" for layer, m in o["medians"].items())
                     + " (KM medians); " + "; ".join(
                         f"{p['shallow']} before {p['deep']} in {p['shallow_first_or_tied']}/{p['order_known']} seeds"
                         for p in o["pairs"]) + f" ({verdicts[-1]})")
    verdict = (CONTRADICTED if CONTRADICTED in verdicts else SUPPORTED if all(v == SUPPORTED for v in verdicts)
               else NOT_RESOLVED)
    return _claim("e", text, verdict, "; ".join(parts), {"conditions": orders})


NO_JUMP = "loss first, no jump within the budget"


def claim_loss_first_then_jump(conditions: dict) -> dict:
    """(f) The paper's first finding: the training loss falls first, copying lags and then jumps. Per condition
    with >= MIN_SEEDS seeds (the rule of docs/reproduction/claim1-stdlib/PROTOCOL.md): supported when in >= 3/4
    of its seeds the copy jump (exact match 0.5) comes after the loss's 80% fall, and the median jump width
    (10-90% of the rise) is below the median plateau (the loss's 80% fall to the jump's 10% point); contradicted
    when in >= 3/4 copying reached 0.5 before the loss's 80% fall, or >= 3/4 jumped and the median width is at
    least the median plateau; "loss first, no jump within the budget" when >= 3/4 never jumped (no verdict on
    the claim); else not resolved. Over conditions: their common verdict, or "differs by condition"."""
    text = "(f) the loss falls first, copying lags and then jumps (the paper's first finding)"
    per, parts = {}, []
    for label, c in conditions.items():
        runs = [r["stats"] for r in c.get("runs") or []]
        if len(runs) < MIN_SEEDS:
            continue
        n = len(runs)
        jumped = [s for s in runs if s.get("jump_step") is not None]
        first = sum(bool(s.get("loss_first")) for s in jumped)
        before = sum(s.get("loss_80pct_fall_step") is not None and s["jump_step"] <= s["loss_80pct_fall_step"]
                     for s in jumped)
        width, plateau = c["stats"].get("jump_width_median"), c["stats"].get("plateau_steps_median")
        abrupt = width is not None and plateau is not None and width < plateau
        if n - len(jumped) >= 0.75 * n:
            verdict = NO_JUMP
        elif before >= 0.75 * n or (len(jumped) >= 0.75 * n and width is not None and plateau is not None
                                     and not abrupt):
            verdict = CONTRADICTED
        elif first >= 0.75 * n and abrupt:
            verdict = SUPPORTED
        else:
            verdict = NOT_RESOLVED
        per[label] = {"verdict": verdict, "n_runs": n, "n_jumped": len(jumped), "n_loss_first": first,
                      "n_jumped_before_loss_fall": before, "jump_width_median": width, "plateau_steps_median": plateau}
        shape = ("" if width is None or plateau is None else
                 f", median width {_fmt(width)} vs plateau {_fmt(plateau)} steps")
        parts.append(f"{label}: loss first then jump in {first}/{n}, jumped {len(jumped)}/{n}{shape} ({verdict})")
    if not per:
        return _claim("f", text, NOT_TESTABLE, f"needs a condition with >= {MIN_SEEDS} seeds", {"per_condition": per})
    verdicts = {p["verdict"] for p in per.values()}
    verdict = verdicts.pop() if len(verdicts) == 1 else DIFFERS
    return _claim("f", text, verdict, "; ".join(parts), {"per_condition": per})


def evaluate_claims(conditions: dict) -> list[dict]:
    return [claim_jump_follows_steps(conditions), claim_loss_follows_tokens(conditions),
            claim_larger_lr_earlier(conditions), claim_regularization(conditions),
            claim_shallow_to_deep(conditions), claim_loss_first_then_jump(conditions)]
