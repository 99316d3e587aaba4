"""When the copying comes to need each layer: the ablation over training, from the runs' ablation histories.

`ablation_history.jsonl` (written during training with `ablation_eval_steps`, or after it by `grokcopy ablate RUN
--over-checkpoints` from the kept checkpoints) holds per step the copy test's exact match with each layer's whole
attention ablated, and with sets of layers ablated together. Per run and ablation, `needed_from` is the first
record from which, at every later record where the model copies (exact match >= 0.5), ablating it leaves at most
half of the exact match (the share of grokcopy.analysis.ablation.copies_by_induction); None when that never holds
to the end. A set of layers that is needed while none of its layers alone is, at the last record, is a *backup*:
each of its layers copies when the other is gone, which I and single ablations do not show.
"""

from __future__ import annotations

from pathlib import Path

from grokcopy.analysis.ablation import COPIES_BY_INDUCTION_SHARE


def _needed_from(records: list[dict], value) -> int | None:
    """The first step from which every later copying record has `value(record)` <= the share of its exact match."""
    copying = [r for r in records if r["exact_match"] >= 0.5]
    needed_from = None
    for r in copying:
        if value(r) <= COPIES_BY_INDUCTION_SHARE * r["exact_match"]:
            needed_from = r["step"] if needed_from is None else needed_from
        else:
            needed_from = None
    return needed_from


def run_timeline(history: list[dict]) -> dict | None:
    """`needed_from` per layer and per set of layers, and the backups at the last record; None without history."""
    records = sorted((r for r in history if r.get("layer_ablated_exact_match")), key=lambda r: r["step"])
    if not records:
        return None
    layers = {layer: _needed_from(records, lambda r, layer=layer: r["layer_ablated_exact_match"][layer])
              for layer in range(len(records[-1]["layer_ablated_exact_match"]))}
    groups = {name: _needed_from(records, lambda r, name=name: (r.get("group_ablated_exact_match") or {}).get(name, 1))
              for name in records[-1].get("group_ablated_exact_match") or {} if name.startswith("layers ")}
    last = records[-1]
    backups = [name for name, step in groups.items() if step is not None
               and all(layers.get(int(layer)) is None for layer in name.split(" ", 1)[1].split("+"))]
    return {"first_step": records[0]["step"], "last_step": last["step"], "n_records": len(records),
            "exact_match_at_end": last["exact_match"], "layer_needed_from": layers, "group_needed_from": groups,
            "backups": backups}


def ablation_timelines(runs: list[dict]) -> dict:
    """{run name: run_timeline} over the runs with an ablation history."""
    out = {}
    for run in runs:
        timeline = run_timeline((run.get("data") or {}).get("ablation_history") or [])
        if timeline is not None:
            out[run["name"]] = timeline
    return out


def ablation_figure(runs: list[dict], out: Path, max_runs: int = 8) -> Path | None:
    """Per run (up to `max_runs`), exact match over training: unablated, each layer's attention ablated, each set
    of layers ablated together (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for r in runs if (r.get("data") or {}).get("ablation_history")][:max_runs]
    if not chosen:
        return None
    fig, axes = plt.subplots(len(chosen), 1, figsize=(8, 2.4 * len(chosen)), sharex=True, squeeze=False)
    for ax, run in zip(axes[:, 0], chosen):
        records = sorted(run["data"]["ablation_history"], key=lambda r: r["step"])
        steps = [r["step"] for r in records]
        ax.plot(steps, [r["exact_match"] for r in records], color="k", lw=2, label="unablated")
        for layer in range(len(records[-1].get("layer_ablated_exact_match") or [])):
            ax.plot(steps, [r["layer_ablated_exact_match"][layer] for r in records], lw=1, label=f"layer {layer}")
        for name in records[-1].get("group_ablated_exact_match") or {}:
            ax.plot(steps, [(r.get("group_ablated_exact_match") or {}).get(name) for r in records], ls="--", lw=1,
                    label=name)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("exact match")
        ax.set_title(run["name"], fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=8, loc="lower center", frameon=False)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle("Copy test with attention ablated, over training", fontsize=10)
    fig.tight_layout(rect=(0, 0.5 / (2.4 * len(chosen)), 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def timeline_lines(timelines: dict) -> list[str]:
    """The report's section: per run, from which step each layer (and set of layers) is needed, and backups."""
    if not timelines:
        return []
    groups = sorted({g for t in timelines.values() for g in t["group_needed_from"]})
    layers = max(len(t["layer_needed_from"]) for t in timelines.values())
    head = ["run", "records", *(f"layer {layer}" for layer in range(layers)), *groups, "backups"]
    lines = ["## When the copying needs each layer (ablation over training)", "",
             "Needed from: the first record from which ablating it leaves at most half of the exact match at every "
             "later record where the model copies; '-' never (to the last record). A backup: a set of layers "
             "needed while none of its layers alone is.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, t in timelines.items():
        cell = lambda v: "-" if v is None else str(v)  # noqa: E731
        lines.append("| " + " | ".join([name, f"{t['n_records']} ({t['first_step']}-{t['last_step']})",
                                        *(cell(t["layer_needed_from"].get(layer)) for layer in range(layers)),
                                        *(cell(t["group_needed_from"].get(g)) for g in groups),
                                        ", ".join(t["backups"]) or "none"]) + " |")
    return lines + [""]
