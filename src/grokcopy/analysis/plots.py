"""Figures people would rather look at than read: the copy curve (the paper's Fig. 2), induction heads
per checkpoint and across training (Fig. 6), and the formation chart. Files are written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from grokcopy.run_dir import atomic_write, history_tokens_per_step  # noqa: E402


def plot_copy_curve(history: list[dict], out: str | Path, losses: list[tuple[int, float]] | None = None,
                    title: str = "Training loss and context-copying accuracy"):
    """copy_curve.png: `copy_curve_figure`, saved."""
    return save_figure(copy_curve_figure(history, losses, title), out)


def copy_curve_figure(history: list[dict], losses: list[tuple[int, float]] | None = None,
                      title: str = "Training loss and context-copying accuracy"):
    """Training loss (left axis) and copy accuracy (right axis) against optimizer steps.

    `losses` are the Trainer's logged (step, loss) points (denser than the copy history's);
    a top axis shows tokens seen, so steps and tokens can both be read off (the paper's
    claim is that the jump follows steps).
    """
    steps = [r["step"] for r in history]
    fig, ax_loss = plt.subplots(figsize=(8, 4.5), dpi=120)
    loss_points = losses or [(r["step"], r["loss"]) for r in history if r.get("loss") is not None]
    if loss_points:
        ax_loss.plot(*zip(*loss_points), color="tab:blue", label="training loss")
    for key, style, label in (("copyable_loss", "-.", "held-out loss, copyable tokens"),
                              ("other_loss", ":", "held-out loss, other tokens")):
        split = [(r["step"], r[key]) for r in history if r.get(key) is not None]
        if split:
            ax_loss.plot(*zip(*split), color="tab:blue", ls=style, marker=".", ms=3, label=label)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("training loss (nats/token)", color="tab:blue")
    ax_acc = ax_loss.twinx()
    ax_acc.plot(steps, [r["exact_match"] for r in history], color="tab:red", marker="o", ms=3,
                label="copy exact match")
    ax_acc.plot(steps, [r["token_accuracy"] for r in history], color="tab:orange", ls="--",
                label="copy token accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_ylabel("copy accuracy", color="tab:red")
    per_step = history_tokens_per_step(history)
    if per_step and all(r.get("tokens") is not None for r in history):
        top = ax_loss.secondary_xaxis("top", functions=(lambda s: s * per_step, lambda t: t / per_step))
        top.set_xlabel("tokens seen")
    handles = ax_loss.get_legend_handles_labels()[0] + ax_acc.get_legend_handles_labels()[0]
    # below the axes: inside, a legend always covers some curve (the jump, or the loss's fall)
    ax_loss.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3, fontsize=8,
                   frameon=False)
    ax_loss.set_title(title)
    ax_loss.grid(alpha=0.3)
    return fig


def plot_induction_heatmap(record: dict, out: str | Path):
    """I(L, H) per layer x head of one analysis (the checkpoint's own picture)."""
    return save_figure(induction_heatmap_figure(record), out)


def figure_image(fig):
    """A figure as an RGB array (height x width x 3, uint8), for a logger's add_image; the figure is closed."""
    import numpy as np

    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def induction_heatmap_figure(record: dict):
    import numpy as np

    values = np.array(record["induction"])
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * values.shape[1], 1.0 + 0.45 * values.shape[0]), dpi=120)
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    for (layer, head), v in np.ndenumerate(values):
        if values.size <= 400:
            ax.text(head, layer, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"induction score I = A x EP, step {record.get('step', '?')}", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.05)
    return fig


def plot_induction_history(history: list[dict], out: str | Path):
    """I per head across checkpoints: one panel per layer, one line per head (the paper's Fig. 6)."""
    history = sorted(history, key=lambda r: r["step"])
    n_layers, n_heads = history[0]["num_layers"], history[0]["num_heads"]
    cols = min(4, n_layers)
    rows = (n_layers + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), dpi=110, sharex=True, sharey=True,
                             squeeze=False)
    steps = [r["step"] for r in history]
    colors = head_colors(n_heads)
    for layer in range(n_layers):
        ax = axes[layer // cols][layer % cols]
        for head in range(n_heads):
            ax.plot(steps, [r["induction"][layer][head] for r in history], lw=1, color=colors[head],
                    label=f"head {head}")
        ax.set_title(f"layer {layer}", fontsize=9)
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    for k in range(n_layers, rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.supxlabel("optimizer step")
    fig.supylabel("induction score I")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False,
               ncol=1 + n_heads // 17, title="same colour,\nsame head", title_fontsize=7)
    return save_figure(fig, out)


def head_colors(n_heads: int) -> list:
    """One colour per head index, the same in every panel (distinct up to 20 heads, a gradient beyond)."""
    if n_heads <= 10:
        return [plt.get_cmap("tab10")(h) for h in range(n_heads)]
    if n_heads <= 20:
        return [plt.get_cmap("tab20")(h) for h in range(n_heads)]
    return [plt.get_cmap("viridis")(h / (n_heads - 1)) for h in range(n_heads)]


def plot_formation(rows: list[dict], out: str | Path, threshold: float, last_step: int | None = None):
    """First step at which each layer's best head passes the threshold: shallow to deep at a glance."""
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.4 * len(rows)), dpi=120)
    for r in rows:
        if r["formation_step"] is None:
            ax.barh(r["layer"], last_step or 0, color="lightgrey", hatch="//")
            ax.text(last_step or 0, r["layer"], "  not formed", va="center", fontsize=8)
        else:
            ax.barh(r["layer"], r["formation_step"], color="tab:purple")
            ax.text(r["formation_step"], r["layer"], f"  {r['formation_step']} (head {r['head']})", va="center",
                    fontsize=8)
    ax.set_yticks([r["layer"] for r in rows])
    ax.invert_yaxis()
    ax.set_ylabel("layer (shallow at top)")
    ax.set_xlabel(f"first step with best head's I >= {threshold}")
    ax.set_title("induction-head formation", fontsize=10)
    return save_figure(fig, out)


def save_figure(fig, out) -> Path:
    """Lay out, write atomically (a reader never sees half a PNG) and close a figure."""
    fig.tight_layout()
    out = Path(out)
    with atomic_write(out, binary=True) as fh:  # "tight": labels and legends outside the axes are kept whole
        fig.savefig(fh, format=out.suffix.lstrip(".") or "png", bbox_inches="tight")
    plt.close(fig)
    return out


def _step_scale(ax, steps: list[int]) -> None:
    positive = [s for s in steps if s > 0]
    if positive and max(positive) / min(positive) >= 100:
        ax.set_xscale("symlog", linthresh=min(positive))


def _tokens_axis(ax, points: list[dict]) -> None:
    """A top axis of tokens seen (steps x the latest tokens/step ratio), on the same scale as the steps."""
    per_step = history_tokens_per_step(points)
    if not per_step:
        return
    top = ax.twiny()
    if ax.get_xscale() == "symlog":  # symlog depends on x / linthresh only: scale both alike
        top.set_xscale("symlog", linthresh=ax.xaxis.get_transform().linthresh * per_step)
    low, high = ax.get_xlim()
    top.set_xlim(low * per_step, high * per_step)
    top.set_xlabel(f"tokens seen (~{per_step:,.0f} per step)")


def plot_series(records: list[dict], out_dir: Path, repo_id: str, copy_name: str = "series_copy.png",
                induction_name: str = "series_induction.png") -> list[Path]:
    """series_copy.png (copy accuracy vs step, tokens on top) and series_induction.png (max I per layer)."""
    written = []
    copy_points = [r for r in records if r.get("exact_match") is not None and r.get("step") is not None]
    if copy_points:
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
        steps = [r["step"] for r in copy_points]
        ax.plot(steps, [r["exact_match"] for r in copy_points], color="tab:red", marker="o", ms=3,
                label="copy exact match")
        ax.plot(steps, [r["token_accuracy"] for r in copy_points], color="tab:orange", ls="--", marker=".",
                label="copy token accuracy")
        _step_scale(ax, steps)
        _tokens_axis(ax, copy_points)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("optimizer step (checkpoint)")
        ax.set_ylabel("copy accuracy")
        ax.set_title(f"{repo_id}: copy test across checkpoints", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        written.append(save_figure(fig, Path(out_dir) / copy_name))
    ind_points = [r for r in records if r.get("induction_max") and r.get("step") is not None]
    if ind_points:
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
        n_layers = max(len(r["induction_max"]) for r in ind_points)
        colors = plt.get_cmap("viridis")
        steps = [r["step"] for r in ind_points]
        for layer in range(n_layers):
            pts = [(r["step"], r["induction_max"][layer]) for r in ind_points if layer < len(r["induction_max"])]
            ax.plot(*zip(*pts), marker="o", ms=2.5, lw=1.2, color=colors(layer / max(1, n_layers - 1)),
                    label=f"layer {layer}")
        _step_scale(ax, steps)
        _tokens_axis(ax, ind_points)
        ax.set_ylim(-1.05, 1.05)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("optimizer step (checkpoint)")
        ax.set_ylabel("max induction score I over heads")
        ax.set_title(f"{repo_id}: best induction head per layer", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=max(1, n_layers // 12), loc="best")
        written.append(save_figure(fig, Path(out_dir) / induction_name))
    return written
