"""Head-level causal scores (grokcopy.analysis.ablation, `grokcopy ablate`) on real models: every number agrees
with an independent zero-ablation (the head's columns of the output projection's weight zeroed in a copy of
the model), ablating attention collapses a model that copies, LoRA adapters are ablated with their base, and
bad input gives one line."""

import copy
import json
import os
import subprocess

import numpy as np
import pytest
import torch
from conftest import GROKCOPY, tiny_config
from test_induction import FAMILY_KWARGS, TINY, tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from grokcopy.analysis.ablation import ablate_heads, ablated_predictions, head_ablations
from grokcopy.analysis.architectures import attention_output_projections, model_family, unwrap_model
from grokcopy.copytest.scoring import predict_suffixes, score_copy_task
from grokcopy.copytest.task import CopySample, CopyTask, CopyTaskConfig, build_copy_task

FAMILIES = {**FAMILY_KWARGS, "olmo3": dict(TINY, num_key_value_heads=2)}


def zeroed_copy(model, pairs):
    """A copy of `model` whose output projections ignore the heads in `pairs`: their input columns of the
    weight set to zero (the independent ablation every result is checked against)."""
    model = copy.deepcopy(model)
    lm = unwrap_model(model)
    projections = attention_output_projections(lm, model_family(lm))
    heads = lm.config.num_attention_heads
    with torch.no_grad():
        for layer, head in pairs:
            weight = projections[layer].weight
            if model_family(lm) == "gpt2":  # Conv1D: [in, out]
                d = weight.shape[0] // heads
                weight[head * d:(head + 1) * d, :] = 0
            else:
                d = weight.shape[1] // heads
                weight[:, head * d:(head + 1) * d] = 0
    return model


def random_task(vocab, num_samples=5, seed=0):
    """Copy-test samples of random ids (no tokenizer needed): 5 sequences of 4 + 2 symbols, 3 queries."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(num_samples):
        pairs = [(rng.integers(3, vocab, 4).tolist(), rng.integers(3, vocab, 2).tolist()) for _ in range(5)]
        context = [t for prefix, suffix in pairs for t in (*prefix, *suffix, 0)]
        samples.append(CopySample(context, [(i, *pairs[i - 1]) for i in (1, 3, 5)]))
    return CopyTask(CopyTaskConfig(), samples, 5, [1, 3, 5])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_predictions_equal_zeroed_weight_columns_in_every_family(model_type, attn):
    torch.manual_seed(0)
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **FAMILIES[model_type], initializer_range=0.3)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    task = random_task(config.vocab_size)
    ablations = head_ablations(2, 4) + [((0, 1), (1, 2))]
    got = ablated_predictions(model, task, ablations, batch_size=2, ablations_per_pass=3)
    assert got[0] == predict_suffixes(model, task)
    assert ablated_predictions(model, task, ablations, batch_size=2, ablations_per_pass=3, share_lower=False) == got
    for pairs, predictions in zip(ablations, got):
        assert predictions == predict_suffixes(zeroed_copy(model, pairs), task), pairs
    assert sum(p != got[0] for p in got) >= 6  # the ablations change what a (sharply initialised) model predicts


def test_layers_below_the_lowest_ablated_layer_run_once_per_pass():
    model = tiny_model("llama", initializer_range=0.3, num_hidden_layers=3)
    task = random_task(model.config.vocab_size, num_samples=4)
    ablations = [((2, h),) for h in range(4)]  # four copies of the batch per pass, identical below layer 2
    rows = {}

    def count(index):
        def hook(module, args, kwargs, output):
            rows[index] = rows.get(index, 0) + output.shape[0]
        return hook

    handles = [layer.register_forward_hook(count(i), with_kwargs=True) for i, layer in enumerate(model.model.layers)]
    shared = ablated_predictions(model, task, ablations, batch_size=4, ablations_per_pass=4)
    counted, rows = rows, {}
    separate = ablated_predictions(model, task, ablations, batch_size=4, ablations_per_pass=4, share_lower=False)
    for handle in handles:
        handle.remove()
    assert shared == separate
    assert counted == {0: 8, 1: 8, 2: 32} and rows == {0: 32, 1: 32, 2: 32}  # 2 forwards x 4 samples (x 4 copies)


def test_lora_adapter_is_ablated_with_its_base():
    from peft import LoraConfig, get_peft_model

    base = tiny_model("llama", initializer_range=0.3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base), lora)
    task = random_task(base.config.vocab_size)
    ablations = head_ablations(2, 4)
    got = ablated_predictions(model, task, ablations, batch_size=5, ablations_per_pass=11)
    merged = copy.deepcopy(model).merge_and_unload()
    for pairs, predictions in zip(ablations, got):
        assert predictions == predict_suffixes(zeroed_copy(merged, pairs), task), pairs
    # the adapter's path through o_proj is ablated too: zeroing only the base weight's columns differs
    base_only = [predict_suffixes(zeroed_copy(model, pairs), task) for pairs in ablations[1:]]
    assert any(a != b for a, b in zip(base_only, got[1:]))


def test_unsupported_architecture_and_bad_heads_are_named():
    from transformers import AutoConfig

    from grokcopy.errors import UnsupportedArchitectureError

    other = AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt_bigcode", n_embd=16, n_layer=1, n_head=2,
                                                                  vocab_size=48, n_positions=64))
    with pytest.raises(UnsupportedArchitectureError, match="gpt_bigcode"):
        ablate_heads(other, random_task(48))
    with pytest.raises(ValueError, match=r"no head \(2, 0\)"):
        ablated_predictions(tiny_model("llama"), random_task(48), [((2, 0),)])


# ------------------------------------------------------------------------------------------- the demo's model


@pytest.fixture(scope="module")
def demo(demo_run):
    out, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    settings = json.loads((out / "run_config.json").read_text())["training"]
    config = CopyTaskConfig(**{k[len("copy_"):]: v for k, v in settings.items()
                               if k.startswith("copy_") and k[len("copy_"):] in CopyTaskConfig.__dataclass_fields__
                               and v is not None})
    return out, model, build_copy_task(tokenizer, config, max_length=model.config.max_position_embeddings)


def test_every_number_equals_the_copy_test_of_a_zeroed_copy(demo):
    _, model, task = demo
    result = ablate_heads(model, task, num_samples=32)
    subset = CopyTask(task.config, task.samples[:32], task.num_sequences, task.query_indices)
    plain = score_copy_task(model, subset)
    assert (result["exact_match"], result["token_accuracy"]) == (plain["exact_match"], plain["token_accuracy"])
    assert result["exact_match"] > 0.8  # the demo copies
    assert (result["num_layers"], result["num_heads"], result["num_samples"]) == (2, 4, 32)
    assert result["num_queries"] == 32 * len(task.query_indices)
    for layer in range(2):
        for head in range(4):
            ablated = score_copy_task(zeroed_copy(model, [(layer, head)]), subset)
            assert result["ablated_exact_match"][layer][head] == ablated["exact_match"], (layer, head)
            assert result["ablated_token_accuracy"][layer][head] == ablated["token_accuracy"], (layer, head)
        whole = score_copy_task(zeroed_copy(model, [(layer, h) for h in range(4)]), subset)
        assert result["layer_ablated_exact_match"][layer] == whole["exact_match"]
        assert result["layer_ablated_token_accuracy"][layer] == whole["token_accuracy"]
    # how many ablations share a pass, and how many samples a batch holds, change nothing
    assert ablate_heads(model, task, num_samples=32, ablations_per_pass=1, batch_size=7) == result


def test_a_runs_induction_heads_ablated_together_and_the_rule_on_them(corpus_file, tmp_path):
    """Heads ablated together as a group score exactly as a copy with all of them zeroed; a run folder's own
    induction heads (I >= 0.3 at its last analysis) are that group, and `copies_by_induction` follows its rule."""
    from grokcopy.analysis.ablation import copies_by_induction
    from grokcopy.analysis.saved_model import SavedModel, ablate, run_induction_heads
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, save_strategy="no", induction_eval_steps=4)))
    history = [json.loads(line) for line in (out / "induction_history.jsonl").read_text().splitlines()]
    last = history[-1]  # the run's last analysis, with two heads made to score as induction heads
    last["induction"] = [[0.0, 0.5, 0.0, 0.0], [0.31, 0.0, 0.0, 0.1]]
    (out / "induction_history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    heads, step = run_induction_heads(SavedModel(str(out)))
    assert heads == [[0, 1], [1, 0]] and step == last["step"]
    assert run_induction_heads(SavedModel(str(tmp_path / "nowhere"))) == ([], None)

    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    task = build_copy_task(tokenizer, CopyTaskConfig(num_samples=8), max_length=model.config.max_position_embeddings)
    result = ablate_heads(model, task, groups={"induction": [(0, 1), (1, 0)]}, per_head=False)
    zeroed = score_copy_task(zeroed_copy(model, [(0, 1), (1, 0)]), task)
    assert result["group_ablated_exact_match"]["induction"] == zeroed["exact_match"]
    assert result["group_ablated_token_accuracy"]["induction"] == zeroed["token_accuracy"]
    assert "ablated_exact_match" not in result  # per_head=False: the group only
    record = ablate(SavedModel(str(out)), num_samples=8, per_head=False).record
    assert record["induction_heads"] == heads and record["induction_heads_step"] == step
    expected = copies_by_induction(record["exact_match"], heads, record["induction_heads_ablated_exact_match"])
    assert record["copies_by_induction"] == expected
    assert copies_by_induction(0.9, [], 0.9) is False  # copies without an induction head: another solution
    assert copies_by_induction(0.3, [[1, 0]], 0.0) is None  # does not copy: the question does not arise
    assert copies_by_induction(0.9, [[1, 0]], 0.2) is True and copies_by_induction(0.9, [[1, 0]], 0.6) is False
    with pytest.raises(ValueError, match="no head"):
        ablate_heads(model, task, groups={"bad": [(5, 0)]}, per_head=False)


def test_ablating_attention_collapses_copying(demo):
    _, model, task = demo
    everything = tuple((layer, head) for layer in range(2) for head in range(4))
    unablated, ablated = ablated_predictions(model, task, [(), everything], samples=range(32))
    exact = lambda predictions: np.mean([p == s for _, p, s in predictions])  # noqa: E731
    assert exact(unablated) > 0.8 and exact(ablated) < 0.05
    result = ablate_heads(model, task, num_samples=32)
    assert min(result["layer_ablated_exact_match"]) < 0.2  # the induction circuit needs both layers
    assert min(min(row) for row in result["ablated_exact_match"]) < result["exact_match"] - 0.1  # some head matters


def test_cli_writes_the_json_and_a_table(demo, tmp_path):
    out, _, _ = demo
    target = tmp_path / "ablation.json"
    proc = subprocess.run([*GROKCOPY, "ablate", str(out), "--json", str(target), "--num-samples", "16"],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(target.read_text())
    assert record["num_samples"] == 16 and 0.0 <= record["exact_match"] <= 1.0
    assert np.array(record["ablated_exact_match"]).shape == np.array(record["ablated_token_accuracy"]).shape == (2, 4)
    assert len(record["layer_ablated_exact_match"]) == 2
    lines = proc.stdout.splitlines()
    assert lines[1].split() == ["layer", "head", "0", "head", "1", "head", "2", "head", "3", "whole", "layer"]
    assert [line.split()[0] for line in lines[2:4]] == ["0", "1"]
    assert "the run's own settings" in proc.stderr  # the run's copy test


def test_cli_ablates_sets_of_layers_together(demo, tmp_path):
    """--layers-together "0+1,1": each set's whole attention zeroed at once, equal to an independent zeroed copy."""
    out, model, task = demo
    target = tmp_path / "ablation.json"
    proc = run_cli("ablate", out, "--json", target, "--num-samples", "16", "--induction-heads-only",
                   "--layers-together", "0+1,1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(target.read_text())
    subset = CopyTask(task.config, task.samples[:16], task.num_sequences, task.query_indices)
    for name, layers in (("layers 0+1", (0, 1)), ("layers 1", (1,))):
        zeroed = score_copy_task(zeroed_copy(model, [(layer, h) for layer in layers for h in range(4)]), subset)
        assert record["group_ablated_exact_match"][name] == zeroed["exact_match"], name
    assert record["group_ablated_exact_match"]["layers 0+1"] < record["exact_match"]
    assert "layers 0+1" in proc.stdout
    bad = run_cli("ablate", out, "--layers-together", "1+7")
    assert bad.returncode != 0 and "no layer 7" in bad.stderr.strip().splitlines()[-1]
    assert "Traceback" not in bad.stderr


# --------------------------------------------------------------------------------- the CLI on a LoRA run, bad input


def run_cli(*args):
    return subprocess.run([*GROKCOPY, *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)


def test_cli_on_a_lora_run(corpus_file, tmp_path):
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    base, lora = tmp_path / "base", tmp_path / "lora"
    run_training(*parse_args(tiny_config(corpus_file, base, max_steps=4, save_strategy="no")))
    run_training(*parse_args(tiny_config(corpus_file, lora, preset=None, model_name_or_path=str(base),
                                         train_tokenizer=False, lora_r=4, lora_alpha=8, max_steps=4,
                                         save_strategy="no", learning_rate=1e-2)))
    assert (lora / "adapter_model.safetensors").is_file() and not (lora / "model.safetensors").exists()
    proc = run_cli("ablate", lora, "--json", tmp_path / "lora.json", "--num-samples", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "lora.json").read_text())
    config = json.loads((base / "config.json").read_text())
    shape = (config["num_hidden_layers"], config["num_attention_heads"])
    assert np.array(record["ablated_exact_match"]).shape == shape and record["num_samples"] == 4


def test_bad_input_gives_one_line(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    other = tmp_path / "gpt-bigcode"
    from transformers import AutoConfig

    AutoModelForCausalLM.from_config(AutoConfig.for_model("gpt_bigcode", n_embd=16, n_layer=1, n_head=2,
                                                          vocab_size=48, n_positions=64)).save_pretrained(other)
    cases = [
        (["ablate", tmp_path / "not-a-model"], "not-a-model"),
        (["ablate", tmp_path / "missing"], "no such folder"),
        (["ablate", tmp_path / "not-a-model", "--num-samples", "0"], "--num-samples"),
        (["ablate", tmp_path / "not-a-model", "--json", tmp_path / "no" / "such" / "out.json"], "--json"),
        (["ablate", other], "gpt_bigcode"),
    ]
    for args, needle in cases:
        proc = run_cli(*args)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("grokcopy: error:")]
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, proc.stderr[-2000:])


# ------------------------------------------------------------------ during training: HeadAblationCallback


def test_ablation_during_training_in_copy_trainer_agrees_with_ablating_the_saved_model(corpus_file, tmp_path):
    """ablation_eval_steps: one record per scheduled step (log-spaced below N), the log's eval_ablation_*, and at
    the last step the very numbers an independent zero-ablation of the saved final model gives; the copy test
    is the run's own (its first ablation_num_samples samples)."""
    from grokcopy.run_dir import RunFolder
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, save_strategy="no", ablation_eval_steps=4,
                                         ablation_num_samples=6, ablation_layer_sets="0+1")))
    history = RunFolder(out).histories()["ablation_history"]
    assert [r["step"] for r in history] == [0, 1, 2, 4, 8]
    last = history[-1]
    assert last["num_samples"] == 6 and len(last["ablated_exact_match"]) == 2 and len(last["ablated_exact_match"][0]) == 4
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    task = build_copy_task(tokenizer, CopyTaskConfig(num_samples=8), max_length=model.config.max_position_embeddings)
    subset = CopyTask(task.config, task.samples[:6], task.num_sequences, task.query_indices)
    assert last["exact_match"] == score_copy_task(model, subset)["exact_match"]
    for layer, head in ((0, 1), (1, 3)):
        zeroed = score_copy_task(zeroed_copy(model, [(layer, head)]), subset)
        assert last["ablated_exact_match"][layer][head] == zeroed["exact_match"]
        assert last["ablated_token_accuracy"][layer][head] == zeroed["token_accuracy"]
    both = score_copy_task(zeroed_copy(model, [(l, h) for l in range(2) for h in range(4)]), subset)
    assert last["group_ablated_token_accuracy"]["layers 0+1"] == both["token_accuracy"]
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    at_8 = {k: v for entry in log if entry["step"] == 8 for k, v in entry.items()}
    assert at_8["eval_ablation_layer1_exact_match"] == last["layer_ablated_exact_match"][1]
    assert at_8["eval_ablation_min_head_layer0_exact_match"] == min(last["ablated_exact_match"][0])
    assert "eval_ablation_layers0_1_exact_match" in at_8
    from grokcopy.experiments.report import build_report  # the report reads it: a table and a figure

    record = build_report([out], tmp_path / "report")
    timeline = record["ablation_timeline"]["run"]
    assert timeline["n_records"] == 5 and set(timeline["group_needed_from"]) == {"layers 0+1"}
    assert (tmp_path / "report" / "ablation_over_training.png").stat().st_size > 5_000
    assert "When the copying needs each layer" in (tmp_path / "report" / "report.md").read_text()


def test_the_timeline_finds_when_a_layer_is_needed_and_a_backup():
    """needed_from: from the first record on which ablating leaves <= half the exact match at every later copying
    record; a set needed while neither of its layers alone is: a backup."""
    from grokcopy.experiments.ablation_timeline import run_timeline

    def record(step, em, layers, together):
        return {"step": step, "exact_match": em, "layer_ablated_exact_match": layers,
                "group_ablated_exact_match": {"layers 1+2": together, "induction_heads": 0.0}}

    history = [record(0, 0.0, [0, 0, 0], 0.0), record(100, 0.9, [0.0, 0.2, 0.9], 0.0),  # layer 1 alone carries it
               record(200, 0.95, [0.0, 0.6, 0.95], 0.1), record(300, 0.96, [0.0, 0.9, 0.96], 0.0)]  # then a backup
    t = run_timeline(history)
    assert t["layer_needed_from"] == {0: 100, 1: None, 2: None}  # layer 1 stopped being needed at 200
    assert t["group_needed_from"] == {"layers 1+2": 100} and t["backups"] == ["layers 1+2"]
    assert run_timeline([]) is None
    t = run_timeline(history[:2])
    assert t["layer_needed_from"][1] == 100 and t["backups"] == []


def test_ablation_callback_in_a_plain_trainer_and_bad_settings(corpus_file, tmp_path):
    """In a plain transformers.Trainer, listed after CopyEvalCallback, it ablates on that callback's copy test and
    its metrics reach the log; a layer set the model lacks is refused before training, in one line."""
    from test_any_trainer import run_other_trainer

    from grokcopy import HeadAblationCallback
    from grokcopy.errors import ConfigError
    from grokcopy.training.config import parse_args

    callback = HeadAblationCallback(every=4, num_samples=5)
    log, _ = run_other_trainer(tiny_config(corpus_file, tmp_path / "with", save_strategy="no"),
                               "trainer", "callbacks", after=(callback,))
    records = [json.loads(line) for line in (tmp_path / "with" / "ablation_history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 4, 8] and records[-1]["num_samples"] == 5
    assert callback.copy_task is not None  # no trainer reference: drawn from the Trainer's tokenizer
    assert any("eval_ablation_layer0_exact_match" in entry for entry in log)
    with pytest.raises(ConfigError, match="ablation_layer_sets"):
        parse_args(tiny_config(corpus_file, tmp_path / "bad", ablation_layer_sets="1+x"))
    with pytest.raises(ValueError, match="no layer 5"):
        run_other_trainer(tiny_config(corpus_file, tmp_path / "bad2", save_strategy="no"), "trainer", "callbacks",
                          after=(HeadAblationCallback(layer_sets=((1, 5),)),))
    with pytest.raises(ValueError, match="every and num_samples"):
        HeadAblationCallback(every=0)


def test_cli_ablates_every_kept_checkpoint_of_a_run(corpus_file, tmp_path):
    """--over-checkpoints: one JSON line per complete checkpoint, oldest first (--every thins them), each the
    numbers `grokcopy ablate` gives that checkpoint alone; a broken checkpoint is skipped; bad use, one line."""
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=12, save_steps=4, save_total_limit=None)))
    (out / "checkpoint-12" / "model.safetensors").write_bytes(b"torn")  # a checkpoint cut short: skipped
    target = tmp_path / "over.jsonl"
    proc = run_cli("ablate", out, "--over-checkpoints", "--num-samples", "6", "--layers-together", "0+1",
                   "--json", target)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["step"] for r in records] == [4, 8]
    single = tmp_path / "one.json"
    assert run_cli("ablate", out / "checkpoint-8", "--num-samples", "6", "--layers-together", "0+1",
                   "--json", single).returncode == 0
    alone = json.loads(single.read_text())
    for key in ("exact_match", "token_accuracy", "ablated_token_accuracy", "layer_ablated_token_accuracy",
                "group_ablated_token_accuracy"):
        assert records[1][key] == alone[key], key
    assert "step      8" in proc.stdout and "layers 0+1" in proc.stdout
    thinned = run_cli("ablate", out, "--over-checkpoints", "--every", "8", "--num-samples", "6", "--json", target)
    assert thinned.returncode == 0 and [json.loads(x)["step"] for x in target.read_text().splitlines()] == [8]
    for bad, said in ((("--every", "4"), "needs --over-checkpoints"), (("--over-checkpoints",), "--json"),
                      (("--over-checkpoints", "--every", "5", "--json", target), "no complete checkpoint")):
        proc = run_cli("ablate", out, *bad)
        assert proc.returncode != 0 and said in proc.stderr.strip().splitlines()[-1], proc.stderr[-500:]
