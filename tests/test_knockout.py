"""A layer's attention knocked out for a whole run (claim 3's knock-out reading): trained for real on the tiny
preset, the knocked-out projection stays exactly zero while the rest learns, the checkpoint keeps it, a resume
cannot change it, and bad input is refused in one line."""

import pytest
import torch
from conftest import tiny_config
from transformers import AutoModelForCausalLM

from grokcopy.training.config import ConfigError, parse_args
from grokcopy.training.pipeline import build_trainer, run_training


def test_a_knocked_out_layer_writes_nothing_and_learns_nothing(corpus_file, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(corpus_file, out, knockout_attention_layers="1", induction_analysis=False)
    trainer = build_trainer(*parse_args(config))
    layers = trainer.model.model.layers
    before = {i: layers[i].self_attn.o_proj.weight.detach().clone() for i in (0, 1)}
    assert not layers[1].self_attn.o_proj.weight.requires_grad and layers[0].self_attn.o_proj.weight.requires_grad
    trainer.train()
    assert torch.count_nonzero(layers[1].self_attn.o_proj.weight) == 0
    assert not torch.equal(layers[0].self_attn.o_proj.weight, before[0])  # the other layer learned
    saved = AutoModelForCausalLM.from_pretrained(out / "checkpoint-8")
    assert torch.count_nonzero(saved.model.layers[1].self_attn.o_proj.weight) == 0


def test_a_resume_cannot_drop_the_knockout(corpus_file, tmp_path):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=4, knockout_attention_layers="1")))
    resume = tiny_config(corpus_file, out, max_steps=4, resume_from_checkpoint="last")
    with pytest.raises(ConfigError, match=r"knockout_attention_layers \('1' -> None\)"):
        run_training(*parse_args(resume, ["--resume_allow_changes", "all"]))


@pytest.mark.parametrize("value, said", [("one", "comma-separated layer numbers"), ("5", "no layer 5")])
def test_bad_knockout_layers_are_refused_in_one_line(corpus_file, tmp_path, value, said):
    with pytest.raises(ConfigError, match=said):
        build_trainer(*parse_args(tiny_config(corpus_file, tmp_path / "run", knockout_attention_layers=value)))
