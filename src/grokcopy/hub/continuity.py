"""Does a series move continuously? Parameter distances between revisions, per tensor group.

Hashes catch a branch serving another branch's files; they cannot catch a branch whose weights are
*different* but not its own: a shard of a later model (EleutherAI/pythia#206's embedding jump once
the shard hashes differ), or a run that does not descend from its own step0 (pythia#203). The
distances can: along a training run each tensor group (embeddings, each layer, unembedding) moves
a little between neighbouring checkpoints.

While a revision's weights are loaded anyway, `sample_parameters` keeps a fixed, seeded sample of
each tensor (the same positions for every revision, so distances between any two revisions can be
computed later, after resuming, or on the main process from every process's samples). The
distance of a group is the relative L2 distance ||a - b|| / rms(||a||, ||b||) on the sample
(exact for tensors no larger than the sample).

`discontinuities` flags, per group, in training order:
- a *spike*: a revision farther from both neighbours than they are from each other
  (d(prev, next) < SPIKE x min(d(prev, r), d(r, next))): off the path, like a mid-run shard of the
  final model;
- a *jump*: a step between neighbours at least JUMP times the median of the nearby steps: a
  discontinuity, or, right after the first revision, a run that does not descend from it;
- *the same weights* as the previous revision in files whose hashes differ (a `.bin` branch and a
  `.safetensors` branch of one checkpoint: a duplicate no hash can show).
"""

from __future__ import annotations

import math
import re
import statistics
import zlib
from pathlib import Path

SAMPLE_PER_TENSOR = 1024
SPIKE = 0.75
JUMP = 10.0
MIN_DISTANCE = 1e-4  # below this relative distance nothing is flagged (numerical noise, bf16 rounding)
_LAYER_RE = re.compile(r"\.(?:layers|h|layer|blocks|block)\.(\d+)\.")
_EMBEDDING_RE = re.compile(r"(?:^|\.)(?:embed_tokens|embed_in|wte|wpe|embed_positions|word_embeddings)\.")
_UNEMBEDDING_RE = re.compile(r"(?:^|\.)(?:lm_head|embed_out)\.")


def tensor_group(name: str) -> str:
    """`embeddings`, `layer.N`, `unembedding` or `other` (final norm, ...) for a parameter name."""
    layer = _LAYER_RE.search(name)
    if layer:
        return f"layer.{int(layer.group(1))}"
    if _EMBEDDING_RE.search(name):
        return "embeddings"
    if _UNEMBEDDING_RE.search(name):
        return "unembedding"
    return "other"


def sample_parameters(model, per_tensor: int = SAMPLE_PER_TENSOR) -> dict:
    """{parameter name: float32 CPU tensor of its values at positions seeded by the name and shape}."""
    import torch

    samples = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            flat = param.detach().reshape(-1)
            if flat.numel() > per_tensor:
                generator = torch.Generator().manual_seed(zlib.crc32(f"{name}{tuple(param.shape)}".encode()))
                index = torch.randint(flat.numel(), (per_tensor,), generator=generator)
                flat = flat[index.to(flat.device)]
            samples[name] = flat.float().cpu().contiguous()
    return samples


def save_samples(path: Path, samples: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(samples, str(tmp))
    tmp.replace(path)


def load_samples(path: Path) -> dict | None:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (OSError, ValueError, RuntimeError):  # missing or torn: the revision just gets no distances
        return None


def group_distances(a: dict, b: dict) -> dict[str, float]:
    """{group: relative L2 distance} between two revisions' samples (tensors present in both, same size)."""
    sums: dict[str, list[float]] = {}
    for name, x in a.items():
        y = b.get(name)
        if y is None or y.shape != x.shape:
            continue
        acc = sums.setdefault(tensor_group(name), [0.0, 0.0, 0.0])
        acc[0] += float(((x - y) ** 2).sum())
        acc[1] += float((x**2).sum())
        acc[2] += float((y**2).sum())
    return {g: round(math.sqrt(d) / math.sqrt((na + nb) / 2), 6) for g, (d, na, nb) in sums.items() if na + nb > 0}


def discontinuities(order: list[str], distance) -> dict[str, list[str]]:
    """{revision: [why, ...]} of the revisions (in training order) where some group jumps.
    `distance(a, b)` -> {group: relative distance}."""
    flags: dict[str, list[str]] = {}
    steps = [distance(a, b) for a, b in zip(order, order[1:])]  # steps[i]: order[i] -> order[i + 1]
    spikes = set()
    for i in range(1, len(order) - 1):
        before, after, across = steps[i - 1], steps[i], distance(order[i - 1], order[i + 1])
        for group in sorted(set(before) & set(after) & set(across)):
            nearest = min(before[group], after[group])
            if nearest > MIN_DISTANCE and across[group] < SPIKE * nearest:
                spikes.add(order[i])
                flags.setdefault(order[i], []).append(
                    f"{group}: off the path ({before[group]:.3g} from {order[i - 1]}, {after[group]:.3g} from "
                    f"{order[i + 1]}, which are {across[group]:.3g} apart)")
    for i, step in enumerate(steps):
        if step and max(step.values()) == 0:  # e.g. a .bin and a .safetensors branch: other files, same weights
            flags.setdefault(order[i + 1], []).append(f"all groups: the same weights as {order[i]} (every sampled "
                                                      "value equal) though the files differ")
            continue
        if order[i] in spikes or order[i + 1] in spikes:
            continue
        nearby = [steps[j] for j in range(max(0, i - 2), min(len(steps), i + 3))
                  if j != i and order[j] not in spikes and order[j + 1] not in spikes]
        for group in sorted(step):
            others = [s[group] for s in nearby if s.get(group, 0) > MIN_DISTANCE]  # not other identical pairs
            if not others or step[group] <= MIN_DISTANCE:
                continue
            typical = statistics.median(others)
            if step[group] > JUMP * max(typical, MIN_DISTANCE):
                what = (f"does not descend from {order[0]}" if i == 0 else f"jumps from {order[i]}")
                flags.setdefault(order[i + 1], []).append(
                    f"{group}: {what} ({step[group]:.3g}, nearby steps {typical:.3g})")
    return flags
