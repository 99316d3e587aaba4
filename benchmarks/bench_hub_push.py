"""How long does a training step wait on Hub pushes? The demo model trained with a checkpoint pushed to
its own branch every `--save_steps`, against the same run without pushes, in one process; the Hub is
the project's local Hub-compatible server (tests/hub_server.py) on 127.0.0.1.

    .venv/bin/python benchmarks/bench_hub_push.py [--max_steps 200] [--save_steps 20]
    .venv/bin/python benchmarks/bench_hub_push.py --smoke     # CI: 2 steps, a push per step

JSON: machine, steps, checkpoints_pushed, train_s_without_push, train_s_with_push,
step_time_waiting_on_pushes, end_of_training_wait_s.
"""

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hub_server import HubServer, configure_client_env, free_port  # noqa: E402

PORT = free_port()
configure_client_env(PORT)
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="bench_hf_")

import torch  # noqa: E402
from common import add_common_arguments, demo_trainer, finish, machine  # noqa: E402


def run(out, steps, save_steps, push, smoke):
    extra = ["--hub_checkpoint_series", "true", "--hub_model_id", f"bench/run-{uuid.uuid4().hex[:6]}"] if push else []
    trainer = demo_trainer(out, ["--max_steps", str(steps), "--save_steps", str(save_steps), "--eval_strategy", "no",
                                 "--copy_eval_schedule", "none", "--induction_analysis", "false", *extra], smoke)
    start = time.perf_counter()
    trainer.train()  # includes the final wait for pushes still in flight
    total = time.perf_counter() - start
    waited = 0.0
    if push:  # the end-of-training wait is not step time: measure it separately
        waited = trainer.hub_callback.wait_seconds
    return total - waited, waited


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--max_steps", type=int, default=200)
    parser.add_argument("--save_steps", type=int, default=20)
    add_common_arguments(parser)
    ns = parser.parse_args()
    if ns.smoke:
        ns.max_steps, ns.save_steps = 2, 1
    torch.set_num_threads(ns.threads)
    with tempfile.TemporaryDirectory() as storage, tempfile.TemporaryDirectory() as out:
        server = HubServer(storage, port=PORT)
        server.start()
        try:
            base, _ = run(f"{out}/base", ns.max_steps, ns.save_steps, push=False, smoke=ns.smoke)
            pushed, final_wait = run(f"{out}/push", ns.max_steps, ns.save_steps, push=True, smoke=ns.smoke)
        finally:
            server.stop()
    finish({
        "machine": machine(), "steps": ns.max_steps, "checkpoints_pushed": ns.max_steps // ns.save_steps,
        "train_s_without_push": round(base, 2), "train_s_with_push": round(pushed, 2),
        "step_time_waiting_on_pushes": round(pushed / base - 1, 4),
        "end_of_training_wait_s": round(final_wait, 2),
    }, ns.json)


if __name__ == "__main__":
    main()
