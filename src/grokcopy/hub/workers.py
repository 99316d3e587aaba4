"""A series split across the processes of `torchrun` / `accelerate launch`: which share is whose, and
how the main process learns that the others are done.

Each revision is analysed by exactly one process, on its own device, with no collective between
processes (the copy test and the induction analysis split *their* work across processes only when a
torch.distributed process group is running, and a series starts none). The processes only need to
meet once, at the end: each sets a key in the launcher's TCP store (the one torchrun's agent, or
rank 0, serves at MASTER_ADDR:MASTER_PORT, which needs no timeout on collectives however long a
process's share takes), and the main process waits for all keys before merging the part files.
"""

from __future__ import annotations

import os
from datetime import timedelta

WAIT = timedelta(days=7)  # a process's share of a large suite can take many hours


def launch_process() -> tuple[int, int, int]:
    """(this process's index, number of processes, local index) from the launcher's environment."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def my_share(items: list, index: int, count: int) -> list:
    """Every `count`-th item from the `index`-th: shares differ by at most one item, in training order."""
    return list(items[index::count])


def _store(index: int, count: int):
    import torch.distributed as dist

    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    return dist.TCPStore(os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", 29500)), count,
                         is_master=index == 0 and not agent_store, timeout=WAIT, wait_for_workers=False)


def finish(index: int, count: int, tag: str) -> None:
    """Say this process is done; on the main process (index 0), wait until every process has said so."""
    if count < 2:
        return
    store = _store(index, count)
    store.set(f"grokcopy-series/{tag}/{index}", "done")
    if index == 0:
        store.wait([f"grokcopy-series/{tag}/{i}" for i in range(count)], WAIT)
