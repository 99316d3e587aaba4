"""Scoring the copy test: one forward pass per sample, the context shared by its queries.

Each batch of samples runs its contexts once, keeps the KV cache, repeats it for the queries and
runs every query (prefix + suffix) under teacher forcing. A query is an exact match when the
argmax at every suffix position is the suffix token: exactly when greedy decoding would produce
the suffix, since greedy only diverges after a first wrong token. The numbers come from the
`metrics/copy_accuracy` evaluate module.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import groupby

import torch
from torch.nn.utils.rnn import pad_sequence

from grokcopy.copytest.task import CopyTask
from grokcopy.devices import gather_across_processes, split_across_processes
from grokcopy.resources import metric_path


@lru_cache(maxsize=1)
def load_copy_metric():
    import evaluate

    return evaluate.load(str(metric_path()))


@torch.inference_mode()
def predict_suffixes(model, task: CopyTask, batch_size: int = 16, progress: bool = False,
                     samples: Sequence[int] | None = None):
    """Greedy (teacher-forced) predictions for every query of `samples` (default: all), in sample order:
    a list of (query_index, predicted ids, suffix ids)."""
    return [r[1:] for r in _predict(model, task, batch_size, progress, samples)]


def _predict(model, task: CopyTask, batch_size: int, progress: bool, samples: Sequence[int] | None):
    """(sample, query_index, predicted ids, suffix ids) for each query of `samples`, sorted by sample."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results = []
    chosen = range(len(task.samples)) if samples is None else samples
    # Samples with equal context length share a batch (always the case for `tokens` symbols).
    order = sorted(chosen, key=lambda k: (len(task.samples[k].context), k))
    batches = []
    for _, group in groupby(order, key=lambda k: len(task.samples[k].context)):
        group = list(group)
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="copy test", unit="batch")
    try:
        for batch in iterator:
            samples_ = [task.samples[k] for k in batch]
            contexts = torch.tensor([s.context for s in samples_], dtype=torch.long, device=device)
            cache = model(input_ids=contexts, use_cache=True).cache
            n_queries = len(samples_[0].queries)
            cache.batch_repeat_interleave(n_queries)
            queries = [(k, i, p, s) for k, sample in zip(batch, samples_) for (i, p, s) in sample.queries]
            rows = [p + s for _, _, p, s in queries]
            padded = pad_sequence([torch.tensor(r) for r in rows], batch_first=True)  # right-padded: never read
            logits = model(input_ids=padded.to(device), cache=cache, use_cache=True).logits
            argmax = logits.argmax(-1).cpu()
            for row, (k, i, prefix, suffix) in enumerate(queries):
                start = len(prefix) - 1
                results.append((k, i, argmax[row, start:start + len(suffix)].tolist(), suffix))
    finally:
        model.train(was_training)
    return sorted(results, key=lambda r: r[0])  # stable: queries keep their order within a sample


def score_copy_task(model, task: CopyTask, batch_size: int = 16, metric=None, progress: bool = False) -> dict:
    """exact_match and token_accuracy overall and per query position i, through the evaluate metric.

    Under torch.distributed each process scores its share of the samples (accelerate's
    split_between_processes, padded so every rank runs as many batches, as sharded FSDP forwards
    need) and every rank gets the numbers one process would.
    """
    metric = metric or load_copy_metric()
    with split_across_processes(range(len(task.samples))) as mine:
        local = _predict(model, task, batch_size, progress, mine)
    unique = {}
    for record in gather_across_processes(local):  # the padding repeats a sample: keep each query once
        unique.setdefault(record[:2], record)
    results = [r[1:] for r in sorted(unique.values(), key=lambda r: r[0])]
    overall = metric.compute(predictions=[p for _, p, _ in results], references=[r for _, _, r in results])
    per_position = {}
    for i in task.query_indices:
        picked = [(p, r) for j, p, r in results if j == i]
        per_position[str(i)] = metric.compute(predictions=[p for p, _ in picked], references=[r for _, r in picked])
    return {
        "exact_match": overall["exact_match"],
        "token_accuracy": overall["token_accuracy"],
        "per_position": per_position,
        "num_samples": len(task.samples),
        "num_sequences": task.num_sequences,
    }
