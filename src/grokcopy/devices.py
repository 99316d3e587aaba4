"""Where analyses run, how they share work across processes, and how memory is given back."""

from __future__ import annotations

import gc
from contextlib import contextmanager


def has_accelerator() -> bool:
    """A CUDA or XPU device is present (the Trainer would use it)."""
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def default_device() -> str:
    """`cuda` when a GPU is present, else `cpu`: where an analysis of a saved model runs by default."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def release_memory() -> None:
    """Free a finished model's memory (host and GPU) before the next one is loaded."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def distributed() -> bool:
    """torch.distributed is running (torchrun / accelerate launch): analyses split their work."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


@contextmanager
def split_across_processes(items: list):
    """This process's share of `items` under torch.distributed (all of them otherwise), split by
    accelerate with padding, so every process runs as many forward passes (sharded FSDP forwards are
    collectives). The padding repeats the last item: drop repeats after `gather_across_processes`."""
    if not distributed():
        yield list(items)
        return
    from accelerate import PartialState

    with PartialState().split_between_processes(list(items), apply_padding=True) as mine:
        yield mine


def gather_across_processes(local: list) -> list:
    """Every process's `local` items, concatenated in process order (accelerate's gather_object)."""
    if not distributed():
        return list(local)
    from accelerate.utils import gather_object

    return gather_object(local)
