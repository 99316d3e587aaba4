"""The next-token loss split into the tokens an induction head could predict and the rest.

The paper's first claim is that the training loss settles while copying has not yet been learned.
The aggregate loss hides that: copyable tokens are a minority of any text. Splitting it shows the
claim directly: on copyable tokens the loss waits at the in-weights level, then falls when the
induction head forms, while the loss on the other tokens has long settled.

A target token x[t+1] is *copyable* when the bigram (x[t], x[t+1]) occurred earlier in the same
sequence: an induction head at position t attends to the token after the earlier x[t] and copies
it, which is exactly x[t+1]. This is a property of the text alone, so the split works for any
held-out batch (the demo corpus, web text, code), on CPU or GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grokcopy.analysis.architectures import unwrap_model
from grokcopy.attention import analysis_mode


def copyable_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """[batch, T-1] bool: whether the target at position t+1 repeats a bigram seen earlier in its row."""
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    ids = ids[None] if ids.ndim == 1 else ids
    width = int(ids.max()) + 1 if ids.numel() else 1
    bigrams = ids[:, :-1] * width + ids[:, 1:]  # one integer per (current, next) pair
    positions = torch.arange(bigrams.shape[1])
    mask = torch.zeros_like(bigrams, dtype=torch.bool)
    for row, pairs in enumerate(bigrams):
        _, inverse = torch.unique(pairs, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1,), bigrams.shape[1], dtype=torch.long)
        first = first.scatter_reduce(0, inverse, positions, reduce="amin")
        mask[row] = positions > first[inverse]  # a later occurrence of a pair seen before
    return mask


@torch.inference_mode()
def copyable_loss_split(model, input_ids: torch.Tensor, batch_size: int = 32) -> dict:
    """Mean next-token loss (nats) on copyable targets and on the others, and the copyable share.

    Runs in eval mode (dropout off) and restores the model's mode; None for a part with no tokens."""
    lm = unwrap_model(model)
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    ids = ids[None] if ids.ndim == 1 else ids
    mask = copyable_mask(ids)
    device = lm.get_input_embeddings().weight.device
    losses = []
    with analysis_mode(model):
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size].to(device)
            logits = lm(input_ids=chunk, use_cache=False).logits[:, :-1].float()
            losses.append(F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:], reduction="none").cpu())
    loss = torch.cat(losses)
    copyable, other = loss[mask], loss[~mask]
    return {"copyable_loss": float(copyable.mean()) if copyable.numel() else None,
            "other_loss": float(other.mean()) if other.numel() else None,
            "copyable_share": float(mask.float().mean())}
