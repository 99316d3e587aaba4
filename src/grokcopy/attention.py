"""A model put in the state an analysis needs, and put back exactly: eval mode and the attention kernel.

Analyses need what only some attention kernels give: attention weights (eager only: sdpa and flash return
none) or a 4-D mask (eager or sdpa: flash and flex take none). `analysis_mode` is the one place that switches
the kernel (transformers' public `set_attn_implementation`, which also dispatches to sub-configs) and puts the
previous one back, and that sets eval mode and restores each module's own `training` flag afterwards (not
`model.train()`, which would also flip submodules a caller had deliberately frozen in eval mode). The one
thing read is `config._attn_implementation`, for which transformers has no public getter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def unwrap_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a torch.compile / DDP wrapper (accelerate's unwrapping) or a PEFT
    wrapper (LoRA layers stay injected)."""
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(model, keep_fp32_wrapper=True)
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


@contextlib.contextmanager
def analysis_mode(model: nn.Module, attention: tuple[str, ...] | None = None, use: str | None = None
                  ) -> Iterator[str | None]:
    """Eval mode, and an attention kernel among `attention` (switched to `use` when the model runs another;
    None: any kernel). Yields the kernel the analysis runs with; restores kernel and modes on exit."""
    lm = unwrap_model(model)
    modes = [(m, m.training) for m in model.modules()]
    previous = getattr(lm.config, "_attn_implementation", None)
    switch = attention is not None and previous not in attention
    model.eval()
    try:
        if switch:
            lm.set_attn_implementation(use or attention[0])
        yield (use or attention[0]) if switch else previous
    finally:
        if switch:
            lm.set_attn_implementation(previous)
        for module, training in modes:
            module.training = training
