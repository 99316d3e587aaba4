"""The OV circuit of every attention head and its eigenvalue positivity (EP), from the weights alone.

EP = sum(lambda) / sum(|lambda|) over the eigenvalues of W_U W_O^h W_V^h W_E: +1 for a head that
copies the token it attends to (the paper's second half of I = A x EP), with the weights a PEFT
LoRA layer actually uses. Where each family keeps its layers is in grokcopy.analysis.architectures.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from grokcopy.analysis.architectures import (
    POST_NORM_FAMILIES,
    layers_and_final_norm,
    model_family,
    unwrap_model,
)
from grokcopy.attention import analysis_mode


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a module actually uses, in its native layout, with active LoRA deltas added.

    A PEFT LoRA layer keeps W in ``base_layer`` and B, A beside it; the forward pass uses
    W + scale * B @ A.  We add the deltas out of place, so the model is never mutated (no merge).
    """
    if not (hasattr(module, "base_layer") and hasattr(module, "get_delta_weight")):
        return module.weight
    weight = module.get_base_layer().weight
    merged = set(getattr(module, "merged_adapters", []))
    present = set(getattr(module, "lora_A", {})) | set(getattr(module, "lora_embedding_A", {}))
    for name in merged | set(module.active_adapters):
        if getattr(module, "lora_variant", {}).get(name) is not None:
            raise NotImplementedError(
                f"LoRA variant (e.g. DoRA) on adapter {name!r}: merge_and_unload() a copy first"
            )
    if module.disable_adapters:  # forward runs the bare base weight: undo merged deltas
        for name in merged:
            weight = weight - module.get_delta_weight(name)
    else:
        for name in module.active_adapters:
            if name in present and name not in merged:
                weight = weight + module.get_delta_weight(name)
    return weight


def _layer_ov_weights(
    layer: nn.Module, model_type: str, n_heads: int
) -> tuple[torch.Tensor, torch.Tensor, nn.Module | None, nn.Module | None]:
    """(W_V [n_kv*d_head, d_model], W_O [d_model, n_heads*d_head], input norm, output norm).

    Both matrices act on column vectors (y = W x), query head h reads key/value head
    h // (n_heads // n_kv) exactly as transformers' repeat_kv expands them.
    """
    if model_type == "gpt2":  # Conv1D stores [in, out]: y = x @ W
        attn = layer.attn
        qkv = effective_weight(attn.c_attn)  # [d, 3d], columns q | k | v
        d = qkv.shape[0]
        return qkv[:, 2 * d :].T, effective_weight(attn.c_proj).T, layer.ln_1, None
    if model_type == "gpt_neox":  # fused rows interleaved per head: [q_h | k_h | v_h] * n_heads
        attn = layer.attention
        qkv = effective_weight(attn.query_key_value)  # [3d, d]
        d = qkv.shape[1]
        w_v = qkv.reshape(n_heads, 3, -1, d)[:, 2].reshape(-1, d)
        return w_v, effective_weight(attn.dense), layer.input_layernorm, None
    attn = layer.self_attn
    w_v, w_o = effective_weight(attn.v_proj), effective_weight(attn.o_proj)
    if model_type in POST_NORM_FAMILIES:
        return w_v, w_o, None, layer.post_attention_layernorm
    return w_v, w_o, layer.input_layernorm, None


def _norm_scale(norm: nn.Module | None, device: torch.device) -> torch.Tensor | None:
    """A norm's learned per-channel scale g (float64), or None if it has none.

    Folding g in is exact for the linear part of RMSNorm.  Biases, the per-token 1/rms (1/std) and
    LayerNorm's mean subtraction are left out: folded in, the centring adds a rank-one term (row means
    of W_U times the summed head output) that gives heads writing nothing the unembedding reads a
    spurious EP near -1 or +1.
    """
    weight = getattr(norm, "weight", None) if norm is not None else None
    return None if weight is None else weight.detach().to(device, torch.float64)


def _compute_device(tensor: torch.Tensor) -> torch.device:
    return torch.device("cpu") if tensor.device.type in ("mps", "meta") else tensor.device


# ----------------------------------------------------------------------------- OV circuit


@torch.inference_mode()
def ov_circuit_matrices(model: nn.Module, *, fold_norms: bool = True, vocab_size: int | None = None) -> torch.Tensor:
    """Per-head d_head x d_head matrices W_V^h W_E^T W_U W_O^h, float64, shape [L, H, d_head, d_head].

    Their eigenvalues are the non-zero eigenvalues of the vocabulary-sized OV circuit
    W_U W_O^h W_V^h W_E^T (cyclic permutation: eig(AB) and eig(BA) share non-zero eigenvalues),
    so no vocab x vocab matrix is formed.  Only the direct path embedding -> head -> unembedding
    counts; biases are ignored.  With ``fold_norms`` (default) the per-channel weights of the input
    norm (or OLMo-2's output norm) and of the final norm are folded in, as TransformerLens' fold_ln
    does (see :func:`_norm_scale`); ``fold_norms=False`` uses the raw weights W_U W_O W_V W_E.
    ``vocab_size`` keeps the first rows only (the tokens a tokenizer can produce).
    """
    lm = unwrap_model(model)
    model_type = model_family(lm)
    n_heads = int(lm.config.num_attention_heads)
    emb = effective_weight(lm.get_input_embeddings())  # [V, d]
    unemb = effective_weight(lm.get_output_embeddings())  # [V, d]
    if emb.shape != unemb.shape:
        raise ValueError(f"embedding {tuple(emb.shape)} and unembedding {tuple(unemb.shape)} differ")
    if vocab_size is not None:
        emb, unemb = emb[:vocab_size], unemb[:vocab_size]
    device = _compute_device(emb)
    d = emb.shape[1]
    layers, final_norm = layers_and_final_norm(lm, model_type)
    final = _norm_scale(final_norm, device) if fold_norms else None
    # G = W_E^T W_U (d x d), accumulated over vocabulary chunks to keep float64 copies small.
    gram = torch.zeros(d, d, dtype=torch.float64, device=device)
    for start in range(0, emb.shape[0], 8192):
        e = emb[start : start + 8192].to(device, torch.float64)
        u = unemb[start : start + 8192].to(device, torch.float64)
        gram += e.T @ u
    if final is not None:
        gram = gram * final  # W_U -> W_U diag(g_final): the norm acts before the unembedding
    out = []
    for layer in layers:
        w_v, w_o, in_norm, out_norm = _layer_ov_weights(layer, model_type, n_heads)
        w_v, w_o = w_v.to(device, torch.float64), w_o.to(device, torch.float64)
        g_in, g_out = (_norm_scale(in_norm, device), _norm_scale(out_norm, device)) if fold_norms else (None, None)
        if g_in is not None:
            w_v = w_v * g_in  # W_V diag(g_in)
        if g_out is not None:
            w_o = g_out[:, None] * w_o  # diag(g_out) W_O (OLMo-2's norm on the attention output)
        d_head = w_o.shape[1] // n_heads
        n_kv = w_v.shape[0] // d_head
        blocks = (w_v @ gram @ w_o).view(n_kv, d_head, n_heads, d_head)
        kv_of = torch.arange(n_heads, device=device) // (n_heads // n_kv)
        out.append(blocks.permute(0, 2, 1, 3)[kv_of, torch.arange(n_heads, device=device)])
    return torch.stack(out)


def ov_circuit_eigenvalues(model: nn.Module, *, fold_norms: bool = True, vocab_size: int | None = None) -> np.ndarray:
    """Complex eigenvalues of each head's OV circuit, shape [L, H, d_head] (see ov_circuit_matrices)."""
    mats = ov_circuit_matrices(model, fold_norms=fold_norms, vocab_size=vocab_size).cpu().numpy()
    return np.linalg.eigvals(mats)


def eigenvalue_positivity(model: nn.Module, *, fold_norms: bool = True, vocab_size: int | None = None) -> np.ndarray:
    """EP = sum(lambda) / sum(|lambda|) per head, [L, H] in [-1, 1]: +1 for a pure copying head.

    A head whose OV circuit is exactly zero gets 0.
    """
    eig = ov_circuit_eigenvalues(model, fold_norms=fold_norms, vocab_size=vocab_size)
    num = eig.sum(-1).real
    den = np.abs(eig).sum(-1)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


# ----------------------------------------------------------------------------- through the residual stream

COPYING_TOKENS = 2048  # tokens scored per head: enough for a share, cheap for any vocabulary


@torch.inference_mode()
def residual_copying_score(model: nn.Module, *, vocab_size: int | None = None, exclude=(), seed: int = 0,
                           num_tokens: int = COPYING_TOKENS) -> np.ndarray:
    """Per head [L, H], in [0, 1]: the share of tokens t that head (L, h) would copy, read where it reads.

    EP uses the direct path W_U W_O W_V W_E, so a head in layer L > 0 is scored on embeddings it never
    sees: what it reads is the residual stream, embeddings plus what the layers below wrote. Here each
    token t is run alone (one position: every head attends to it fully) through the layers below L; the
    residual stream entering layer L goes through that layer's input norm, head h's W_V and W_O, the final
    norm's scale and the unembedding (Olsson et al. 2022's copying score, top-1 form), and the head
    copies t when t is the top-1 token. Layer 0 reads the embeddings, so there it is the direct path.
    """
    lm = unwrap_model(model)
    model_type = model_family(lm)
    n_heads = int(lm.config.num_attention_heads)
    vocab = int(vocab_size or lm.get_input_embeddings().weight.shape[0])
    candidates = np.setdiff1d(np.arange(vocab), np.asarray(list(exclude), dtype=np.int64))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(candidates, size=min(num_tokens, len(candidates)), replace=False))
    device = lm.get_input_embeddings().weight.device
    tokens = torch.as_tensor(chosen, device=device)
    with analysis_mode(model):
        hidden = model(input_ids=tokens[:, None], output_hidden_states=True).hidden_states
    layers, final_norm = layers_and_final_norm(lm, model_type)
    unemb = effective_weight(lm.get_output_embeddings())[:vocab].double()
    g_final = _norm_scale(final_norm, unemb.device)
    scores = np.zeros((len(layers), n_heads))
    for index, layer in enumerate(layers):
        w_v, w_o, in_norm, out_norm = _layer_ov_weights(layer, model_type, n_heads)
        x = hidden[index][:, 0]
        x = (in_norm(x) if in_norm is not None else x).double()
        d_head = w_o.shape[1] // n_heads
        n_kv = w_v.shape[0] // d_head
        values = (x @ w_v.double().T).view(len(tokens), n_kv, d_head)
        for head in range(n_heads):
            write = values[:, head // (n_heads // n_kv)] @ w_o.double()[:, head * d_head:(head + 1) * d_head].T
            if out_norm is not None:  # OLMo-2 normalises the attention output: its scale
                write = write * _norm_scale(out_norm, write.device)
            if g_final is not None:
                write = write * g_final
            scores[index, head] = float((write @ unemb.T).argmax(-1).eq(tokens.to(write.device)).double().mean())
    return scores
