"""What a run shows by step K: its configuration and the signals the forecast reads, from its histories alone.

A forecast at step K may use only records at steps <= K, so every signal here is "as of the latest record at or
before K". Signals a run did not record (no induction analyses, no copy test yet, a loss that has not fallen) are
None and named in `missing`: the forecaster then uses the richest model whose signals are all present.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from grokcopy.analysis.grokking import jump_step, smooth

# The signals, in the order the models add them, with what each means (shown in `grokcopy forecast`'s output).
SIGNALS = {
    "token_accuracy": "the copy test's token accuracy (copied tokens right, of those asked)",
    "loss_fall_step": "step where the smoothed training loss made 80% of its fall so far",
    "prev_token_rise": "layer 0's best previous-token score above its first analysed value",
}
# How many records a signal is smoothed over (the latest ones at or before K).
TAIL = 3


@dataclass
class Snapshot:
    """A run as seen at `step`: `config` (what a user knows before training) and `signals` (what the run shows)."""

    step: int
    config: dict
    signals: dict = field(default_factory=dict)
    exact_match: float | None = None  # the latest copy test's, for the copy-test extrapolation and the text
    copy_points: list = field(default_factory=list)  # (step, exact_match) of the copy tests at or before `step`

    @property
    def missing(self) -> list[str]:
        return [name for name in SIGNALS if self.signals.get(name) is None]


def run_configuration(histories: dict) -> dict:
    """What a user sets before training: `tokens_per_step`, `learning_rate`, `num_layers`, `context` (tokens per
    document), `max_steps`; None where the run's files do not say. Also `attention_dropout`, `weight_decay`,
    `knockout_attention_layers` and `attention_layer_drop` (0 / None when unset), which no model reads: a forecast
    names them when they differ from every reference run's."""
    config = histories.get("run_config") or {}
    training, model, data = (config.get(k) or {} for k in ("training", "model", "data"))
    induction = histories.get("induction_history") or []
    layers = model.get("num_hidden_layers") or (induction[0].get("num_layers") if induction else None)
    if layers is None and (config.get("preset") or model.get("preset")) == "demo":
        layers = 2
    return {"tokens_per_step": histories.get("tokens_per_step") or config.get("tokens_per_step"),
            "learning_rate": training.get("learning_rate"),
            "num_layers": layers if layers is not None else 2,
            "context": data.get("block_size"),
            "max_steps": training.get("max_steps") if (training.get("max_steps") or 0) > 0 else None,
            "attention_dropout": model.get("attention_dropout") or 0.0,
            "weight_decay": training.get("weight_decay") or 0.0,
            "knockout_attention_layers": model.get("knockout_attention_layers"),
            "attention_layer_drop": model.get("attention_layer_drop") or 0.0}


def _tail_mean(values: list[float]) -> float | None:
    values = [v for v in values[-TAIL:] if v is not None]
    return sum(values) / len(values) if values else None


def loss_fall_step(losses: list[tuple[int, float]], at_step: int, share: float = 0.8) -> float | None:
    """First step where the smoothed loss made `share` of its fall so far (from its first value to its latest),
    using losses at steps <= at_step; None with fewer than 6 losses or no fall."""
    points = [(s, l) for s, l in losses if s <= at_step and l is not None and math.isfinite(l)]
    if len(points) < 6:
        return None
    smoothed = smooth([l for _, l in points], 5)
    start, now = smoothed[0], sum(smoothed[-TAIL:]) / len(smoothed[-TAIL:])
    if start - now <= 0.05 * abs(start):
        return None
    level = start - share * (start - now)
    return float(next(s for (s, _), l in zip(points, smoothed) if l <= level))


def snapshot(histories: dict, at_step: int | None = None) -> Snapshot:
    """The run at `at_step` (default: its latest record), from `RunFolder.histories()`-shaped data."""
    copy = sorted(histories.get("copy_history") or [], key=lambda r: r["step"])
    induction = sorted(histories.get("induction_history") or [], key=lambda r: r["step"])
    losses = sorted(histories.get("losses") or [])
    if at_step is None:
        at_step = max([r["step"] for r in copy] + [r["step"] for r in induction] + [s for s, _ in losses], default=0)
    copy_k = [r for r in copy if r["step"] <= at_step]
    prev = [max(r["prev_token"][0]) for r in induction if r["step"] <= at_step and r.get("prev_token")]
    signals = {
        "token_accuracy": _tail_mean([r.get("token_accuracy") for r in copy_k]) if copy_k else None,
        "loss_fall_step": loss_fall_step(losses, at_step),
        "prev_token_rise": (prev[-1] - prev[0]) if len(prev) >= 2 else None,
    }
    return Snapshot(step=int(at_step), config=run_configuration(histories), signals=signals,
                    exact_match=copy_k[-1]["exact_match"] if copy_k else None,
                    copy_points=[(r["step"], r["exact_match"]) for r in copy_k])


def outcome(histories: dict, formation_threshold: float = 0.3) -> dict:
    """How the run ended: `jump_step` (exact match 0.5, interpolated; None when never), `last_step`, and `solution`
    "circuit" | "headless" | "no jump" | "undetermined" (jumped, no head yet, ended by the stop rule before another
    analysis). Circuit: the ablation rule where the final model was ablated, else some head reached I >= 0.3."""
    copy = sorted(histories.get("copy_history") or [], key=lambda r: r["step"])
    jump, _ = jump_step(copy)
    induction = histories.get("induction_history") or []
    best = max((max(max(layer) for layer in r["induction"]) for r in induction if r.get("induction")), default=None)
    last = max([r["step"] for r in copy], default=None)
    ablated = (histories.get("ablation") or {}).get("copies_by_induction")
    training = (histories.get("run_config") or {}).get("training") or {}
    stop = training.get("copy_stop_exact_match")
    stopped = stop is not None and bool(copy) and copy[-1]["exact_match"] >= float(stop)
    if jump is None:
        solution = "no jump"
    elif ablated is not None:
        solution = "circuit" if ablated else "headless"
    elif best is not None and best >= formation_threshold:
        solution = "circuit"
    else:
        solution = "undetermined" if stopped or best is None else "headless"
    return {"jump_step": jump, "last_step": last, "solution": solution}
