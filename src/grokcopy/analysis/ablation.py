"""Head-level causal scores: the copy test with attention heads zero-ablated.

The induction score I = A x EP says which heads *look* like an induction circuit; it does not say
which heads the model's copying *needs* (on the demo's model the circuit is spread over several heads,
and I alone does not single them out). Ablation does: for every
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
* the layers below a pass's lowest ablated layer computed once (`share_lower`): the copies of a pass
  are identical up to there, so those layers run on one copy and their output is repeated at that
  layer (pre-hooks on the decoder layers, `SharedLowerLayers`); ablations are ordered by their lowest
  layer so that a pass holds one layer's heads. On L layers this skips about half the layer stack's
  rows when a pass holds a layer's heads;
* `num_samples`: a drop from 0.95 to 0.6 needs far fewer samples than the 500 of a score. The first
  N samples of the task are used, the same for every ablation and for the unablated score, so each
  drop is a paired difference on identical queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from grokcopy.analysis.architectures import (
    attention_output_projections,
    layers_and_final_norm,
    model_family,
    unwrap_model,
)
from grokcopy.copytest.scoring import (
    attention_that_takes_a_mask,
    load_copy_metric,
    predict_batch,
    sample_batches,
)
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


class SharedLowerLayers:
    """Forward pre-hooks on the decoder layers that compute the layers below a pass's lowest ablated layer
    once for all its copies of the batch.

    A pass holds `copies` identical copies of a batch (copy-major rows), which differ only from the lowest
    layer any of them ablates (`first`) up. Below it, each layer gets only the first copy's rows (its
    hidden states, and every per-row tensor the model hands a layer: mask, position ids, rotary
    embeddings; the KV cache of those layers then holds one copy too); at `first` the hidden states are
    repeated back to every copy. What reaches the output is what the whole batch would have computed.
    """

    def __init__(self, layers: Sequence[nn.Module]):
        self.layers = list(layers)
        self.rows, self.copies, self.first = 0, 1, 0
        self._handles: list = []

    def __enter__(self) -> SharedLowerLayers:
        self._handles = [layer.register_forward_pre_hook(self._hook(i), with_kwargs=True)
                         for i, layer in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def set(self, rows: int, copies: int, first: int) -> None:
        """`rows` = copies x batch rows per forward; sharing needs a first ablated layer above the first layer
        and below the output (a pass whose copies ablate nothing is one copy)."""
        self.rows, self.copies, self.first = rows, copies, first if copies > 1 and first < len(self.layers) else 0

    def _one_copy(self, value):
        if isinstance(value, torch.Tensor) and value.ndim >= 2 and value.shape[0] == self.rows:
            return value[:self.rows // self.copies]
        if isinstance(value, tuple) and value and all(isinstance(v, torch.Tensor) for v in value):
            return tuple(self._one_copy(v) for v in value)  # (cos, sin) of rotary embeddings
        return value

    def _hook(self, index: int):
        def share(module, args, kwargs):
            if index >= self.first:
                if index != self.first or self.first == 0:
                    return None
                hidden = args[0] if args else kwargs["hidden_states"]
                if hidden.shape[0] * self.copies != self.rows:
                    raise RuntimeError(f"head ablation: layer {index} got {hidden.shape[0]} rows, expected "
                                       f"{self.rows // self.copies} shared ones")
                hidden = hidden.repeat(self.copies, *([1] * (hidden.ndim - 1)))
                if args:
                    return (hidden, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": hidden}
            args = tuple(self._one_copy(a) for a in args)
            return args, {k: self._one_copy(v) for k, v in kwargs.items()}

        return share


def _shape(lm: nn.Module) -> tuple[list[nn.Module], int]:
    projections = attention_output_projections(lm, model_family(lm))
    return projections, int(lm.config.num_attention_heads)


def parse_layer_sets(text: str) -> list[list[int]]:
    """Comma-separated sets of layers joined by '+', e.g. "1+2,1+3" -> [[1, 2], [1, 3]] (ValueError otherwise)."""
    try:
        sets = [sorted({int(layer) for layer in part.split("+")}) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f'expected sets of layer numbers like "1+2,1+3", got {text!r}') from None
    if not sets:
        raise ValueError("expected at least one set of layers")
    return sets


def layer_groups(layer_sets, num_layers: int, num_heads: int, source: str = "layer sets") -> dict[str, list]:
    """Sets of layers as named ablation groups, every head of each layer: {"layers 1+2": [(1, 0), ..., (2, 3)]}.
    A layer the model does not have is a ValueError naming `source`."""
    groups = {}
    for layers in layer_sets:
        bad = [layer for layer in layers if not 0 <= layer < num_layers]
        if bad:
            raise ValueError(f"{source}: no layer {bad[0]} in a model of {num_layers} layers")
        groups["layers " + "+".join(map(str, layers))] = [(layer, h) for layer in layers for h in range(num_heads)]
    return groups


def _lowest_layer(ablation: Ablation, num_layers: int) -> int:
    return min((layer for layer, _ in ablation), default=num_layers)


def _passes(ablations: Sequence[Ablation], num_layers: int, per_pass: int | None) -> list[list[int]]:
    """The ablations (indices) of each forward pass: those whose lowest ablated layer is the same share
    passes, at most `per_pass` at a time (None: all of them), so that every layer below it is computed
    once; the unablated run joins the top layer's."""
    by_layer: dict[int, list[int]] = {}
    for a, ablation in enumerate(ablations):
        by_layer.setdefault(min(_lowest_layer(ablation, num_layers), num_layers - 1), []).append(a)
    passes = []
    for _, group in sorted(by_layer.items()):
        step = len(group) if per_pass is None else max(1, int(per_pass))
        passes += [group[i:i + step] for i in range(0, len(group), step)]
    return passes


@torch.inference_mode()
def _records(model, task: CopyTask, ablations: Sequence[Ablation], samples: Sequence[int] | None, batch_size: int,
             ablations_per_pass: int | None, share_lower: bool, progress: bool) -> list[tuple]:
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
    passes = _passes(ablations, len(projections), ablations_per_pass)
    batches = sample_batches(task, samples, batch_size)
    work = [(group, batch) for group in passes for batch in batches]
    if progress:
        from tqdm.auto import tqdm

        work = tqdm(work, desc="head ablation", unit="pass")
    device = next(model.parameters()).device
    records = []
    with attention_that_takes_a_mask(model) as kernel, RowHeadMask(projections, num_heads) as mask, \
            SharedLowerLayers(layers_and_final_norm(lm, model_family(lm))[0] if share_lower else []) as shared:
        for group, batch in work:
            rows = [(k, task.samples[k]) for k in batch]
            mask.set(keep[group].repeat_interleave(len(rows), dim=0))  # copy j of the batch: ablation group[j]
            shared.set(len(rows) * len(group), len(group),
                       min(_lowest_layer(ablations[a], len(projections)) for a in group))
            out = predict_batch(model, rows * len(group), device, kernel == "eager")
            per_copy = len(out) // len(group)
            for j, a in enumerate(group):
                records += [(a, *r) for r in out[j * per_copy:(j + 1) * per_copy]]
    return records


def ablated_predictions(model, task: CopyTask, ablations: Sequence[Ablation], *, samples: Sequence[int] | None = None,
                        batch_size: int = 16, ablations_per_pass: int | None = None, share_lower: bool = True,
                        progress: bool = False) -> list[list]:
    """For each ablation (a tuple of (layer, head) pairs zeroed together), the copy test's teacher-forced
    predictions of `samples` (default: all) with those heads ablated: per ablation a list of
    (query_index, predicted ids, suffix ids) in sample order, as `predict_suffixes` gives for the
    unablated model. `ablations_per_pass` ablations share a forward pass (batch_size x that many rows)."""
    records = _records(model, task, ablations, samples, batch_size, ablations_per_pass, share_lower, progress)
    out: list[list] = [[] for _ in ablations]
    for a, _, i, predicted, suffix in sorted(records, key=lambda r: r[:2]):  # stable: queries keep their order
        out[a].append((i, predicted, suffix))
    return out


COPIES_BY_INDUCTION_SHARE = 0.5  # ablating a run's induction heads leaves at most this share of its exact match


def copies_by_induction(exact_match: float, heads: Sequence, ablated_exact_match: float) -> bool | None:
    """The rule (written before it was applied to any run): a model *copies by induction* when it has at least
    one head with I >= the formation threshold and zero-ablating all of them together leaves at most half of its
    exact match. False when it copies without such heads (another solution) or they do not carry its copying;
    None when it does not copy (exact match below 0.5), where the question does not arise."""
    if exact_match < 0.5:
        return None
    return bool(heads) and ablated_exact_match <= COPIES_BY_INDUCTION_SHARE * exact_match


def ablate_heads(model, task: CopyTask, *, num_samples: int | None = None, batch_size: int = 16,
                 ablations_per_pass: int | None = None, share_lower: bool = True, progress: bool = False,
                 metric=None, groups: dict[str, Ablation] | None = None, per_head: bool = True) -> dict:
    """The copy test with each attention head, and each layer's whole attention, zero-ablated.

    Scores the first `num_samples` samples of `task` (default: all) unablated and under every ablation
    of `head_ablations`, through the `metrics/copy_accuracy` module as `score_copy_task` does. Returns
    `exact_match` and `token_accuracy` (unablated, on the same samples), `ablated_exact_match` and
    `ablated_token_accuracy` ([layer][head] lists), `layer_ablated_exact_match` and
    `layer_ablated_token_accuracy` (per layer), `num_layers`, `num_heads`, `num_samples`, `num_queries`,
    `num_sequences`. Under torch.distributed each process scores its share of the samples and every
    rank gets the numbers one process would. Works on every family the induction analysis knows
    (else UnsupportedArchitectureError) and on PEFT LoRA models.

    `groups`: further named sets of (layer, head) ablated together (e.g. every induction head of a run),
    scored on the same samples: `group_ablated_exact_match` / `group_ablated_token_accuracy` by name.
    `per_head=False` scores only the unablated test and the groups (the per-head grids are then absent).
    """
    lm = unwrap_model(model)
    projections, num_heads = _shape(lm)  # fails fast on an unknown architecture
    num_layers = len(projections)
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples: must be >= 1, got {num_samples}")
    n = len(task.samples) if num_samples is None else min(int(num_samples), len(task.samples))
    groups = dict(groups or {})
    for name, heads in groups.items():
        bad = [h for h in heads if not (0 <= h[0] < num_layers and 0 <= h[1] < num_heads)]
        if bad:
            raise ValueError(f"groups: {name}: no head {bad[0]} in a model of {num_layers} layers x {num_heads} heads")
    standard = head_ablations(num_layers, num_heads) if per_head else [()]
    ablations = [*standard, *(tuple(sorted(tuple(h) for h in heads)) for heads in groups.values())]
    with split_across_processes(list(range(n))) as mine:
        local = _records(model, task, ablations, mine, batch_size, ablations_per_pass, share_lower, progress)
    unique = {}
    for record in gather_across_processes(local):  # the padding repeats a sample: keep each query once
        unique.setdefault(record[:3], record)
    per_ablation: list[list] = [[] for _ in ablations]
    for a, _, _, predicted, suffix in sorted(unique.values(), key=lambda r: r[:2]):
        per_ablation[a].append((predicted, suffix))
    metric = metric or load_copy_metric()
    scores = [metric.compute(predictions=[p for p, _ in pairs], references=[r for _, r in pairs])
              for pairs in per_ablation]
    grouped = dict(zip(groups, scores[len(standard):]))
    out = {"exact_match": scores[0]["exact_match"], "token_accuracy": scores[0]["token_accuracy"]}
    if per_head:
        heads = scores[1:1 + num_layers * num_heads]
        layers = scores[1 + num_layers * num_heads:len(standard)]
        grid = lambda key: [[heads[layer * num_heads + h][key] for h in range(num_heads)]  # noqa: E731
                            for layer in range(num_layers)]
        out.update(ablated_exact_match=grid("exact_match"), ablated_token_accuracy=grid("token_accuracy"),
                   layer_ablated_exact_match=[s["exact_match"] for s in layers],
                   layer_ablated_token_accuracy=[s["token_accuracy"] for s in layers])
    if groups:
        out.update(groups={name: [list(h) for h in heads] for name, heads in groups.items()},
                   group_ablated_exact_match={name: s["exact_match"] for name, s in grouped.items()},
                   group_ablated_token_accuracy={name: s["token_accuracy"] for name, s in grouped.items()})
    return {
        **out,
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
    groups = [f"{name} {result['groups'][name]} ablated together: {cell(value)}"
              for name, value in (result.get("group_ablated_exact_match") or {}).items()]
    if "ablated_exact_match" not in result:
        return "\n".join([f"copy exact match {base:.3f} unablated ({result['num_samples']} samples)", *groups])
    columns = [f"head {h}" for h in range(result["num_heads"])] + ["whole layer"]
    width = max(len(cell(-1.0)), *map(len, columns))
    lines = [f"copy exact match {base:.3f} unablated ({result['num_samples']} samples, {result['num_queries']} "
             "queries); with one head (or the whole layer's attention) zero-ablated, and the drop:",
             "layer  " + "  ".join(c.rjust(width) for c in columns)]
    for layer, row in enumerate(result["ablated_exact_match"]):
        values = [*row, result["layer_ablated_exact_match"][layer]]
        lines.append(f"{layer:>5}  " + "  ".join(cell(v).rjust(width) for v in values))
    return "\n".join(lines + groups)
