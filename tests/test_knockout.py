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


REPRO = __import__("pathlib").Path(__file__).resolve().parents[1] / "docs" / "reproduction"


def test_the_report_gives_the_knockout_protocols_verdict_from_the_committed_histories(tmp_path):
    """`grokcopy report` applies the protocol's rule: 4/4 seeds formed the circuit in layer 2, which carries it."""
    from grokcopy.experiments.report import build_report

    record = build_report([REPRO / "cpu-depth", REPRO / "cpu-depth-knockout"], tmp_path / "rep")
    (reading,) = record["knockout"]
    assert reading["verdict"] == "deeper layers take the circuit" and (reading["n_takes"], reading["n_runs"]) == (4, 4)
    assert all(r["deeper_formed"] == [2] and r["layer_ablated_exact_match"][2] <= 0.5 * r["final_exact_match"]
               for r in reading["runs"])
    later = reading["jumps_later_than_twin"]
    assert reading["intact_twin"] == "knockout_attention_layers=None" and 0.7 < later["p_value"] < 0.8
    assert "deeper layers take the circuit" in (tmp_path / "rep" / "report.md").read_text()


def _condition(runs, knockout="1"):
    return {"config": {"knockout_attention_layers": knockout, "learning_rate": 1e-3},
            "runs": [{"name": f"s{i}", "seed": i, "stats": s} for i, s in enumerate(runs)]}


def _stats(formed_layer, em, ablated, jump=300):
    formation = [{"layer": layer, "formation_step": 300 if layer == formed_layer else None} for layer in range(4)]
    return {"formation": formation, "final_exact_match": em, "layer_ablated_exact_match": ablated, "jump_step": jump}


@pytest.mark.parametrize("runs, verdict", [
    ([_stats(None, 0.0, [0.0] * 4, None)] * 4, "deeper layers do not take it"),
    ([_stats(2, 0.9, [0.9, 0.9, 0.1, 0.9])] * 2 + [_stats(None, 0.0, [0.0] * 4, None)] * 2, "mixed"),
    ([_stats(2, 0.9, [0.9, 0.9, 0.8, 0.9])] * 4, "mixed"),  # formed, but ablating it leaves the copying: not carried
    ([_stats(2, 0.9, [0.9, 0.9, 0.1, 0.9])] * 2, "not resolved"),  # fewer than 3 seeds
])
def test_knockout_rule(runs, verdict):
    from grokcopy.experiments.knockout import knockout_reading

    (reading,) = knockout_reading({"ko": _condition(runs)})
    assert reading["verdict"] == verdict and reading["intact_twin"] is None
    assert knockout_reading({"intact": _condition(runs, knockout=None)}) == []


def test_attention_layer_drop_drops_whole_layers_per_sequence_in_training_only(corpus_file, tmp_path):
    """Stochastic depth on the attention branch: in training some sequences lose a layer's whole attention output
    (the projection's input zero for that sequence), the rest are scaled by 1 / (1 - p); evaluation is untouched."""
    out = tmp_path / "run"
    trainer = build_trainer(*parse_args(tiny_config(corpus_file, out, attention_layer_drop=0.5,
                                                    induction_analysis=False)))
    model = trainer.model
    seen = []
    handle = model.model.layers[0].self_attn.o_proj.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    ids = torch.randint(0, model.config.vocab_size, (64, 8))
    model.train()
    with torch.no_grad():
        model(ids)
    model.eval()
    with torch.no_grad():
        model(ids)
    handle.remove()
    trained, evaluated = seen
    dropped = (trained.flatten(1) == 0).all(dim=1)
    assert 10 < int(dropped.sum()) < 54  # about half of 64 sequences, each all or nothing
    kept = ~dropped
    assert not (evaluated.flatten(1) == 0).all(dim=1).any()
    ratio = trained[kept].flatten() / evaluated[kept].flatten()
    finite = evaluated[kept].flatten().abs() > 1e-6
    assert torch.allclose(ratio[finite], torch.full_like(ratio[finite], 2.0), atol=1e-3)  # layer 0: nothing dropped before it
    run = tmp_path / "trained"  # trains with it, and the run folder records it
    run_training(*parse_args(tiny_config(corpus_file, run, max_steps=4, attention_layer_drop=0.5)))
    assert __import__("json").loads((run / "run_config.json").read_text())["model"]["attention_layer_drop"] == 0.5


def test_bad_attention_layer_drop_is_refused_in_one_line(corpus_file, tmp_path):
    with pytest.raises(ConfigError, match=r"attention_layer_drop.*\[0, 1\)"):
        parse_args(tiny_config(corpus_file, tmp_path / "run", attention_layer_drop=1.0))
