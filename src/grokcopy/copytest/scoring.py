"""Scoring the copy test: each context runs once, its queries packed in one row on its KV cache.

A batch of contexts runs once (causal attention) and keeps its KV cache; then all queries of a
sample (prefix + suffix each) run as one row on that cache. A 4-D attention mask lets every query
token see the context and the earlier tokens of its own query only, and the position ids of every
query start where the context ends, so each query is computed exactly as if it alone followed the
context (under teacher forcing), while the cache is never repeated per query (repeating a 968-token
cache for 10 queries, and projecting logits at every context position, took 45% of the time at
162M). Logits are projected only where a suffix token is predicted. A query is an exact match when
the argmax at every suffix position is the suffix token: exactly when greedy decoding would produce
the suffix, since greedy only diverges after a first wrong token. The numbers come from the
`metrics/copy_accuracy` evaluate module.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from itertools import groupby

import torch

from grokcopy.attention import analysis_mode
from grokcopy.copytest.task import CopyTask
from grokcopy.devices import gather_across_processes, split_across_processes
from grokcopy.resources import metric_path


@lru_cache(maxsize=1)
def load_copy_metric():
    import evaluate

    # A copy test's predictions are a few thousand ids: kept in memory rather than in an arrow cache file
    # per score, which a full disk or a read-only HF_HOME would turn into a failed run.
    return evaluate.load(str(metric_path()), keep_in_memory=True)


@torch.inference_mode()
def predict_suffixes(model, task: CopyTask, batch_size: int = 16, progress: bool = False,
                     samples: Sequence[int] | None = None):
    """Greedy (teacher-forced) predictions for every query of `samples` (default: all), in sample order:
    a list of (query_index, predicted ids, suffix ids)."""
    return [r[1:] for r in _predict(model, task, batch_size, progress, samples)]


def pack_queries(samples, device) -> tuple[torch.Tensor, ...]:
    """For samples of equal context length: the contexts (batch, C); all queries of a sample in one row
    after it (batch, Q, right-padded); their position ids (each query starts at C); the mask of what each
    query token may see, the context and its own query's earlier tokens (batch, 1, Q, C + Q); and the
    query positions whose logit predicts a suffix token (batch, Q)."""
    n = len(samples[0].context)
    rows, positions, blocks, wanted = [], [], [], []
    for sample in samples:
        row, pos, block, want = [], [], [], []
        for j, (_, prefix, suffix) in enumerate(sample.queries, start=1):
            length = len(prefix) + len(suffix)
            row += prefix + suffix
            pos += range(n, n + length)
            block += [j] * length
            # The logit at the last prefix token predicts the first suffix token, ...; the last suffix
            # token's own logit predicts nothing.
            want += [False] * (len(prefix) - 1) + [True] * len(suffix) + [False]
        rows.append(row), positions.append(pos), blocks.append(block), wanted.append(want)
    width = max(map(len, rows))
    pad = lambda rows, value: torch.tensor([r + [value] * (width - len(r)) for r in rows], device=device)  # noqa: E731
    block = pad(blocks, -1)  # -1: padding, which sees only itself (no row without a key: no NaN)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    own_query = causal & (block[:, :, None] == block[:, None, :])
    sees_context = torch.ones(len(samples), width, n, dtype=torch.bool, device=device)
    mask = torch.cat([sees_context, own_query], dim=-1)[:, None]
    contexts = torch.tensor([s.context for s in samples], device=device)
    return contexts, pad(rows, 0), pad(positions, 0), mask, pad(wanted, False)


def predict_batch(model, batch, device, additive_mask: bool) -> list:
    """(sample, query_index, predicted ids, suffix ids) for each query of a batch of (k, sample), in the
    batch's order (a batch may hold a sample more than once: each row is its own).

    Two forwards: the contexts (causal, their KV cache kept once: never repeated per query), then every
    query of a sample in one row on that cache under the mask of `pack_queries`."""
    contexts, queries, positions, allowed, wanted = pack_queries([s for _, s in batch], device)
    cache = model(input_ids=contexts, use_cache=True, logits_to_keep=1).cache
    mask = allowed
    if additive_mask:  # eager attention adds its mask to the scores; sdpa takes the boolean one
        dtype = next(model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    logits = model(input_ids=queries, position_ids=positions, attention_mask=mask, cache=cache, use_cache=True,
                   logits_to_keep=wanted).logits  # (wanted positions of all rows, vocab), row by row
    argmax = iter(logits.argmax(-1).tolist())
    return [(k, i, [next(argmax) for _ in suffix], suffix) for k, sample in batch for i, _, suffix in sample.queries]


def attention_that_takes_a_mask(model):
    """Eval mode and a kernel that takes a 4-D mask: eager or sdpa; any other (flash, flex) is switched to sdpa
    for the test. Yields the kernel (the mask is additive for eager, boolean for sdpa); restores everything."""
    return analysis_mode(model, ("eager", "sdpa"), "sdpa")


def sample_batches(task: CopyTask, samples: Sequence[int] | None, batch_size: int) -> list[list[int]]:
    """`samples` (default: all) in batches of at most `batch_size`; samples share a batch only when their
    contexts are equally long (always the case for `tokens` symbols)."""
    chosen = range(len(task.samples)) if samples is None else samples
    order = sorted(chosen, key=lambda k: (len(task.samples[k].context), k))
    batches = []
    for _, group in groupby(order, key=lambda k: len(task.samples[k].context)):
        group = list(group)
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    return batches


def _predict(model, task: CopyTask, batch_size: int, progress: bool, samples: Sequence[int] | None):
    """(sample, query_index, predicted ids, suffix ids) for each query of `samples`, sorted by sample."""
    device = next(model.parameters()).device
    results = []
    batches = sample_batches(task, samples, batch_size)
    iterator = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc="copy test", unit="batch")
    with attention_that_takes_a_mask(model) as kernel:
        for batch in iterator:
            results += predict_batch(model, [(k, task.samples[k]) for k in batch], device, kernel == "eager")
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
