"""What does the induction analysis cost? The full analysis of the paper's 162M shape on this machine,
and the analysis of the demo model as a share of the demo's training time between checkpoints.

    .venv/bin/python benchmarks/bench_induction.py [--threads 2]
"""

import argparse
import json
import time

import torch
from machine import cpu_name
from transformers import AutoConfig, AutoModelForCausalLM

from grokcopy.analysis.induction import analyze_induction
from grokcopy.experiments.demo import demo_config_path
from grokcopy.training.config import ModelArguments, parse_args
from grokcopy.training.modeling import model_config_kwargs


def build(preset: str, vocab_size: int):
    kwargs = model_config_kwargs(ModelArguments(preset=preset))
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
    parser.add_argument("--threads", type=int, default=2)
    ns = parser.parse_args()
    torch.set_num_threads(ns.threads)
    paper = build("paper-162m", 32000)
    paper_s = timed(lambda: analyze_induction(paper, seq_len=100, batch_size=8), repeats=2)
    paper_icl_s = timed(lambda: analyze_induction(paper, seq_len=100, batch_size=8,
                                                  icl_input_ids=torch.randint(0, 32000, (8, 1024))), repeats=1)
    _, data_args, args = parse_args(demo_config_path())
    demo = build("demo", 70)
    demo_s = timed(lambda: analyze_induction(demo, seq_len=args.induction_seq_len,
                                             batch_size=args.induction_batch_size))
    # Training time between two checkpoints of the demo, measured on the same model and batch shape.
    demo.train()
    opt = torch.optim.AdamW(demo.parameters(), lr=1e-3)
    batch = torch.randint(0, 70, (args.per_device_train_batch_size, data_args.block_size))

    def step():
        loss = demo(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    step_s = timed(lambda: [step() for _ in range(5)], repeats=2) / 5
    between = step_s * args.save_steps
    print(json.dumps({
        "cpu": cpu_name(),
        "threads": ns.threads,
        "paper_162m_analysis_s": round(paper_s, 2),
        "paper_162m_analysis_with_icl_8x1024_s": round(paper_icl_s, 2),
        "demo_analysis_s": round(demo_s, 3),
        "demo_step_s": round(step_s, 4),
        "demo_save_steps": args.save_steps,
        "demo_share_of_time_between_checkpoints": round(demo_s / between, 5),
    }, indent=2))


if __name__ == "__main__":
    main()
