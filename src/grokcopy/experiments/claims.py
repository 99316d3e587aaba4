"""The paper's claims as pure functions of conditions' statistics (`claim_*`), so what counts as
"supported" is written down once, tested on synthetic numbers, and reported with the numbers behind it.

Each takes {label: {"config": {...}, "stats": {...}}} (see grokcopy.experiments.conditions).
"""

from __future__ import annotations

from grokcopy.experiments.conditions import family

BATCH_FIELDS = ("tokens_per_step", "per_device_train_batch_size", "gradient_accumulation_steps", "world_size")
SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable with these runs"


def relative_spread(values) -> float:
    """(max - min) / mean: how far apart the conditions are, as a share of their mean."""
    low, high = min(values), max(values)
    mean = sum(values) / len(values)
    return (high - low) / mean if mean > 0 else (0.0 if high == low else float("inf"))


def _claim(name, text, verdict, evidence, numbers=None):
    return {"claim": name, "text": text, "verdict": verdict, "evidence": evidence, "numbers": numbers or {}}


def _list(conditions, labels, key, fmt="{:,.0f}"):
    return "; ".join(f"{l}: " + ("none" if conditions[l]["stats"].get(key) is None else
                                 fmt.format(conditions[l]["stats"][key])) for l in labels)


def _batch_claim(conditions, name, text, landmark, tolerance):
    labels = family(conditions, BATCH_FIELDS, key="tokens_per_step")
    if not labels:
        return _claim(name, text, NOT_TESTABLE, "needs conditions that differ only in batch size (tokens per step)")
    labels.sort(key=lambda l: conditions[l]["config"]["tokens_per_step"])
    missing = [l for l in labels if conditions[l]["stats"].get(f"{landmark}_step") is None]
    found = [conditions[l]["stats"][f"{landmark}_step"] for l in labels if l not in missing]
    # A condition that trained past another's landmark without reaching it is evidence too: the
    # landmark does not come after the same number of steps.
    outran = [l for l in missing if found and (conditions[l]["stats"].get("steps") or 0) > min(found)]
    if missing and landmark == "copy_jump" and outran:
        evidence = "; ".join(
            f"{l}: " + (f"no jump by step {conditions[l]['stats']['steps']:,.0f} "
                        f"({conditions[l]['stats']['steps'] * conditions[l]['config']['tokens_per_step']:,.3g} tokens)"
                        if l in missing else f"jump at step {conditions[l]['stats']['copy_jump_step']:,.0f} "
                        f"({conditions[l]['stats']['copy_jump_tokens']:,.3g} tokens)") for l in labels)
        return _claim(name, text, NOT_SUPPORTED, evidence, {"conditions": labels, "without_jump": missing})
    if missing:
        return _claim(name, text, NOT_TESTABLE, f"no {landmark.replace('_', ' ')} in: {', '.join(missing)}")
    steps = [conditions[l]["stats"][f"{landmark}_step"] for l in labels]
    tokens = [conditions[l]["stats"][f"{landmark}_tokens"] for l in labels]
    numbers = {"conditions": labels, "steps": steps, "tokens": tokens,
               "spread_steps": relative_spread(steps), "spread_tokens": relative_spread(tokens)}
    evidence = (f"{landmark.replace('_', ' ')} in steps: {_list(conditions, labels, landmark + '_step')} "
                f"(relative spread {numbers['spread_steps']:.2f}); in tokens: "
                f"{_list(conditions, labels, landmark + '_tokens', '{:,.3g}')} "
                f"(relative spread {numbers['spread_tokens']:.2f})")
    return numbers, evidence, labels


def claim_jump_follows_steps(conditions: dict, tolerance: float = 0.25) -> dict:
    """(a) Across batch sizes the copy jump aligns in steps, not in tokens: the relative spread of the
    jump steps is at most `tolerance` and smaller than the relative spread of the jump tokens."""
    text = "(a) across batch sizes the copy jump aligns in optimizer steps, not in tokens"
    result = _batch_claim(conditions, "a", text, "copy_jump", tolerance)
    if isinstance(result, dict):
        return result
    numbers, evidence, _ = result
    ok = numbers["spread_steps"] <= tolerance and numbers["spread_steps"] < numbers["spread_tokens"]
    return _claim("a", text, SUPPORTED if ok else NOT_SUPPORTED, f"{evidence}; tolerance {tolerance}",
                  {**numbers, "tolerance": tolerance})


def claim_loss_follows_tokens(conditions: dict) -> dict:
    """(b) Across batch sizes the loss plateau aligns in tokens: its relative spread in tokens is
    smaller than in steps."""
    text = "(b) across batch sizes the training loss converges after the same number of tokens"
    result = _batch_claim(conditions, "b", text, "loss_plateau", None)
    if isinstance(result, dict):
        return result
    numbers, evidence, _ = result
    ok = numbers["spread_tokens"] < numbers["spread_steps"]
    return _claim("b", text, SUPPORTED if ok else NOT_SUPPORTED, evidence, numbers)


def claim_larger_lr_earlier(conditions: dict) -> dict:
    """(c) A larger learning rate groks earlier: the jump step strictly decreases as the learning
    rate grows (a condition without a jump counts as later than any jump)."""
    text = "(c) a larger learning rate groks earlier"
    labels = family(conditions, ("learning_rate",), key="learning_rate")
    if not labels:
        return _claim("c", text, NOT_TESTABLE, "needs conditions that differ only in learning_rate")
    labels.sort(key=lambda l: conditions[l]["config"]["learning_rate"])
    jumps = [conditions[l]["stats"].get("copy_jump_step") for l in labels]
    if all(j is None for j in jumps):
        return _claim("c", text, NOT_TESTABLE, "no condition has a copy jump")
    order = [float("inf") if j is None else j for j in jumps]
    ok = all(a > b for a, b in zip(order, order[1:]))
    evidence = (f"jump step by increasing learning rate: {_list(conditions, labels, 'copy_jump_step')}; final "
                f"exact match: {_list(conditions, labels, 'final_exact_match', '{:.3f}')}")
    return _claim("c", text, SUPPORTED if ok else NOT_SUPPORTED, evidence, {"conditions": labels, "jump_steps": jumps})


def _is_zero(value) -> bool:
    return value is None or float(value) == 0.0


def claim_regularization_helps(conditions: dict) -> dict:
    """(d) Attention dropout / weight decay grok earlier or higher: every regularised condition has
    an earlier jump step or a higher final exact match than the baseline (0 dropout, 0 weight decay,
    otherwise equal)."""
    text = "(d) attention dropout and weight decay grok earlier or reach a higher copy accuracy than the baseline"
    labels = family(conditions, ("attention_dropout", "weight_decay"))
    base = [l for l in labels if all(_is_zero(conditions[l]["config"].get(f))
                                     for f in ("attention_dropout", "weight_decay"))]
    if not base or len(labels) < 2:
        return _claim("d", text, NOT_TESTABLE, "needs a baseline (no dropout, no weight decay) and a regularised "
                                               "condition that differ in nothing else")
    b = conditions[base[0]]["stats"]
    inf = float("inf")
    rows, ok = {}, True
    for label in (l for l in labels if l != base[0]):
        s = conditions[label]["stats"]
        earlier = (s.get("copy_jump_step") if s.get("copy_jump_step") is not None else inf) < (
            b.get("copy_jump_step") if b.get("copy_jump_step") is not None else inf)
        higher = (s.get("final_exact_match") or 0) > (b.get("final_exact_match") or 0)
        rows[label] = {"earlier": earlier, "higher": higher}
        ok = ok and (earlier or higher)
    evidence = (f"against {base[0]}; jump step: {_list(conditions, labels, 'copy_jump_step')}; final exact "
                f"match: {_list(conditions, labels, 'final_exact_match', '{:.3f}')}; "
                + "; ".join(f"{l}: {'earlier' if r['earlier'] else 'not earlier'}, "
                            f"{'higher' if r['higher'] else 'not higher'}" for l, r in rows.items()))
    return _claim("d", text, SUPPORTED if ok else NOT_SUPPORTED, evidence, {"baseline": base[0], "conditions": rows})


def evaluate_claims(conditions: dict, align_tolerance: float = 0.25) -> list[dict]:
    return [claim_jump_follows_steps(conditions, align_tolerance), claim_loss_follows_tokens(conditions),
            claim_larger_lr_earlier(conditions), claim_regularization_helps(conditions)]
