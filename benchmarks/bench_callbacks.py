"""What does watching cost? Time inside each grokcopy callback while the demo trains, from the run's own timers.

Trains the demo once as `grokcopy demo` does (trainer_configs/demo.yaml at its default schedule: the
copy test at steps 0, 1, 2, 4, ..., 32 and then every 50, the induction analysis every 100 and at
every checkpoint save), with a timer around every call the Trainer's CallbackHandler makes into
every callback, and reads three more timers of the run itself: `train_runtime` (Trainer's timer of
the whole `train()`), the `seconds` of each copy_history / induction_history record (the analysis
call alone), and every `CopyTrainer.copy_evaluate` call (so a copy test run by `evaluate()`, outside
the callbacks, is counted too). A share is a time over `train_runtime`: load on a shared machine
slows numerator and denominator alike, so the share barely moves, unlike an A/B of two runs.

The callbacks' work is what CopyTrainer adds to Trainer's step (its per-step loss bookkeeping, the
rest, is measured by bench_train.py), so at this schedule (c)/(b) = 1 - share of that work.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_callbacks.py --threads 1 [--json out.json] [demo overrides]

JSON: machine, steps, train_runtime_s, callbacks ({module.class: {seconds, calls, share}}), copy_tests,
copy_test_s, copy_test_s_per_call, induction_analyses, induction_s, evaluation_copy_tests,
evaluation_copy_test_s, watching_s (grokcopy's callbacks + evaluation's copy tests), watching_share,
copytrainer_over_trainer_at_this_schedule.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from common import add_common_arguments, demo_trainer, finish, machine
from transformers import TrainerCallback

from grokcopy.run_dir import COPY_HISTORY, INDUCTION_HISTORY, read_jsonl

EVENTS = [name for name in vars(TrainerCallback) if name.startswith("on_")]
SMOKE = ["--max_steps", "3", "--save_steps", "2", "--eval_steps", "2", "--copy_eval_steps", "2",
         "--induction_eval_steps", "2", "--copy_num_samples", "4", "--max_eval_samples", "8"]


def timed(fn, totals: list, busy: list | None = None):
    """fn, adding its seconds and one call to totals = [seconds, calls]; with `busy`, only when
    busy[0] is False (a call made from inside a timed callback is already counted there)."""
    def wrapper(*args, **kwargs):
        if busy is not None and busy[0]:
            return fn(*args, **kwargs)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[0] += time.perf_counter() - start
            totals[1] += 1
    return wrapper


def inside(fn, busy: list):
    """fn, with busy[0] True while it runs."""
    def wrapper(*args, **kwargs):
        busy[0] = True
        try:
            return fn(*args, **kwargs)
        finally:
            busy[0] = False
    return wrapper


def time_callbacks(trainer, busy: list) -> dict:
    """Every event a callback overrides, timed in place: {callback class: [seconds, calls]}."""
    totals = {}
    for callback in trainer.callback_handler.callbacks:
        own = [e for e in EVENTS if getattr(type(callback), e) is not getattr(TrainerCallback, e)]
        if own:
            slot = totals.setdefault(f"{type(callback).__module__}.{type(callback).__name__}", [0.0, 0])
            for event in own:
                setattr(callback, event, timed(inside(getattr(callback, event), busy), slot))
    return totals


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--output_dir", help="keep the run here (default: a temporary folder)")
    ns, overrides = parser.parse_known_args(argv)
    torch.set_num_threads(ns.threads)
    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory() as tmp:
        out = ns.output_dir or tmp
        trainer = demo_trainer(out, (SMOKE if ns.smoke else []) + overrides, smoke=ns.smoke)
        busy = [False]
        totals = time_callbacks(trainer, busy)
        evaluation = [0.0, 0]  # copy tests run by evaluate(), outside every callback
        trainer.copy_evaluate = timed(trainer.copy_evaluate, evaluation, busy)
        runtime = trainer.train().metrics["train_runtime"]
        copies, analyses = read_jsonl(Path(out) / COPY_HISTORY), read_jsonl(Path(out) / INDUCTION_HISTORY)
        steps = trainer.state.global_step
    copy_s, induction_s = sum(r["seconds"] for r in copies), sum(r["seconds"] for r in analyses)
    eval_copy_s = evaluation[0]
    # grokcopy's callbacks only: Trainer's own (progress, flow) run in (b) as well.
    watching = sum(s for name, (s, _) in totals.items() if name.startswith("grokcopy")) + eval_copy_s
    return finish({
        "machine": machine(), "steps": steps, "train_runtime_s": runtime,
        "callbacks": {name: {"seconds": round(s, 4), "calls": n, "share": round(s / runtime, 5)}
                      for name, (s, n) in totals.items()},
        "copy_tests": len(copies), "copy_test_s": round(copy_s, 4),
        "copy_test_s_per_call": round(copy_s / max(1, len(copies)), 4),
        "induction_analyses": len(analyses), "induction_s": round(induction_s, 4),
        "evaluation_copy_tests": evaluation[1], "evaluation_copy_test_s": round(eval_copy_s, 4),
        "watching_s": round(watching, 4), "watching_share": round(watching / runtime, 5),
        "copytrainer_over_trainer_at_this_schedule": round(1 - watching / runtime, 5),
    }, ns.json)


if __name__ == "__main__":
    main(sys.argv[1:])
