"""What does the induction analysis cost? The full analysis of the paper's 162M shape on this machine,
and the analysis of the demo model as a share of the demo's training time between checkpoints.

    .venv/bin/python benchmarks/bench_induction.py [--threads 2]
    .venv/bin/python benchmarks/bench_induction.py --smoke     # CI: the `tiny` preset instead of paper-162m

JSON: machine, model, analysis_s, analysis_with_icl_8x1024_s (the ICL score on 8 x 1024 held-out
tokens, as CopyTrainer adds it for blocks >= 500), demo_analysis_s, demo_step_s, demo_save_steps,
demo_share_of_time_between_checkpoints.
"""

import argparse
import time

import torch
from common import add_common_arguments, finish, machine
from transformers import AutoConfig, AutoModelForCausalLM

from grokcopy.analysis.induction import analyze_induction
from grokcopy.experiments.demo import demo_config_path
from grokcopy.training.config import ModelArguments, parse_args
from grokcopy.training.modeling import model_config_kwargs


def build(model_args: ModelArguments, vocab_size: int):
    kwargs = model_config_kwargs(model_args)
    config = AutoConfig.for_model(kwargs.pop("model_type"), vocab_size=vocab_size, **kwargs)
    return AutoModelForCausalLM.from_config(config)


def timed(fn, repeats=3):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    ns = parser.parse_args()
    torch.set_num_threads(ns.threads)
    preset, vocab, context = ("tiny", 256, 256) if ns.smoke else ("paper-162m", 32000, 1024)
    big = build(ModelArguments(preset=preset), vocab)
    big_s = timed(lambda: analyze_induction(big, seq_len=100, batch_size=8), repeats=1 if ns.smoke else 2)
    icl = torch.randint(0, vocab, (8, context))
    big_icl_s = timed(lambda: analyze_induction(big, seq_len=100, batch_size=8, icl_input_ids=icl), repeats=1)
    model_args, data_args, args = parse_args(demo_config_path(), ["--output_dir", "unused"])
    demo = build(model_args, 281)  # the demo's own shape; 281 = its char tokenizer's size
    demo_s = timed(lambda: analyze_induction(demo, seq_len=args.induction_seq_len,
                                             batch_size=args.induction_batch_size))
    # Training time between two checkpoints of the demo, measured on the same model and batch shape.
    demo.train()
    opt = torch.optim.AdamW(demo.parameters(), lr=1e-3)
    batch = torch.randint(0, 281, (args.per_device_train_batch_size, data_args.block_size))

    def step():
        for _ in range(args.gradient_accumulation_steps):
            demo(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()

    steps = 1 if ns.smoke else 5
    step_s = timed(lambda: [step() for _ in range(steps)], repeats=1 if ns.smoke else 2) / steps
    finish({
        "machine": machine(), "model": preset,
        "analysis_s": round(big_s, 3), "analysis_with_icl_8x1024_s": round(big_icl_s, 3),
        "demo_analysis_s": round(demo_s, 4), "demo_step_s": round(step_s, 4), "demo_save_steps": args.save_steps,
        "demo_share_of_time_between_checkpoints": round(demo_s / (step_s * args.save_steps), 5),
    }, ns.json)


if __name__ == "__main__":
    main()
