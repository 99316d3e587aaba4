"""What does watching cost? The demo's training time with and without CopyEvalCallback.

Runs the demo config twice in one process, same seed and data: once with the copy test off
(`copy_eval_schedule none`, the baseline) and once at the demo's default schedule, and prints
train_runtime of each and the overhead ratio. Run by hand on an otherwise idle machine:

    .venv/bin/python benchmarks/bench_copy_eval_overhead.py [--max_steps N] [any demo field overrides]
"""

import json
import sys
import tempfile
import time

import torch
from machine import cpu_name

from grokcopy.experiments.demo import demo_config_path
from grokcopy.training.config import parse_args
from grokcopy.training.pipeline import build_trainer


def timed_run(overrides):
    with tempfile.TemporaryDirectory() as out:
        args = parse_args(demo_config_path(), ["--output_dir", out, "--save_strategy", "no", "--eval_strategy", "no",
                                               "--disable_tqdm", "true", *overrides])
        trainer = build_trainer(*args)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        n_evals = sum(1 for r in trainer.state.log_history if "copy_exact_match" in r)
        return seconds, trainer.state.global_step, n_evals


def main(overrides):
    torch.set_num_threads(2)
    base_s, steps, _ = timed_run(["--copy_eval_schedule", "none", *overrides])
    copy_s, _, n_evals = timed_run(overrides)
    result = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "steps": steps,
        "baseline_train_s": round(base_s, 1),
        "with_copy_eval_train_s": round(copy_s, 1),
        "copy_evals": n_evals,
        "overhead": round(copy_s / base_s - 1, 4),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
