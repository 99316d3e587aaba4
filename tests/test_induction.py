"""Tests for grokcopy.analysis.induction on real (tiny) transformers models."""

import copy
import json

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel  # noqa: E402
from transformers.models.llama.modeling_llama import repeat_kv  # noqa: E402

from grokcopy.analysis.induction import (  # noqa: E402
    InductionScores,
    UnsupportedArchitectureError,
    analyze_induction,
    eigenvalue_positivity,
    icl_score,
    ov_circuit_eigenvalues,
    repeated_random_tokens,
)

VOCAB = 48
TINY = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=32, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
FAMILY_KWARGS = {
    "llama": dict(TINY, num_key_value_heads=2),
    "mistral": dict(TINY, num_key_value_heads=2),
    "qwen2": dict(TINY, num_key_value_heads=2),
    "qwen3": dict(TINY, num_key_value_heads=2, head_dim=4),
    "olmo": dict(TINY),
    "olmo2": dict(TINY, num_key_value_heads=2),
    "gpt_neox": dict(TINY),
    "gpt2": dict(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=4, n_positions=64,
                 bos_token_id=1, eos_token_id=2),
}


def tiny_model(model_type, seed=0, attn="sdpa", **overrides):
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, **{**FAMILY_KWARGS[model_type], **overrides})
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    with torch.no_grad():  # make every norm weight matter (default init is all ones)
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                p.normal_(1.0, 0.5)
    return model


# ---------------------------------------------------------------- planted previous-token + induction heads

V, NPOS = 20, 31  # GPT-2 residual = [token one-hot | position one-hot | previous-token one-hot | const]
TOK, POS, PREV, CONST = 0, V, V + NPOS, 2 * V + NPOS
D, DH = 72, 36


def planted_gpt2(beta=5.0):
    """L0H0 = previous-token head (copies token into PREV); L1H1 = induction head (query token
    matches the key's PREV slot, copies the key's token to the logits); L0H1, L1H0 = BOS sinks."""
    cfg = GPT2Config(vocab_size=V, n_positions=NPOS, n_embd=D, n_layer=2, n_head=2, bos_token_id=V - 1,
                     eos_token_id=V - 1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(cfg)
    tr = model.transformer
    with torch.no_grad():
        for p in model.parameters():  # MLPs, biases and all unplanted weights are zero
            p.zero_()
        tr.wte.weight[:, TOK:TOK + V] = torch.eye(V)
        tr.wpe.weight[:, POS:POS + NPOS] = torch.eye(NPOS)
        for ln in [tr.ln_f] + [b.ln_1 for b in tr.h] + [b.ln_2 for b in tr.h]:
            ln.weight.fill_(1.0)
            ln.weight[CONST], ln.bias[CONST] = 0.0, 1.0  # a constant-1 channel after every LayerNorm

        def head(layer, h, q, k, v=(), o=()):
            w, w_o = tr.h[layer].attn.c_attn.weight, tr.h[layer].attn.c_proj.weight  # Conv1D: y = x @ W
            for block, pairs in enumerate((q, k, v)):
                for src, dst in pairs:
                    w[src, block * D + h * DH + dst] = beta if block < 2 else 1.0
            for src, dst in o:
                w_o[h * DH + src, dst] = 1.0

        copy_tok = [(TOK + t, t) for t in range(V)]
        head(0, 0, [(POS + p, p - 1) for p in range(1, NPOS)], [(POS + p, p) for p in range(NPOS - 1)],
             copy_tok, [(t, PREV + t) for t in range(V)])
        head(0, 1, [(CONST, 0)], [(POS, 0)])
        head(1, 0, [(CONST, 0)], [(POS, 0)])
        head(1, 1, copy_tok, [(PREV + t, t) for t in range(V)], copy_tok, [(t, TOK + t) for t in range(V)])
    return model


def test_planted_heads_score_near_one_and_others_near_zero():
    model = planted_gpt2()
    s = analyze_induction(model, seq_len=12, batch_size=4, with_bos=True)
    assert isinstance(s, InductionScores) and s.with_bos and s.seq_len == 12
    planted = np.zeros((2, 2), bool)
    planted[1, 1] = True
    for name in ("attention", "prefix_matching", "induction"):
        score = getattr(s, name)
        assert score[1, 1] > 0.99, name
        assert np.all(np.abs(score[~planted]) < 0.05), (name, score)
    assert s.prev_token[0, 0] > 0.99
    # sinks attend to BOS, which is no query's previous token (queries start after the first real token)
    assert s.prev_token[0, 1] < 0.01 and s.prev_token[1, 0] < 0.01 and s.prev_token[1, 1] < 0.15
    np.testing.assert_allclose(s.ep, [[0.0, 0.0], [0.0, 1.0]], atol=1e-9)  # only L1H1 writes logits

    # Without BOS every position shifts by one; the induction head still finds its target, except
    # for the first second-copy token, which splits between position 0 (a self-"previous" token) and 1.
    s = analyze_induction(model, seq_len=12, batch_size=4, with_bos=False)
    assert not s.with_bos
    assert s.attention[1, 1] == pytest.approx((12 - 1.5) / (12 - 1), abs=0.01)
    assert s.prev_token[0, 0] > 0.99 and s.attention[0, 0] < 0.05


def test_repeated_random_tokens_layout():
    ids = repeated_random_tokens(30, 10, 3, seed=1, bos_token_id=5, exclude=(7,))
    assert ids.shape == (3, 21)
    assert torch.all(ids[:, 0] == 5)
    assert torch.equal(ids[:, 1:11], ids[:, 11:])
    body = ids[:, 1:11]
    assert not torch.any((body == 5) | (body == 7))
    assert all(len(set(row.tolist())) == 10 for row in body)  # distinct within a copy
    assert torch.equal(ids, repeated_random_tokens(30, 10, 3, seed=1, bos_token_id=5, exclude=(7,)))


# ---------------------------------------------------------------- eigenvalue positivity


def test_identity_ov_circuit_has_ep_plus_one_and_its_negative_minus_one():
    # Tied LLaMA with GQA (4 query heads, 2 kv heads, d_head 4, d_model 16).  W_O^h W_V^h = +-Q^T Q
    # (a projector), so the OV circuit is +-E Q^T Q E^T: positive/negative semi-definite.
    model = tiny_model("llama", tie_word_embeddings=True)
    attn = model.model.layers[0].self_attn
    with torch.no_grad():
        for n in model.model.modules():
            if hasattr(n, "variance_epsilon"):
                n.weight.fill_(1.0)
        q = torch.linalg.qr(torch.randn(16, 8))[0].T  # 8 orthonormal rows
        q0, q1 = q[:4], q[4:]
        attn.v_proj.weight.copy_(torch.cat([q0, q1]))
        attn.o_proj.weight.copy_(torch.cat([q0.T, -q0.T, -q1.T, q1.T], dim=1))  # heads 0,1 -> kv 0
    ep = eigenvalue_positivity(model)
    np.testing.assert_allclose(ep[0], [1.0, -1.0, -1.0, 1.0], atol=1e-9)


def _full_ov_circuits(model, model_type, fold_norms):
    """Vocab x vocab W_U W_O^h W_V^h W_E^T per head, built by pushing basis vectors through the
    projection modules with each family's own forward reshapes (not the weight indexing under test)."""
    lm = model
    d, n_heads = lm.config.hidden_size, lm.config.num_attention_heads
    eye = torch.eye(d, dtype=torch.float64)
    emb = lm.get_input_embeddings().weight.double()
    unemb = lm.get_output_embeddings().weight.double()
    if model_type == "gpt2":
        layers, final = lm.transformer.h, lm.transformer.ln_f
    elif model_type == "gpt_neox":
        layers, final = lm.gpt_neox.layers, lm.gpt_neox.final_layer_norm
    else:
        layers, final = lm.model.layers, lm.model.norm
    if fold_norms:
        unemb = unemb * final.weight.double()
    out = []
    for layer in layers:
        if model_type == "gpt2":
            attn, norm = layer.attn, layer.ln_1
            v = attn.c_attn(eye).split(d, dim=-1)[2].view(d, n_heads, -1).permute(1, 0, 2)
            o_proj = attn.c_proj
        elif model_type == "gpt_neox":
            attn, norm = layer.attention, layer.input_layernorm
            v = attn.query_key_value(eye).view(d, n_heads, -1).chunk(3, dim=-1)[2].permute(1, 0, 2)
            o_proj = attn.dense
        else:  # OLMo-2 normalises the attention output instead of its input
            attn = layer.self_attn
            norm = None if model_type == "olmo2" else layer.input_layernorm
            o_proj, v = attn.o_proj, attn.v_proj(eye)
            v = v.view(d, -1, attn.head_dim).permute(1, 0, 2)[None]  # [1, n_kv, d, d_head]
            v = repeat_kv(v, n_heads // v.shape[1])[0]  # the model's own GQA expansion
        d_head = v.shape[-1]
        basis = torch.eye(n_heads * d_head, dtype=torch.float64)
        o_cols = (o_proj(basis) - o_proj(torch.zeros_like(basis))).T  # [d, H*d_head]
        if fold_norms and model_type == "olmo2":
            o_cols = layer.post_attention_layernorm.weight.double()[:, None] * o_cols
        e_in = emb * norm.weight.double() if fold_norms and norm is not None else emb
        heads = []
        for h in range(n_heads):
            w_v = v[h].T  # [d_head, d] (value biases are zeroed by the caller)
            heads.append(unemb @ o_cols[:, h * d_head:(h + 1) * d_head] @ w_v @ e_in.T)
        out.append(heads)
    return out


@pytest.mark.parametrize("model_type", ["llama", "gpt_neox", "gpt2", "olmo2"])
@pytest.mark.parametrize("fold_norms", [False, True])
def test_ep_matches_full_vocabulary_ov_circuit(model_type, fold_norms):
    model = tiny_model(model_type, seed=3).double()
    with torch.no_grad():  # value biases would leak into the basis-vector probe; they are not in OV
        for name, p in model.named_parameters():
            if "bias" in name and ("c_attn" in name or "query_key_value" in name or "v_proj" in name):
                p.zero_()
    assert model.config.tie_word_embeddings == (model_type == "gpt2")
    ep = eigenvalue_positivity(model, fold_norms=fold_norms)
    eig_small = ov_circuit_eigenvalues(model, fold_norms=fold_norms)
    with torch.no_grad():
        full = _full_ov_circuits(model, model_type, fold_norms)
    for layer in range(2):
        for h in range(4):
            lam = np.linalg.eigvals(full[layer][h].numpy())
            assert ep[layer, h] == pytest.approx(lam.sum().real / np.abs(lam).sum(), abs=1e-8)
            top = np.sort(np.abs(lam))[::-1][:4]
            np.testing.assert_allclose(np.sort(np.abs(eig_small[layer, h]))[::-1], top, rtol=1e-6, atol=1e-10)
    assert np.all(np.abs(ep) <= 1 + 1e-12) and np.ptp(ep) > 0.1  # a real spread, not a constant


# ---------------------------------------------------------------- every family, restoring state


@pytest.mark.parametrize("model_type", sorted(FAMILY_KWARGS))
def test_every_family_runs_in_range_and_restores_model(model_type):
    model = tiny_model(model_type)
    model.train()
    frozen = next(m for m in model.modules() if m is not model and len(list(m.children())) == 0)
    frozen.eval()  # a deliberately-eval submodule must stay eval after analysis
    modes = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = analyze_induction(model, seq_len=8, batch_size=2, seed=1)
    assert (s.num_layers, s.num_heads) == (2, 4)
    for name in ("attention", "ep", "induction", "prev_token", "prefix_matching"):
        arr = getattr(s, name)
        assert arr.shape == (2, 4) and np.all(np.isfinite(arr)), name
    for name in ("attention", "prev_token", "prefix_matching"):
        assert np.all((getattr(s, name) >= 0) & (getattr(s, name) <= 1 + 1e-9)), name
    assert np.all(np.abs(s.ep) <= 1 + 1e-9) and np.all(np.abs(s.induction) <= 1 + 1e-9)
    np.testing.assert_allclose(s.induction, s.attention * s.ep)
    assert model.config._attn_implementation == "sdpa"
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    d = json.loads(json.dumps(s.to_dict()))
    assert d["icl_score"] is None and d["with_bos"] is True and d["seq_len"] == 8
    assert len(d["attention"]) == 2 and len(d["attention"][0]) == 4


def test_sdpa_and_eager_models_give_same_scores_and_training_forward_unchanged():
    sdpa = tiny_model("llama", attn="sdpa", attention_dropout=0.0)
    eager = tiny_model("llama", attn="eager", attention_dropout=0.0)
    ids = torch.randint(3, VOCAB, (2, 12))
    sdpa.train()
    ref = sdpa(ids).logits
    a, b = analyze_induction(sdpa, seq_len=8, batch_size=2), analyze_induction(eager, seq_len=8, batch_size=2)
    np.testing.assert_allclose(a.attention, b.attention, atol=1e-6)
    np.testing.assert_allclose(a.prev_token, b.prev_token, atol=1e-6)
    assert sdpa.training and sdpa.config._attn_implementation == "sdpa"
    out = sdpa(ids).logits
    assert out.requires_grad and torch.allclose(out, ref)


def test_unsupported_architecture_raises_clear_error():
    cfg = AutoConfig.for_model("opt", vocab_size=32, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                               num_attention_heads=2, max_position_embeddings=32, word_embed_proj_dim=16)
    model = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(UnsupportedArchitectureError, match="'opt'"):
        analyze_induction(model, seq_len=4, batch_size=1)
    with pytest.raises(UnsupportedArchitectureError, match="'opt'"):
        eigenvalue_positivity(model)


# ---------------------------------------------------------------- PEFT LoRA


@pytest.mark.parametrize(
    "model_type,targets",
    [("llama", ["q_proj", "v_proj", "o_proj", "embed_tokens", "lm_head"]), ("gpt2", ["c_attn", "c_proj"])],
)
def test_lora_peft_model_uses_merged_weights_without_mutating(model_type, targets):
    from peft import LoraConfig, get_peft_model

    model = tiny_model(model_type, seed=5)
    ep_base = eigenvalue_positivity(model)
    torch.manual_seed(6)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False,
                     fan_in_fan_out=model_type == "gpt2")
    peft_model = get_peft_model(model, cfg)
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    merged = copy.deepcopy(peft_model).merge_and_unload()

    ep_peft = eigenvalue_positivity(peft_model)
    np.testing.assert_allclose(ep_peft, eigenvalue_positivity(merged), atol=1e-5)
    assert not np.allclose(ep_peft, ep_base, atol=1e-3)  # the adapters really changed the circuit
    s_peft = analyze_induction(peft_model, seq_len=8, batch_size=2)
    s_merged = analyze_induction(merged, seq_len=8, batch_size=2)
    np.testing.assert_allclose(s_peft.attention, s_merged.attention, atol=1e-5)
    np.testing.assert_allclose(s_peft.induction, s_merged.induction, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in peft_model.state_dict().items())
    assert not any(getattr(m, "merged", False) for m in peft_model.modules())
    with peft_model.disable_adapter():  # disabled adapters: the base weights are what runs
        np.testing.assert_allclose(eigenvalue_positivity(peft_model), ep_base, atol=1e-5)


# ---------------------------------------------------------------- ICL score


def test_icl_score_matches_manual_losses_and_is_none_when_context_too_short():
    model = tiny_model("llama", max_position_embeddings=512)
    ids = torch.randint(0, VOCAB, (3, 510), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[:, :500]).logits.double(), dim=-1)
    nll = -logp[:, :-1].gather(-1, ids[:, 1:500, None])[..., 0]  # nll[:, j] = loss on ids[:, j + 1]
    expected = float(nll[:, 498].mean() - nll[:, 48].mean())  # 500th minus 50th token (1-based)
    assert icl_score(model, ids, batch_size=2) == pytest.approx(expected, abs=1e-4)
    s = analyze_induction(model, seq_len=8, batch_size=2, icl_input_ids=ids.tolist())
    assert s.icl_score == pytest.approx(expected, abs=1e-4)
    assert icl_score(model, ids[:, :499]) is None  # sequences too short
    assert icl_score(tiny_model("llama", max_position_embeddings=256), ids) is None  # context too short


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_sdpa_model_matches_cpu_and_is_restored():
    cpu = tiny_model("llama")
    gpu = copy.deepcopy(cpu).to("cuda", torch.bfloat16)
    a = analyze_induction(cpu, seq_len=8, batch_size=2)
    b = analyze_induction(gpu, seq_len=8, batch_size=2)
    np.testing.assert_allclose(a.attention, b.attention, atol=0.02)
    np.testing.assert_allclose(a.ep, b.ep, atol=0.05)
    assert gpu.config._attn_implementation == "sdpa" and gpu.device.type == "cuda"


def test_seq_len_fits_the_models_context():
    from grokcopy.analysis.induction import fit_seq_len

    short = tiny_model("llama", max_position_embeddings=40)
    assert fit_seq_len(short)[0] == 19  # 1 + 2 x 19 = 39 <= 40: the demo run's own s
    assert "fits the model's context of 40" in fit_seq_len(short)[1]
    assert fit_seq_len(short, with_bos=False)[0] == 20
    assert fit_seq_len(short, 10)[0] == 10
    with pytest.raises(ValueError, match="seq_len: 100 needs 201 tokens, more than the model's context of 40"):
        fit_seq_len(short, 100)
    assert fit_seq_len(tiny_model("llama", max_position_embeddings=512))[0] == 100


def test_cli_on_a_short_context_run_uses_the_runs_own_length_and_refuses_a_longer_one(corpus_file, tmp_path):
    """`grokcopy induction RUN` on a 40-token model: s = 19 (the run's own, 1 + 2 x 19 <= 40), the same
    numbers as the run's last analysis; `--seq-len 100` (201 tokens) is refused in one line."""
    import json
    import subprocess

    from conftest import GROKCOPY, tiny_config

    from grokcopy.run_dir import read_jsonl
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    run = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, run, max_position_embeddings=40, block_size=40,
                                         induction_seq_len=19, copy_num_sequences=2, copy_query_stride=1,
                                         copy_prefix_length=4, copy_suffix_length=2)))
    last = read_jsonl(run / "induction_history.jsonl")[-1]
    proc = subprocess.run([*GROKCOPY, "induction", str(run), "--json", str(tmp_path / "ind.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "s = 19 (the run's own induction_seq_len)" in proc.stderr
    scores = json.loads((tmp_path / "ind.json").read_text())
    assert scores["seq_len"] == 19 and np.allclose(scores["induction"], last["induction"], atol=1e-6)
    refused = subprocess.run([*GROKCOPY, "induction", str(run), "--seq-len", "100"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "seq_len: 100 needs 201 tokens, more than the model's context of 40" in refused.stderr.strip().splitlines()[-1]
    copy = subprocess.run([*GROKCOPY, "copy-test", str(run), "--num-samples", "4"], capture_output=True, text=True,
                          timeout=300)
    assert copy.returncode == 0 and "the run's own settings" in copy.stderr
    assert json.loads(copy.stdout)["num_sequences"] == 2  # the run's copy test shape, not the paper's 50


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_the_residual_copying_score_equals_the_heads_own_write_read_off_the_forward_pass(model_type):
    """One position: each head attends to it fully, so its slice of the output projection's input is its value
    vector. Read it there (a hook, independent of the weight extraction), write it through the head's W_O
    slice, the final norm's scale and the unembedding: the top-1 shares must be the score's."""
    import transformers

    from grokcopy.analysis.architectures import attention_output_projections, layers_and_final_norm
    from grokcopy.analysis.ov_circuit import residual_copying_score

    torch.manual_seed(0)
    if model_type == "llama":
        config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=3, n_head=4, n_positions=16)
        model = transformers.GPT2LMHeadModel(config)
    model.eval()
    scores = residual_copying_score(model, num_tokens=96)
    assert scores.shape == (3, 4) and ((scores >= 0) & (scores <= 1)).all()
    projections = attention_output_projections(model, model_type)
    _, final_norm = layers_and_final_norm(model.model if model_type == "llama" else model.transformer, model_type)
    captured = {}
    hooks = [p.register_forward_pre_hook(lambda m, args, i=i: captured.__setitem__(i, args[0].detach()))
             for i, p in enumerate(projections)]
    tokens = torch.arange(96)
    with torch.no_grad():
        model(input_ids=tokens[:, None])
    for h in hooks:
        h.remove()
    unemb = model.get_output_embeddings().weight.double()
    for layer, projection in enumerate(projections):
        weight = projection.weight.double() if model_type == "llama" else projection.weight.double().T
        values = captured[layer][:, 0].double()
        for head in range(4):
            cols = slice(head * 8, (head + 1) * 8)
            write = values[:, cols] @ weight[:, cols].T * final_norm.weight.double()
            expected = float((write @ unemb.T).argmax(-1).eq(tokens).double().mean())
            assert scores[layer, head] == pytest.approx(expected), (layer, head)
