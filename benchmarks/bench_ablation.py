"""What does a full head ablation cost next to one plain copy test? (issue 28, item 1)

A full ablation (grokcopy.analysis.ablation.ablate_heads) scores the copy test 1 + L x H + L times: unablated,
each head zero-ablated alone, each layer's whole attention. Timed here on the same model against one plain
copy test (grokcopy.copytest.scoring.score_copy_task) at the score's own sample count. Variants of the
ablation, each at the ablation's sample count (`--ablation-samples`; `grokcopy ablate`'s default is 100, or
the score's own number if smaller): `G1`, one ablation per forward pass (what a loop over heads costs);
`G<k>`, k ablations share a pass (the batch repeated k times along the batch dimension, a head mask per
copy); `G<k>+shared`, the same with the layers below each pass's lowest ablated layer computed once
(`share_lower`); `layer+shared`, the default: all ablations of a layer in one pass, shared below it. Every variant must give the same numbers (`all_agree`). Each timing is the median of
`--repeats` runs, interleaved (copy test, G1, G4, ..., copy test, G1, ...), after one untimed copy test.

Shapes (random init, fp32, LLaMA, `tokens` symbols from a char tokenizer of 512 symbols):
  demo:  the demo's model (2 layers x 4 heads, hidden 128, MLP 128, context 40) and its copy test (64
         samples of 4 sequences of a 4-symbol prefix + 2-symbol suffix, every sequence queried);
         `--model_name_or_path RUN` times a trained run instead, with the run's own copy test;
  wide:  a synthetic wider shape (6 layers x 12 heads, hidden 384, MLP 1536, context 256) and the paper's
         copy test fitted to it (12 sequences of 12 + 6, queries at 5 and 10; a score of 500 samples is
         projected from the measured per-sample time);
  paper-162m: the paper's 162M shape (12 x 12 heads, context 1024, the paper's copy test): for a GPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_ablation.py --threads 1 --json benchmarks/results/ablation_cpu.json
    .venv/bin/python benchmarks/bench_ablation.py --smoke          # CI: a few samples, demo shape

JSON: machine, results (one per shape: shape, params, num_layers, num_heads, ablations, score_samples,
ablation_samples, batch_size, queries_per_sample, copy_test_s, copy_test_500_s, ablation_s (median seconds per G), seconds
(every repeat), ratio (the full ablation / one copy test of the score's samples), ratio_to_500 (/ one of
500 samples, projected), ratio_same_samples (/ one copy test of the ablation's samples), exact_match,
all_agree).
"""

import argparse
import json
import statistics
import time

import torch
from common import add_common_arguments, finish, machine
from transformers import AutoModelForCausalLM, AutoTokenizer

from grokcopy.analysis.ablation import ablate_heads, head_ablations
from grokcopy.analysis.architectures import model_context_length
from grokcopy.copytest.scoring import score_copy_task
from grokcopy.copytest.task import CopyTaskConfig, build_copy_task
from grokcopy.run_dir import run_analysis_settings
from grokcopy.training.config import ModelArguments
from grokcopy.training.data import train_tokenizer
from grokcopy.training.modeling import build_model

SHAPES = {
    "demo": (dict(preset="demo", intermediate_size=128),
             dict(num_samples=64, prefix_length=4, suffix_length=2, query_stride=1)),
    "wide": (dict(model_type="llama", num_hidden_layers=6, hidden_size=384, num_attention_heads=12,
                  num_key_value_heads=12, intermediate_size=1536, max_position_embeddings=256,
                  tie_word_embeddings=False), dict(num_samples=100)),
    "paper-162m": (dict(preset="paper-162m"), dict(num_samples=500)),
}
ABLATION_SAMPLES = 100  # grokcopy ablate's default


def load(shape: str, ns, device):
    """(model, copy task config) of a shape, or of a trained run with its own copy test."""
    if ns.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(ns.model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(ns.model_name_or_path)
        run = run_analysis_settings(ns.model_name_or_path)
        fields = {k[len("copy_"):]: v for k, v in run.items() if k[len("copy_"):] in CopyTaskConfig.__dataclass_fields__}
        config = CopyTaskConfig(**fields)
    else:
        model_kwargs, copy_kwargs = SHAPES[shape]
        tokenizer = train_tokenizer(["".join(chr(0x4E00 + i) for i in range(512 - 5))], kind="char")
        torch.manual_seed(ns.seed)
        model = build_model(ModelArguments(**model_kwargs), tokenizer)
        config = CopyTaskConfig(**copy_kwargs)
    if ns.smoke:
        config = CopyTaskConfig(**{**config.__dict__, "num_samples": 4})
    task = build_copy_task(tokenizer, config, max_length=model_context_length(model))
    return model.to(device).eval(), task


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def variants(ns) -> dict:
    """name -> (ablations_per_pass, share_lower): G = 1 (nothing shared: one ablation per pass), and each
    larger G with and without the lower layers computed once."""
    out = {}
    for g in ns.per_pass:
        if g == "layer":  # ablations_per_pass=None: all ablations of a layer in one pass (the default)
            out["layer+shared"] = (None, True)
            continue
        out[f"G{g}"] = (int(g), False)
        if int(g) > 1:
            out[f"G{g}+shared"] = (int(g), True)
    return out


def bench_shape(shape: str, ns, device) -> dict:
    model, task = load(shape, ns, device)
    layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
    score_samples = len(task.samples)
    ablation_samples = min(ns.ablation_samples, score_samples)
    runs = {"copy_test": lambda: score_copy_task(model, task, batch_size=ns.batch_size)}
    for name, (g, share) in variants(ns).items():
        runs[name] = lambda g=g, share=share: ablate_heads(model, task, num_samples=ablation_samples,
                                                           batch_size=ns.batch_size, ablations_per_pass=g,
                                                           share_lower=share)
    values = {"copy_test": runs["copy_test"]()}  # warm-up (an ablation's first pass warms up its own)
    seconds = {name: [] for name in runs}
    for _ in range(ns.repeats):
        for name, fn in runs.items():
            values[name], took = timed(fn, device)
            seconds[name].append(took)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    copy_s = median.pop("copy_test")
    per_sample = copy_s / score_samples
    ablated = [json.dumps(values[name], sort_keys=True) for name in median]
    return {
        "shape": shape if not ns.model_name_or_path else ns.model_name_or_path,
        "params": sum(p.numel() for p in model.parameters()),
        "num_layers": layers, "num_heads": heads, "ablations": len(head_ablations(layers, heads)),
        "score_samples": score_samples, "ablation_samples": ablation_samples, "batch_size": ns.batch_size,
        "queries_per_sample": len(task.query_indices),
        "copy_test_s": copy_s, "copy_test_500_s": per_sample * 500,
        "ablation_s": median, "seconds": seconds,
        "ratio": {k: v / copy_s for k, v in median.items()},
        "ratio_to_500": {k: v / (per_sample * 500) for k, v in median.items()},
        "ratio_same_samples": {k: v / ablation_samples / per_sample for k, v in median.items()},
        "exact_match": values["copy_test"]["exact_match"],
        "all_agree": len(set(ablated)) == 1,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, threads=1)
    parser.add_argument("--sizes", default="demo,wide", help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--model_name_or_path", help="a trained run (its own copy test) instead of the demo shape")
    parser.add_argument("--per-pass", default="1,4,layer", help="ablations_per_pass values to time (layer: None, "
                        "one pass per layer's ablations)")
    parser.add_argument("--ablation-samples", type=int, default=ABLATION_SAMPLES,
                        help="samples per ablation (at most the score's)")
    parser.add_argument("--batch_size", type=int, default=16, help="samples per batch (the copy test's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args()
    torch.set_num_threads(ns.threads)
    ns.per_pass = ns.per_pass.split(",")
    sizes = ns.sizes.split(",")
    if ns.smoke:
        sizes, ns.per_pass, ns.repeats = ["demo"], ["1", "4", "layer"], 1
    if ns.model_name_or_path:
        sizes = ["demo"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = [bench_shape(shape, ns, device) for shape in sizes]
    finish({"machine": machine(), "results": results}, ns.json)


if __name__ == "__main__":
    main()
