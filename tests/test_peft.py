"""LoRA continued pretraining: CopyTrainer trains a PeftModel, the analyses see the adapted weights,
checkpoints and Hub branches hold the adapter, and `grokcopy series` analyses the adapter series."""

import json

import numpy as np
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from grokcopy.run_dir import read_jsonl
from grokcopy.training.config import parse_args
from grokcopy.training.pipeline import run_training


def merged(base_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).merge_and_unload()


def test_lora_adapter_trains_is_analysed_pushed_and_analysed_as_a_series(corpus_file, tmp_path, api, capsys):
    from grokcopy.analysis.induction import analyze_induction
    from grokcopy.hub.series import analyze_series

    base = tmp_path / "base"
    run_training(*parse_args(tiny_config(corpus_file, base, max_steps=6, save_strategy="no")))
    base_weights = load_file(base / "model.safetensors")

    out = tmp_path / "lora"
    config = tiny_config(corpus_file, out, preset=None, model_name_or_path=str(base), train_tokenizer=False,
                         lora_r=4, lora_alpha=8, max_steps=8, save_steps=4, learning_rate=1e-2,
                         hub_checkpoint_series=True, hub_model_id="user/lora-series", hub_push_wait=120)
    summary = run_training(*parse_args(config))
    assert summary["steps"] == 8 and [r["step"] for r in read_jsonl(out / "copy_history.jsonl")] == [0, 2, 4, 6, 8]
    for step in (4, 8):
        folder = out / f"checkpoint-{step}"
        assert (folder / "adapter_model.safetensors").is_file() and (folder / "adapter_config.json").is_file()
        assert not (folder / "model.safetensors").exists()  # only the adapter is saved
        # the checkpoint's induction analysis is of base + adapter, i.e. of the merged weights
        saved = json.loads((folder / "induction.json").read_text())
        direct = analyze_induction(merged(base, folder), seq_len=saved["seq_len"], with_bos=saved["with_bos"])
        assert np.allclose(saved["induction"], direct.induction, atol=1e-5)
        assert np.allclose(saved["ep"], direct.ep, atol=1e-5)
    after = merged(base, out / "checkpoint-8").state_dict()
    assert any(not torch.equal(after[k], v) for k, v in base_weights.items() if k in after)  # the adapter learned
    assert all(torch.equal(load_file(base / "model.safetensors")[k], v) for k, v in base_weights.items())

    branches = {b.name for b in api.list_repo_refs("user/lora-series").branches}
    assert {"step4", "step8"} <= branches
    files = set(api.list_repo_files("user/lora-series", revision="step8"))
    assert {"adapter_model.safetensors", "adapter_config.json", "induction.json", "copy_eval.json"} <= files
    assert "model.safetensors" not in files
    card = open(api.hf_hub_download("user/lora-series", "README.md")).read()
    assert "library_name: peft" in card and f"adapter (PEFT LoRA) trained on top of `{base}`" in card
    assert "pretrained from scratch" not in card

    from grokcopy.copytest.task import CopyTaskConfig

    records = analyze_series("user/lora-series", out_dir=tmp_path / "series", copy=CopyTaskConfig(num_samples=8),
                             progress=False, device="cpu")
    assert [r["revision"] for r in records] == ["step4", "step8"]
    for record in records:
        assert record["adapter"] and record["base_model"] == str(base) and "error" not in record
        direct = analyze_induction(merged(base, out / f"checkpoint-{record['step']}"), seq_len=100, with_bos=True)
        assert np.allclose(record["induction"]["induction"], direct.induction, atol=1e-5)
        assert record["exact_match"] is not None
