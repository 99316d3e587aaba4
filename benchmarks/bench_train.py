"""What does the Trainer cost, and what does grokcopy cost on top? Training throughput three ways.

One process trains the same LLaMA (same config, same init: torch.manual_seed before each build) on the
same in-memory `datasets.Dataset` of random fixed-length `input_ids` blocks, for the same number of
optimizer steps after `--warmup` untimed steps, three ways:

  (a) bare: a nanoGPT-style PyTorch loop (AdamW, fused when the device has it; clip; model(x, labels=x));
  (b) trainer: plain `transformers.Trainer` (no eval, no save, no reporting, no progress bar);
  (c) copytrainer: `grokcopy.training.trainer.CopyTrainer` with every grokcopy callback on: the copy test on
      its default `log` schedule (demo: the demo config's copy settings, the only ones that fit its
      40-token context) and the induction analysis on the same schedule (`induction_eval_steps` =
      `copy_eval_steps`: without it the analysis runs only at checkpoint saves, and there are none).

The demo size is the demo's own: its model (trainer_configs/demo.yaml: the demo preset with its MLP
of 128), its char tokenizer trained on its corpus (the first 4,000 documents hold every symbol), its
copy settings (copy_symbol_pattern included) and its learning rate, beta2 and micro-batch of 128
(no gradient accumulation here, in any variant).

Same LR, betas, eps, clip (1.0), constant LR, no weight decay, fused AdamW when available, in all three.
Timing: wall clock from the end of the last warm-up step to the end of the last step (a callback added
last stamps on_step_end), so (c)'s copy tests and induction analyses in that window are in its time: the
cost measured (those at step 0 and on_train_end are outside). Variants interleave (a, b, c, a, b, c, ...
`--repeats`); medians are reported, and for the ratios (c)/(b) and (b)/(a) the mean and the median of
the per-repeat ratios of neighbouring runs, each with a bootstrap 95% interval (10,000 resamples of the
repeats): many short repeats average the machine's drift out. `copytrainer_minus_watching_over_trainer` takes the
copy tests' and analyses' own seconds (their history records) out of (c)'s window: what CopyTrainer
costs per step besides them. Per variant: tokens/s, s/step, peak memory (CUDA: max_memory_allocated;
CPU: peak RSS of the variant: Linux VmHWM reset via /proc/self/clear_refs, else a psutil sampler, else
ru_maxrss) and MFU = training tokens/s x (6N + 12*L*H*Q*T) / peak FLOPs, nanoGPT's estimate_mfu (N = all
parameters as nanoGPT counts with tied weights; here the untied input embedding, a lookup, is counted too:
~13% too many FLOPs for paper-162m; copy-test FLOPs are not counted). Peak: CUDA `--peak_flops` (default
989e12, H100 bf16 dense); CPU measured in this run (best of 5 2048x2048 matmuls, fp32, bf16 with --bf16).

    .venv/bin/python benchmarks/bench_train.py                         # CPU: demo and mid, 2 threads
    .venv/bin/python benchmarks/bench_train.py --sizes paper-162m --bf16 --compile   # CUDA
    .venv/bin/python benchmarks/bench_train.py --smoke                 # CI: 2 steps of the demo, 2 repeats

JSON: machine, results (one per size: size, params, block, batch, vocab, steps, warmup, repeats,
flops_per_token, copy_settings, variants ({bare, trainer, copytrainer}: tokens_per_s, s_per_step,
peak_mem_mb, mfu, runs_s, ...), copytrainer_over_trainer, trainer_over_bare, ratios (each: mean, ci95,
median, median_ci95, per_repeat)).
"""

import argparse
import contextlib
import gc
import importlib.util
import json
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path

import datasets
import torch
import transformers
from common import add_common_arguments, finish, machine
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments, default_data_collator

from grokcopy.experiments.demo import demo_config_path
from grokcopy.run_dir import COPY_HISTORY, INDUCTION_HISTORY, read_jsonl
from grokcopy.training.callbacks import eval_steps_schedule
from grokcopy.training.config import CopyTrainingArguments, ModelArguments, load_config_file, parse_args
from grokcopy.training.data import train_tokenizer
from grokcopy.training.demo_corpus import DemoCorpusConfig, generate_documents
from grokcopy.training.modeling import build_model
from grokcopy.training.trainer import CopyTrainer

MID = dict(model_type="llama", num_hidden_layers=4, hidden_size=256, num_attention_heads=4, num_key_value_heads=4,
           intermediate_size=1024, max_position_embeddings=256, tie_word_embeddings=False)
# model, block, batch, vocab, lr, beta2, default steps (CPU demo: ~20-40 s per variant on 2 cores); the demo's
# model, block, batch, vocab, lr and beta2 come from trainer_configs/demo.yaml (demo_size); tiny: dry runs.
SIZES = {
    "demo": dict(steps=150),
    "mid": dict(model=MID, block=256, batch=16, vocab=512, lr=1e-3, beta2=0.98, steps=25),
    "paper-162m": dict(model=dict(preset="paper-162m"), block=1024, batch=16, vocab=32000, lr=2e-4, beta2=0.999,
                       steps=50),
    "tiny": dict(model=dict(preset="tiny"), block=128, batch=4, vocab=256, lr=1e-3, beta2=0.98, steps=5),
}
VARIANTS = ("bare", "trainer", "copytrainer")
SMOKE_SAMPLES = 4  # copy-test samples in a smoke run


def demo_size() -> dict:
    """The demo's model, block, micro-batch, optimizer settings and tokenizer, from its config."""
    model_args, data_args, args = parse_args(demo_config_path(), ["--output_dir", "unused"])
    corpus = DemoCorpusConfig(**{**json.loads(data_args.demo_corpus_config), "num_documents": 4000})
    tokenizer = train_tokenizer(generate_documents(corpus), kind="char")
    return dict(model=model_args, block=data_args.block_size, batch=args.per_device_train_batch_size,
                tokenizer=tokenizer, lr=args.learning_rate, beta2=args.adam_beta2)


def copy_settings(size, smoke):
    if size == "demo":  # the demo's own copy test and induction schedule
        copy = {k: v for k, v in load_config_file(demo_config_path()).items() if k.startswith(("copy_", "induction_"))}
    else:
        copy = {"induction_eval_steps": CopyTrainingArguments.copy_eval_steps}  # defaults, analysis on their schedule
    return {**copy, "copy_num_samples": SMOKE_SAMPLES} if smoke else copy


def char_tokenizer(vocab):
    """A char tokenizer of exactly `vocab` tokens (4 specials, newline, CJK-block symbols)."""
    return train_tokenizer(["".join(chr(0x4E00 + i) for i in range(vocab - 5))], kind="char")


@contextlib.contextmanager
def peak_memory(cuda):
    """Peak memory (MB) inside the block: the CUDA allocator's peak; else peak RSS (Linux: VmHWM after resetting
    it via /proc/self/clear_refs; else a psutil sampler; else ru_maxrss, which never goes down). `delta_mb`:
    over the RSS at entry (CPU)."""
    out, stop, sampler = {"base": 0.0 if cuda else _proc_mb("VmRSS") or 0.0}, threading.Event(), None
    hwm = not cuda and _reset_hwm()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    elif not hwm and importlib.util.find_spec("psutil"):
        import psutil
        proc, out["mb"] = psutil.Process(), out["base"]

        def sample():
            while not stop.wait(0.01):
                out["mb"] = max(out["mb"], proc.memory_info().rss / 2**20)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    yield out
    stop.set()
    if cuda:
        out["mb"] = torch.cuda.max_memory_allocated() / 2**20
    elif hwm:
        out["mb"] = _proc_mb("VmHWM")
    elif sampler:
        sampler.join()
    else:
        out["mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["delta_mb"] = out["mb"] - out["base"]


def _proc_mb(key):
    try:
        return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))
    except (OSError, StopIteration):
        return None


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets the peak RSS (VmHWM) to the current RSS
        return True
    except OSError:
        return False


class StepClock(TrainerCallback):
    """Wall-clock stamps at on_step_end of the last warm-up step and the last step."""

    def __init__(self, warmup, total, cuda):
        self.marks, self.at, self.cuda = {}, (warmup, total), cuda

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.at:
            if self.cuda:
                torch.cuda.synchronize()
            self.marks[state.global_step] = time.perf_counter()


def optimizer_name(device):
    try:
        torch.optim.AdamW([torch.zeros(1, device=device, requires_grad=True)], fused=True)
        return "adamw_torch_fused"
    except (RuntimeError, ValueError):
        return "adamw_torch"


def run_bare(model, data, cfg, ns, device):
    data = torch.tensor(data["input_ids"])
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], betas=(0.9, cfg["beta2"]), eps=1e-8, weight_decay=0.0,
                            fused=ns.optim == "adamw_torch_fused")
    net = torch.compile(model) if ns.compile else model
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=ns.bf16)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(ns.seed))
    marks = {}
    for step in range(1, ns.warmup + ns.steps + 1):
        x = data[order[(step - 1) * cfg["batch"]:step * cfg["batch"]]].to(device, non_blocking=True)
        with ctx:
            loss = net(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step in (ns.warmup, ns.warmup + ns.steps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            marks[step] = time.perf_counter()
    return marks, {}


def run_trainer(model, data, cfg, ns, device, tokenizer, copy):
    total = ns.warmup + ns.steps
    with tempfile.TemporaryDirectory() as out:
        common = dict(output_dir=out, max_steps=total, per_device_train_batch_size=cfg["batch"], learning_rate=cfg["lr"],
                      adam_beta1=0.9, adam_beta2=cfg["beta2"], adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0,
                      lr_scheduler_type="constant", optim=ns.optim, report_to="none", save_strategy="no",
                      eval_strategy="no", logging_steps=10**9, disable_tqdm=True, bf16=ns.bf16,
                      torch_compile=ns.compile, dataloader_pin_memory=device.type == "cuda", seed=ns.seed,
                      use_cpu=device.type == "cpu")
        if copy is None:
            trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=data)
        else:  # as grokcopy.training.pipeline builds it: the tokenizer as processing_class, packed blocks stacked as is
            args = CopyTrainingArguments(**common, fast_path=False, **{"copy_eval_schedule": "log", **copy})
            trainer = CopyTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                  data_collator=default_data_collator)
        trainer.remove_callback(PrinterCallback)  # disable_tqdm would print every log line
        clock = StepClock(ns.warmup, total, device.type == "cuda")
        trainer.add_callback(clock)  # last: a copy test at a stamped step falls inside the window
        trainer.train()
        collator = trainer.data_collator
        info = {"collator": getattr(collator, "__name__", type(collator).__name__)}
        if copy is not None:
            every = args.copy_eval_steps
            in_window = lambda r: ns.warmup < r["step"] <= total  # noqa: E731
            evals = [r for r in read_jsonl(Path(out) / COPY_HISTORY)
                     if in_window(r) and eval_steps_schedule(r["step"], args.copy_eval_schedule, every)]
            analyses = [r for r in read_jsonl(Path(out) / INDUCTION_HISTORY) if in_window(r)]
            info.update(copy_tests=len(evals), copy_test_s=round(sum(r["seconds"] for r in evals), 3),
                        induction_analyses=len(analyses),
                        induction_s=round(sum(r["seconds"] for r in analyses), 3),
                        copy_samples=len(trainer.copy_task.samples))
        del trainer
    return clock.marks, info


def peak_flops(ns, device):
    if device.type == "cuda":
        return ns.peak_flops, "--peak_flops"
    n, dtype = 2048, torch.bfloat16 if ns.bf16 else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    best = min(timeit.repeat(lambda: a @ b, number=1, repeat=6)[1:])  # the first is a warm-up
    return 2 * n**3 / best, f"measured: best of 5 {n}x{n} {str(dtype)[6:]} matmuls, {torch.get_num_threads()} threads"


def bootstrap(values, seed=0, resamples=10_000):
    """Mean and median of `values`, each with its percentile-bootstrap 95% interval (the repeats resampled
    with replacement). The median's is the one to read on a shared machine: a repeat that another
    process slowed moves the mean, not the median."""
    rng = random.Random(seed)
    draws = [rng.choices(values, k=len(values)) for _ in range(resamples)]
    out = {}
    for name, stat in (("mean", statistics.fmean), ("median", statistics.median)):
        dist = sorted(map(stat, draws))
        out[name] = round(stat(values), 4)
        out["ci95" if name == "mean" else "median_ci95"] = [round(dist[int(0.025 * resamples)], 4),
                                                           round(dist[int(0.975 * resamples) - 1], 4)]
    return {**out, "per_repeat": [round(v, 4) for v in values]}


def ratios(runs):
    """(c)/(b), (b)/(a) and (c minus its copy tests and analyses)/(b) in tokens/s, repeat by repeat."""
    pairs = list(zip(runs["bare"], runs["trainer"], runs["copytrainer"]))
    watched = [c["seconds"] - c.get("copy_test_s", 0) - c.get("induction_s", 0) for _, _, c in pairs]
    return {"copytrainer_over_trainer": bootstrap([b["seconds"] / c["seconds"] for _, b, c in pairs]),
            "trainer_over_bare": bootstrap([a["seconds"] / b["seconds"] for a, b, _ in pairs]),
            "copytrainer_minus_watching_over_trainer": bootstrap([b["seconds"] / w
                                                                 for (_, b, _), w in zip(pairs, watched)])}


def bench_size(size, ns, device, peak):
    cfg = {**SIZES[size], **(demo_size() if size == "demo" else {})}
    ns.steps = ns.steps_arg or cfg["steps"]
    tokenizer = cfg.get("tokenizer") or char_tokenizer(cfg["vocab"])
    gen = torch.Generator().manual_seed(ns.seed)
    blocks = torch.randint(5, len(tokenizer), ((ns.warmup + ns.steps) * cfg["batch"], cfg["block"]), generator=gen)
    data = datasets.Dataset.from_dict({"input_ids": blocks.tolist(), "labels": blocks.tolist()})
    copy = copy_settings(size, ns.smoke)
    runs = {v: [] for v in VARIANTS}
    for _ in range(ns.repeats):
        for variant in VARIANTS:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            with peak_memory(device.type == "cuda") as mem:
                torch.manual_seed(ns.seed)
                model_args = cfg["model"] if isinstance(cfg["model"], ModelArguments) else ModelArguments(**cfg["model"])
                model = build_model(model_args, tokenizer)
                c, n_params = model.config, sum(p.numel() for p in model.parameters())
                if variant == "bare":
                    marks, info = run_bare(model, data, cfg, ns, device)
                else:
                    marks, info = run_trainer(model, data, cfg, ns, device, tokenizer,
                                              copy if variant == "copytrainer" else None)
                del model
            seconds = marks[ns.warmup + ns.steps] - marks[ns.warmup]
            runs[variant].append(dict(seconds=seconds, peak_mb=mem["mb"], peak_delta_mb=mem["delta_mb"], **info))
    head_dim = c.hidden_size // c.num_attention_heads
    flops_per_token = 6 * n_params + 12 * c.num_hidden_layers * c.num_attention_heads * head_dim * cfg["block"]
    tokens = ns.steps * cfg["batch"] * cfg["block"]
    result = {"size": size, "params": n_params, "block": cfg["block"], "batch": cfg["batch"], "vocab": len(tokenizer),
              "steps": ns.steps, "warmup": ns.warmup, "repeats": ns.repeats, "flops_per_token": flops_per_token,
              "copy_settings": copy, "variants": {}}
    for variant, rs in runs.items():
        s = statistics.median(r["seconds"] for r in rs)
        result["variants"][variant] = {
            "tokens_per_s": round(tokens / s, 1), "s_per_step": round(s / ns.steps, 5),
            "peak_mem_mb": round(statistics.median(r["peak_mb"] for r in rs), 1),
            "peak_mem_delta_mb": round(statistics.median(r["peak_delta_mb"] for r in rs), 1),
            "mfu": round(flops_per_token * tokens / s / peak, 5),
            "runs_s": [round(r["seconds"], 3) for r in rs],
            **{k: v for k, v in rs[-1].items() if k not in ("seconds", "peak_mb", "peak_delta_mb")}}
    v = result["variants"]
    result["copytrainer_over_trainer"] = round(v["copytrainer"]["tokens_per_s"] / v["trainer"]["tokens_per_s"], 4)
    result["trainer_over_bare"] = round(v["trainer"]["tokens_per_s"] / v["bare"]["tokens_per_s"], 4)
    result["ratios"] = ratios(runs)
    return result


def print_size(r):
    print(f"\n## {r['size']}: {r['params'] / 1e6:.2f}M params, block {r['block']}, batch {r['batch']}, vocab {r['vocab']}, "
          f"{r['steps']} timed steps after {r['warmup']} warm-up, median of {r['repeats']}")
    print(f"{'variant':<12} {'tokens/s':>11} {'s/step':>9} {'peak MB':>9} {'MFU':>8}  notes")
    for name, v in r["variants"].items():
        notes = {k: x for k, x in v.items() if k not in ("tokens_per_s", "s_per_step", "peak_mem_mb", "mfu")}
        print(f"{name:<12} {v['tokens_per_s']:>11.1f} {v['s_per_step']:>9.4f} {v['peak_mem_mb']:>9.1f} "
              f"{v['mfu']:>8.2%}  {notes}")
    print(f"tokens/s ratios of the medians: copytrainer/trainer = {r['copytrainer_over_trainer']:.3f}, "
          f"trainer/bare = {r['trainer_over_bare']:.3f}")
    for name, x in r["ratios"].items():
        print(f"{name}, {len(x['per_repeat'])} paired repeats: mean {x['mean']:.4f} [{x['ci95'][0]:.4f}, "
              f"{x['ci95'][1]:.4f}], median {x['median']:.4f} [{x['median_ci95'][0]:.4f}, {x['median_ci95'][1]:.4f}] "
              "(bootstrap 95% intervals)")


def main(argv=None):
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="paper-162m" if cuda else "demo,mid", help=f"of {', '.join(SIZES)}")
    parser.add_argument("--steps", dest="steps_arg", type=int, default=None, help="timed steps (default per size)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (>= 1)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in all three")
    parser.add_argument("--compile", action="store_true", help="torch.compile in all three")
    parser.add_argument("--peak_flops", type=float, default=989e12, help="CUDA peak (default: H100 bf16 dense)")
    parser.add_argument("--seed", type=int, default=0)
    add_common_arguments(parser)
    ns = parser.parse_args(argv)
    if ns.smoke:  # 2 timed steps after 1, 2 repeats (the interval needs two); sizes as given, demo by default
        ns.steps_arg, ns.warmup, ns.repeats = 2, 1, 2
        ns.sizes = ns.sizes if "--sizes" in (argv or sys.argv) else "demo"
    if ns.warmup < 1:
        parser.error("--warmup must be >= 1 (the window starts at the end of the last warm-up step)")
    torch.set_num_threads(ns.threads)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as nanoGPT, all variants
    ns.optim = optimizer_name(device)
    peak, peak_how = peak_flops(ns, device)
    setup = {**machine(), "optimizer": ns.optim, "bf16": ns.bf16, "compile": ns.compile, "peak_flops": peak,
             "peak_flops_source": peak_how}
    print(json.dumps(setup))
    results = []
    for size in ns.sizes.split(","):
        results.append(bench_size(size.strip(), ns, device, peak))
        print_size(results[-1])
    finish({"machine": setup, "results": results}, ns.json)


if __name__ == "__main__":
    sys.exit(main())
