"""Induction-head scores for Hugging Face causal LMs (Lv et al. 2024, "Language Models 'Grok' to Copy").

Per (layer, head) we compute

* ``attention`` -- the paper's A(L, H): on random tokens ``x_0 .. x_{s-1}`` repeated twice, the mean
  attention weight from position ``s+i-1`` to position ``i``, ``i`` in ``1 .. s-1``, read with
  0-based positions (the only reading in which every such pair is an induction pair): each
  second-copy token attends to the token that *followed* its first occurrence.  With a leading BOS
  every position is shifted by one (``s+i -> i+1``); ``with_bos`` is recorded in the result.
* ``ep`` -- eigenvalue positivity of the OV circuit ``W_U W_O^h W_V^h W_E``,
  ``sum(lambda) / sum(|lambda|)``, from the d_head x d_head product (cyclic permutation), float64.
  Norm *weights* (input/final RMSNorm or LayerNorm scales) are folded in; LayerNorm centring,
  biases and the per-token 1/rms are ignored (``fold_norms=False``: raw weights only).
* ``induction`` -- ``attention * ep``, the paper's I(L, H), in [-1, 1].
* ``prev_token`` (Olsson et al.) -- mean attention from every position to the one before it on the
  same repeated random sequence (queries from the second real token on, so BOS is never a target).
* ``prefix_matching`` (Olsson et al.) -- for every second-copy token, the total attention paid to
  keys whose *preceding* token equals the current token, averaged over second-copy tokens.  With
  distinct random tokens this is A plus the last second-copy token (whose target is the first token
  of the second copy); it stays correct when tokens repeat inside a copy.
* ``icl_score`` (Olsson et al.) -- mean loss on the 500th token minus mean loss on the 50th token
  (1-based) of caller-supplied held-out sequences; None if they or the model's context are shorter.

Supported: LLaMA and relatives that share its module layout (Mistral, Qwen2, Qwen3, OLMo, OLMo-2/3),
GPT-NeoX (Pythia) and GPT-2; anything else raises :class:`UnsupportedArchitectureError`.
The weight side (EP, the OV circuit, family layouts) lives in :mod:`grokcopy.analysis.ov_circuit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from grokcopy.analysis.architectures import (
    embedding_vocab_size,
    model_context_length,
    model_family,
    unwrap_model,
)
from grokcopy.analysis.induction_config import (  # noqa: F401 (re-exported)
    PAPER_SEQ_LEN,
    InductionConfig,
    fit_seq_len,
)
from grokcopy.analysis.ov_circuit import (
    eigenvalue_positivity,
    ov_circuit_eigenvalues,
    ov_circuit_matrices,
    residual_copying_score,
)
from grokcopy.attention import analysis_mode
from grokcopy.devices import gather_across_processes, split_across_processes
from grokcopy.errors import UnsupportedArchitectureError

__all__ = [
    "InductionConfig", "InductionScores", "UnsupportedArchitectureError", "analyze_induction",
    "attention_pattern_scores", "eager_eval_mode", "eigenvalue_positivity", "fit_seq_len", "icl_score",
    "ov_circuit_eigenvalues", "ov_circuit_matrices", "repeated_random_tokens",
]

@dataclass
class InductionScores:
    """Per-head scores, arrays shaped [num_layers, num_heads]."""

    num_layers: int
    num_heads: int
    attention: np.ndarray
    ep: np.ndarray
    induction: np.ndarray
    prev_token: np.ndarray
    prefix_matching: np.ndarray
    icl_score: float | None
    seq_len: int
    with_bos: bool
    copying: np.ndarray | None = None  # residual_copying_score: the OV copying score where the head reads

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; matrices become lists of lists indexed [layer][head]."""
        icl = None if self.icl_score is None else float(self.icl_score)
        out: dict[str, Any] = dict(num_layers=int(self.num_layers), num_heads=int(self.num_heads),
                                   icl_score=icl, seq_len=int(self.seq_len), with_bos=bool(self.with_bos))
        for key in ("attention", "ep", "induction", "prev_token", "prefix_matching", "copying"):
            if getattr(self, key) is not None:
                out[key] = np.asarray(getattr(self, key), dtype=float).tolist()
        return out


# ----------------------------------------------------------------------------- attention patterns


def repeated_random_tokens(
    vocab_size: int, seq_len: int, batch_size: int, *, seed: int = 0,
    bos_token_id: int | None = None, exclude: tuple[int, ...] = (),
) -> torch.Tensor:
    """[batch, (1 if BOS) + 2*seq_len] ids: a random length-seq_len sequence written twice.

    Tokens are distinct within a copy when the vocabulary allows (so "the token after its earlier
    occurrence" is unique) and never equal to BOS or the ``exclude`` ids.
    """
    banned = set(exclude) | ({bos_token_id} if bos_token_id is not None else set())
    allowed = torch.tensor([t for t in range(vocab_size) if t not in banned], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(batch_size):
        if len(allowed) >= seq_len:
            pick = torch.randperm(len(allowed), generator=gen)[:seq_len]
        else:
            pick = torch.randint(len(allowed), (seq_len,), generator=gen)
        rows.append(allowed[pick].repeat(2))
    ids = torch.stack(rows)
    if bos_token_id is not None:
        ids = torch.cat([torch.full((batch_size, 1), bos_token_id, dtype=torch.long), ids], dim=1)
    return ids


def eager_eval_mode(model: nn.Module, *, eager: bool = True):
    """Eval mode and (with `eager`) eager attention, which alone returns attention weights; both restored
    exactly afterwards (grokcopy.attention.analysis_mode)."""
    return analysis_mode(model, ("eager",) if eager else None)


def _input_device(lm: nn.Module) -> torch.device:
    return lm.get_input_embeddings().weight.device


@torch.inference_mode()
def attention_pattern_scores(
    model: nn.Module, input_ids: torch.Tensor, *, seq_len: int, with_bos: bool
) -> dict[str, np.ndarray]:
    """A (``attention``), ``prefix_matching`` and ``prev_token`` scores of each sequence, each
    [batch, L, H] (average over the batch for the model's scores), from a batch of repeated random sequences (layout of :func:`repeated_random_tokens`).  Call inside
    :func:`eager_eval_mode` (analyze_induction does)."""
    lm = unwrap_model(model)
    off, s = int(with_bos), seq_len
    if input_ids.shape[1] != off + 2 * s:
        raise ValueError(f"expected length {off + 2 * s}, got {input_ids.shape[1]}")
    ids = input_ids.to(_input_device(lm))
    out = lm(input_ids=ids, output_attentions=True, use_cache=False)
    if not out.attentions or out.attentions[0] is None:
        raise RuntimeError("model returned no attention weights (is eager attention supported?)")
    i = torch.arange(1, s, device=ids.device)
    q_ind, k_ind = off + s + i - 1, off + i  # the paper's A: s+i-1 -> i, shifted past BOS
    second = torch.arange(off + s, off + 2 * s, device=ids.device)
    # prefix-matching mask [B, |second|, T]: key k (k >= 1, k <= q) whose preceding token is ids[q]
    prev_tok = torch.cat([torch.full_like(ids[:, :1], -1), ids[:, :-1]], dim=1)
    if with_bos:
        prev_tok[:, 1] = -1  # BOS is not a real token to match
    keys = torch.arange(ids.shape[1], device=ids.device)
    match = (prev_tok[:, None, :] == ids[:, second, None]) & (keys[None, None, :] <= second[None, :, None])
    scores: dict[str, list[torch.Tensor]] = {"attention": [], "prefix_matching": [], "prev_token": []}
    for attn in out.attentions:  # [B, H, T, T]
        attn = attn.double()
        scores["attention"].append(attn[:, :, q_ind, k_ind].mean(dim=2))
        pm = (attn[:, :, second, :] * match[:, None].to(attn.dtype)).sum(-1)
        scores["prefix_matching"].append(pm.mean(dim=2))
        diag = torch.diagonal(attn, offset=-1, dim1=-2, dim2=-1)  # (q, q-1) for q = 1 .. T-1
        scores["prev_token"].append(diag[:, :, off:].mean(dim=2))
    return {k: torch.stack(v, dim=1).cpu().numpy() for k, v in scores.items()}  # [B, L, H]


# ----------------------------------------------------------------------------- ICL score


@torch.inference_mode()
def icl_score(model: nn.Module, input_ids: Any, *, batch_size: int = 8, per_row: bool = False):
    """Olsson et al.'s in-context-learning score: mean loss (nats) on the 500th token minus mean loss
    on the 50th token (1-based; i.e. predicting ids[:, 499] and ids[:, 49]).  Negative = the model
    uses longer context.  None when the sequences or the model's context are shorter than 500.
    ``per_row``: the difference of each sequence (a list), whose mean is the score.
    Runs in eval mode with the model's own attention implementation."""
    lm = unwrap_model(model)
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    if ids.ndim == 1:
        ids = ids[None]
    ctx = model_context_length(lm)
    if ids.shape[1] < 500 or (ctx is not None and ctx < 500):
        return None
    ids = ids[:, :500].to(_input_device(lm))
    keep = torch.tensor([48, 498], device=ids.device)  # logits predicting tokens 50 and 500
    losses = []
    with eager_eval_mode(model, eager=False):
        for start in range(0, ids.shape[0], batch_size):
            chunk = ids[start : start + batch_size]
            logits = lm(input_ids=chunk, use_cache=False, logits_to_keep=keep).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            target = chunk[:, [49, 499]].to(logp.device)
            losses.append(-logp.gather(-1, target[..., None])[..., 0])
    loss = torch.cat(losses)  # [rows, 2]
    return (loss[:, 1] - loss[:, 0]).tolist() if per_row else float(loss.mean(dim=0)[1] - loss.mean(dim=0)[0])


# ----------------------------------------------------------------------------- entry point


@torch.inference_mode()
def analyze_induction(
    model: nn.Module,
    *,
    seq_len: int = PAPER_SEQ_LEN,
    batch_size: int = InductionConfig.batch_size,
    seed: int = 0,
    with_bos: bool = True,
    icl_input_ids: Any = None,
    bos_token_id: int | None = None,
    vocab_size: int | None = None,
) -> InductionScores:
    """All induction scores of ``model`` (a transformers causal LM or a PEFT LoRA wrapper of one).

    Attention patterns are read in eval mode with eager attention; the attention implementation and
    each module's train/eval flag are restored afterwards.  EP uses the (LoRA-merged) weights.  ``bos_token_id`` defaults to
    ``config.bos_token_id`` and is only used when ``with_bos``.  ``vocab_size`` limits the random
    tokens and EP's vocabulary to the ids a tokenizer can produce (an embedding matrix padded past
    the tokenizer, as Pythia's is, has rows no training ever touched).  Under torch.distributed each
    process reads its share of the sequences (accelerate's split, padded so all run one forward) and
    every rank gets the numbers one process would.
    """
    lm = unwrap_model(model)
    model_family(lm)  # fail fast, before any forward pass
    vocab = embedding_vocab_size(lm) if vocab_size is None else min(int(vocab_size), embedding_vocab_size(lm))
    if with_bos:
        bos_token_id = lm.config.bos_token_id if bos_token_id is None else bos_token_id
        if bos_token_id is None or not 0 <= int(bos_token_id) < vocab:
            raise ValueError(f"with_bos=True needs a BOS id inside the vocabulary, got {bos_token_id!r}")
        bos_token_id = int(bos_token_id)
    else:
        bos_token_id = None
    specials: list[int] = []
    for key in ("eos_token_id", "pad_token_id"):  # an int, a list of ints or None
        value = getattr(lm.config, key, None)
        specials += [value] if isinstance(value, int) else list(value or [])
    ids = repeated_random_tokens(
        vocab, seq_len, batch_size, seed=seed, bos_token_id=bos_token_id, exclude=tuple(specials)
    )
    ep = eigenvalue_positivity(model, vocab_size=vocab)
    copying = residual_copying_score(model, vocab_size=vocab, exclude=specials, seed=seed)
    with split_across_processes(range(len(ids))) as mine:
        with eager_eval_mode(model):
            local = attention_pattern_scores(model, ids[mine], seq_len=seq_len, with_bos=with_bos)
    # Each sequence once (the split pads with repeats), in order: the mean one process would compute.
    rows = dict(gather_across_processes([(i, {k: v[n] for k, v in local.items()}) for n, i in enumerate(mine)]))
    patterns = {k: np.mean([rows[i][k] for i in sorted(rows)], axis=0) for k in local}
    icl = None
    if icl_input_ids is not None:
        held_out = torch.as_tensor(icl_input_ids, dtype=torch.long)
        held_out = held_out[None] if held_out.ndim == 1 else held_out
        with split_across_processes(range(len(held_out))) as mine:
            diffs = icl_score(model, held_out[mine], batch_size=batch_size, per_row=True)
        if diffs is not None:
            by_row = dict(gather_across_processes(list(zip(mine, diffs))))
            icl = float(np.mean(list(by_row.values())))
    return InductionScores(
        num_layers=ep.shape[0], num_heads=ep.shape[1], ep=ep, induction=patterns["attention"] * ep,
        **patterns, icl_score=icl, seq_len=seq_len, with_bos=with_bos, copying=copying,
    )
