"""The loss on copyable tokens: the mask on hand-made sequences, the split against a manual computation,
and a real run whose copy history and log carry it."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from transformers import LlamaConfig, LlamaForCausalLM

from grokcopy.analysis.copyable_loss import copyable_loss_split, copyable_mask
from grokcopy.run_dir import read_jsonl
from grokcopy.training.config import parse_args
from grokcopy.training.pipeline import run_training


def test_a_target_is_copyable_when_its_bigram_occurred_earlier():
    #            a  b  c  a  b  d  a  b  c
    ids = torch.tensor([[1, 2, 3, 1, 2, 4, 1, 2, 3]])
    # targets ids[1:]: b c a b d a b c; bigrams ab bc ca ab bd da ab bc
    assert copyable_mask(ids).tolist() == [[False, False, False, True, False, False, True, True]]
    assert not copyable_mask(torch.arange(10)[None]).any()  # no repeat, nothing to copy
    repeated = torch.arange(5).repeat(2)[None]  # a sequence said twice: all of the second copy but its start
    assert copyable_mask(repeated).tolist() == [[False] * 5 + [True] * 4]


def test_split_matches_a_manual_computation_and_restores_the_mode():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=20, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         num_key_value_heads=2, intermediate_size=32, attention_dropout=0.5))
    model.train()
    ids = torch.randint(0, 20, (5, 24))
    split = copyable_loss_split(model, ids, batch_size=2)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        loss = F.cross_entropy(model(ids).logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
    mask = copyable_mask(ids)
    assert split["copyable_loss"] == pytest.approx(float(loss[mask].mean()), abs=1e-5)
    assert split["other_loss"] == pytest.approx(float(loss[~mask].mean()), abs=1e-5)
    assert split["copyable_share"] == pytest.approx(float(mask.float().mean()))
    assert copyable_loss_split(model, torch.arange(10)[None])["copyable_loss"] is None


def test_a_run_records_and_logs_the_split(corpus_file, tmp_path):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, copyable_loss_blocks=8)))
    history = read_jsonl(out / "copy_history.jsonl")
    assert [r["step"] for r in history] == [0, 2, 4, 6, 8]
    for record in history:
        assert record["copyable_loss"] > 0 and record["other_loss"] > 0 and 0 < record["copyable_share"] < 1
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("eval_copyable_loss" in r and "eval_other_loss" in r for r in log)
    off = tmp_path / "off"
    run_training(*parse_args(tiny_config(corpus_file, off, copyable_loss_blocks=0, max_steps=2)))
    assert all("copyable_loss" not in r for r in read_jsonl(off / "copy_history.jsonl"))
