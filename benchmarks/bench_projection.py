"""Does watching stay under 2% of the paper's run? Per-call costs of the 162M model measured here, projected
onto a whole run of trainer_configs/paper-162m.yaml at its default schedule.

Measured on this device, in one process, on the paper's 162M LLaMA (random init, 32,000-token vocabulary):
- the training throughput (tokens/s) of optimizer steps of `--micro_batch` x 1,024 tokens (fused AdamW,
  clip; bf16 autocast with --bf16), after one untimed step;
- the copy test's cost per sample at the paper's size (50 sequences, ~968-token context, 10 queries),
  `copy_eval_batch_size` samples per forward (CPU: --copy_batch), after an untimed batch;
- one induction analysis as CopyTrainer runs it at a save (s = 100, batch 8, the ICL score on 8 x 1,024).
Counted from the config: copy tests in `max_steps` (log schedule: 0, 1, 2, 4, ..., 512, then every
`copy_eval_steps`; evaluation reuses the callback's result at its steps, all of them copy-test steps),
analyses (one per checkpoint save), each process's share of the copy test's samples (`--world_size`,
the config's 8 GPUs; the analysis runs on every process). Projected: training time of the run
(max_steps x batch x 1,024 tokens per process at the measured throughput), the time watching adds,
its share, and (c)/(b) = training / (training + watching). On a CPU the ratio of inference to
training cost stands in for the GPU's; benchmarks/gpu_check.sh measures it on a GPU.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_projection.py --threads 1
    .venv/bin/python benchmarks/bench_projection.py --bf16 --micro_batch 16     # CUDA
    .venv/bin/python benchmarks/bench_projection.py --smoke                      # CI: the tiny preset

JSON: machine, model, params, bf16, micro_batch, copy_batch, train_tokens_per_s, copy_test_s_per_sample,
copy_test_tokens_per_sample, induction_s_per_call,
schedule (max_steps, copy_tests, analyses, samples_per_process, tokens_per_step_per_process), projected
(train_s, copy_test_s, induction_s, watching_share, copytrainer_over_trainer).
"""

import argparse
import contextlib
import math
import time

import torch
import transformers
from common import add_common_arguments, finish, machine

from grokcopy.analysis.induction import analyze_induction
from grokcopy.copytest.scoring import score_copy_task
from grokcopy.copytest.task import CopyTask, CopyTaskConfig, build_copy_task
from grokcopy.resources import trainer_config_path
from grokcopy.training.callbacks import eval_steps_schedule
from grokcopy.training.config import ModelArguments, load_config_file
from grokcopy.training.data import train_tokenizer
from grokcopy.training.modeling import build_model


def clock(device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def train_tokens_per_s(model, vocab, micro_batch, block, steps, autocast, device):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, fused=device.type == "cuda")
    x = torch.randint(5, vocab, (micro_batch, block), device=device)
    for step in range(steps + 1):  # the first is a warm-up
        if step == 1:
            start = clock(device)
        with autocast():
            model(input_ids=x, labels=x).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * micro_batch * block / (clock(device) - start)


def schedule(config, world_size):
    """Copy tests and analyses in a run of `config`, and each process's share of the copy test."""
    steps, every = config["max_steps"], config["copy_eval_steps"]
    copy_tests = sum(eval_steps_schedule(s, config["copy_eval_schedule"], every) for s in range(steps + 1))
    return {"max_steps": steps, "copy_tests": copy_tests, "analyses": steps // config["save_steps"],
            "samples_per_process": math.ceil(config["copy_num_samples"] / world_size),
            "tokens_per_step_per_process": config["per_device_train_batch_size"] * config["block_size"]}


def main(argv=None):
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in training, copy test and analysis")
    parser.add_argument("--micro_batch", type=int, default=16 if cuda else 1, help="sequences per timed step")
    parser.add_argument("--train_steps", type=int, default=5 if cuda else 1, help="timed training steps")
    parser.add_argument("--copy_samples", type=int, default=64 if cuda else 2, help="samples timed")
    parser.add_argument("--copy_batch", type=int, default=None, help="samples per forward (default: the config's)")
    parser.add_argument("--world_size", type=int, default=8, help="processes of the paper's run (its 8 GPUs)")
    ns = parser.parse_args(argv)
    torch.set_num_threads(ns.threads)
    transformers.logging.set_verbosity_error()
    device = torch.device("cuda" if cuda else "cpu")
    config = load_config_file(trainer_config_path("paper-162m.yaml"))
    preset, vocab, block = ("tiny", 256, 256) if ns.smoke else (config["preset"], 32000, config["block_size"])
    copy_batch = ns.copy_batch or config["copy_eval_batch_size"]
    if ns.smoke:
        ns.micro_batch, ns.train_steps, ns.copy_samples, copy_batch = 1, 1, 2, 1
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if ns.bf16 else contextlib.nullcontext
    # A char tokenizer of exactly `vocab` tokens: 4 specials, the newline, CJK-block symbols.
    tokenizer = train_tokenizer(["".join(chr(0x4E00 + i) for i in range(vocab - 5))], kind="char")
    torch.manual_seed(0)
    model = build_model(ModelArguments(preset=preset), tokenizer).to(device)

    tokens_per_s = train_tokens_per_s(model, vocab, ns.micro_batch, block, ns.train_steps, autocast, device)
    task = build_copy_task(tokenizer, CopyTaskConfig(num_samples=ns.copy_samples + copy_batch), max_length=block)
    warm = CopyTask(task.config, task.samples[:copy_batch], task.num_sequences, task.query_indices)
    timed = CopyTask(task.config, task.samples[copy_batch:], task.num_sequences, task.query_indices)
    with autocast():
        score_copy_task(model, warm, batch_size=copy_batch)
        start = clock(device)
        score_copy_task(model, timed, batch_size=copy_batch)
        per_sample = (clock(device) - start) / ns.copy_samples
        icl = torch.randint(5, vocab, (8, block), device=device)
        analyze_induction(model, seq_len=100, batch_size=8, icl_input_ids=icl)  # warm-up
        start = clock(device)
        analyze_induction(model, seq_len=100, batch_size=8, icl_input_ids=icl)
        induction_s = clock(device) - start

    plan = schedule(config, ns.world_size)
    train_s = plan["max_steps"] * plan["tokens_per_step_per_process"] / tokens_per_s
    copy_s = plan["copy_tests"] * plan["samples_per_process"] * per_sample
    analyses_s = plan["analyses"] * induction_s
    watching = copy_s + analyses_s
    return finish({
        "machine": machine(), "model": preset, "params": sum(p.numel() for p in model.parameters()),
        "bf16": ns.bf16, "micro_batch": ns.micro_batch, "copy_batch": copy_batch,
        "train_tokens_per_s": round(tokens_per_s, 1), "copy_test_s_per_sample": round(per_sample, 4),
        "copy_test_tokens_per_sample": task.max_length, "induction_s_per_call": round(induction_s, 3),
        "schedule": plan,
        "projected": {"train_s": round(train_s), "copy_test_s": round(copy_s), "induction_s": round(analyses_s),
                      "watching_share": round(watching / (train_s + watching), 5),
                      "copytrainer_over_trainer": round(train_s / (train_s + watching), 5)},
    }, ns.json)


if __name__ == "__main__":
    main()
