"""Figures people would rather look at than read: the copy curve (the paper's Fig. 2)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_copy_curve(history: list[dict], out: str | Path, title: str = "Loss falls first, copying jumps later"):
    """Training loss (left axis) and copy accuracy (right axis) against optimizer steps.

    A top axis shows tokens seen, so steps and tokens can both be read off (the paper's
    claim is that the jump follows steps).
    """
    steps = [r["step"] for r in history]
    fig, ax_loss = plt.subplots(figsize=(8, 4.5), dpi=120)
    loss_points = [(r["step"], r["loss"]) for r in history if r.get("loss") is not None]
    if loss_points:
        ax_loss.plot(*zip(*loss_points), color="tab:blue", label="training loss")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("training loss (nats/token)", color="tab:blue")
    ax_acc = ax_loss.twinx()
    ax_acc.plot(steps, [r["exact_match"] for r in history], color="tab:red", marker="o", ms=3,
                label="copy exact match")
    ax_acc.plot(steps, [r["token_accuracy"] for r in history], color="tab:orange", ls="--",
                label="copy token accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_ylabel("copy accuracy", color="tab:red")
    tokens = [r.get("tokens") for r in history]
    if all(t is not None for t in tokens) and steps[-1] > 0 and tokens[-1]:
        per_step = tokens[-1] / steps[-1]
        top = ax_loss.secondary_xaxis("top", functions=(lambda s: s * per_step, lambda t: t / per_step))
        top.set_xlabel("tokens seen")
    handles = ax_loss.get_legend_handles_labels()[0] + ax_acc.get_legend_handles_labels()[0]
    ax_acc.legend(handles=handles, loc="center right")
    ax_loss.set_title(title)
    ax_loss.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(out.stem + ".tmp" + out.suffix)
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out
