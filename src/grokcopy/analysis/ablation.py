"""Head-level causal scores: the copy test with attention heads zero-ablated.

The induction score I = A x EP says which heads *look* like an induction circuit; it does not say
which heads the model's copying *needs* (issue 28: on the demo's model four heads each take exact
match from 0.95 to ~0.63, and I alone does not single them out). Ablation does: for every
(layer, head), the copy test's exact match and token accuracy with that head zero-ablated, and the
same with each layer's whole attention ablated.

A head is zero-ablated by setting its slice of the attention output projection's *input* to zero
(LLaMA-like `o_proj`, GPT-NeoX `dense`, GPT-2 `c_proj`; `architectures.attention_output_projections`),
so nothing it writes reaches the residual stream; the projection's bias, which belongs to no head,
stays. The mechanism is a forward pre-hook on that projection. Under PEFT the hook sits on the LoRA
layer that replaced it, so the adapter's path through the projection is ablated as well.

What makes it cheap (benchmarks/bench_ablation.py measures it against one plain copy test):

* the copy test's own scorer (`copytest.scoring.predict_batch`: each context once with its KV cache,
  then all queries of a sample packed in one row on it), not a slower reimplementation;
* many ablations per forward pass: a batch of samples is repeated `ablations_per_pass` times along
  the batch dimension and the hook zeroes a different set of heads in each copy (a per-row mask),
  so one pass scores several ablations; the unablated score rides in the same passes;
* `num_samples`: a drop from 0.95 to 0.6 needs far fewer samples than the 500 of a score. The first
  N samples of the task are used, the same for every ablation and for the unablated score, so each
  drop is a paired difference on identical queries.

Not done: computing the layers below an ablated head once and reusing them. The copy test's forward
runs the whole model; reusing a prefix would mean driving each family's decoder layers by hand
(rotary embeddings, masks, the cache), a second forward to keep in step with transformers. With
many ablations per pass the lower layers of a pass cost the same rows as the upper ones; the saving
bounded by it is at most half the layer stack's work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from grokcopy.analysis.architectures import attention_output_projections, model_family, unwrap_model
from grokcopy.copytest.scoring import attention_that_takes_a_mask, load_copy_metric, predict_batch, sample_batches
from grokcopy.copytest.task import CopyTask
from grokcopy.devices import gather_across_processes, split_across_processes

Ablation = tuple[tuple[int, int], ...]  # the (layer, head) pairs zeroed together; () = nothing ablated


def head_ablations(num_layers: int, num_heads: int) -> list[Ablation]:
    """What `ablate_heads` scores, in its order: nothing, every head alone (layer by layer), then every
    layer's attention as a whole (all its heads at once)."""
    heads = [((layer, head),) for layer in range(num_layers) for head in range(num_heads)]
    layers = [tuple((layer, head) for head in range(num_heads)) for layer in range(num_layers)]
    return [(), *heads, *layers]


class RowHeadMask:
    """Forward pre-hooks on each layer's attention output projection that zero, row by row, the input
    slices of the heads a row ablates. `keep` (bool [rows, layers, heads], True where a head's output
    passes) is set before each forward; None leaves every input untouched."""

    def __init__(self, projections: Sequence[nn.Module], num_heads: int):
        self.projections, self.num_heads = list(projections), num_heads
        self.keep: torch.Tensor | None = None
        self._touched: list[bool] = []
        self._handles: list = []

    def __enter__(self) -> RowHeadMask:
        self._handles = [p.register_forward_pre_hook(self._hook(layer)) for layer, p in enumerate(self.projections)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self.keep = [], None

    def set(self, keep: torch.Tensor | None) -> None:
        self.keep = keep
        # Decided once here, so a layer no row ablates costs nothing (and no device sync) in the forward.
        self._touched = [] if keep is None else [not bool(keep[:, layer].all()) for layer in range(keep.shape[1])]

    def _hook(self, layer: int):
        def zero_ablated_heads(module, args):
            if self.keep is None or not self._touched[layer]:
                return None
            x, keep = args[0], self.keep[:, layer]
            rows, width = x.shape[0], x.shape[-1]
            if rows != keep.shape[0] or width % self.num_heads:
                raise RuntimeError(f"head ablation: layer {layer}'s output projection got input {tuple(x.shape)}; "
                                   f"expected {keep.shape[0]} rows of {self.num_heads} heads side by side")
            keep = keep.to(x.device).repeat_interleave(width // self.num_heads, dim=1)  # [rows, width]
            return (x.masked_fill(~keep.view(rows, *([1] * (x.ndim - 2)), width), 0), *args[1:])

        return zero_ablated_heads


def _shape(lm: nn.Module) -> tuple[list[nn.Module], int]:
    projections = attention_output_projections(lm, model_family(lm))
    return projections, int(lm.config.num_attention_heads)


@torch.inference_mode()
def _records(model, task: CopyTask, ablations: Sequence[Ablation], samples: Sequence[int] | None, batch_size: int,
             ablations_per_pass: int, progress: bool) -> list[tuple]:
    """(ablation, sample, query_index, predicted ids, suffix ids) for every ablation and query of `samples`."""
    lm = unwrap_model(model)
    projections, num_heads = _shape(lm)
    keep = torch.ones(len(ablations), len(projections), num_heads, dtype=torch.bool)
    for a, pairs in enumerate(ablations):
        for layer, head in pairs:
            if not (0 <= layer < len(projections) and 0 <= head < num_heads):
                raise ValueError(f"head ablation: no head ({layer}, {head}) in a model of {len(projections)} "
                                 f"layers x {num_heads} heads")
            keep[a, layer, head] = False
    step = max(1, int(ablations_per_pass))
    passes = [list(range(i, min(i + step, len(ablations)))) for i in range(0, len(ablations), step)]
    batches = sample_batches(task, samples, batch_size)
    work = [(group, batch) for group in passes for batch in batches]
    if progress:
        from tqdm.auto import tqdm

        work = tqdm(work, desc="head ablation", unit="pass")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    records = []
    try:
        with attention_that_takes_a_mask(model) as additive_mask, RowHeadMask(projections, num_heads) as mask:
            for group, batch in work:
                rows = [(k, task.samples[k]) for k in batch]
                mask.set(keep[group].repeat_interleave(len(rows), dim=0))  # copy j of the batch: ablation group[j]
                out = predict_batch(model, rows * len(group), device, additive_mask)
                per_copy = len(out) // len(group)
                for j, a in enumerate(group):
                    records += [(a, *r) for r in out[j * per_copy:(j + 1) * per_copy]]
    finally:
        model.train(was_training)
    return records


def ablated_predictions(model, task: CopyTask, ablations: Sequence[Ablation], *, samples: Sequence[int] | None = None,
                        batch_size: int = 16, ablations_per_pass: int = 4, progress: bool = False) -> list[list]:
    """For each ablation (a tuple of (layer, head) pairs zeroed together), the copy test's teacher-forced
    predictions of `samples` (default: all) with those heads ablated: per ablation a list of
    (query_index, predicted ids, suffix ids) in sample order, as `predict_suffixes` gives for the
    unablated model. `ablations_per_pass` ablations share a forward pass (batch_size x that many rows)."""
    records = _records(model, task, ablations, samples, batch_size, ablations_per_pass, progress)
    out: list[list] = [[] for _ in ablations]
    for a, _, i, predicted, suffix in sorted(records, key=lambda r: r[:2]):  # stable: queries keep their order
        out[a].append((i, predicted, suffix))
    return out


def ablate_heads(model, task: CopyTask, *, num_samples: int | None = None, batch_size: int = 16,
                 ablations_per_pass: int = 4, progress: bool = False, metric=None) -> dict:
    """The copy test with each attention head, and each layer's whole attention, zero-ablated.

    Scores the first `num_samples` samples of `task` (default: all) unablated and under every ablation
    of `head_ablations`, through the `metrics/copy_accuracy` module as `score_copy_task` does. Returns
    `exact_match` and `token_accuracy` (unablated, on the same samples), `ablated_exact_match` and
    `ablated_token_accuracy` ([layer][head] lists), `layer_ablated_exact_match` and
    `layer_ablated_token_accuracy` (per layer), `num_layers`, `num_heads`, `num_samples`, `num_queries`,
    `num_sequences`. Under torch.distributed each process scores its share of the samples and every
    rank gets the numbers one process would. Works on every family the induction analysis knows
    (else UnsupportedArchitectureError) and on PEFT LoRA models.
    """
    lm = unwrap_model(model)
    projections, num_heads = _shape(lm)  # fails fast on an unknown architecture
    num_layers = len(projections)
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples: must be >= 1, got {num_samples}")
    n = len(task.samples) if num_samples is None else min(int(num_samples), len(task.samples))
    ablations = head_ablations(num_layers, num_heads)
    with split_across_processes(list(range(n))) as mine:
        local = _records(model, task, ablations, mine, batch_size, ablations_per_pass, progress)
    unique = {}
    for record in gather_across_processes(local):  # the padding repeats a sample: keep each query once
        unique.setdefault(record[:3], record)
    per_ablation: list[list] = [[] for _ in ablations]
    for a, _, _, predicted, suffix in sorted(unique.values(), key=lambda r: r[:2]):
        per_ablation[a].append((predicted, suffix))
    metric = metric or load_copy_metric()
    scores = [metric.compute(predictions=[p for p, _ in pairs], references=[r for _, r in pairs])
              for pairs in per_ablation]
    heads = scores[1:1 + num_layers * num_heads]
    layers = scores[1 + num_layers * num_heads:]
    grid = lambda key: [[heads[layer * num_heads + h][key] for h in range(num_heads)]  # noqa: E731
                        for layer in range(num_layers)]
    return {
        "exact_match": scores[0]["exact_match"],
        "token_accuracy": scores[0]["token_accuracy"],
        "ablated_exact_match": grid("exact_match"),
        "ablated_token_accuracy": grid("token_accuracy"),
        "layer_ablated_exact_match": [s["exact_match"] for s in layers],
        "layer_ablated_token_accuracy": [s["token_accuracy"] for s in layers],
        "num_layers": num_layers,
        "num_heads": num_heads,
        "num_samples": n,
        "num_queries": len(per_ablation[0]),
        "num_sequences": task.num_sequences,
    }


def ablation_table(result: dict) -> str:
    """A readable layer x head table of `ablate_heads`' result: exact match with the head ablated and,
    in brackets, its drop from the unablated exact match; the last column ablates the whole layer."""
    base = result["exact_match"]
    cell = lambda value: f"{value:.3f} ({value - base:+.3f})"  # noqa: E731
    columns = [f"head {h}" for h in range(result["num_heads"])] + ["whole layer"]
    width = max(len(cell(-1.0)), *map(len, columns))
    lines = [f"copy exact match {base:.3f} unablated ({result['num_samples']} samples, {result['num_queries']} "
             "queries); with one head (or the whole layer's attention) zero-ablated, and the drop:",
             "layer  " + "  ".join(c.rjust(width) for c in columns)]
    for layer, row in enumerate(result["ablated_exact_match"]):
        values = [*row, result["layer_ablated_exact_match"][layer]]
        lines.append(f"{layer:>5}  " + "  ".join(cell(v).rjust(width) for v in values))
    return "\n".join(lines)
