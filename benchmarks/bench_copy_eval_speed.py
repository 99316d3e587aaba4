"""How fast is the copy test? Three ways of scoring the paper's copy task, timed and checked against each other.

The task has the paper's shape (Lv et al. 2025, Fig. 1): per sample 50 sequences of a 12-token prefix +
6-token suffix + newline (a ~950-token context) and 10 queries (i = 5, 10, ..., 50); 500 samples in the
paper (`--samples`; the projected time for 500 is printed too). Scored three ways, `--batch_size`
samples per call in each:

  (i)   kv:       grokcopy.copytest.scoring.score_copy_task: each context run once, its KV cache repeated for
                  its queries, prefix + suffix teacher-forced (what CopyTrainer runs);
  (ii)  full:     one full forward per query (context + prefix + suffix, teacher-forced), logits kept
                  for the suffix positions only;
  (iii) generate: model.generate(context + prefix, do_sample=False, max_new_tokens=suffix length).

(ii) and (iii) get their exact match from the same evaluate metric as (i). Agreement is checked per
query: the same exact match in all three; (i) and (ii) the same argmax at every suffix position; (iii)
the same tokens as (i) up to and including (i)'s first wrong one (greedy decoding follows the
teacher-forced argmax until its first error). A random-init model (the default) copies nothing, so its
exact match is 0 everywhere and the token checks are what compare the methods; `--model_name_or_path`
scores a trained model instead. Each method runs its first batch once untimed (warm-up).

Model: CPU a 2-layer LLaMA (d=128, 4 heads, MLP 512, context 1024) with a 256-symbol char tokenizer;
CUDA the paper's 162M LLaMA (`paper-162m` preset, 32,000 symbols). torch.inference_mode throughout;
`--bf16` runs the model in bfloat16.

    .venv/bin/python benchmarks/bench_copy_eval_speed.py                      # CPU: 50 samples, 2 threads
    .venv/bin/python benchmarks/bench_copy_eval_speed.py --bf16               # CUDA: 500 samples, paper-162m
"""

import argparse
import json
import time
from pathlib import Path

import torch
import transformers
from machine import cpu_name
from transformers import AutoModelForCausalLM, AutoTokenizer

from grokcopy.analysis.architectures import model_context_length
from grokcopy.copytest.scoring import load_copy_metric, predict_suffixes, score_copy_task
from grokcopy.copytest.task import CopyTask, CopyTaskConfig, build_copy_task
from grokcopy.training.config import ModelArguments
from grokcopy.training.data import train_tokenizer
from grokcopy.training.modeling import build_model

SMALL = dict(model_type="llama", num_hidden_layers=2, hidden_size=128, num_attention_heads=4, num_key_value_heads=4,
             intermediate_size=512, max_position_embeddings=1024, tie_word_embeddings=False)
MODELS = {"small": (SMALL, 256), "paper-162m": (dict(preset="paper-162m"), 32000)}


def load(ns, device):
    if ns.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(ns.model_name_or_path)
        model = AutoModelForCausalLM.from_pretrained(ns.model_name_or_path)
    else:
        shape, vocab = MODELS[ns.model]
        # A char tokenizer of exactly `vocab` tokens: 4 specials, the newline, CJK-block symbols.
        tokenizer = train_tokenizer(["".join(chr(0x4E00 + i) for i in range(vocab - 5))], kind="char")
        torch.manual_seed(ns.seed)
        model = build_model(ModelArguments(**shape), tokenizer)
    model.generation_config.eos_token_id = None  # always generate the full suffix length
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    dtype = torch.bfloat16 if ns.bf16 else torch.float32
    return tokenizer, model.to(device=device, dtype=dtype).eval()


def batches(task, batch_size):
    for start in range(0, len(task.samples), batch_size):
        yield task.samples[start:start + batch_size]


def query_rows(samples, device, with_suffix):
    """One row per query: context + prefix (+ suffix). With `tokens` symbols every row has the same length."""
    rows = [s.context + p + (q if with_suffix else []) for s in samples for _, p, q in s.queries]
    if len({len(r) for r in rows}) != 1:
        raise SystemExit("rows of unequal length (hex symbols?): this benchmark needs `tokens` symbols")
    return torch.tensor(rows, dtype=torch.long, device=device)


@torch.inference_mode()
def predict_full(model, samples, device):
    """(ii) teacher-forced argmax at the suffix positions, one full forward per query."""
    n = len(samples[0].queries[0][2])
    logits = model(input_ids=query_rows(samples, device, True), use_cache=False, logits_to_keep=n + 1).logits
    return logits[:, :n].argmax(-1).tolist()


@torch.inference_mode()
def predict_generate(model, samples, device):
    """(iii) greedy decoding of suffix-length tokens after context + prefix."""
    n = len(samples[0].queries[0][2])
    x = query_rows(samples, device, False)
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n)
    return out[:, x.shape[1]:].tolist()


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return value, time.perf_counter() - start


def run_per_batch(predict, model, task, ns, device):
    """Predictions for every query in sample order, and the scoring time including the metric."""
    metric = load_copy_metric()
    predict(model, task.samples[:ns.batch_size], device)  # warm-up

    def run():
        preds = [p for samples in batches(task, ns.batch_size) for p in predict(model, samples, device)]
        refs = [q for s in task.samples for _, _, q in s.queries]
        return preds, metric.compute(predictions=preds, references=refs)["exact_match"]

    (preds, em), seconds = timed(run, device)
    return preds, em, seconds


def agreement(kv, full, gen, refs):
    """Per-query checks: exact match equal in all three, (i) == (ii) token for token, (iii) follows (i)
    up to and including (i)'s first wrong token."""
    em = [[p == r for p, r in zip(preds, refs)] for preds in (kv, full, gen)]
    greedy_ok = 0
    for k, g, r in zip(kv, gen, refs):
        first_wrong = next((j for j, (a, b) in enumerate(zip(k, r)) if a != b), len(r) - 1)
        greedy_ok += g[:first_wrong + 1] == k[:first_wrong + 1]
    return {
        "queries": len(refs),
        "exact_match_same_all_three": sum(a == b == c for a, b, c in zip(*em)),
        "kv_full_same_tokens": sum(a == b for a, b in zip(kv, full)),
        "generate_follows_kv": greedy_ok,
        "first_token_same_all_three": sum(a[0] == b[0] == c[0] for a, b, c in zip(kv, full, gen)),
    }


def main(argv=None):
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=500 if cuda else 50, help="paper: 500")
    parser.add_argument("--model", choices=MODELS, default="paper-162m" if cuda else "small")
    parser.add_argument("--model_name_or_path", help="a trained model (context >= 968 tokens) instead")
    parser.add_argument("--batch_size", type=int, default=16, help="samples per call (CopyTrainer's default 16)")
    parser.add_argument("--bf16", action="store_true", help="run the model in bfloat16")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    ns = parser.parse_args(argv)
    torch.set_num_threads(ns.threads)
    transformers.logging.set_verbosity_error()
    device = torch.device("cuda" if cuda else "cpu")
    tokenizer, model = load(ns, device)
    task = build_copy_task(tokenizer, CopyTaskConfig(num_samples=ns.samples), max_length=model_context_length(model))
    if task.note:
        print(task.note)
    refs = [q for s in task.samples for _, _, q in s.queries]

    first = CopyTask(task.config, task.samples[:ns.batch_size], task.num_sequences, task.query_indices)
    score_copy_task(model, first, batch_size=ns.batch_size)  # warm-up
    scores, kv_s = timed(lambda: score_copy_task(model, task, batch_size=ns.batch_size), device)
    kv = [p for _, p, _ in predict_suffixes(model, task, batch_size=ns.batch_size)]  # untimed: for the checks
    full, full_em, full_s = run_per_batch(predict_full, model, task, ns, device)
    gen, gen_em, gen_s = run_per_batch(predict_generate, model, task, ns, device)

    checks = agreement(kv, full, gen, refs)
    agree = all(v == checks["queries"] for k, v in checks.items() if k != "queries")
    scale = 500 / ns.samples
    result = {
        "device": torch.cuda.get_device_name() if cuda else cpu_name(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
        "model": ns.model_name_or_path or ns.model, "params": sum(p.numel() for p in model.parameters()),
        "dtype": str(next(model.parameters()).dtype), "samples": ns.samples, "batch_size": ns.batch_size,
        "queries_per_sample": len(task.query_indices), "tokens_per_sample": task.max_length,
        "seconds": {"kv": round(kv_s, 3), "full": round(full_s, 3), "generate": round(gen_s, 3)},
        "projected_500_samples_s": {"kv": round(kv_s * scale, 1), "full": round(full_s * scale, 1),
                                    "generate": round(gen_s * scale, 1)},
        "speedup_kv_over_full": round(full_s / kv_s, 2), "speedup_kv_over_generate": round(gen_s / kv_s, 2),
        "exact_match": {"kv": scores["exact_match"], "full": full_em, "generate": gen_em},
        "agreement": checks, "all_agree": agree,
    }
    print(json.dumps(result, indent=1))
    print(f"\nkv {kv_s:.2f} s, full forward {full_s:.2f} s ({full_s / kv_s:.1f}x slower), generate {gen_s:.2f} s "
          f"({gen_s / kv_s:.1f}x slower) for {ns.samples} samples; for 500: kv {kv_s * scale:.1f} s, "
          f"full {full_s * scale:.1f} s, generate {gen_s * scale:.1f} s. Methods agree: {agree}")
    if ns.json:
        Path(ns.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
